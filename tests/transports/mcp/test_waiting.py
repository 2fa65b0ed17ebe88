"""What an agent hears while its job waits: progress for the queue and the model load, repeated while nothing
moves, a time estimate and an ISO expiry in the job's status (as over HTTP), and what cancelling a running job
does. Through the official MCP client, on the tiny model held at each step (tests/gated.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.client import Client
from mcp_types import CallToolResult

from imageforge.domain import GenerationParams, JobStatus, Task
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.mcp.server import McpOptions, build_mcp_server
from tests.gated import GatedBackend
from tests.loopback import serving_app
from tests.transports.mcp.answers import structured_of

pytestmark = pytest.mark.anyio

SMALL: dict[str, Any] = {"width": 64, "height": 64, "steps": 1}
WAIT_S = 60.0


class Heard:
    """The progress messages of one call, and a way to wait for one."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, float | None, str]] = []
        self._changed = anyio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.reports.append((progress, total, message or ""))
        self._changed.set()

    @property
    def messages(self) -> list[str]:
        return [message for _, _, message in self.reports]

    async def until(self, wanted: str, times: int = 1) -> None:
        """Wait until a message starting with `wanted` was heard `times` times."""
        with anyio.fail_after(WAIT_S):
            while sum(message.startswith(wanted) for message in self.messages) < times:
                self._changed = anyio.Event()
                await self._changed.wait()


async def test_a_waiting_calls_progress_says_how_many_jobs_are_ahead_as_the_queue_moves(
    gated: tuple[ImageService, GatedBackend],
) -> None:
    service, backend = gated
    service.submit(GenerationParams(task=Task.TEXT2IMG, prompt="first", **SMALL))
    await anyio.to_thread.run_sync(backend.wait_for_step)
    service.submit(GenerationParams(task=Task.TEXT2IMG, prompt="second", **SMALL))
    heard = Heard()
    results: list[CallToolResult] = []

    async with Client(build_mcp_server(service)) as mcp, anyio.create_task_group() as group:

        async def draw() -> None:
            results.append(await mcp.call_tool("generate_image", {"prompt": "third", **SMALL}, None, heard))

        group.start_soon(draw)
        await heard.until("queued, 2 ahead")
        backend.release(1)  # the first ends, the second starts
        await heard.until("queued, 1 ahead")
        backend.release(1000)

    assert not results[0].is_error
    said = heard.messages
    assert said.index("queued, 2 ahead") < said.index("queued, 1 ahead") < said.index("step 1/1")
    progress = [value for value, _, _ in heard.reports]
    assert progress == sorted(set(progress)), "each notification's progress is above the last one's"


async def test_a_wait_without_news_is_said_again_with_rising_progress(
    gated: tuple[ImageService, GatedBackend],
) -> None:
    service, backend = gated
    heard = Heard()

    async with (
        Client(build_mcp_server(service, McpOptions(progress_every_s=0.05))) as mcp,
        anyio.create_task_group() as group,
    ):
        group.start_soon(mcp.call_tool, "generate_image", {"prompt": "slow", **{**SMALL, "steps": 2}}, None, heard)
        await heard.until("step 1/2 (", times=2)
        backend.release(1000)

    repeats = [(value, total) for value, total, message in heard.reports if message.startswith("step 1/2 (")]
    first, second = repeats[:2]
    assert 1 < first[0] < second[0] < 2, "between step 1 and step 2, still rising"
    assert first[1] == second[1] == 2
    assert "loading tiny" in heard.messages, "the new service loaded its model first"


async def test_job_status_gives_eta_s_and_the_iso_expiry_get_jobs_gives(
    gated: tuple[ImageService, GatedBackend],
) -> None:
    service, backend = gated
    with serving_app(create_app(service)) as url:
        async with Client(build_mcp_server(service)) as mcp:
            job_id = structured_of(await mcp.call_tool("submit_async_job", {"prompt": "a fox", **SMALL, "steps": 3}))[
                "job_id"
            ]
            await anyio.to_thread.run_sync(backend.wait_for_step)
            one_step = structured_of(await mcp.call_tool("get_job_status", {"job_id": job_id}))
            backend.release(1)
            await anyio.to_thread.run_sync(backend.wait_for_step)
            timed = structured_of(await mcp.call_tool("get_job_status", {"job_id": job_id}))
            timed_over_http = httpx.get(f"{url}/jobs/{job_id}").json()
            backend.release(1000)
            await anyio.to_thread.run_sync(lambda: service.wait_job(job_id, WAIT_S))
            ended = structured_of(await mcp.call_tool("get_job_status", {"job_id": job_id}))
            ended_over_http = httpx.get(f"{url}/jobs/{job_id}").json()

    assert (one_step["step"], one_step["eta_s"], one_step["expires_at"]) == (1, None, None), "no step timed yet"
    assert timed["step"] == 2
    assert timed["eta_s"] >= 0
    assert timed_over_http["eta_s"] >= 0
    assert (ended["status"], ended["eta_s"], ended_over_http["eta_s"]) == ("succeeded", None, None)
    assert ended["expires_at"] == ended_over_http["expires_at"]
    expires = datetime.fromisoformat(ended["expires_at"])
    assert expires.utcoffset() is not None, "with its time zone (UTC)"


async def test_cancelling_a_running_job_says_cancelling_was_requested_until_its_next_step(
    gated: tuple[ImageService, GatedBackend],
) -> None:
    service, backend = gated
    async with Client(build_mcp_server(service)) as mcp:
        job_id = structured_of(await mcp.call_tool("submit_async_job", {"prompt": "slow", **{**SMALL, "steps": 20}}))[
            "job_id"
        ]
        await anyio.to_thread.run_sync(backend.wait_for_step)
        requested = structured_of(await mcp.call_tool("cancel_job", {"job_id": job_id}))
        backend.release(1)
        ended = await anyio.to_thread.run_sync(lambda: service.wait_job(job_id, WAIT_S))
        status = structured_of(await mcp.call_tool("get_job_status", {"job_id": job_id}))

    assert requested["status"] == "running"
    assert requested["message"].startswith("Cancelling was requested")
    assert "next step" in requested["message"]
    assert "get_job_status" in requested["next"]
    assert ended.status is JobStatus.CANCELLED
    assert (status["status"], status["message"]) == ("cancelled", None)
