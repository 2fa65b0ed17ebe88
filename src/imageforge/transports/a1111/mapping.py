"""A1111 requests onto the one request declaration, and our results back into A1111's answers.

The fields A1111 and we share are validated by our declaration (`TextToImageFields` and `Strength`) and by the
service, never by bounds of their own here. Fields that would change the image in a way we cannot honour are
refused unless they hold their neutral value (`REFUSED`); the others A1111 accepts are ignored, as listed with
the reasons in docs/a1111-api.md.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import warnings
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from PIL import Image
from pydantic import ValidationError

from imageforge import __version__
from imageforge.domain import (
    A1111_SAMPLER_NAMES,
    A1111_SCHEDULE_NAMES,
    MAX_COUNT,
    GenerationParams,
    ImageResult,
    ImageSource,
    ModelInfo,
    Sampler,
    Schedule,
    Strength,
    Task,
    TextToImageFields,
    accepted_fields,
)
from imageforge.errors import InvalidImage, InvalidRequest
from imageforge.transports.a1111.schemas import ImagesAnswer, Img2ImgBody, SdModel, Txt2ImgBody

#: Fields that change the image in ways we cannot make: accepted only at one of their neutral values.
REFUSED: Mapping[str, tuple[tuple[Any, ...], str]] = {
    "enable_hr": ((False, None), "There is no hires fix (a second, upscaled pass): ask for the final size directly."),
    "restore_faces": ((False, None), "There is no face restoration."),
    "tiling": ((False, None), "Tileable images are not available."),
    "subseed_strength": ((0, None), "Variation seeds are not available: vary `seed` instead."),
    "seed_resize_from_w": ((0, -1, None), "Seed resizing is not available."),
    "seed_resize_from_h": ((0, -1, None), "Seed resizing is not available."),
    "script_name": ((None, ""), "Scripts are not available."),
    "script_args": (([], None), "Scripts are not available."),
    "alwayson_scripts": (({}, None), "Extensions (ControlNet, ADetailer, ...) are not available."),
    "refiner_checkpoint": ((None, "", "None"), "There is no refiner pass: pick the model with sd_model_checkpoint."),
    "resize_mode": ((0, None), "Only resize mode 0 (just resize to width x height) is available."),
    "inpainting_mask_invert": ((0, False, None), "Send the mask the other way round: white = repaint."),
    "initial_noise_multiplier": ((1, None), "The initial noise cannot be scaled."),
}
#: The option that picks a request's model, in `override_settings` and in POST /sdapi/v1/options.
CHECKPOINT_OPTION = "sd_model_checkpoint"
#: Other `override_settings` accepted, at these values only: what our pipelines do anyway.
NEUTRAL_SETTINGS: Mapping[str, tuple[Any, ...]] = {
    "CLIP_stop_at_last_layers": (1, None),
    "sd_vae": ("Automatic", "None", None),
}
#: Each sampler by its A1111 name and by ours (A1111 lists other names as aliases too).
_SAMPLERS: Mapping[str, Sampler] = {
    **{sampler.value: sampler for sampler in Sampler},
    **{name: sampler for sampler, name in A1111_SAMPLER_NAMES.items()},
}
#: Each schedule by A1111's name (lowercase), its label, and ours.
_SCHEDULES: Mapping[str, Schedule] = {
    key: schedule for schedule, label in A1111_SCHEDULE_NAMES.items() for key in (label.lower(), label, schedule.value)
}
#: A1111's names of our declared request fields, for errors.
A1111_NAMES = {"guidance": "cfg_scale", "count": "batch_size", "style": "styles", "strength": "denoising_strength"}
_DECLARED = {a1111: declared for declared, a1111 in A1111_NAMES.items()}


class _Fields(TextToImageFields):
    """The declared request, with img2img's strength."""

    strength: Strength


def refuse_unhonoured(body: Txt2ImgBody) -> None:
    """`InvalidRequest` for the first field sent with a value that would change the image in a way we cannot."""
    sent = body.model_dump(exclude_unset=True)
    for name, (neutral, reason) in REFUSED.items():
        if name in sent and sent[name] not in neutral:
            raise InvalidRequest(
                f"{name}={json.dumps(sent[name])} cannot be honoured here. {reason}",
                hint=f"Leave {name} out or send it as {json.dumps(neutral[0])}; docs/a1111-api.md lists every field.",
            )


def requested_model(body: Txt2ImgBody, chosen: str) -> str:
    """The model of a request: `override_settings.sd_model_checkpoint` when sent, else the client's `chosen` one.
    Other settings are refused unless neutral: each would change the image."""
    settings = dict(body.override_settings or {})
    model = settings.pop(CHECKPOINT_OPTION, None)
    for name, value in settings.items():
        if value not in NEUTRAL_SETTINGS.get(name, ()):
            accepted = ", ".join(
                [CHECKPOINT_OPTION, *(f"{key}={NEUTRAL_SETTINGS[key][0]}" for key in NEUTRAL_SETTINGS)]
            )
            raise InvalidRequest(
                f"override_settings.{name}={json.dumps(value)} cannot be honoured here.",
                hint=f"override_settings accepts {accepted}.",
            )
    return checkpoint_key(model) if isinstance(model, str) and model else chosen


