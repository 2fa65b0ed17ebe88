"""OpenAI's image requests mapped onto the one request declaration, and our results back into OpenAI's answer.

Nothing here bounds a value of ours: OpenAI's fields that are also ours take our declaration (`schemas`), and
imageforge's own fields arrive as extra keys checked against `REQUEST_FIELDS` (`our_fields`); the service then
checks the request as it checks every other (model, size against MAX_RES, steps against MAX_STEPS, inputs).
"""

from __future__ import annotations

import base64
import io
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from imageforge.domain import (
    DEFAULT_STRENGTH,
    REQUEST_FIELDS,
    GenerationParams,
    ImageResult,
    ImageSource,
    Task,
    TextToImageFields,
)
from imageforge.errors import InvalidImage, InvalidRequest, UnsupportedOperation
from imageforge.service import ImageService
from imageforge.transports.openai.schemas import (
    AnsweredQuality,
    AnswerFields,
    ImageData,
    ImagesResponse,
    OutputFormat,
    PromptFields,
)

#: OpenAI's image model names, each meaning the server's default model unless the server maps it to another
#: (IMAGEFORGE_OPENAI_MODEL_ALIASES): clients that only know these names still reach a model.
DEFAULT_MODEL_ALIASES: Mapping[str, str | None] = dict.fromkeys(
    (
        "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "chatgpt-image-latest",
        "dall-e-2", "dall-e-3",
    )
)  # fmt: skip
#: The request fields that OpenAI's own fields carry (by our name: OpenAI's name): an extra key may not repeat one.
CARRIED: Mapping[str, str] = {
    "prompt": "prompt", "model": "model", "style": "style", "count": "n", "width": "size", "height": "size",
}  # fmt: skip
#: The request fields the endpoint decides: the task, how the answer carries the image (`response_format`), and
#: no webhook (the Images API answers with the image; POST /jobs takes one).
DECIDED = frozenset({"task", "return_mode", "webhook", "webhook_events"})
#: Steps as a multiple of the model's default, by `quality`; the server's MAX_STEPS caps them.
QUALITY_STEPS: Mapping[str, float] = {
    "low": 0.5, "medium": 1, "auto": 1, "standard": 1, "high": 2, "hd": 2, "xhigh": 3, "max": 4,
}  # fmt: skip
#: What an answer says of each `quality`: OpenAI answers in its GPT image models' names only.
QUALITY_ANSWERED: Mapping[str, AnsweredQuality] = {
    "low": "low", "medium": "medium", "auto": "medium", "standard": "medium", "high": "high", "hd": "high",
    "xhigh": "xhigh", "max": "max",
}  # fmt: skip
#: OpenAI's two `style` values (DALL-E 3's), which have no counterpart here; any other value names a template.
OPENAI_STYLES = frozenset({"vivid", "natural"})
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
W = TypeVar("W", bound=BaseModel)


def our_fields(names: Iterable[str], model_name: str) -> type[BaseModel]:
    """A schema of the request fields among `names` that a client sends as extra keys: every declared field
    except those OpenAI's own fields carry and those the endpoint decides, each with its declaration."""
    fields: dict[str, Any] = {
        name: (REQUEST_FIELDS[name].annotation, REQUEST_FIELDS[name])
        for name in names
        if name not in CARRIED and name not in DECIDED
    }
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


#: imageforge's own fields a text-to-image request takes as extra keys (seed, steps, guidance, …).
GENERATION_EXTRAS = our_fields(TextToImageFields.model_fields, "GenerationExtras")
#: imageforge's own fields an edit or variation takes as extra keys: those of text to image, and strength.
EDIT_EXTRAS = our_fields(REQUEST_FIELDS, "EditExtras")


