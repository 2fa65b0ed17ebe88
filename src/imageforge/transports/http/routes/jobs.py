"""Jobs: POST /jobs, POST /replay, GET /jobs, GET /jobs/{id}, GET /jobs/{id}/events (Server-Sent Events),
DELETE /jobs/{id} (cancel), DELETE /jobs/{id}/result (delete an ended job and its image)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from imageforge.domain import Job, JobEvent, JobStatus, iso_time, result_images
from imageforge.errors import ImageforgeError
from imageforge.service import ImageService
from imageforge.transports.http.audit import note_audit
from imageforge.transports.http.deps import RequestCaller, Service, image_url
from imageforge.transports.http.schemas import (
    ErrorDetail,
    ErrorResponse,
    ImageItem,
    ImageResponse,
    JobBody,
    JobLinks,
    JobListResponse,
    JobProgress,
    JobResponse,
    ReplayBody,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 403, 404, 409, 410, 413, 422, 429)
}
router = APIRouter(tags=["jobs"], responses=_ERRORS)

#: How long the stream stays silent before it sends a keep-alive comment.
KEEPALIVE_S = 15.0


@router.post("/jobs", status_code=202, summary="Queue a generation; answers at once with the job id")
def submit_job(
    body: JobBody,
    service: Service,
    caller: RequestCaller,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(description="Resending the same key returns the same job (409 with another body).")
    ] = None,
) -> JobResponse:
    note_audit(request, prompt=body.prompt)
    job = service.submit(body.to_job_params(), caller=caller, idempotency_key=idempotency_key)
    note_audit(request, job_id=job.id)
    view = job_view(job, service, request)
    response.headers["Location"] = view.links.self
    return view


@router.post(
    "/replay",
    status_code=202,
    summary="Make a result's image again from its manifest (or an image carrying one); the job's result says "
    "whether the pixels match",
)
def replay_job(
    body: ReplayBody, service: Service, caller: RequestCaller, request: Request, response: Response
) -> JobResponse:
    job = service.replay(manifest=body.manifest, image=body.image_source(), caller=caller)
    note_audit(request, job_id=job.id)
    view = job_view(job, service, request)
    response.headers["Location"] = view.links.self
    return view


@router.get("/jobs", summary="Your recent jobs (an admin key: everyone's), newest first, optionally by status")
def list_jobs(
    service: Service,
    caller: RequestCaller,
    request: Request,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs in these statuses.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobListResponse:
    jobs = service.list_jobs(status or (), limit=limit, caller=caller)
    return JobListResponse(jobs=[job_view(job, service, request) for job in jobs])


@router.get("/jobs/{job_id}", summary="A job's status, queue position, progress, timings and result")
def get_job(job_id: str, service: Service, caller: RequestCaller, request: Request) -> JobResponse:
    return job_view(service.get_job(job_id, caller=caller), service, request)


@router.delete(
    "/jobs/{job_id}",
    summary="Cancel a job: a queued one at once (200), a running one at its next step (202)",
    responses={202: {"model": JobResponse}},
)
def cancel_job(
    job_id: str, service: Service, caller: RequestCaller, request: Request, response: Response
) -> JobResponse:
    job = service.cancel_job(job_id, caller=caller)
    if not job.status.is_terminal:
        response.status_code = 202
    return job_view(job, service, request)


@router.delete(
    "/jobs/{job_id}/result",
    status_code=204,
    summary="Delete an ended job: its image and inputs (unless another job shares them) and its record",
    response_class=Response,
)
def delete_job(job_id: str, service: Service, caller: RequestCaller, request: Request) -> Response:
    note_audit(request, job_id=job_id)
    service.delete_job(job_id, caller=caller)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/events",
    summary="Server-Sent Events: the current state, then status changes and one progress event per step",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: str,
    service: Service,
    caller: RequestCaller,
    preview: Annotated[bool, Query(description="Also send low-resolution live previews.")] = False,
) -> StreamingResponse:
    events = service.follow(job_id, previews=preview, caller=caller)
    # An unknown, someone else's or expired job, or a client past its share, is an error response before any
    # streaming starts.
    current = await anext(events)

    async def stream() -> AsyncIterator[str]:
        yield _sse("state", current.index, _event_data(current))
        try:
            async for event in with_keepalives(events, KEEPALIVE_S):
                yield ": keep-alive\n\n" if event is None else _sse(event.type, event.index, _event_data(event))
        except ImageforgeError:
            return  # the server is stopping: the stream ends, and the client reconnects to a later one

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def with_keepalives(
    events: AsyncGenerator[JobEvent, None], every_s: float
) -> AsyncGenerator[JobEvent | None, None]:
    """`events`, with None after each `every_s` seconds without one; closing this closes `events` too."""
    pending: asyncio.Future[JobEvent] | None = None
    try:
        while True:
            # The wait for the next event is not cancelled by a keep-alive; it goes on until an event comes.
            pending = pending or asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield None
                continue
            pending = None
            try:
                event = done.pop().result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        if pending is not None:
            pending.cancel()  # ends the follow inside, which frees its place in the client's share
        else:
            await events.aclose()


# Declared after /events, which this pattern would otherwise catch.
@router.get(
    "/jobs/{job_id}/{name}",
    summary="A job's input image or mask, as a PNG, for as long as the job is readable",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_job_input(
    job_id: str, name: Literal["init_image", "mask_image"], service: Service, caller: RequestCaller
) -> Response:
    return Response(service.job_input(job_id, name, caller=caller), media_type="image/png")


def job_view(job: Job, service: ImageService, request: Request) -> JobResponse:
    """The wire form of a job, with its place in the queue, its estimated time left and absolute links a client
    (or an agent) can follow."""
    image = None
    result = None
    if job.result is not None:
        image = image_url(request, job.result["output_path"])
        images = [
            ImageItem(**one.model_dump(), url=image_url(request, one.output_path)) for one in result_images(job.result)
        ]
        result = ImageResponse.model_validate(
            {**job.result, "image_base64": None, "mime": "image/png", "images": images}
        )
    own = str(request.url_for("get_job", job_id=job.id))
    inputs = {
        name: str(request.url_for("get_job_input", job_id=job.id, name=name))
        for name in ("init_image", "mask_image")
        if job.payload.get(name)
    }
    return JobResponse(
        job_id=job.id,
        status=job.status.value,
        task=job.payload.get("task"),
        model=job.payload.get("model"),
        queue_position=service.queue_position(job.id),
        progress=JobProgress(step=job.step, total=job.total),
        created_at=iso_time(job.created_at) or "",
        started_at=iso_time(job.started_at),
        finished_at=iso_time(job.finished_at),
        expires_at=iso_time(job.expires_at),
        eta_s=service.job_eta(job.id),
        timings=job.timings,
        result=result,
        error=ErrorDetail(**job.error) if job.error else None,
        webhook=service.job_webhook(job),
        links=JobLinks(
            self=own, events=str(request.url_for("job_events", job_id=job.id)), cancel=own, image=image, **inputs
        ),
    )


def _event_data(event: JobEvent) -> dict[str, object]:
    return {"job_id": event.job_id, **event.data}


def _sse(kind: str, index: int, data: dict[str, object]) -> str:
    return f"id: {index}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
