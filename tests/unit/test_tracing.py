"""OpenTelemetry spans of a job's life, recorded by the SDK's in-memory exporter: a request's trace goes on through
the queue into the job's load, denoise, decode and store, each span carrying the job id, and a caller's trace
continues from its `traceparent` (an HTTP header, MCP's `_meta`)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import pytest
from fastapi.testclient import TestClient
from mcp.client.client import Client
from mcp_types import RequestParamsMeta
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from imageforge import tracing
from imageforge.service import ImageService
from imageforge.transports.mcp.server import McpOptions, build_mcp_server

#: A caller's trace: W3C trace context version 00, its trace id, its span id, sampled.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
JOB_STAGES = ["load", "denoise", "decode", "store"]
WAIT_S = 120.0


class _JobSpanEnded(SpanProcessor):
    """Sets `ended` once a `job` span ends: the job's last span, which ends after its waiters are woken."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == "job":
            self.ended.set()


@dataclass
class Recorded:
    exporter: InMemorySpanExporter
    job_ended: threading.Event

    def spans(self) -> dict[str, ReadableSpan]:
        """The finished spans by name (each name once in these tests)."""
        assert self.job_ended.wait(WAIT_S), "the job span never ended"
        return {span.name: span for span in self.exporter.get_finished_spans()}


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    exporter = InMemorySpanExporter()
    watcher = _JobSpanEnded()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(watcher)
    tracing.use(provider)
    try:
        yield Recorded(exporter, watcher.ended)
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    span_id: int = span.context.span_id
    return span_id


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def _assert_job_stages_under(spans: dict[str, ReadableSpan], parent: ReadableSpan, job_id: str) -> None:
    """`queue` and `job` are children of `parent`; the stages are children of `job`; all carry the job id."""
    assert _parent_id(spans["queue"]) == _span_id(parent)
    assert _parent_id(spans["job"]) == _span_id(parent)
    for stage in JOB_STAGES:
        assert _parent_id(spans[stage]) == _span_id(spans["job"]), stage
    for name in ["queue", "job", *JOB_STAGES]:
        attributes = spans[name].attributes
        assert attributes is not None
        assert attributes[tracing.JOB_ID] == job_id, name
        assert spans[name].context is not None
        assert spans[name].context.trace_id == int(TRACE_ID, 16), name


def test_an_http_requests_trace_goes_on_through_the_queue_into_each_stage_of_its_job(
    client: TestClient, service: ImageService, recorded: Recorded
) -> None:
    answer = client.post(
        "/jobs", json={"prompt": "a fox", "width": 64, "height": 64, "steps": 1}, headers={"traceparent": TRACEPARENT}
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert service.wait_job(job_id, timeout=WAIT_S).status.value == "succeeded"

    spans = recorded.spans()
    request = spans["HTTP POST"]
    assert request.parent is not None
    assert request.parent.span_id == int(CALLER_SPAN_ID, 16), "the request continues the caller's trace"
    assert request.attributes is not None
    assert request.attributes["url.path"] == "/jobs"
    _assert_job_stages_under(spans, request, job_id)
    assert spans["denoise"].start_time is not None
    assert spans["decode"].start_time is not None
    assert spans["denoise"].start_time <= spans["decode"].start_time


@pytest.mark.anyio
async def test_an_mcp_tool_call_continues_the_trace_its_meta_carries(service: ImageService, recorded: Recorded) -> None:
    async with Client(build_mcp_server(service, McpOptions())) as mcp:
        # An open map by the protocol (extra_items), which mypy does not read: the cast says so.
        meta = cast(RequestParamsMeta, {"traceparent": TRACEPARENT})
        arguments = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1}
        result = await mcp.call_tool("generate_image", arguments, meta=meta)
    assert not result.is_error, result
    assert result.structured_content is not None

    spans = recorded.spans()
    tool = spans["MCP generate_image"]
    assert tool.parent is not None
    assert tool.parent.span_id == int(CALLER_SPAN_ID, 16)
    _assert_job_stages_under(spans, tool, result.structured_content["job_id"])


def test_with_no_provider_the_spans_do_nothing() -> None:
    with tracing.span("anything"), tracing.continuing({"traceparent": TRACEPARENT}):
        tracing.record("nothing", 0, 1)
        tracing.submitted("job")
        with tracing.run("job", "image", 0.0):
            pass


def test_an_endpoint_without_the_tracing_extra_leaves_tracing_off_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A None in sys.modules is how Python marks a module that cannot be imported: the exporter is not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http", None)

    with caplog.at_level(logging.WARNING, logger="imageforge.tracing"):
        assert tracing.configure("http://collector:4318") is False

    assert "pip install 'imageforge[tracing]'" in caplog.text
    assert tracing.configure("") is False
