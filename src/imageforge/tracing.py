"""Optional OpenTelemetry spans of a job's life: the request (HTTP, or an MCP tool call), its wait in the queue,
then the job: its model's load, the denoising steps, the decode and the store. Each span carries the job id.

Off unless an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`) and the `tracing` extra is installed; then
spans go over OTLP/HTTP. OpenTelemetry is imported only then: without it every function here does nothing. A
caller's trace continues from a W3C `traceparent` (an HTTP header, or MCP's `_meta`). The embedded queue runs a
job in this process, so its spans continue the submitting request's trace; a worker of the distributed queue is
another process and starts a trace of its own, found by the same `imageforge.job_id`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from imageforge.extras import install_line, missing
from imageforge.logs import current_job_id

log = logging.getLogger(__name__)

#: The attribute every span of a job carries.
JOB_ID = "imageforge.job_id"
#: How many submitted jobs' trace contexts are kept for their run (a job that never runs leaves its entry).
_REMEMBERED = 10_000

_tracer: Any = None
_lock = threading.Lock()
#: job id -> (the trace context it was submitted in, when, in ns since the epoch)
_submitted: OrderedDict[str, tuple[Any, int]] = OrderedDict()


def configure(endpoint: str | None) -> bool:
    """Send spans to the OTLP/HTTP collector at `endpoint` (`http://collector:4318`); None or empty: tracing stays
    off. Without the `tracing` extra, says so in the log and stays off. True when spans are sent."""
    if not endpoint:
        return False
    lacking = missing("tracing")
    if lacking:
        log.warning(
            "tracing to %s is off: it needs OpenTelemetry (%s missing); install it with %s",
            endpoint,
            ", ".join(lacking),
            install_line("tracing"),
        )
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "imageforge"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    use(provider)
    return True


def use(provider: Any) -> None:
    """Record spans with `provider`, an OpenTelemetry `TracerProvider` (tests give one with an in-memory exporter);
    None turns tracing off."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("imageforge")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A span around the block, a child of the current one, with the job id of the job under way."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=_attributes(attributes)):
        yield


def record(name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
    """A span that already ended (from `start_ns` to `end_ns`, since the epoch), a child of the current one: a
    stage whose bounds are known only afterwards (a load inside the model pool, the decode after the last step)."""
    if _tracer is None:
        return
    _tracer.start_span(name, attributes=_attributes(attributes), start_time=start_ns).end(end_time=end_ns)


@contextmanager
def continuing(carrier: Mapping[str, Any] | None) -> Iterator[None]:
    """Within the block, spans continue the trace that `carrier`'s `traceparent` (and `tracestate`) names; a carrier
    without one (or tracing off) changes nothing."""
    if _tracer is None or not carrier or "traceparent" not in carrier:
        yield
        return
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    fields = {name: str(carrier[name]) for name in ("traceparent", "tracestate") if name in carrier}
    token = context.attach(TraceContextTextMapPropagator().extract(fields))
    try:
        yield
    finally:
        context.detach(token)


def submitted(job_id: str) -> None:
    """Remember the trace a job is submitted in, for its `run` in this process."""
    if _tracer is None:
        return
    from opentelemetry import context

    with _lock:
        _submitted[job_id] = (context.get_current(), time.time_ns())
        while len(_submitted) > _REMEMBERED:
            _submitted.popitem(last=False)


@contextmanager
def run(job_id: str, kind: str, created_at: float) -> Iterator[None]:
    """Around a job's run: a `queue` span for its wait since `created_at` (seconds since the epoch), then a `job`
    span for the block, both in the trace it was submitted in when that was in this process."""
    if _tracer is None:
        yield
        return
    from opentelemetry import context

    with _lock:
        parent, submitted_ns = _submitted.pop(job_id, (None, int(created_at * 1e9)))
    token = context.attach(parent) if parent is not None else None
    try:
        attributes = {JOB_ID: job_id, "imageforge.job_kind": kind}
        _tracer.start_span("queue", attributes=attributes, start_time=submitted_ns).end()
        with _tracer.start_as_current_span("job", attributes=attributes):
            yield
    finally:
        if token is not None:
            context.detach(token)


def _attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    job_id = current_job_id()
    return {**attributes, JOB_ID: job_id} if job_id is not None else attributes
