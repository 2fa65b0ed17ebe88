"""What the service costs on top of the engine (issue 8), on the offline `tiny` model, and at full size.

A real server (the app `imageforge serve` runs, on uvicorn, on loopback) and a direct engine call on the same
model, in the same process and run:

- end-to-end latency of HTTP `POST /generate` (httpx) and of the MCP tool `generate_image` (the official MCP
  client over Streamable HTTP) against the direct call, as overhead in ms and %;
- the same through `ImageService.generate` in-process (queue, validation, PNG, store; no transport);
- a seeded cache hit over HTTP (p50/p95);
- queue throughput with N concurrent HTTP clients;
- the parts measured alone: PNG encoding with metadata, base64, the MCP preview, the output store's write, a
  cache read, and a queue round trip of a job that does nothing.

With `--full-size` it measures the end-to-end overhead alone, on the sd-turbo architecture with random weights
(built as `bench/engine.py` builds it and served through a models-file entry), at 512x512 and 1 step.

With `--metrics` it measures what the Prometheus metrics cost a `tiny` request (issue 22): the same HTTP
`POST /generate` on two servers in this process, one counting and one whose metrics record nothing, in turn;
and the recording calls one such request makes, timed alone.

    PYTHONPATH=src .venv/bin/python bench/service.py [--runs 20] [--clients 4] [--json]
    PYTHONPATH=src .venv/bin/python bench/service.py --full-size [--runs 6] [--json]
    PYTHONPATH=src .venv/bin/python bench/service.py --metrics [--runs 200] [--json]

`--json` prints one JSON object as the last line. The targets are printed with pass/fail.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before huggingface_hub is imported: the tiny model is built locally and nothing may be downloaded.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import uvicorn
from anyio.from_thread import start_blocking_portal
from fastapi import FastAPI
from mcp.client.client import Client
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import GenerationParams, GenerationRequest, Task
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.engine.protocol import LoadedModel
from imageforge.inputs import InputPaths
from imageforge.jobs.embedded import EmbeddedJobQueue
from imageforge.jobs.queue import QueueLimits
from imageforge.jobs.store import JobStore
from imageforge.metrics import Metrics
from imageforge.service import ImageService
from imageforge.storage.cache import ArtifactCache
from imageforge.storage.outputs import OutputStore, encode_png
from imageforge.transports.http.app import create_app
from imageforge.transports.mcp.content import preview_content
from imageforge.transports.mcp.server import McpOptions
from imageforge.validation import RequestValidator

PROMPT = "a red fox in the snow"
#: Targets on the reference machine (issue 8).
HTTP_OVERHEAD_MS_MAX = 25.0
CACHE_HIT_P50_MS_MAX = 20.0
FULL_SIZE_OVERHEAD_PCT_MAX = 3.0
#: What the metrics may add to one `tiny` request (issue 22).
METRICS_OVERHEAD_MS_MAX = 1.0


@dataclass(frozen=True)
class Timings:
    """Seconds per run of one measurement."""

    samples: list[float]

    def ms(self, q: float) -> float:
        ordered = sorted(self.samples)
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return 1000 * statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return self.ms(0.95)

    @property
    def best(self) -> float:
        """The fastest run: on a machine shared with other work, the closest to the cost itself."""
        return 1000 * min(self.samples)


def timed(run: Callable[[], object], runs: int, warmup: int = 2) -> Timings:
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return Timings(samples)


def interleaved(runs: int, calls: dict[str, Callable[[], object]], warmup: int = 2) -> dict[str, Timings]:
    """Each call once per round, in turn, so that load from elsewhere on the machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_ >= warmup:
                samples[name].append(time.perf_counter() - started)
    return {name: Timings(values) for name, values in samples.items()}


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` on uvicorn on a free loopback port, in a thread, as `imageforge serve` runs it; yields the URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        listener.close()


def body(size: int, **extra: Any) -> dict[str, Any]:
    return {"prompt": PROMPT, "width": size, "height": size, **extra}


def http_generate(client: httpx.Client, payload: dict[str, Any]) -> bytes:
    response = client.post("/generate", json=payload)
    response.raise_for_status()
    return base64.b64decode(response.json()["image_base64"])


def http_elapsed(client: httpx.Client, payload: dict[str, Any]) -> float:
    """One generation over HTTP; returns the seconds the engine reports for it (`elapsed_s`)."""
    response = client.post("/generate", json=payload)
    response.raise_for_status()
    return float(response.json()["elapsed_s"])


@contextmanager
def mcp_session(url: str) -> Iterator[Callable[[int], float]]:
    """An MCP session over Streamable HTTP (the official client) in a background event loop; yields a blocking
    call of `generate_image` at a given size, which returns the seconds the engine reports (`elapsed_s`)."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(f"{url}/mcp")) as mcp:

        def generate(size: int) -> float:
            arguments = {"prompt": PROMPT, "width": size, "height": size}
            result = portal.call(mcp.call_tool, "generate_image", arguments)
            assert not result.is_error, result
            return float(result.structured_content["elapsed_s"])

        yield generate


def throughput(url: str, size: int, clients: int, per_client: int) -> dict[str, float]:
    """`clients` threads, each with its own connection, sending `per_client` requests back to back."""

    def client_run(_: int) -> list[float]:
        latencies = []
        with httpx.Client(base_url=url, timeout=120) as client:
            for _ in range(per_client):
                started = time.perf_counter()
                http_generate(client, body(size))
                latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [latency for run in pool.map(client_run, range(clients)) for latency in run]
    wall = time.perf_counter() - started
    timings = Timings(latencies)
    return {"images_per_s": len(latencies) / wall, "latency_p50_ms": timings.p50, "latency_p95_ms": timings.p95}


def queue_round_trip(root: Path, runs: int) -> Timings:
    """Submit a job that does nothing and wait for it: the queue's own cost (SQLite writes, thread hand-off)."""
    queue = EmbeddedJobQueue(JobStore(root / "noop.sqlite3"), QueueLimits(max_queued=8))
    queue.register("noop", lambda payload, context: {})
    queue.start()
    try:
        return timed(lambda: queue.wait(queue.submit("noop", {}).id), runs)
    finally:
        queue.close()


def parts(root: Path, image_png: bytes, runs: int) -> dict[str, Timings]:
    """The service's own work on one result, each part alone."""
    image = Image.open(io.BytesIO(image_png)).convert("RGB")
    record = {"prompt": PROMPT, "seed": 1, "steps": 2, "width": image.width, "height": image.height, "model": "tiny"}
    png = encode_png(image, record)
    outputs = OutputStore(root / "parts-outputs")
    cache = ArtifactCache(root / "parts-cache")
    cache.put("k" * 64, png, record)
    return {
        "png_encode": timed(lambda: encode_png(image, record), runs),
        "base64": timed(lambda: base64.b64encode(png).decode(), runs),
        "mcp_preview": timed(lambda: preview_content(png, McpOptions().preview_px), runs),
        "store_write": timed(lambda: outputs.save(png, record), runs),
        "cache_read": timed(lambda: cache.get("k" * 64), runs),
        "queue_round_trip": queue_round_trip(root, runs),
    }


def validated(service: ImageService, params: GenerationParams, model: str) -> GenerationRequest:
    """The request the engine runs for `params`, as the service's own check makes it (text only: no input paths)."""
    return RequestValidator(service.limits, InputPaths(Path.cwd(), [])).validate(params, service.catalog.require(model))


def latencies(
    service: ImageService,
    engine: LoadedModel,
    client: httpx.Client,
    mcp_generate: Callable[[int], float],
    size: int,
    runs: int,
) -> dict[str, float]:
    """One image of `size` through the engine alone, the service in-process, HTTP and MCP: p50 and p95 in ms."""
    params = GenerationParams(task=Task.TEXT2IMG, prompt=PROMPT, width=size, height=size, use_cache=False)
    request = validated(service, params, "tiny")
    timings = interleaved(
        runs,
        {
            "direct": lambda: engine.generate(request, lambda progress: None, lambda: False),
            "service": lambda: service.generate(params),
            "http": lambda: http_generate(client, body(size, use_cache=False)),
            "mcp": lambda: mcp_generate(size),
        },
    )
    return (
        {f"{name}_ms": timing.p50 for name, timing in timings.items()}
        | {f"{name}_p95_ms": timing.p95 for name, timing in timings.items()}
        | {f"{name}_best_ms": timing.best for name, timing in timings.items()}
    )


def run(runs: int, clients: int, sizes: list[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="imageforge-bench-") as folder:
        return run_in(Path(folder), runs, clients, sizes)


def run_in(root: Path, runs: int, clients: int, sizes: list[int]) -> dict[str, Any]:
    """The whole benchmark with its data (the built `tiny` model, outputs, jobs) under `root`; the server's
    shutdown closes the service."""
    settings = Settings(
        _env_file=None,
        default_model="tiny",
        root_dir=root,
        data_dir=root / "data",
        ollama_url="http://127.0.0.1:9",
        max_queue=max(32, clients * 2),
    )
    service = build_service(settings)
    spec = service.catalog.require("tiny")
    engine = DiffusersBackend(device=settings.device, models_path=settings.models_path).load(spec)
    results: dict[str, Any] = {"runs": runs, "clients": clients, "sizes": {}}
    with (
        serving(create_app(service)) as url,
        httpx.Client(base_url=url, timeout=120) as client,
        mcp_session(url) as mcp_generate,
    ):
        for size in sizes:
            results["sizes"][size] = latencies(service, engine, client, mcp_generate, size, runs)
        cache_size = max(sizes)
        seeded = body(cache_size, seed=1234, use_cache=True)
        png = http_generate(client, seeded)
        hit = timed(lambda: http_generate(client, seeded), runs * 2)
        results["cache_hit"] = {"size": cache_size, "p50_ms": hit.p50, "p95_ms": hit.p95}
        direct_rate = 1000 / results["sizes"][min(sizes)]["direct_ms"]
        results["throughput"] = {
            "size": min(sizes),
            "direct_images_per_s": direct_rate,
            **throughput(url, min(sizes), clients, per_client=max(2, runs // 2)),
        }
    results["parts"] = {
        name: {"p50_ms": timing.p50, "p95_ms": timing.p95} for name, timing in parts(root, png, runs).items()
    }
    return results


def full_size(runs: int) -> dict[str, Any]:
    """The service's overhead on the sd-turbo architecture with random weights, 512x512, 1 step, full VAE.

    On a CPU one such image varies by several percent from run to run, more than the overhead measured, so the
    overhead is taken per request: the request's wall time minus the engine time the same request reports
    (`elapsed_s`: the model's generate call with the pool and policy around it). A direct engine call on a
    second copy of the model, in turn with the others, gives the base for the percentage.
    """
    from engine import build  # bench/engine.py, beside this file

    with tempfile.TemporaryDirectory(prefix="imageforge-bench-") as folder:
        root = Path(folder)
        model, taesd = build("sd-turbo", root / "weights")
        models_file = root / "models.toml"
        models_file.write_text(
            f'[models.bench]\nsource = "{model}"\nfamily = "sd"\nsteps = 1\nguidance = 0.0\nsize = 512\n'
            f'fast_decoder = "{taesd}"\n'
        )
        settings = Settings(
            _env_file=None,
            default_model="bench",
            models_file=models_file,
            root_dir=root,
            data_dir=root / "data",
            ollama_url="http://127.0.0.1:9",
        )
        backend = DiffusersBackend(device=settings.device, models_path=settings.models_path)
        service = build_service(settings, backend=backend)
        params = GenerationParams(task=Task.TEXT2IMG, prompt=PROMPT, width=512, height=512, use_cache=False)
        request = validated(service, params, "bench")
        engine = backend.load(service.catalog.require("bench"))  # a second copy, outside the service's pool

        def direct() -> float:
            engine.generate(request, lambda progress: None, lambda: False)
            return 0.0  # nothing around the engine: the whole wall time is the base

        samples: dict[str, list[float]] = {"direct": [], "http": [], "mcp": []}
        with (
            serving(create_app(service)) as url,
            httpx.Client(base_url=url, timeout=600) as client,
            mcp_session(url) as mcp_generate,
        ):
            calls: dict[str, Callable[[], float]] = {
                "direct": direct,
                "http": lambda: http_elapsed(client, body(512, use_cache=False)),
                "mcp": lambda: mcp_generate(512),
            }
            for round_ in range(1 + runs):  # round 0 is the warm-up
                for name, call in calls.items():
                    started = time.perf_counter()
                    engine_s = call()  # what the request reports as the engine's time
                    if round_:
                        samples[name].append(time.perf_counter() - started - engine_s)
        engine.close()
    direct = Timings(samples["direct"])
    results: dict[str, Any] = {"runs": runs, "size": 512, "direct_ms": direct.p50, "direct_best_ms": direct.best}
    for path in ("http", "mcp"):
        overhead = Timings(samples[path])
        results[f"{path}_overhead_ms"] = overhead.p50
        results[f"{path}_overhead_p95_ms"] = overhead.p95
        results[f"{path}_overhead_pct"] = 100 * overhead.p50 / direct.p50
    return results


class _Ignored:
    """A metric family that records nothing, standing in for each of `Metrics`' families."""

    def labels(self, *values: str) -> _Ignored:
        return self

    def inc(self, amount: float = 1) -> None:
        return None

    def observe(self, amount: float) -> None:
        return None

    def set(self, value: float) -> None:
        return None

    def set_function(self, read: Callable[[], float]) -> None:
        return None

    def remove(self, *values: str) -> None:
        return None


class NoMetrics(Metrics):
    """`Metrics` whose every family records nothing: the service as it was before it counted."""

    def __init__(self) -> None:
        super().__init__()
        for name, family in list(vars(self).items()):
            if name != "registry" and hasattr(family, "labels"):
                setattr(self, name, _Ignored())


def one_requests_recording(metrics: Metrics) -> None:
    """The recording calls one unseeded `tiny` `POST /generate` makes, in the order it makes them."""
    metrics.jobs_submitted.labels("image").inc()
    metrics.queue_wait.observe(0.001)
    metrics.generation_seconds.labels("tiny", "text2img", "cpu/float32").observe(0.02)
    metrics.job_finished("image", "succeeded", None)
    metrics.observe_request("/generate", "POST", 200, 0.03)


def metrics_overhead(runs: int) -> dict[str, Any]:
    """A `tiny` request (64x64, 1 step, no cache) over HTTP with metrics and without, in turn, plus a second server
    without metrics as the noise reference (the same comparison where nothing differs), and the recording calls of
    one request timed alone (averaged over many)."""
    names = ("with", "without", "without_again")
    with tempfile.TemporaryDirectory(prefix="imageforge-bench-") as folder, contextlib.ExitStack() as stack:
        root = Path(folder)
        payload = {"prompt": PROMPT, "width": 64, "height": 64, "steps": 1, "use_cache": False}
        calls: dict[str, Callable[[], object]] = {}
        for name in names:
            settings = Settings(
                _env_file=None,
                default_model="tiny",
                root_dir=root / name,
                data_dir=root / name / "data",
                ollama_url="http://127.0.0.1:9",
            )
            service = build_service(settings, metrics=Metrics() if name == "with" else NoMetrics())
            url = stack.enter_context(serving(create_app(service)))
            client = stack.enter_context(httpx.Client(base_url=url, timeout=120))
            calls[name] = functools.partial(http_generate, client, payload)
        samples: dict[str, list[float]] = {name: [] for name in names}
        # The order turns each round: the first request of a round is slower, whichever server gets it.
        for round_ in range(5 + runs):
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                started = time.perf_counter()
                calls[name]()
                if round_ >= 5:
                    samples[name].append(time.perf_counter() - started)
    timings = {name: Timings(values) for name, values in samples.items()}
    metrics = Metrics()
    repeats = 20_000
    started = time.perf_counter()
    for _ in range(repeats):
        one_requests_recording(metrics)
    recording_ms = 1000 * (time.perf_counter() - started) / repeats
    with_, without, again = timings["with"], timings["without"], timings["without_again"]
    return {
        "runs": runs,
        "with_ms": with_.p50,
        "without_ms": without.p50,
        "with_best_ms": with_.best,
        "without_best_ms": without.best,
        "difference_ms": with_.p50 - without.p50,
        "ratio": with_.p50 / without.p50,
        "noise_ms": again.p50 - without.p50,
        "recording_per_request_ms": recording_ms,
    }


def report_metrics(results: dict[str, Any]) -> list[tuple[str, bool]]:
    print(f"tiny, 64x64, 1 step, HTTP POST /generate, {results['runs']} runs each, in turn; p50 (fastest)")
    print(f"  with metrics:    {results['with_ms']:7.2f} ms ({results['with_best_ms']:.2f})")
    print(f"  without metrics: {results['without_ms']:7.2f} ms ({results['without_best_ms']:.2f})")
    print(f"  difference:      {results['difference_ms']:+7.2f} ms (ratio {results['ratio']:.3f})")
    print(f"  noise: a second server without metrics differs by {results['noise_ms']:+.2f} ms")
    print(f"  the recording calls of one request, alone: {1000 * results['recording_per_request_ms']:.1f} µs")
    target = (
        f"metrics' recording per tiny request < {METRICS_OVERHEAD_MS_MAX:g} ms",
        results["recording_per_request_ms"] < METRICS_OVERHEAD_MS_MAX,
    )
    print(f"\n{'PASS' if target[1] else 'FAIL'}  {target[0]}")
    return [target]


def report_full_size(results: dict[str, Any]) -> list[tuple[str, bool]]:
    direct_s, best_s = results["direct_ms"] / 1000, results["direct_best_ms"] / 1000
    print(f"sd-turbo architecture, 512x512, 1 step, {results['runs']} runs")
    print(f"  direct engine call: p50 {direct_s:.3f} s (fastest {best_s:.3f} s)")
    print("  overhead per request (its wall time minus the engine time it reports):")
    for path in ("http", "mcp"):
        ms, p95, pct = (results[f"{path}_overhead{suffix}"] for suffix in ("_ms", "_p95_ms", "_pct"))
        print(f"    {path.upper():<4} p50 {ms:.1f} ms (p95 {p95:.1f} ms) = {pct:.2f}% of the direct call")
    target = (
        f"HTTP overhead at full size < {FULL_SIZE_OVERHEAD_PCT_MAX:g}%",
        results["http_overhead_pct"] < FULL_SIZE_OVERHEAD_PCT_MAX,
    )
    print(f"\n{'PASS' if target[1] else 'FAIL'}  {target[0]}")
    return [target]


def report(results: dict[str, Any]) -> list[tuple[str, bool]]:
    """Print the tables; returns the targets with whether each passed."""
    print("p50 of the runs (fastest run in brackets); overhead = the path's time minus the direct engine call's")
    print(f"{'size':>5} {'direct':>15} {'service':>15} {'HTTP':>15} {'MCP':>15}   {'HTTP overhead':>24}   MCP overhead")
    for size, row in results["sizes"].items():

        def cell(path: str, row: dict[str, float] = row) -> str:
            return f"{row[f'{path}_ms']:6.1f} ({row[f'{path}_best_ms']:6.1f})"

        def over(path: str, row: dict[str, float] = row) -> str:
            ms, best = row[f"{path}_ms"] - row["direct_ms"], row[f"{path}_best_ms"] - row["direct_best_ms"]
            return f"{ms:+6.1f} ms {100 * ms / row['direct_ms']:+5.1f}% ({best:+6.1f} ms)"

        paths = " ".join(cell(path) for path in ("direct", "service", "http", "mcp"))
        print(f"{size:>5} {paths}   {over('http')}   {over('mcp')}")
    hit = results["cache_hit"]
    print(f"\ncache hit over HTTP, {hit['size']}x{hit['size']}: p50 {hit['p50_ms']:.1f} ms, p95 {hit['p95_ms']:.1f} ms")
    rate = results["throughput"]
    print(
        f"queue, {results['clients']} concurrent HTTP clients at {rate['size']}px: {rate['images_per_s']:.2f} images/s "
        f"(direct, one at a time: {rate['direct_images_per_s']:.2f}/s); latency p50 {rate['latency_p50_ms']:.0f} ms, "
        f"p95 {rate['latency_p95_ms']:.0f} ms"
    )
    print("\nparts, p50 (p95):")
    for name, part in results["parts"].items():
        print(f"  {name:<17} {part['p50_ms']:7.2f} ms ({part['p95_ms']:.2f})")
    smallest = results["sizes"][min(results["sizes"])]
    targets = [
        (
            f"HTTP overhead on tiny at {min(results['sizes'])}px < {HTTP_OVERHEAD_MS_MAX:g} ms",
            smallest["http_ms"] - smallest["direct_ms"] < HTTP_OVERHEAD_MS_MAX,
        ),
        (f"seeded cache hit over HTTP p50 < {CACHE_HIT_P50_MS_MAX:g} ms", hit["p50_ms"] < CACHE_HIT_P50_MS_MAX),
    ]
    print()
    for name, passed in targets:
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per measurement (after 2 warm-up runs)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients for the throughput run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sides in px")
    parser.add_argument("--full-size", action="store_true", help="only the overhead, on the sd-turbo architecture")
    parser.add_argument("--metrics", action="store_true", help="only the cost of the Prometheus metrics, on tiny")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    arguments = parser.parse_args()
    if arguments.metrics:
        results = metrics_overhead(arguments.runs)
        targets = report_metrics(results)
    elif arguments.full_size:
        results = full_size(arguments.runs)
        targets = report_full_size(results)
    else:
        results = run(arguments.runs, arguments.clients, arguments.sizes)
        targets = report(results)
    if arguments.json:
        results["targets"] = dict(targets)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