def parse_wire(schema: type[W], data: Mapping[str, Any]) -> W:
    """`data` (a form's fields) as `schema`; a value it refuses is a `RequestValidationError` naming the field, as
    for a JSON body."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from None


def own_fields(wire: BaseModel, extras: type[BaseModel]) -> BaseModel:
    """The extra keys of `wire` as imageforge's request fields (`extras`): an unknown key, or one that OpenAI's
    fields carry, is refused by name, and a value the declaration refuses is a `RequestValidationError`."""
    sent = dict(wire.model_extra or {})
    unknown = [name for name in sent if name not in extras.model_fields]
    if unknown:
        name = unknown[0]
        carried = f" Send it as {CARRIED[name]}." if name in CARRIED else ""
        raise InvalidRequest(
            f"{name}: not a field this endpoint takes.{carried}",
            hint=f"Besides OpenAI's fields, imageforge takes its own: {', '.join(extras.model_fields)} (the "
            "SDK's extra_body). See docs/openai-api.md.",
        )
    return parse_wire(extras, sent)


def to_params(
    wire: AnswerFields,
    extras: BaseModel,
    task: Task,
    *,
    service: ImageService,
    aliases: Mapping[str, str | None],
    prompt: str,
    init_image: ImageSource | None = None,
    mask_image: ImageSource | None = None,
) -> GenerationParams:
    """The request for `ImageService.submit`: OpenAI's fields mapped, imageforge's own as sent."""
    own = extras.model_dump(mode="json", exclude_unset=True)
    if "loras" in own:
        own["loras"] = dict(extras)["loras"]  # the request carries them as declared, not as their JSON
    width, height = _size(wire.size)
    model = None if wire.model is None else aliases.get(wire.model, wire.model)
    style = None if wire.style in OPENAI_STYLES else wire.style
    if isinstance(wire, PromptFields):
        _check_answerable(wire)
        if wire.quality is not None and "steps" not in own:
            own["steps"] = _quality_steps(wire.quality, service, model, task, own.get("strength"))
    return GenerationParams(
        task=task,
        prompt=prompt,
        model=model,
        style=style,
        count=wire.n,
        width=width,
        height=height,
        init_image=init_image,
        mask_image=mask_image,
        **own,
    )


def _size(size: str | None) -> tuple[int | None, int | None]:
    """Width and height from `WxH`; none for `auto` (the model's size, or the input image's)."""
    if size is None or size == "auto":
        return None, None
    found = _SIZE.match(size)
    if found is None:
        raise InvalidRequest(
            f"size: '{size}' is not WIDTHxHEIGHT.", hint='Send a size such as "512x512", or "auto" for the model\'s.'
        )
    return int(found.group(1)), int(found.group(2))


def _check_answerable(wire: PromptFields) -> None:
    """Refuse an answer the server cannot give: a transparent background, or a link to a format not stored."""
    if wire.background == "transparent":
        raise UnsupportedOperation(
            "background: transparent is not supported; the models draw opaque images.",
            hint='Leave background out, or send "opaque" or "auto".',
        )
    if wire.output_format != "png" and wire.response_format == "url":
        raise InvalidRequest(
            f"output_format: {wire.output_format} applies to b64_json answers; a url links the stored PNG.",
            hint='Send response_format "b64_json" with this output_format, or leave output_format out.',
        )


def _quality_steps(
    quality: str, service: ImageService, model: str | None, task: Task, strength: float | None
) -> int | None:
    """The steps `quality` asks of `model`: its default scaled by `QUALITY_STEPS`, at most the server's MAX_STEPS,
    and at least one (an edit runs `steps * strength` of them: at least one of those); None (the default itself)
    for medium."""
    factor = QUALITY_STEPS[quality]
    if factor == 1:
        return None
    least = 1 if task is Task.TEXT2IMG else math.ceil(1 / (strength or DEFAULT_STRENGTH[task]))
    default = service.catalog.require(model or service.default_model).default_steps
    return max(least, min(service.limits.max_steps, math.ceil(default * factor)))


def mask_from_alpha(data: bytes, *, max_pixels: int) -> ImageSource:
    """OpenAI's mask (a PNG whose fully transparent pixels are repainted) as ours (white = repaint, black =
    keep). The header is read first: a small file claiming a huge canvas is refused before it is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > max_pixels:
                raise InvalidImage(
                    f"mask is {opened.width}x{opened.height} pixels, over the limit of {max_pixels} pixels.",
                    hint="Send a mask of the image's size.",
                )
            if opened.mode not in ("RGBA", "LA", "PA") and "transparency" not in opened.info:
                raise InvalidImage(
                    "mask has no alpha channel.",
                    hint="Send a PNG with an alpha channel: its fully transparent pixels are repainted.",
                )
            alpha = opened.convert("RGBA").getchannel("A")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise InvalidImage("mask is not a readable image.", hint="Send a PNG with an alpha channel.") from None
    ours = alpha.point(lambda value: 255 if value == 0 else 0)
    buffer = io.BytesIO()
    ours.save(buffer, format="PNG")
    return ImageSource(base64=base64.b64encode(buffer.getvalue()).decode())


def encoded(png: bytes, output_format: OutputFormat, compression: int | None) -> bytes:
    """The stored PNG as `output_format`: as it is for png, re-encoded (at `compression` as the encoder's
    quality, 100 when absent) for jpeg and webp."""
    if output_format == "png":
        return png
    with Image.open(io.BytesIO(png)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(
            buffer, format=output_format.upper(), quality=100 if compression is None else compression
        )
    return buffer.getvalue()


def answer_quality(wire: AnswerFields) -> AnsweredQuality | None:
    """The `quality` an answer reports: the one asked, in OpenAI's answer names."""
    quality = wire.quality if isinstance(wire, PromptFields) else None
    return None if quality is None else QUALITY_ANSWERED[quality]


def images_response(result: ImageResult, wire: AnswerFields, urls: list[str]) -> ImagesResponse:
    """OpenAI's answer for `result`: each image inline (b64_json) or as its link (`urls`, in order)."""
    output_format: OutputFormat = wire.output_format if isinstance(wire, PromptFields) else "png"
    compression = wire.output_compression if isinstance(wire, PromptFields) else None
    revised = result.prompt if result.prompt != result.original_prompt else None
    data = [
        ImageData(url=url, revised_prompt=revised)
        if wire.response_format == "url"
        else ImageData(
            b64_json=base64.b64encode(encoded(image.png, output_format, compression)).decode(), revised_prompt=revised
        )
        for image, url in zip(result.images, urls, strict=True)
    ]
    return ImagesResponse(
        created=int(time.time()),
        data=data,
        output_format=output_format,
        size=f"{result.width}x{result.height}",
        quality=answer_quality(wire),
    )
