"""The job tools, for slow models and big sizes: submit_async_job queues a request and answers at once, the agent
polls get_job_status, reads the image with get_job_result, or cancels with cancel_job."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from imageforge.domain import Job, JobStatus, iso_time
from imageforge.errors import ImageforgeError, JobNotReady
from imageforge.service import ImageService
from imageforge.transports.mcp.arguments import (
    IMAGE_FIELDS,
    IMAGE_FORMS,
    JobId,
    declared_arguments,
    request_params,
)
from imageforge.transports.mcp.results import RESULT_NOTE, ImageOutput, JobOutput, error_result, image_result
from imageforge.transports.mcp.tools.toolkit import DRAWING, READING, Toolkit, base_url, caller_of

#: How often an agent should poll a job; said in the tools' descriptions.
POLL_INTERVAL_S = 5

_WAIT = f"Wait; poll get_job_status in {POLL_INTERVAL_S} seconds."
#: What an agent should do next, by the job's status.
_NEXT = {
    JobStatus.QUEUED: _WAIT,
    JobStatus.RUNNING: _WAIT,
    JobStatus.SUCCEEDED: "Call get_job_result to get the image.",
    JobStatus.FAILED: "It failed; see error. Fix the request and submit again.",
    JobStatus.CANCELLED: "It was cancelled; submit again if it is still wanted.",
}


def register_job_tools(mcp: MCPServer, kit: Toolkit) -> None:
    """Add submit_async_job, get_job_status, get_job_result and cancel_job to `mcp`."""
    _add_submit_async_job(mcp, kit)
    _add_tools_on_a_job(mcp, kit)


def _add_submit_async_job(mcp: MCPServer, kit: Toolkit) -> None:
    """Add submit_async_job: the image tools' request, answered with the queued job."""
    service = kit.service

    @mcp.tool(
        title="Queue an image job",
        description="Queue an image job and return its job_id at once, for slow models or big sizes. task is "
        "text2img (default), img2img (needs image) or inpaint (needs image and mask). Then "
        f"poll get_job_status every {POLL_INTERVAL_S} seconds (not faster) and call get_job_result once it "
        "has succeeded." + kit.restricted,
        annotations=DRAWING,
    )
    @declared_arguments(*IMAGE_FIELDS, "task", "strength", "width", "height", "webhook", "webhook_events")
    async def submit_async_job(
        ctx: Context,
        *,
        image: Annotated[
            str | None, Field(description=f"The input image for img2img and inpaint: {IMAGE_FORMS}.")
        ] = None,
        mask: Annotated[
            str | None, Field(description="The mask for inpaint (white = repaint), in the same forms.")
        ] = None,
        **fields: Any,
    ) -> Annotated[CallToolResult, JobOutput]:
        def submit() -> BaseModel:
            params = request_params(image=kit.image(ctx, image), mask=kit.image(ctx, mask), **fields)
            return _job_output(service, service.submit(params, caller=caller_of(ctx)))

        return await kit.answer(submit, audit=(ctx, "submit_async_job", fields["prompt"]))


def _add_tools_on_a_job(mcp: MCPServer, kit: Toolkit) -> None:
    """Add the tools that take a submitted job's id: get_job_status, get_job_result and cancel_job."""
    service = kit.service

    @mcp.tool(
        title="Job status",
        description=f"The state of a job: status, queue position, progress (step of total). Poll every "
        f"{POLL_INTERVAL_S} seconds, not faster; once it has succeeded, call get_job_result.",
        annotations=READING,
    )
    async def get_job_status(ctx: Context, job_id: JobId) -> Annotated[CallToolResult, JobOutput]:
        return await kit.answer(lambda: _job_output(service, service.get_job(job_id, caller=caller_of(ctx))))

    @mcp.tool(
        title="Job result",
        description="The image of a finished job, as generate_image returns it; it can be read again until the "
        "job expires. A job not finished yet, failed, cancelled, expired or unknown answers an error saying "
        "which." + RESULT_NOTE,
        annotations=READING,
    )
    async def get_job_result(ctx: Context, job_id: JobId) -> Annotated[CallToolResult, ImageOutput]:
        try:
            return await to_thread.run_sync(_read_result, kit, ctx, job_id)
        except ImageforgeError as exc:
            return error_result(exc)

    @mcp.tool(
        title="Cancel a job",
        description="Cancel a job: a queued one at once, a running one at its next step (until then it stays "
        "running, and the answer says cancelling was requested). Other jobs are not affected.",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def cancel_job(ctx: Context, job_id: JobId) -> Annotated[CallToolResult, JobOutput]:
        return await kit.answer(
            lambda: _cancelled(service, service.cancel_job(job_id, caller=caller_of(ctx))),
            audit=(ctx, "cancel_job", None),
        )


def _read_result(kit: Toolkit, ctx: Context, job_id: str) -> CallToolResult:
    """The caller's finished job's image; a job that has not ended is `job_not_ready`."""
    job = kit.service.get_job(job_id, caller=caller_of(ctx))
    if not job.status.is_terminal:
        raise JobNotReady(
            f"Job '{job_id}' has not finished: it is {job.status.value}"
            + (f" at step {job.step} of {job.total}." if job.total else "."),
            hint=f"Poll get_job_status every {POLL_INTERVAL_S} seconds and ask again once it has succeeded.",
        )
    return image_result(job_id, kit.service.image_result(job), base_url(ctx), kit.options)


def _job_output(service: ImageService, job: Job) -> JobOutput:
    """`job`'s state, its place in the queue, its estimated time left and what to do next."""
    return JobOutput(
        job_id=job.id,
        status=job.status.value,
        queue_position=service.queue_position(job.id),
        step=job.step,
        total=job.total,
        eta_s=service.job_eta(job.id),
        error=job.error,
        expires_at=iso_time(job.expires_at),
        next=_NEXT[job.status],
    )


def _cancelled(service: ImageService, job: Job) -> JobOutput:
    """What cancel_job answers: the job as it is; a running one stops only at its next step, so say so."""
    output = _job_output(service, job)
    if job.status.is_terminal:
        return output
    return output.model_copy(
        update={
            "message": "Cancelling was requested: the job stops at its next step, and shows running until then.",
            "next": f"Poll get_job_status in {POLL_INTERVAL_S} seconds to see it end cancelled.",
        }
    )
