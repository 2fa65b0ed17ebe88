"""MCP Tasks (revision 2025-11-25) on the drawing tools: a job is a task. In memory with the official client on the
handshake revision that has Tasks, on the tiny model held at each step (tests/gated.py); over Streamable HTTP with
API keys, where a key reaches only its own jobs' tasks, and as raw JSON-RPC, the wire shapes a client sees."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND, CallToolResult, ImageContent

from imageforge.domain import Caller, Job, JobStatus
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from imageforge.transports.mcp.server import build_mcp_server
from tests.gated import GatedBackend
from tests.loopback import serving_app
from tests.transports.mcp.answers import error_of, structured_of
from tests.transports.mcp.tasks_client import TASKS_VERSION, TaskCalls

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2}
#: Long enough for a first load of the tiny model on a busy machine.
WAIT_S = 120.0
RELATED_TASK = "io.modelcontextprotocol/related-task"
ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"
ROOT = "root-key-0123456789ab"
KEYS = ApiKeys((("alice", ALICE), ("bob", BOB), ("root", ROOT, True)))


@asynccontextmanager
async def _tasks(service: ImageService) -> AsyncIterator[TaskCalls]:
    async with Client(build_mcp_server(service), mode="legacy") as client:
        yield TaskCalls(client)


async def test_a_drawing_tool_called_as_a_task_answers_its_job_at_once_and_tasks_result_gives_the_image(
    gated: tuple[ImageService, GatedBackend],
) -> None:
    service, backend = gated
    async with _tasks(service) as calls:
        created = (await calls.create("generate_image", {"prompt": "a fox", "seed": 3, **SMALL})).task
        await anyio.to_thread.run_sync(backend.wait_for_step)
        held = await calls.get(created.task_id)
        backend.release(1000)
        answer = await calls.result(created.task_id)
        ended = await calls.get(created.task_id)

    job = service.get_job(created.task_id)
    assert (created.status, created.ttl, created.poll_interval) == ("working", None, 5000)
    assert (held.status, held.status_message) == ("working", "step 1/2")
    drawn = structured_of(answer)
    assert drawn["job_id"] == created.task_id == job.id, "the task is the job"
    assert any(isinstance(block, ImageContent) for block in answer.content)
    assert Path(drawn["output_path"]).is_file()
    assert answer.meta == {RELATED_TASK: {"taskId": created.task_id}}
    assert (ended.status, job.status) == ("completed", JobStatus.SUCCEEDED)
    assert job.expires_at is not None
    assert ended.ttl == round((job.expires_at - job.created_at) * 1000), "kept until the job's result expires"


async def test_a_task_cancelled_while_held_at_a_step_ends_cancelled_and_its_result_says_so(
    gated: tuple[ImageService, GatedBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, backend = gated
    requested = threading.Event()
    cancel_job = service.cancel_job

    def cancel_and_tell(job_id: str, *, caller: Caller) -> Job:
        cancelled = cancel_job(job_id, caller=caller)
        requested.set()
        return cancelled

    monkeypatch.setattr(service, "cancel_job", cancel_and_tell)

    async def release_once_requested() -> None:
        assert await anyio.to_thread.run_sync(requested.wait, 30.0), "tasks/cancel never cancelled the job"
        backend.release(1000)

    async with _tasks(service) as calls:
        task_id = (await calls.create("generate_image", {"prompt": "a fox", **{**SMALL, "steps": 3}})).task.task_id
        await anyio.to_thread.run_sync(backend.wait_for_step)
        async with anyio.create_task_group() as group:
            # The answer waits for the job to stop at its next step: the held step goes once the cancel is asked.
            group.start_soon(release_once_requested)
            cancelling = await calls.cancel(task_id)
        answer = await calls.result(task_id)
        ended = await calls.get(task_id)
        with pytest.raises(MCPError) as again:
            await calls.cancel(task_id)

    assert cancelling.status == "cancelled"
    assert error_of(answer)["code"] == "cancelled"
    assert answer.meta == {RELATED_TASK: {"taskId": task_id}}
    assert ended.status == "cancelled"
    assert service.get_job(task_id).status is JobStatus.CANCELLED
    assert service.get_job(task_id).step < 3, "it stopped before its last step"
    assert again.value.error.code == INVALID_PARAMS
    assert again.value.error.data == {"code": "job_finished", "hint": "Only queued and running jobs can be cancelled."}


async def test_a_queued_task_is_cancelled_at_once(gated: tuple[ImageService, GatedBackend]) -> None:
    service, backend = gated
    async with _tasks(service) as calls:
        await calls.create("generate_image", {"prompt": "first", **SMALL})
        await anyio.to_thread.run_sync(backend.wait_for_step)
        queued = (await calls.create("generate_image", {"prompt": "second", **SMALL})).task
        cancelled = await calls.cancel(queued.task_id)
        backend.release(1000)

    assert (queued.status, queued.status_message) == ("working", "queued, 0 ahead")
    assert cancelled.status == "cancelled"


async def test_edit_image_called_as_a_task_answers_the_edited_image(service: ImageService) -> None:
    async with _tasks(service) as calls:
        source = structured_of(await calls.client.call_tool("generate_image", {"prompt": "a fox", **SMALL}))
        arguments = {"prompt": "a red fox", "image": source["uri"], "strength": 0.5, "steps": 2}
        task = (await calls.create("edit_image", arguments)).task
        edited = structured_of(await calls.result(task.task_id))

    assert edited["job_id"] == task.task_id
    assert edited["task"] == "img2img"
    assert edited["output_path"] != source["output_path"]


async def test_the_drawing_tools_say_they_run_as_tasks_and_a_call_without_task_still_waits_for_the_image(
    service: ImageService,
) -> None:
    async with Client(build_mcp_server(service), mode="legacy") as client:
        support = {tool.name: tool.execution for tool in (await client.list_tools()).tools}
        blocking = await client.call_tool("generate_image", {"prompt": "a fox", **SMALL})
        capabilities = client.server_capabilities.tasks

    assert {name for name, execution in support.items() if execution is not None} == {
        "generate_image",
        "edit_image",
        "inpaint_image",
    }
    assert {execution.task_support for execution in support.values() if execution is not None} == {"optional"}
    assert capabilities is not None
    assert capabilities.model_dump(exclude_none=True) == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    drawn = structured_of(blocking)
    assert service.get_job(drawn["job_id"]).status is JobStatus.SUCCEEDED


async def test_an_unknown_task_id_is_invalid_params_with_job_not_found(service: ImageService) -> None:
    async with _tasks(service) as calls:
        refusals = []
        for ask in (calls.get, calls.result, calls.cancel):
            with pytest.raises(MCPError) as raised:
                await ask("0123456789abcdef")
            refusals.append((raised.value.error.code, (raised.value.error.data or {}).get("code")))

    assert refusals == [(INVALID_PARAMS, "job_not_found")] * 3


async def test_a_tool_that_does_not_draw_cannot_be_called_as_a_task(service: ImageService) -> None:
    async with _tasks(service) as calls:
        with pytest.raises(MCPError) as raised:
            await calls.call_as_task("list_models", {})

    assert raised.value.error.code == METHOD_NOT_FOUND
    assert service.list_jobs() == []


async def test_a_bad_request_called_as_a_task_is_answered_as_the_blocking_call_answers_it(
    service: ImageService,
) -> None:
    async with _tasks(service) as calls:
        raw = await calls.call_as_task("generate_image", {"prompt": "a fox", "model": "no-such-model"})
        unknown_argument = await calls.call_as_task("generate_image", {"prompt": "a fox", "colour": "red"})

    assert error_of(CallToolResult.model_validate(raw, by_name=False))["code"] == "model_not_found"
    assert error_of(CallToolResult.model_validate(unknown_argument, by_name=False))["code"] == "invalid_request"
    assert service.list_jobs() == [], "nothing was queued"


@pytest.fixture
def keyed_url(service: ImageService) -> Iterator[str]:
    with serving_app(create_app(service, api_keys=KEYS)) as url:
        yield url


@asynccontextmanager
async def _tasks_as(url: str, key: str) -> AsyncIterator[TaskCalls]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=WAIT_S) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy") as client,
    ):
        yield TaskCalls(client)


async def test_over_http_a_key_reaches_only_the_tasks_of_its_own_jobs(keyed_url: str) -> None:
    async with _tasks_as(keyed_url, ALICE) as alice:
        task_id = (await alice.create("generate_image", {"prompt": "alice's fox", **SMALL})).task.task_id
        answer = await alice.result(task_id)
        alices_list = [task.task_id for task in (await alice.list()).tasks]
    async with _tasks_as(keyed_url, BOB) as bob:
        refusals = []
        for ask in (bob.get, bob.result, bob.cancel):
            with pytest.raises(MCPError) as raised:
                await ask(task_id)
            refusals.append((raised.value.error.code, (raised.value.error.data or {}).get("code")))
        bobs_list = [task.task_id for task in (await bob.list()).tasks]
    async with _tasks_as(keyed_url, ROOT) as root:
        seen_by_admin = (await root.get(task_id)).status

    assert structured_of(answer)["url"].startswith(f"{keyed_url}/images/"), "the link is at the origin the client used"
    assert alices_list == [task_id]
    assert refusals == [(INVALID_PARAMS, "job_not_found")] * 3
    assert bobs_list == []
    assert seen_by_admin == "completed"


def _answer(response: httpx.Response, request_id: int) -> dict[str, Any]:
    """The JSON-RPC answer to `request_id` in a Streamable HTTP response, whether JSON or an SSE stream."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/json"):
        message: dict[str, Any] = response.json()
        return message
    for line in response.text.splitlines():
        if line.startswith("data:") and (message := json.loads(line[5:])).get("id") == request_id:
            return message
    raise AssertionError(f"no answer to {request_id} in {response.text!r}")


