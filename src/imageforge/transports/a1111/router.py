"""The routes under /sdapi/v1 that AUTOMATIC1111's clients call, each a few lines onto `ImageService`.

Every generation is a job in the one queue, submitted and awaited as POST /generate does, so limits, keys,
cache, policy and audit apply unchanged. "The caller's jobs" are those the queue counts as the caller's
(`Caller.name`): with keys, the key's; without, the peer address's.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from imageforge.domain import Caller, Job, JobStatus, Sampler, Schedule
from imageforge.infotext import parse_infotext
from imageforge.service import ImageService
from imageforge.transports.a1111 import mapping
from imageforge.transports.a1111.checkpoints import CheckpointChoices
from imageforge.transports.a1111.schemas import (
    A1111Error,
    ImagesAnswer,
    Img2ImgBody,
    PngInfoAnswer,
    PngInfoBody,
    ProgressAnswer,
    ProgressState,
    SdModel,
    Txt2ImgBody,
)
from imageforge.transports.http.deps import RequestCaller, Service
from imageforge.transports.http.routes.images import submit_and_wait

log = logging.getLogger(__name__)

PREFIX = "/sdapi/v1"
_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": A1111Error} for status in (400, 401, 403, 404, 409, 410, 413, 422, 429, 500, 501, 503)
}
router = APIRouter(prefix=PREFIX, tags=["AUTOMATIC1111-compatible"], responses=_ERRORS)


def _choices(request: Request) -> CheckpointChoices:
    choices: CheckpointChoices = request.app.state.sd_checkpoints
    return choices


Choices = Annotated[CheckpointChoices, Depends(_choices)]


async def _images(
    body: Txt2ImgBody, service: ImageService, caller: Caller, choices: CheckpointChoices, request: Request
) -> ImagesAnswer:
    templates = [template.key for template in service.list_templates()]
    params = mapping.to_params(body, model=choices.get(caller.name, service.default_model), templates=templates)
    result = await submit_and_wait(params, service, caller, request)
    return await run_in_threadpool(mapping.answer, result, body)


@router.post("/txt2img", summary="Text to image, as A1111 answers it")
async def txt2img(
    body: Txt2ImgBody, service: Service, caller: RequestCaller, choices: Choices, request: Request
) -> ImagesAnswer:
    return await _images(body, service, caller, choices, request)


@router.post("/img2img", summary="Image to image; inpaint where `mask` is white")
async def img2img(
    body: Img2ImgBody, service: Service, caller: RequestCaller, choices: Choices, request: Request
) -> ImagesAnswer:
    return await _images(body, service, caller, choices, request)


def _available(service: ImageService) -> list[SdModel]:
    return [mapping.sd_model(model) for model in service.list_models(memory=False).models if model.available]


@router.get("/sd-models", summary="The models this server may run, as A1111 checkpoints")
def sd_models(service: Service) -> list[SdModel]:
    return _available(service)


@router.get("/options", summary="The caller's model (sd_model_checkpoint) and the fixed settings")
def get_options(service: Service, caller: RequestCaller, choices: Choices) -> dict[str, Any]:
    model = choices.get(caller.name, service.default_model)
    hashes = {entry.model_name: entry.hash for entry in _available(service)}
    return {mapping.CHECKPOINT_OPTION: model, "sd_checkpoint_hash": hashes.get(model), "samples_format": "png"}


@router.post("/options", summary="Switch the caller's model; other settings are ignored")
def set_options(options: dict[str, Any], service: Service, caller: RequestCaller, choices: Choices) -> None:
    requested = options.pop(mapping.CHECKPOINT_OPTION, None)
    if requested is not None:
        key = mapping.checkpoint_key(str(requested))
        service.catalog.require(key)  # unknown or guarded: the catalog's own error
        choices.choose(caller.name, key)
    ignored = sorted(name for name in options if name not in ("sd_checkpoint_hash", "samples_format"))
    if ignored:
        log.info("A1111 options ignored (they have no counterpart here): %s", ", ".join(ignored))


@router.get("/samplers", summary="The samplers a request may name")
def samplers() -> list[dict[str, Any]]:
    return [mapping.sampler_entry(sampler) for sampler in Sampler]


@router.get("/schedulers", summary="The schedulers a request may name")
def schedulers() -> list[dict[str, Any]]:
    return [mapping.schedule_entry(schedule) for schedule in Schedule]


def _own_jobs(service: ImageService, caller: Caller) -> list[Job]:
    """The caller's queued and running jobs, oldest first: A1111 runs one client's jobs in order."""
    jobs = service.list_jobs([JobStatus.QUEUED, JobStatus.RUNNING], caller=caller)
    return sorted((job for job in jobs if job.client == caller.name), key=lambda job: job.created_at)


@router.get("/progress", summary="The caller's running job: progress, ETA and its live preview")
def progress(
    service: Service,
    caller: RequestCaller,
    skip_current_image: Annotated[bool, Query(description="Leave the live preview out.")] = False,
) -> ProgressAnswer:
    jobs = _own_jobs(service, caller)
    running = next((job for job in jobs if job.status is JobStatus.RUNNING), None)
    if running is None:
        return ProgressAnswer(progress=0.0, eta_relative=0.0, state=ProgressState(job_count=len(jobs)))
    running = service.get_job(running.id, caller=caller)  # the listing is stored; the steps are live
    preview = None if skip_current_image else service.live_preview(running.id, caller=caller)
    started = datetime.fromtimestamp(running.started_at or running.created_at)
    return ProgressAnswer(
        progress=running.step / running.total if running.total else 0.0,
        eta_relative=service.job_eta(running.id) or 0.0,
        state=ProgressState(
            job=running.id,
            job_count=len(jobs),
            job_timestamp=started.strftime("%Y%m%d%H%M%S"),
            sampling_step=running.step,
            sampling_steps=running.total,
        ),
        current_image=preview.partition(",")[2] if preview else None,
    )


def _cancel_running(service: ImageService, caller: Caller) -> dict[str, Any]:
    for job in _own_jobs(service, caller):
        if job.status is JobStatus.RUNNING:
            service.cancel_job(job.id, caller=caller)
    return {}


@router.post("/interrupt", summary="Cancel the caller's running job")
def interrupt(service: Service, caller: RequestCaller) -> dict[str, Any]:
    return _cancel_running(service, caller)


@router.post("/skip", summary="Cancel the caller's running job: a batch is one job, with no image to skip alone")
def skip(service: Service, caller: RequestCaller) -> dict[str, Any]:
    return _cancel_running(service, caller)


@router.post("/png-info", summary="A PNG's generation parameters, as A1111 reads them")
def png_info(body: PngInfoBody) -> PngInfoAnswer:
    text, items = mapping.png_text(body.image)
    return PngInfoAnswer(info=text, items=items, parameters=parse_infotext(text) if text else {})


@router.get("/prompt-styles", summary="Our style templates as A1111 styles")
def prompt_styles(service: Service) -> list[dict[str, str]]:
    return [
        {
            "name": template.key,
            "prompt": template.body.replace("{subject}", "{prompt}"),
            "negative_prompt": template.negative_prompt,
        }
        for template in service.list_templates()
    ]


@router.get("/sd-vae", summary="None: each model decodes with its own VAE")
def sd_vae() -> list[dict[str, Any]]:
    return []


@router.get("/upscalers", summary="Only None: there is no upscaling pass")
def upscalers() -> list[dict[str, Any]]:
    return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 1}]


@router.get("/latent-upscale-modes", summary="None: there is no hires fix")
def latent_upscale_modes() -> list[dict[str, Any]]:
    return []


@router.get("/scripts", summary="None: scripts and extensions are not available")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}
