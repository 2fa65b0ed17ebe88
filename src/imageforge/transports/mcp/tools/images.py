"""The image tools that draw and wait: generate_image, edit_image and inpaint_image.

Each submits the caller's request as a job and follows it: its steps go out as MCP progress notifications, a
client that cancels the call cancels the job, and the answer is the image.
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

from imageforge.domain import Caller, GenerationParams, ImageResult, Task
from imageforge.errors import ImageforgeError
from imageforge.service import ImageService
from imageforge.transports.mcp.arguments import IMAGE_FIELDS, ImageInput, MaskInput, declared_arguments, request_params
from imageforge.transports.mcp.results import RESULT_NOTE, ImageOutput, error_result, image_result
from imageforge.transports.mcp.tools.toolkit import DRAWING, Toolkit, base_url, caller_of, client_of


def register_image_tools(mcp: MCPServer, kit: Toolkit) -> None:
    """Add generate_image, edit_image and inpaint_image to `mcp`."""

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
        return await _draw(kit, ctx, "generate_image", fields, lambda: request_params(Task.TEXT2IMG, **fields))

    @mcp.tool(
        title="Edit an image",
        description="Change an existing image following a prompt (image to image), keeping its composition; "
        "strength 0.3 stays close to it, 0.8 changes a lot. The size follows the input unless width and height "
        "are given." + RESULT_NOTE + kit.restricted,
        annotations=DRAWING,
    )
    @declared_arguments(*IMAGE_FIELDS, "strength", "width", "height")
    async def edit_image(ctx: Context, *, image: ImageInput, **fields: Any) -> Annotated[CallToolResult, ImageOutput]:
        def build() -> GenerationParams:
            return request_params(Task.IMG2IMG, image=kit.image(ctx, image), **fields)

        return await _draw(kit, ctx, "edit_image", fields, build)

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
        def build() -> GenerationParams:
            return request_params(Task.INPAINT, image=kit.image(ctx, image), mask=kit.image(ctx, mask), **fields)

        return await _draw(kit, ctx, "inpaint_image", fields, build)


async def _draw(
    kit: Toolkit, ctx: Context, tool: str, fields: dict[str, Any], build: Callable[[], GenerationParams]
) -> CallToolResult:
    """Submit the caller's job (the request `build` makes of the arguments `fields`), report its steps as
    progress, and return its image; cancelling the call cancels it. The call is audited as `tool`."""
    client, caller = client_of(ctx), caller_of(ctx)
    job_id = None
    try:
        params = await to_thread.run_sync(build)
        job = await to_thread.run_sync(functools.partial(kit.service.submit, params, caller=caller))
        job_id = job.id
        result = await _follow(kit.service, ctx, job.id, caller)
        answer = await to_thread.run_sync(image_result, job.id, result, base_url(ctx), kit.options)
    except ImageforgeError as exc:
        kit.record(client, tool, exc.code, job_id, fields.get("prompt"))
        return error_result(exc)
    kit.record(client, tool, "ok", job_id, fields.get("prompt"))
    return answer


async def _follow(service: ImageService, ctx: Context, job_id: str, caller: Caller) -> ImageResult:
    """Report the job's steps as progress until it ends (holding no thread meanwhile), then read its image."""
    try:
        async for event in service.follow(job_id, caller=caller):
            if event.type == "progress":
                step, total = event.data["step"], event.data["total"]
                await ctx.report_progress(step, total, f"step {step}/{total}")
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await to_thread.run_sync(_cancel_quietly, service, job_id)
        raise
    job = await to_thread.run_sync(functools.partial(service.get_job, job_id, caller=caller))
    return await to_thread.run_sync(service.image_result, job)


def _cancel_quietly(service: ImageService, job_id: str) -> None:
    with contextlib.suppress(ImageforgeError):  # it ended meanwhile
        service.cancel_job(job_id)
