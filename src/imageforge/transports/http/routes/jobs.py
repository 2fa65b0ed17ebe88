"""Jobs: POST /jobs, GET /jobs, GET /jobs/{id}, GET /jobs/{id}/events (Server-Sent Events), DELETE /jobs/{id}."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from imageforge.jobs.job import Job, JobEvent, JobStatus
from imageforge.transports.http.audit import note_audit
from imageforge.transports.http.deps import RequestCaller, Service
from imageforge.transports.http.schemas import (
    ErrorDetail,
    ErrorResponse,
    ImageResponse,
    JobBody,
    JobLinks,
    JobListResponse,
    JobProgress,
    JobResponse,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 403, 404, 409, 410, 413, 429)
}
router = APIRouter(tags=["jobs"], responses=_ERRORS)

#: How long one wait for new events lasts before the stream sends a keep-alive comment.
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
    view = job_view(job, service.queue_position(job.id), request)
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
    return JobListResponse(jobs=[job_view(job, service.queue_position(job.id), request) for job in jobs])


@router.get("/jobs/{job_id}", summary="A job's status, queue position, progress, timings and result")
def get_job(job_id: str, service: Service, caller: RequestCaller, request: Request) -> JobResponse:
    return job_view(service.get_job(job_id, caller=caller), service.queue_position(job_id), request)


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
    return job_view(job, service.queue_position(job_id), request)


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
    # Unknown, someone else's or expired jobs are an error response before any streaming starts.
    seen = await run_in_threadpool(service.job_events, job_id, -1, 0.0, previews=preview, caller=caller)
    current = await run_in_threadpool(service.get_job, job_id, caller=caller)
    after = seen[-1].index if seen else 0

    async def stream() -> AsyncIterator[str]:
        nonlocal after
        yield _sse("state", after, _state(current))
        if current.status.is_terminal:
            return
        while True:
            events = await run_in_threadpool(service.job_events, job_id, after, KEEPALIVE_S, previews=preview)
            if not events:
                yield ": keep-alive\n\n"
                continue
            for event in events:
                after = event.index
                yield _sse(event.type, event.index, _event_data(event))
                if event.is_terminal:
                    return

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def job_view(job: Job, position: int | None, request: Request) -> JobResponse:
    """The wire form of a job, with absolute links a client (or an agent) can follow."""
    image = None
    result = None
    if job.result is not None:
        name = Path(job.result["output_path"]).name
        # With API keys on, a signed link: a browser's <img src> or curl opens it without a header.
        image = str(request.url_for("get_image", name=name)) + request.app.state.image_query(name)
        result = ImageResponse.model_validate({**job.result, "image_base64": None, "mime": "image/png"})
    own = str(request.url_for("get_job", job_id=job.id))
    return JobResponse(
        job_id=job.id,
        status=job.status.value,
        task=job.payload.get("task"),
        model=job.payload.get("model"),
        queue_position=position,
        progress=JobProgress(step=job.step, total=job.total),
        created_at=_iso(job.created_at) or "",
        started_at=_iso(job.started_at),
        finished_at=_iso(job.finished_at),
        expires_at=_iso(job.expires_at),
        timings=job.timings,
        result=result,
        error=ErrorDetail(**job.error) if job.error else None,
        links=JobLinks(self=own, events=str(request.url_for("job_events", job_id=job.id)), cancel=own, image=image),
    )


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _state(job: Job) -> dict[str, object]:
    return {"job_id": job.id, "status": job.status.value, "step": job.step, "total": job.total, "error": job.error}


def _event_data(event: JobEvent) -> dict[str, object]:
    return {"job_id": event.job_id, **event.data}


def _sse(kind: str, index: int, data: dict[str, object]) -> str:
    return f"id: {index}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
