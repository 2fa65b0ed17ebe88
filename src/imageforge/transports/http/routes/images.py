"""POST /generate, /edit and /inpaint (synchronous generation) and GET /images/{name} (stored results)."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from imageforge.domain import GenerationParams, ImageResult
from imageforge.jobs.job import Caller
from imageforge.service import ImageService
from imageforge.transports.http.audit import note_audit
from imageforge.transports.http.deps import RequestCaller, Service
from imageforge.transports.http.schemas import (
    EditBody,
    ErrorResponse,
    GenerateBody,
    ImageResponse,
    InpaintBody,
    ReturnMode,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 403, 404, 409, 413, 429, 500, 501, 503)
}
router = APIRouter(tags=["images"], responses=_ERRORS)


def to_response(result: ImageResult, return_mode: ReturnMode) -> ImageResponse:
    return ImageResponse(
        **result.described(),
        output_path=result.output_path if return_mode in ("path", "both") else None,
        image_base64=base64.b64encode(result.png).decode() if return_mode in ("base64", "both") else None,
        mime=result.mime,
    )


def _generate(params: GenerationParams, service: ImageService, caller: Caller, request: Request) -> ImageResult:
    """Submit the caller's job and wait for its image (the job goes on if the caller goes away)."""
    note_audit(request, prompt=params.prompt)
    job = service.submit(params, caller=caller)
    note_audit(request, job_id=job.id)
    return service.image_result(service.wait_job(job.id))


@router.post("/generate", summary="Text to image")
def generate(body: GenerateBody, service: Service, caller: RequestCaller, request: Request) -> ImageResponse:
    return to_response(_generate(body.to_params(), service, caller, request), body.return_mode)


@router.post("/edit", summary="Image to image (strength 0.6 by default)")
def edit(body: EditBody, service: Service, caller: RequestCaller, request: Request) -> ImageResponse:
    return to_response(_generate(body.to_edit_params(), service, caller, request), body.return_mode)


@router.post("/inpaint", summary="Repaint the white part of a mask")
def inpaint(body: InpaintBody, service: Service, caller: RequestCaller, request: Request) -> ImageResponse:
    return to_response(_generate(body.to_inpaint_params(), service, caller, request), body.return_mode)


@router.get(
    "/images/{name}",
    summary="A result's full image, by the name in its output_path or job link",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
)
def get_image(name: str, service: Service, caller: RequestCaller) -> FileResponse:
    return FileResponse(service.image_path(name, caller=caller), media_type="image/png")
