"""POST /generate, /edit and /inpaint (synchronous generation) and GET /images/{name} (stored results)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from imageforge.domain import Caller, GenerationParams, ImageResult, Job, ReturnMode
from imageforge.service import ImageService
from imageforge.transports.http.audit import note_audit
from imageforge.transports.http.deps import RequestCaller, Service, image_url
from imageforge.transports.http.schemas import (
    EditBody,
    ErrorResponse,
    GenerateBody,
    ImageItem,
    ImageResponse,
    InpaintBody,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 403, 404, 409, 413, 422, 429, 500, 501, 503)
}
router = APIRouter(tags=["images"], responses=_ERRORS)


def to_response(result: ImageResult, return_mode: ReturnMode, request: Request) -> ImageResponse:
    """The answer of a synchronous route: the first image as before, and every image under `images`, each with
    its path and bytes as `return_mode` asks and its link."""
    paths, inline = return_mode in ("path", "both"), return_mode in ("base64", "both")
    images = [
        ImageItem(
            seed=image.seed,
            cached=image.cached,
            elapsed_s=image.elapsed_s,
            output_path=image.output_path if paths else None,
            image_base64=base64.b64encode(image.png).decode() if inline else None,
            url=image_url(request, image.output_path),
        )
        for image in result.images
    ]
    return ImageResponse(
        **result.described().model_dump(),
        output_path=images[0].output_path,
        image_base64=images[0].image_base64,
        mime=result.mime,
        images=images,
    )


async def submit_and_wait(
    params: GenerationParams, service: ImageService, caller: Caller, request: Request
) -> ImageResult:
    """Submit the caller's job and wait for its image (the job goes on if the caller goes away).

    Only submitting (which decodes input images) and reading the result take a thread, briefly; the wait holds
    none, and counts against the caller's share of the queue until it ends.
    """
    note_audit(request, prompt=params.prompt)
    job = await run_in_threadpool(service.submit, params, caller=caller)
    note_audit(request, job_id=job.id)
    done = await _while_connected(request, service.wait(job.id, caller=caller))
    return await run_in_threadpool(service.image_result, done)


async def _while_connected(request: Request, waiting: Coroutine[Any, Any, Job]) -> Job:
    """Await `waiting`, or give up as soon as the client hangs up (`ClientDisconnect`), so that a client that
    went away leaves no wait behind."""
    waiter = asyncio.ensure_future(waiting)
    hang_up = asyncio.ensure_future(_hang_up(request))
    try:
        await asyncio.wait({waiter, hang_up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hang_up.cancel()
        waiter.cancel()  # no-op once it is done
    if waiter.done() and not waiter.cancelled():
        return waiter.result()  # the job, or the error that ended the wait
    raise ClientDisconnect()


async def _hang_up(request: Request) -> None:
    """Return when the client disconnects: the body has been read, so what comes next on this connection is its
    end."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.post("/generate", summary="Text to image")
async def generate(body: GenerateBody, service: Service, caller: RequestCaller, request: Request) -> ImageResponse:
    return to_response(await submit_and_wait(body.to_params(), service, caller, request), body.return_mode, request)


@router.post("/edit", summary="Image to image (strength 0.6 by default)")
async def edit(body: EditBody, service: Service, caller: RequestCaller, request: Request) -> ImageResponse:
    return to_response(
        await submit_and_wait(body.to_edit_params(), service, caller, request), body.return_mode, request
    )


@router.post("/inpaint", summary="Repaint the white part of a mask")
async def inpaint(body: InpaintBody, service: Service, caller: RequestCaller, request: Request) -> ImageResponse:
    params = body.to_inpaint_params()
    return to_response(await submit_and_wait(params, service, caller, request), body.return_mode, request)


@router.get(
    "/images/{name}",
    summary="A result's full image, by the name in its output_path or job link",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
)
def get_image(name: str, service: Service, caller: RequestCaller) -> FileResponse:
    return FileResponse(service.image_path(name, caller=caller), media_type="image/png")
