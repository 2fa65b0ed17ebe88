"""The image tools that draw and wait: generate_image, edit_image, inpaint_image and replay_image.

Each submits the caller's request as a job and follows it: where it waits in the queue ("queued, 2 ahead"), its
model loading ("loading sd-turbo") and its steps ("step 3/20") go out as MCP progress notifications, a client that
cancels the call cancels the job, and the answer is the image.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from anyio import to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from imageforge import tracing
from imageforge.domain import Caller, ImageResult, Job, JobEvent, JobStatus, Task
from imageforge.errors import ImageforgeError
from imageforge.service import ImageService
from imageforge.transports.mcp.arguments import (
    IMAGE_FIELDS,
    IMAGE_FORMS,
    ImageInput,
    MaskInput,
    declared_arguments,
    request_params,
)
from imageforge.transports.mcp.results import RESULT_NOTE, ImageOutput, error_result, image_result
from imageforge.transports.mcp.tasks import task_ticket
from imageforge.transports.mcp.tools.toolkit import DRAWING, Toolkit, base_url, caller_of, client_of


def register_image_tools(mcp: MCPServer, kit: Toolkit) -> None:
    """Add generate_image, edit_image, inpaint_image and replay_image to `mcp`."""

    @mcp.tool(
        title="Generate an image",
        description="Draw an image from a text prompt on the local engine and wait for it. Best for "
        "illustrations, concept art, icons and photos of ideas; fast with the default model (seconds)."
        + RESULT_NOTE
        + kit.restricted,
        annotations=DRAWING,
    )
    @declared_arguments(*IMAGE_FIELDS, "width", "height")
    async def generate_image(ctx: Context, **fields: Any) -> Annotated[CallToolResult, ImageOutput]:
        def submit(caller: Caller) -> Job:
            return kit.service.submit(request_params(Task.TEXT2IMG, **fields), caller=caller)

        return await _draw(kit, ctx, "generate_image", fields, submit)

    @mcp.tool(
        title="Edit an image",
        description="Change an existing image following a prompt (image to image), keeping its composition; "
        "strength 0.3 stays close to it, 0.8 changes a lot. The size follows the input unless width and height "
        "are given." + RESULT_NOTE + kit.restricted,
        annotations=DRAWING,
    )
    @declared_arguments(*IMAGE_FIELDS, "strength", "width", "height")
    async def edit_image(ctx: Context, *, image: ImageInput, **fields: Any) -> Annotated[CallToolResult, ImageOutput]:
        def submit(caller: Caller) -> Job:
            params = request_params(Task.IMG2IMG, image=kit.image(ctx, image), **fields)
            return kit.service.submit(params, caller=caller)

        return await _draw(kit, ctx, "edit_image", fields, submit)

    @mcp.tool(
        title="Inpaint a masked region",
        description="Repaint only the white region of a mask in an image following a prompt (inpainting); the "
        "black region is kept. Best for replacing or removing an object." + RESULT_NOTE + kit.restricted,
        annotations=DRAWING,
    )
    @declared_arguments(*IMAGE_FIELDS, "strength")
    async def inpaint_image(
        ctx: Context, *, image: ImageInput, mask: MaskInput, **fields: Any
    ) -> Annotated[CallToolResult, ImageOutput]:
        def submit(caller: Caller) -> Job:
            params = request_params(Task.INPAINT, image=kit.image(ctx, image), mask=kit.image(ctx, mask), **fields)
            return kit.service.submit(params, caller=caller)

        return await _draw(kit, ctx, "inpaint_image", fields, submit)

    @mcp.tool(
        title="Replay an image",
        description="Make an image again from the manifest its result carried (or from the image itself: a PNG "
        "this server made, by result file name, path or base64) and say whether the pixels match: the result's "
        "`replay.matches`. Use it to check that a seed and its settings still give the same image."
        + RESULT_NOTE
        + kit.restricted,
        annotations=DRAWING,
    )
    async def replay_image(
        ctx: Context,
        manifest: Annotated[
            dict[str, Any] | None, Field(description="A result's `manifest`, unchanged; or send image instead.")
        ] = None,
        image: Annotated[
            str | None, Field(description=f"Instead of manifest, an image that carries one: {IMAGE_FORMS}.")
        ] = None,
    ) -> Annotated[CallToolResult, ImageOutput]:
        def submit(caller: Caller) -> Job:
            return kit.service.replay(manifest=manifest, image=kit.image(ctx, image), caller=caller)

        return await _draw(kit, ctx, "replay_image", {}, submit)


async def _draw(
    kit: Toolkit,
    ctx: Context,
    tool: str,
    fields: dict[str, Any],
    submit: Callable[[Caller], Job],
) -> CallToolResult:
    """Submit the caller's job (`submit` queues it, from the arguments `fields`), report its steps as progress,
    and return its image; cancelling the call cancels it. The call is audited as `tool`. Called as a task
    (`task_ticket`), it hands the submitted job to the ticket and returns at once."""
    client, caller = client_of(ctx), caller_of(ctx)
    job_id = None
    try:
        # The agent's trace, when its call carries one in `_meta` (`traceparent`), goes on through the job.
        with tracing.continuing(ctx.request_context.meta), tracing.span(f"MCP {tool}", **{"mcp.tool": tool}):
            job = await to_thread.run_sync(submit, caller)
        job_id = job.id
        if (ticket := task_ticket()) is not None:
            # The task middleware answers the call with this job; the client follows it with tasks/get.
            ticket.job_id = job.id
            kit.record(client, tool, "ok", job_id, fields.get("prompt"))
            return CallToolResult(content=[])
        result = await _follow(kit.service, ctx, job.id, caller, kit.options.progress_every_s)
        answer = await to_thread.run_sync(image_result, job.id, result, base_url(ctx), kit.options)
    except ImageforgeError as exc:
        kit.record(client, tool, exc.code, job_id, fields.get("prompt"))
        return error_result(exc)
    kit.record(client, tool, "ok", job_id, fields.get("prompt"))
    return answer


async def _follow(service: ImageService, ctx: Context, job_id: str, caller: Caller, every_s: float) -> ImageResult:
    """Report the job's progress until it ends (holding no thread meanwhile), then read its image."""
    reporter = _Reporter(ctx)
    failure: ImageforgeError | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(reporter.repeat, every_s)
            try:
                async for event in service.follow(job_id, caller=caller):
                    await reporter.report(event)
            except ImageforgeError as exc:
                failure = exc  # raised below as itself, not inside the task group's exception group
            finally:
                group.cancel_scope.cancel()
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await to_thread.run_sync(_cancel_quietly, service, job_id)
        raise
    if failure is not None:
        raise failure
    job = await to_thread.run_sync(functools.partial(service.get_job, job_id, caller=caller))
    return await to_thread.run_sync(service.image_result, job)