def checkpoint_key(title: str) -> str:
    """Our model key for an A1111 checkpoint title: the key itself, with or without A1111's ` [hash]` suffix."""
    return re.sub(r"\s*\[[0-9a-f]{8,64}\]$", "", title.strip())


def sampling(body: Txt2ImgBody) -> tuple[Sampler | None, Schedule]:
    """The sampler and schedule A1111's `sampler_name` (or `sampler_index`) and `scheduler` name: by A1111's names
    (`GET /sdapi/v1/samplers`, `schedulers`), ours as aliases, and a name from before A1111 1.9 that carries its
    schedule ("DPM++ 2M Karras"). An unknown name is refused, never ignored; which sampler runs which schedule on
    which model is the service's rule."""
    name = body.sampler_name or body.sampler_index or ""
    schedule = _schedule(body.scheduler)
    for spacing, label in A1111_SCHEDULE_NAMES.items():
        if spacing is not Schedule.DEFAULT and name.endswith(f" {label}") and name not in _SAMPLERS:
            name, schedule = name.removesuffix(f" {label}"), spacing
    if not name:
        return None, schedule
    if name not in _SAMPLERS:
        raise InvalidRequest(
            f"sampler_name {name!r} is not a sampler this server runs.",
            hint=f"Send one of: {', '.join(A1111_SAMPLER_NAMES.values())} (GET /sdapi/v1/samplers), or leave it "
            "out for the model's own.",
        )
    return _SAMPLERS[name], schedule


def _schedule(name: str | None) -> Schedule:
    if not name:
        return Schedule.DEFAULT
    if name not in _SCHEDULES:
        raise InvalidRequest(
            f"scheduler {name!r} is not a schedule this server runs.",
            hint=f"Send one of: {', '.join(label.lower() for label in A1111_SCHEDULE_NAMES.values())} "
            "(GET /sdapi/v1/schedulers); automatic is the sampler's own.",
        )
    return _SCHEDULES[name]


def sampler_entry(sampler: Sampler) -> dict[str, Any]:
    """A sampler as GET /sdapi/v1/samplers lists it: A1111's name, ours as an alias."""
    return {"name": A1111_SAMPLER_NAMES[sampler], "aliases": [sampler.value], "options": {}}


def schedule_entry(schedule: Schedule) -> dict[str, Any]:
    """A schedule as GET /sdapi/v1/schedulers lists it: A1111's name and label, ours as an alias."""
    label = A1111_SCHEDULE_NAMES[schedule]
    return {
        "name": label.lower(),
        "label": label,
        "aliases": [schedule.value],
        "default_rho": -1,
        "need_inner_model": False,
    }


def count_of(body: Txt2ImgBody) -> int:
    """How many images a request asks for: `batch_size` x `n_iter`, one job, within MAX_COUNT."""
    count = body.batch_size * body.n_iter
    if count > MAX_COUNT:
        raise InvalidRequest(
            f"batch_size {body.batch_size} x n_iter {body.n_iter} asks for {count} images; one request makes at "
            f"most {MAX_COUNT}.",
            hint=f"Ask for at most {MAX_COUNT} images (batch_size x n_iter), or send several requests.",
        )
    return count


def style_of(body: Txt2ImgBody, known: Collection[str]) -> str | None:
    """The style template that `styles` names (one at most), or None."""
    styles = [name for name in body.styles or [] if name]
    if not styles:
        return None
    if len(styles) > 1 or styles[0] not in known:
        raise InvalidRequest(
            f"styles {styles} do not name one of this server's style templates.",
            hint=f"Send at most one of: {', '.join(sorted(known))} (GET /sdapi/v1/prompt-styles).",
        )
    return styles[0]