def test_over_raw_json_rpc_a_task_round_trip_has_the_spec_wire_shapes(service: ImageService) -> None:
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": TASKS_VERSION}
    with serving_app(create_app(service)) as url, httpx.Client(base_url=url, timeout=WAIT_S) as http:

        def rpc(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            return _answer(http.post("/mcp", json=body, headers=headers), request_id)

        hello = {"protocolVersion": TASKS_VERSION, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
        opened = http.post(
            "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}, headers=headers
        )
        initialized = _answer(opened, 1)["result"]
        headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        tools = {tool["name"]: tool for tool in rpc(2, "tools/list", {})["result"]["tools"]}
        call = {"name": "generate_image", "arguments": {"prompt": "a fox", **SMALL}, "task": {"ttl": 60000}}
        created = rpc(3, "tools/call", call)["result"]
        task_id = created["task"]["taskId"]
        answer = rpc(4, "tasks/result", {"taskId": task_id})["result"]
        got = rpc(5, "tasks/get", {"taskId": task_id})["result"]
        listed = rpc(6, "tasks/list", {})["result"]
        unknown = rpc(7, "tasks/get", {"taskId": "0123456789abcdef"})["error"]

    assert initialized["capabilities"]["tasks"] == {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
    assert tools["generate_image"]["execution"] == {"taskSupport": "optional"}
    assert "execution" not in tools["list_models"]
    assert set(created["task"]) == {
        "taskId",
        "status",
        "statusMessage",
        "createdAt",
        "lastUpdatedAt",
        "ttl",
        "pollInterval",
    }
    assert created["task"]["status"] == "working"
    assert answer["structuredContent"]["job_id"] == task_id
    assert answer["_meta"] == {RELATED_TASK: {"taskId": task_id}}
    assert {block["type"] for block in answer["content"]} == {"image", "text", "resource_link"}
    assert (got["taskId"], got["status"], got["pollInterval"]) == (task_id, "completed", 5000)
    assert isinstance(got["ttl"], int)
    assert [task["taskId"] for task in listed["tasks"]] == [task_id]
    assert unknown["code"] == INVALID_PARAMS
    assert unknown["data"]["code"] == "job_not_found"
