"""The Prometheus metrics of one service: `Metrics` holds each family in a registry of its own.

A registry per service rather than prometheus_client's global one: several services in one process (the tests,
a worker beside an API node) each count their own, and nothing registered at import time leaks into `/metrics`.
The components record where each concern lives (the queue its jobs and refusals, the pool its loads and resident
models, the cache its lookups, the assistant its calls, the service its generations); the HTTP transport counts
requests through `observe_request`.

Every label takes a bounded set of values: route templates (never raw paths), catalog model keys, tasks, runtimes,
job kinds, outcomes and error codes. Prompts, job ids and client names never become labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Seconds a job waits in the queue before it starts: from at once to a long backlog.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)
#: Seconds one image takes: the `tiny` model's milliseconds to a large model's minutes on a CPU.
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, math.inf)
#: Seconds a model load takes: a resident-again small model to a large checkpoint read from a slow disk.
LOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)
#: Seconds an HTTP request takes to answer (a sync `/generate` waits for its image).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)
#: The HTTP methods counted by name; any other is counted as `other`, so that a client cannot add label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The metric families of one service, in their own `registry`; `exposition()` is what `/metrics` serves."""

    #: The media type of `exposition()`: Prometheus's text format.
    CONTENT_TYPE = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "imageforge_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "imageforge_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.jobs_submitted = Counter(
            "imageforge_jobs_submitted", "Jobs accepted into the queue, by kind.", ["kind"], registry=registry
        )
        self.jobs_finished = Counter(
            "imageforge_jobs_finished",
            "Jobs ended, by kind, outcome (succeeded, failed, cancelled) and error code (empty on success).",
            ["kind", "outcome", "error_code"],
            registry=registry,
        )
        self.refusals = Counter(
            "imageforge_queue_refusals",
            "Jobs and waits refused by the queue's limits, by reason: queue_full, queue_share_exceeded, rate_limited.",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge("imageforge_queue_depth", "Jobs waiting to run.", registry=registry)
        self.jobs_running = Gauge("imageforge_jobs_running", "Jobs running now.", registry=registry)
        self.queue_wait = Histogram(
            "imageforge_queue_wait_seconds",
            "Time from a job's acceptance to its start.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.generation_seconds = Histogram(
            "imageforge_generation_seconds",
            "Time to make one image (model held, denoising and decoding), by model, task and runtime.",
            ["model", "task", "runtime"],
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self.model_load_seconds = Histogram(
            "imageforge_model_load_seconds",
            "Time to load a model into memory, by model.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.model_resident = Gauge(
            "imageforge_model_resident", "1 for each model resident in memory, by model.", ["model"], registry=registry
        )
        self.model_memory_bytes = Gauge(
            "imageforge_model_memory_bytes",
            "Estimated memory of each resident model (the catalog's estimate), by model.",
            ["model"],
            registry=registry,
        )
        self.device_memory_bytes = Gauge(
            "imageforge_device_memory_bytes",
            "Memory of the device models run on (GPU memory on CUDA, RAM on CPU and MPS); NaN where unknown.",
            registry=registry,
        )
        self.device_memory_used_bytes = Gauge(
            "imageforge_device_memory_used_bytes",
            "Memory torch's allocator holds on the device now (CUDA, MPS); NaN where the device does not say (CPU).",
            registry=registry,
        )
        self.cache_lookups = Counter(
            "imageforge_cache_lookups",
            "Lookups of seeded results in the artifact cache, by result (hit, miss).",
            ["result"],
            registry=registry,
        )
        self.assist_calls = Counter(
            "imageforge_prompt_assist_calls",
            "Prompt-assist calls, by outcome (assisted, passed_through, busy).",
            ["outcome"],
            registry=registry,
        )
        self.device_memory_bytes.set(math.nan)
        self.device_memory_used_bytes.set(math.nan)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request answered with `status` after `seconds`, under its route template."""
        method = method if method in METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def watch_device_memory(self, total_gb: Callable[[], float | None], used_gb: Callable[[], float | None]) -> None:
        """Read the device's memory, in all and in use (GB, None when unknown), at each scrape."""
        self.device_memory_bytes.set_function(_bytes_or_nan(total_gb))
        self.device_memory_used_bytes.set_function(_bytes_or_nan(used_gb))

    def watch_queue(self, waiting: Callable[[], int], running: Callable[[], int]) -> None:
        """Read the queue's depth and running jobs with these at each scrape (NaN when they fail)."""
        self.queue_depth.set_function(_or_nan(waiting))
        self.jobs_running.set_function(_or_nan(running))

    def model_loaded(self, model: str, seconds: float, memory_gb: float) -> None:
        """A model was loaded in `seconds` and is resident, taking about `memory_gb`."""
        self.model_load_seconds.labels(model).observe(seconds)
        self.model_resident.labels(model).set(1)
        self.model_memory_bytes.labels(model).set(memory_gb * 2**30)

    def model_unloaded(self, model: str) -> None:
        """A model left memory."""
        self.model_resident.remove(model)
        self.model_memory_bytes.remove(model)

    def job_finished(self, kind: str, outcome: str, error_code: str | None) -> None:
        """A job of `kind` ended with `outcome` (its status) and, unless it succeeded, its error's code."""
        self.jobs_finished.labels(kind, outcome, error_code or "").inc()

    def exposition(self) -> bytes:
        """Every metric now, in Prometheus's text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _bytes_or_nan(read_gb: Callable[[], float | None]) -> Callable[[], float]:
    def reading() -> float:
        try:
            gb = read_gb()
        except Exception:  # a scrape must not fail on the device: the gauge reads NaN instead
            return math.nan
        return math.nan if gb is None else gb * 2**30

    return reading


def _or_nan(read: Callable[[], int]) -> Callable[[], float]:
    def reading() -> float:
        try:
            return float(read())
        except Exception:  # the queue's store away (Redis down): a scrape still answers, this gauge reads NaN
            return math.nan

    return reading