def to_params(body: Txt2ImgBody, *, model: str, templates: Collection[str]) -> GenerationParams:
    """The request for `ImageService.submit`: text to image, or for an `Img2ImgBody` image to image (inpaint
    with a mask). `InvalidRequest` for what we cannot honour, in A1111's field names."""
    refuse_unhonoured(body)
    sampler, schedule = sampling(body)
    values: dict[str, Any] = {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "model": requested_model(body, model),
        "style": style_of(body, templates),
        "steps": body.steps,
        "guidance": body.cfg_scale,
        "width": body.width,
        "height": body.height,
        "seed": None if body.seed in (None, -1) else body.seed,
        "count": count_of(body),
        "sampler": sampler,
        "schedule": schedule,
        "strength": body.denoising_strength if isinstance(body, Img2ImgBody) else None,
    }
    try:
        fields = _Fields(**values)
    except ValidationError as exc:
        names = [A1111_NAMES.get(str(error["loc"][0]), str(error["loc"][0])) for error in exc.errors()]
        problems = "; ".join(f"{name}: {error['msg']}" for name, error in zip(names, exc.errors(), strict=True))
        raise InvalidRequest(problems, hint=accepted_fields(names, _DECLARED)) from None
    if not isinstance(body, Img2ImgBody):
        return fields.to_params(Task.TEXT2IMG)
    if not body.init_images:
        raise InvalidRequest("init_images is empty.", hint="Send the input image, base64, as init_images[0].")
    if len(body.init_images) > 1:
        raise InvalidRequest(
            f"init_images has {len(body.init_images)} images; one is used per request.",
            hint="Send one image in init_images, and one request per input image.",
        )
    init = ImageSource(base64=body.init_images[0])
    if body.mask:
        return fields.to_params(
            Task.INPAINT, init_image=init, mask_image=ImageSource(base64=body.mask), strength=fields.strength
        )
    return fields.to_params(Task.IMG2IMG, init_image=init, strength=fields.strength)


def model_hashes(model: ModelInfo) -> tuple[str, str]:
    """A1111's short and full hash of a checkpoint, for a catalog entry: a digest of its key and source (the
    entry, not its weights file, which may not be downloaded yet)."""
    full = hashlib.sha256(f"{model.key}\n{model.source}".encode()).hexdigest()
    return full[:10], full


def sd_model(model: ModelInfo) -> SdModel:
    """A catalog entry as A1111 lists a checkpoint: its title and name are our key."""
    short, full = model_hashes(model)
    return SdModel(title=model.key, model_name=model.key, hash=short, sha256=full, filename=model.source)


def infotext(png: bytes) -> str:
    """The `parameters` text chunk of one of our PNGs (the output store writes it), or empty."""
    with Image.open(io.BytesIO(png)) as image:
        text = image.info.get("parameters", "")
    return text if isinstance(text, str) else ""


def answer(result: ImageResult, body: Txt2ImgBody) -> ImagesAnswer:
    """A finished job as A1111 answers it: every image, the request as sent, and `info` as a JSON string."""
    images = result.images
    count = len(images)
    seeds = [image.seed for image in images]
    info = {
        "prompt": result.prompt,
        "all_prompts": [result.prompt] * count,
        "negative_prompt": result.negative_prompt,
        "all_negative_prompts": [result.negative_prompt] * count,
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * count,
        "subseed_strength": 0,
        "width": result.width,
        "height": result.height,
        "sampler_name": A1111_SAMPLER_NAMES.get(Sampler(result.sampler)) if result.sampler else None,
        "cfg_scale": result.guidance,
        "steps": result.steps,
        "batch_size": body.batch_size,
        "restore_faces": False,
        "sd_model_name": result.model,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": result.strength,
        "extra_generation_params": _schedule_parameter(result.schedule),
        "index_of_first_image": 0,
        "infotexts": [infotext(image.png) for image in images],
        "styles": [result.style] if result.style else [],
        "job_timestamp": datetime.now().strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": result.task is Task.INPAINT,
        "version": f"imageforge {__version__}",
    }
    # A1111 echoes the request without its input images (unless include_init_images).
    parameters = body.model_dump() | ({"init_images": None, "mask": None} if isinstance(body, Img2ImgBody) else {})
    pngs = [base64.b64encode(image.png).decode() for image in images] if body.send_images else []
    return ImagesAnswer(images=pngs, parameters=parameters, info=json.dumps(info))


def _schedule_parameter(schedule: str | None) -> dict[str, str]:
    """A1111's extra infotext parameter for a schedule other than the sampler's own."""
    if not schedule or schedule == Schedule.DEFAULT:
        return {}
    return {"Schedule type": A1111_SCHEDULE_NAMES[Schedule(schedule)]}


def png_text(data: str) -> tuple[str, dict[str, Any]]:
    """The `parameters` text and the other text chunks of a base64 PNG; its pixels are never decoded."""
    raw = data.partition(",")[2] if data.startswith("data:") else data
    try:
        with warnings.catch_warnings():
            # Only the header and text chunks are read, so a large pixel count costs nothing here; past twice
            # Pillow's limit it still refuses to open the file at all.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(base64.b64decode(raw, validate=True))) as image:
                chunks = {str(key): value for key, value in image.info.items() if isinstance(value, str)}
    except Image.DecompressionBombError:
        raise InvalidImage("image declares too many pixels to open.", hint="Send a smaller PNG.") from None
    except (ValueError, OSError):
        raise InvalidImage("image is not a base64 image file.", hint="Send the PNG base64-encoded.") from None
    return chunks.pop("parameters", ""), chunks
