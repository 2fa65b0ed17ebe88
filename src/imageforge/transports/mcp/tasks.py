"""MCP Tasks (protocol revision 2025-11-25) on imageforge's jobs: a job is a task, and the task's id is the job's.

A client that sends `task` with a `tools/call` of a drawing tool gets a `CreateTaskResult` at once (the job it
submitted, `working`), then polls `tasks/get`, reads the answer with `tasks/result` (it waits for the job and is the
same `CallToolResult` the blocking call answers), stops it with `tasks/cancel` (as `cancel_job` does) or lists its
jobs with `tasks/list`. A client that sends no `task` keeps the blocking call.

The SDK (mcp 2.3.0) keeps Tasks types-only: its high-level server can neither mark a tool task-capable nor answer a
`tools/call` with anything but a `CallToolResult`, and it routes no `tasks/*` method. So Tasks live here, in one
server middleware, the SDK's lower layer: it adds the capability to the `initialize` answer, answers a
task-augmented call with the job the tool submitted, and serves the `tasks/*` methods. The drawing tool itself still
parses and checks the arguments and submits the job; `task_ticket` tells it to hand the job over instead of waiting.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import mcp_types.methods as wire
from anyio import to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    CallToolResult,
    PaginatedRequestParams,
    RequestParams,
    Task,
    TaskStatus,
    ToolExecution,
)
from mcp_types import Tool as MCPTool
from pydantic import BaseModel, ValidationError

from imageforge.domain import Caller, Job, JobStatus, iso_time
from imageforge.errors import ImageforgeError
from imageforge.transports.mcp.results import error_result, image_result
from imageforge.transports.mcp.tools.jobs import POLL_INTERVAL_S
from imageforge.transports.mcp.tools.toolkit import Toolkit, request_base_url, request_caller, request_client

#: The protocol revision whose Tasks this module serves; later revisions moved Tasks to an extension.
TASKS_VERSION = "2025-11-25"
#: The tools a client may call as a task: those that draw, whose job may wait in the queue and run for minutes.
TASK_TOOLS = frozenset({"generate_image", "edit_image", "inpaint_image"})
#: How long tasks/cancel waits for a running job to stop at its next step before it answers.
CANCEL_WAIT_S = 30.0
#: What `initialize` advertises: task-augmented tools/call, tasks/list and tasks/cancel.
CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
#: Where a task's final answer names its task.
RELATED_TASK = "io.modelcontextprotocol/related-task"
#: How long a client should wait between two tasks/get.
POLL_INTERVAL_MS = POLL_INTERVAL_S * 1000
#: The most tasks tasks/list answers: the caller's newest jobs.
LIST_LIMIT = 100

#: A job's status as a task's.
TASK_STATUS: dict[JobStatus, TaskStatus] = {
    JobStatus.QUEUED: "working",
    JobStatus.RUNNING: "working",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


@dataclass
class TaskTicket:
    """A task-augmented tool call being served: the drawing tool puts the job it submitted here and returns at
    once instead of following it."""

    job_id: str | None = None


_Params = TypeVar("_Params", bound=BaseModel)

_TICKET: ContextVar[TaskTicket | None] = ContextVar("imageforge_task_ticket", default=None)


def task_ticket() -> TaskTicket | None:
    """The ticket of the task-augmented call this tool call serves; None for a blocking call."""
    return _TICKET.get()


def with_task_support(tool: MCPTool) -> MCPTool:
    """`tool` as tools/list shows it: a drawing tool says that it may run as a task (`execution.taskSupport`)."""
    if tool.name not in TASK_TOOLS:
        return tool
    return tool.model_copy(update={"execution": ToolExecution(task_support="optional")})


class _TaskIdParams(RequestParams):
    task_id: str


class TaskMiddleware:
    """Tasks for the drawing tools, on the server's connections that speak revision 2025-11-25."""

    def __init__(self, kit: Toolkit) -> None:
        self._kit = kit
        self._methods: dict[str, Callable[[ServerRequestContext[Any, Any], Caller, str], Awaitable[HandlerResult]]] = {
            "tasks/get": self._get,
            "tasks/result": self._result,
            "tasks/cancel": self._cancel,
        }

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "initialize":
            return _advertised(await call_next(ctx))
        # Before the handshake, the SDK's own gate answers; after it, only the revision with Tasks has them.
        if ctx.request_id is None or ctx.session.client_params is None or ctx.protocol_version != TASKS_VERSION:
            return await call_next(ctx)
        params: Mapping[str, Any] = ctx.params or {}
        if ctx.method == "tools/call" and params.get("task") is not None:
            return await self._create(ctx, call_next, params)
        caller = request_caller(ctx.request)
        if ctx.method == "tasks/list":
            return await self._list(caller, _parsed(PaginatedRequestParams, params))
        method = self._methods.get(ctx.method)
        if method is None:
            return await call_next(ctx)
        return await method(ctx, caller, _parsed(_TaskIdParams, params).task_id)

    async def _create(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext, params: Mapping[str, Any]
    ) -> HandlerResult:
        """Run the drawing tool with a ticket: it checks the arguments and submits the job as the blocking call
        would, then answers the job as a new task. A request refused before it became a job is answered as the
        blocking call answers it, a tool error with the error's code."""
        name = params.get("name")
        if name not in TASK_TOOLS:
            raise MCPError(
                METHOD_NOT_FOUND,
                f"Tool '{name}' does not run as a task.",
                data={"code": "invalid_request", "hint": f"Call it without `task`; tasks: {sorted(TASK_TOOLS)}."},
            )
        ticket = TaskTicket()
        token = _TICKET.set(ticket)
        try:
            answer = await call_next(ctx)
        finally:
            _TICKET.reset(token)
        if ticket.job_id is None:
            return answer
        job = await self._job(request_caller(ctx.request), ticket.job_id)
        return {"task": await to_thread.run_sync(self._task, job)}

    async def _get(self, ctx: ServerRequestContext[Any, Any], caller: Caller, task_id: str) -> HandlerResult:
        return await to_thread.run_sync(self._task, await self._job(caller, task_id))

    async def _result(self, ctx: ServerRequestContext[Any, Any], caller: Caller, task_id: str) -> HandlerResult:
        """Wait for the job to end, then answer what the blocking call would have: its images, or its error."""
        await self._job(caller, task_id)
        try:
            job = await self._kit.service.wait(task_id, caller=caller)
            answer = await to_thread.run_sync(self._image, job, request_base_url(ctx.request))
        except ImageforgeError as exc:
            answer = error_result(exc)
        wired = wire.serialize_server_result(
            "tools/call", TASKS_VERSION, answer.model_dump(by_alias=True, mode="json", exclude_none=True)
        )
        return {**wired, "_meta": {**wired.get("_meta", {}), RELATED_TASK: {"taskId": task_id}}}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], caller: Caller, task_id: str) -> HandlerResult:
        """Cancel the job as cancel_job does: a queued one at once, a running one at its next step, which the
        answer waits for (up to CANCEL_WAIT_S) so that it says `cancelled` as the specification asks; a step
        slower than that leaves it `working`, and its message says so. One that has ended is refused
        (`job_finished`)."""
        client = request_client(ctx.request)
        cancel = functools.partial(self._kit.service.cancel_job, task_id, caller=caller)
        try:
            job = await to_thread.run_sync(cancel)
        except ImageforgeError as exc:
            self._kit.record(client, "tasks/cancel", exc.code, task_id, None)
            raise _refused(exc) from exc
        self._kit.record(client, "tasks/cancel", "ok", task_id, None)
        if not job.status.is_terminal:
            with anyio.move_on_after(CANCEL_WAIT_S), contextlib.suppress(ImageforgeError):
                job = await self._kit.service.wait(task_id, caller=caller)
        task = await to_thread.run_sync(self._task, job)
        if not job.status.is_terminal:
            task["statusMessage"] = "cancelling: the job stops at its next step"
        return task

    async def _list(self, caller: Caller, params: PaginatedRequestParams) -> HandlerResult:
        if params.cursor is not None:
            raise MCPError(INVALID_PARAMS, "Unknown cursor.", data={"code": "invalid_request", "hint": "Omit it."})

        def listed() -> list[dict[str, Any]]:
            return [self._task(job) for job in self._kit.service.list_jobs(limit=LIST_LIMIT, caller=caller)]

        return {"tasks": await to_thread.run_sync(listed)}

    async def _job(self, caller: Caller, task_id: str) -> Job:
        """The caller's job of that id; another caller's, an unknown or an expired one is an unknown task."""
        try:
            return await to_thread.run_sync(functools.partial(self._kit.service.get_job, task_id, caller=caller))
        except ImageforgeError as exc:
            raise _refused(exc) from exc

    def _image(self, job: Job, base_url: str | None) -> CallToolResult:
        return image_result(job.id, self._kit.service.image_result(job), base_url, self._kit.options)

    def _task(self, job: Job) -> dict[str, Any]:
        """`job` as a task on the wire. `ttl` is from its creation to when its result is gone (`expires_at`), known
        once it has ended; until then it is null, since a job is kept as long as it runs."""
        ttl = None if job.expires_at is None else round((job.expires_at - job.created_at) * 1000)
        updated = job.finished_at or job.started_at or job.created_at
        task = Task(
            task_id=job.id,
            status=TASK_STATUS[job.status],
            status_message=self._message(job),
            created_at=str(iso_time(job.created_at)),
            last_updated_at=str(iso_time(updated)),
            ttl=ttl,
            poll_interval=POLL_INTERVAL_MS,
        )
        # `ttl` is a required field that may be null: excluding the other absent fields must keep it.
        return {**task.model_dump(by_alias=True, mode="json", exclude_none=True), "ttl": ttl}

    def _message(self, job: Job) -> str | None:
        if job.error is not None:
            return job.error["message"]
        if job.status is JobStatus.QUEUED:
            position = self._kit.service.queue_position(job.id)
            return "queued" if not position else f"queued, {position - 1} ahead"
        if job.status is JobStatus.RUNNING:
            return f"step {job.step}/{job.total}" if job.total else "running"
        return None


def _advertised(answer: HandlerResult) -> HandlerResult:
    """The `initialize` answer, with the Tasks capability where the negotiated revision has Tasks."""
    if not isinstance(answer, dict) or answer.get("protocolVersion") != TASKS_VERSION:
        return answer
    capabilities = answer.get("capabilities", {})
    return {**answer, "capabilities": {**capabilities, "tasks": CAPABILITY}}


def _parsed(model: type[_Params], params: Mapping[str, Any]) -> _Params:
    try:
        return model.model_validate(params, by_name=False)
    except ValidationError as exc:
        fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
        message = f"Invalid params: {', '.join(fields)}."
        raise MCPError(INVALID_PARAMS, message, data={"code": "invalid_request"}) from exc


def _refused(exc: ImageforgeError) -> MCPError:
    """A refused tasks/* request as JSON-RPC's invalid params, with the error's code and hint as its data."""
    return MCPError(INVALID_PARAMS, exc.message, data={"code": exc.code, "hint": exc.hint})