class _Reporter:
    """A job's events as MCP progress notifications: its place in the queue, its model loading, its steps.

    MCP wants each notification's progress above the last one's. A step's is its number (of `total`); a wait
    before or within a step, which has no total, takes the n-th value between that step and the next one,
    `step + n / (n + 1)`: "loading sd-turbo" comes before step 1 without claiming it, however long it lasts.
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._step = 0
        self._waits = 0
        self._total: float | None = None
        self._message: str | None = None
        self._since = anyio.current_time()

    async def report(self, event: JobEvent) -> None:
        """Notify what `event` says, if it says something the client wants to see."""
        data = event.data
        if event.type == "progress":
            self._step, self._waits, self._total = data["step"], 0, data["total"]
            await self._send(self._step, f"step {data['step']}/{data['total']}")
        elif event.type == "queue" or (event.type == "state" and data.get("ahead") is not None):
            if data["ahead"]:  # with none ahead, the job starts at once
                await self._wait(f"queued, {data['ahead']} ahead")
        elif event.type == "stage" or (event.type == "state" and data.get("stage") is not None):
            stage = data if event.type == "stage" else data["stage"]
            if stage["stage"] == "loading":
                await self._wait(f"loading {stage['model']}")
        elif event.type == "state" and data["status"] == JobStatus.RUNNING.value:
            # No longer queued: said only by `repeat`, if nothing else comes first (prompt assist, a slow step).
            self._message, self._since = "running", anyio.current_time()

    async def repeat(self, every_s: float) -> None:
        """Every `every_s` seconds, say the last thing again with how long it has lasted."""
        while True:
            await anyio.sleep(every_s)
            if self._message is not None:
                waited = anyio.current_time() - self._since
                await self._wait(f"{self._message} ({waited:.0f} s)", again=True)

    async def _wait(self, message: str, *, again: bool = False) -> None:
        self._waits += 1
        await self._send(self._step + self._waits / (self._waits + 1), message, again=again)

    async def _send(self, progress: float, message: str, *, again: bool = False) -> None:
        if not again:
            self._message, self._since = message, anyio.current_time()
        await self._ctx.report_progress(progress, self._total, message)


def _cancel_quietly(service: ImageService, job_id: str) -> None:
    with contextlib.suppress(ImageforgeError):  # it ended meanwhile
        service.cancel_job(job_id)
