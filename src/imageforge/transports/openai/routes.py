"""The OpenAI-compatible Images API under /v1: generations, edits, variations and the model list.

Each route parses OpenAI's wire format, maps it onto the one request (`mapping`), and goes through the same
service door as POST /generate: every image is a job in the same queue, under the same keys, limits, cache,
policy and audit. Errors take OpenAI's shape in one place (`errors.error_body`, installed by `create_app`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from imageforge.domain import ImageResult, ImageSource, Task
from imageforge.errors import InvalidRequest, ModelNotFound
from imageforge.transports.http.audit import note_audit
from imageforge.transports.http.deps import RequestCaller, Service, image_url
from imageforge.transports.http.routes.images import submit_and_wait
from imageforge.transports.openai.errors import OpenAIErrorResponse
from imageforge.transports.openai.mapping import (
    EDIT_EXTRAS,
    GENERATION_EXTRAS,
    images_response,
    mask_from_alpha,
    own_fields,
    parse_wire,
    to_params,
)
from imageforge.transports.openai.schemas import (
    AnswerFields,
    ImageEditFields,
    ImageGenerationBody,
    ImagesResponse,
    ImageVariationFields,
    OpenAIModel,
    OpenAIModelList,
)
from imageforge.transports.openai.streaming import stream_images

#: The prefix of every path of this API, which its error shape is installed under.
PREFIX = "/v1/"
_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": OpenAIErrorResponse} for status in (400, 401, 403, 404, 409, 413, 422, 429, 500, 501, 503)
}
_STREAM: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}
router = APIRouter(prefix=PREFIX.rstrip("/"), tags=["openai"], responses=_ERRORS)


def _form(fields: type[BaseModel], *files: str) -> dict[str, Any]:
    """The OpenAPI description of a multipart body: `fields` as form fields, and `files` (the first required)."""
    schema = fields.model_json_schema()
    binary = {"type": "string", "format": "binary"}
    properties = {**schema["properties"], **dict.fromkeys(files, binary)}
    body = {"type": "object", "properties": properties, "required": [*schema.get("required", []), files[0]]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}}}


def _aliases(request: Request) -> Mapping[str, str | None]:
    aliases: Mapping[str, str | None] = request.app.state.openai_model_aliases
    return aliases


#: OpenAI's model names that mean one of ours (None: the default model), as the server's settings say.
ModelAliases = Annotated[Mapping[str, str | None], Depends(_aliases)]


@router.post(
    "/images/generations",
    summary="OpenAI: text to image",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    responses=_STREAM,
)
async def create_image(
    body: ImageGenerationBody, service: Service, caller: RequestCaller, request: Request, aliases: ModelAliases
) -> ImagesResponse | StreamingResponse:
    extras = own_fields(body, GENERATION_EXTRAS)
    _note_user(request, body)
    params = to_params(body, extras, Task.TEXT2IMG, service=service, aliases=aliases, prompt=body.prompt)
    if body.stream:
        return await stream_images(params, body, "image_generation", service=service, caller=caller, request=request)
    result = await submit_and_wait(params, service, caller, request)
    return await _answer(result, body, request)


@router.post(
    "/images/edits",
    summary="OpenAI: edit an image (multipart: image, and a mask whose transparent pixels are repainted)",
    openapi_extra=_form(ImageEditFields, "image", "mask"),
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    responses=_STREAM,
)
async def create_image_edit(
    service: Service, caller: RequestCaller, request: Request, aliases: ModelAliases
) -> ImagesResponse | StreamingResponse:
    # Closing the form closes its spooled files.
    async with request.form() as form:
        wire = parse_wire(ImageEditFields, _text_fields(form))
        extras = own_fields(wire, EDIT_EXTRAS)
        init = await _image_source(form)
        mask = form.get("mask")
        mask_png = await mask.read() if isinstance(mask, UploadFile) else None
    _note_user(request, wire)
    mask_image = None if mask_png is None else mask_from_alpha(mask_png, max_pixels=service.limits.images.max_pixels)
    task = Task.INPAINT if mask_image is not None else Task.IMG2IMG
    params = to_params(
        wire, extras, task, service=service, aliases=aliases, prompt=wire.prompt, init_image=init, mask_image=mask_image
    )
    if wire.stream:
        return await stream_images(params, wire, "image_edit", service=service, caller=caller, request=request)
    result = await submit_and_wait(params, service, caller, request)
    return await _answer(result, wire, request)


@router.post(
    "/images/variations",
    summary="OpenAI: a variation of an image (img2img); imageforge needs a prompt, sent as an extra field",
    openapi_extra=_form(ImageVariationFields, "image"),
    response_model_exclude_none=True,
)
async def create_image_variation(
    service: Service, caller: RequestCaller, request: Request, aliases: ModelAliases
) -> ImagesResponse:
    async with request.form() as form:
        wire = parse_wire(ImageVariationFields, _text_fields(form))
        extras = own_fields(wire, EDIT_EXTRAS)
        init = await _image_source(form)
    _note_user(request, wire)
    if wire.prompt is None:
        raise InvalidRequest(
            "prompt: a variation here is img2img, which draws what a prompt says; OpenAI's variation sends none.",
            hint="Send a prompt as an extra field (the SDK's extra_body={'prompt': ...}), or use /v1/images/edits.",
        )
    params = to_params(
        wire, extras, Task.IMG2IMG, service=service, aliases=aliases, prompt=wire.prompt, init_image=init
    )
    result = await submit_and_wait(params, service, caller, request)
    return await _answer(result, wire, request)


@router.get("/models", summary="OpenAI: the model catalog as model objects")
def list_models(service: Service) -> OpenAIModelList:
    return OpenAIModelList(data=[OpenAIModel(id=spec.key) for spec in service.catalog])


@router.get("/models/{model_id}", summary="OpenAI: one catalog entry, or an OpenAI name the server maps to one")
def retrieve_model(model_id: str, service: Service, aliases: ModelAliases) -> OpenAIModel:
    key = (aliases[model_id] or service.default_model) if model_id in aliases else model_id
    if key not in service.catalog:
        raise ModelNotFound(f"Unknown model '{model_id}'.", hint="GET /v1/models lists the models this server runs.")
    return OpenAIModel(id=model_id)


async def _image_source(form: FormData) -> ImageSource:
    """The form's one input image, sent as `image` or as the SDK's list `image[]`; several are refused."""
    images = [item for item in (*form.getlist("image"), *form.getlist("image[]")) if isinstance(item, UploadFile)]
    if len(images) != 1:
        raise InvalidRequest(
            f"image: {len(images)} images sent; imageforge edits one image."
            if images
            else "image: no image file sent.",
            hint="Send exactly one image file as `image` (multipart/form-data).",
        )
    return ImageSource(base64=base64.b64encode(await images[0].read()).decode())


def _text_fields(form: FormData) -> dict[str, Any]:
    """The form's fields other than its files, as the schema reads them (numbers and booleans as text)."""
    return {name: value for name, value in form.multi_items() if name not in ("image", "image[]", "mask")}


async def _answer(result: ImageResult, wire: AnswerFields, request: Request) -> ImagesResponse:
    """OpenAI's answer for `result`, built in a thread: re-encoding and base64 of full images take a while."""
    urls = [image_url(request, image.output_path) for image in result.images]
    return await run_in_threadpool(images_response, result, wire, urls)


def _note_user(request: Request, wire: AnswerFields) -> None:
    """The end user an OpenAI client names goes into the audit record of the request."""
    note_audit(request, openai_user=wire.user or wire.safety_identifier)
