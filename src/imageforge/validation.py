"""Validation: a request checked against its model and the server's limits, with defaults filled in and input
images decoded, before anything is queued. Pure: no queue, no store, no engine, so every rule is tested here
directly; the service runs it once per submission."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

from PIL import Image

from imageforge.domain import (
    DEFAULT_STRENGTH,
    FLOW_FAMILIES,
    FLOW_MATCHING_SAMPLERS,
    MAX_COUNT,
    MAX_GUIDANCE,
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MIN_SIZE,
    SAMPLER_SCHEDULES,
    SDCPP_SAMPLE_METHODS,
    Backend,
    Decoder,
    GenerationParams,
    GenerationRequest,
    ImageSource,
    LoraWeight,
    ModelSpec,
    Sampler,
    Schedule,
    Task,
)
from imageforge.errors import InvalidRequest, UnsupportedOperation
from imageforge.inputs import ImageLimits, InputPaths, decode_base64, decode_image, read_file, require_text


@dataclass(frozen=True)
class RequestLimits:
    """The server's bounds on a request: the largest side (MAX_RES), the most steps, and what an input image may
    cost to decode."""

    max_res: int = 1024
    max_steps: int = 100
    images: ImageLimits = field(default_factory=ImageLimits)


class RequestValidator:
    """Turns what a client asked for into a `GenerationRequest` its model can run, or refuses it with the error
    that says what to change."""

    def __init__(self, limits: RequestLimits, paths: InputPaths) -> None:
        self._limits = limits
        self._paths = paths

    def validate(self, params: GenerationParams, spec: ModelSpec) -> GenerationRequest:
        """Check every field against the model and the limits; fill defaults; decode input images."""
        if not spec.supports(params.task):
            raise UnsupportedOperation(
                f"Model '{spec.key}' does not support {params.task.value}.",
                hint=f"It supports: {', '.join(t.value for t in spec.tasks)}. Pick another model (GET /models or "
                "list_models).",
            )
        prompt = params.prompt.strip()
        if not prompt:
            raise InvalidRequest("prompt is empty.", hint="Describe the image you want.")
        if len(prompt) > MAX_PROMPT_CHARS or len(params.negative_prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"A prompt is longer than {MAX_PROMPT_CHARS} characters.", hint="Shorten it.")

        init_image = mask_image = None
        if params.task is not Task.TEXT2IMG:
            init_image = self._load_image(params.init_image, "init_image", "RGB")
        if params.task is Task.INPAINT:
            mask_image = self._load_image(params.mask_image, "mask_image", "L")
            assert init_image is not None
            if mask_image.size != init_image.size:
                raise InvalidRequest(
                    f"mask_image is {mask_image.width}x{mask_image.height} but init_image is "
                    f"{init_image.width}x{init_image.height}.",
                    hint="Send a mask of exactly the init image's size (white = repaint, black = keep).",
                )

        width, height = self._size(params, spec, init_image)
        decoder = self._decoder(params, spec)
        sampler, schedule = _sampling(params, spec)
        loras = _loras(params.loras, spec)
        strength = DEFAULT_STRENGTH.get(params.task, 1.0) if params.strength is None else params.strength
        if params.task is not Task.TEXT2IMG and not 0.0 < strength <= 1.0:
            raise InvalidRequest(f"strength {strength} is out of range.", hint="Use a value in (0, 1].")
        steps = self._steps(params, spec, strength)
        guidance = spec.default_guidance if params.guidance is None else params.guidance
        if not 0.0 <= guidance <= MAX_GUIDANCE:
            raise InvalidRequest(f"guidance {guidance} is out of range.", hint=f"Use 0 to {MAX_GUIDANCE:g}.")
        if not 1 <= params.count <= MAX_COUNT:
            raise InvalidRequest(f"count {params.count} is out of range.", hint=f"Use 1 to {MAX_COUNT} images.")
        # The images take the seeds from `seed` on, each of which a request may name alone.
        last_seed = MAX_SEED - params.count + 1
        seed = secrets.randbelow(last_seed + 1) if params.seed is None else params.seed
        if not 0 <= seed <= last_seed:
            takes = f" ({params.count} images take the seeds up to seed+{params.count - 1})" if params.count > 1 else ""
            raise InvalidRequest(f"seed {seed} is out of range{takes}.", hint=f"Use 0 to {last_seed}, or omit it.")

        if init_image is not None:
            init_image = init_image.resize((width, height), Image.Resampling.LANCZOS)
        if mask_image is not None:
            mask_image = mask_image.resize((width, height), Image.Resampling.NEAREST)
        return GenerationRequest(
            task=params.task,
            model=spec.key,
            prompt=prompt,
            negative_prompt=params.negative_prompt.strip(),
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            seed=seed,
            strength=strength,
            decoder=decoder,
            sampler=sampler,
            schedule=schedule,
            loras=loras,
            init_image=init_image,
            mask_image=mask_image,
        )

    @staticmethod
    def _decoder(params: GenerationParams, spec: ModelSpec) -> Decoder:
        try:
            decoder = Decoder(params.decoder)
        except ValueError:
            raise InvalidRequest(
                f"decoder {params.decoder!r} is not one of full, fast.",
                hint='Use "full" (the model\'s VAE, the default) or "fast" (the tiny autoencoder, much faster).',
            ) from None
        if decoder is Decoder.FAST and spec.fast_decoder is None:
            raise UnsupportedOperation(
                f"Model '{spec.key}' has no fast decoder.",
                hint='Use decoder "full"; sd and sdxl models have a fast one (TAESD).',
            )
        return decoder

    def _size(self, params: GenerationParams, spec: ModelSpec, init_image: Image.Image | None) -> tuple[int, int]:
        """Requested size, else the init image's (scaled to fit MAX_RES), else the model's default."""
        multiple = spec.size_multiple
        largest = self._limits.max_res // multiple * multiple
        default_w = default_h = min(spec.default_size, largest)
        if init_image is not None:
            scale = min(1.0, self._limits.max_res / max(init_image.size))
            default_w, default_h = (max(MIN_SIZE, int(side * scale) // multiple * multiple) for side in init_image.size)
            default_w, default_h = min(default_w, largest), min(default_h, largest)
        width = default_w if params.width is None else params.width
        height = default_h if params.height is None else params.height
        for name, value in (("width", width), ("height", height)):
            if value % multiple:
                raise InvalidRequest(
                    f"{name} {value} is not a multiple of {multiple}.",
                    hint=f"Use a multiple of {multiple}, e.g. "
                    f"{min(largest, max(MIN_SIZE, value // multiple * multiple))}.",
                )
            if not MIN_SIZE <= value <= self._limits.max_res:
                raise InvalidRequest(
                    f"{name} {value} is outside {MIN_SIZE}..{self._limits.max_res}.",
                    hint=f"Use {MIN_SIZE} to {self._limits.max_res} (MAX_RES); {spec.key} works best at "
                    f"{spec.default_size}.",
                )
        return width, height

    def _steps(self, params: GenerationParams, spec: ModelSpec, strength: float) -> int:
        """img2img and inpaint run `steps * strength` steps, so the default rises until that is at least one."""
        if params.steps is None:
            steps = spec.default_steps
            if params.task is not Task.TEXT2IMG:
                steps = max(steps, math.ceil(1 / strength))
            if steps > self._limits.max_steps:
                raise InvalidRequest(
                    f"strength {strength} needs {steps} steps to make one denoising step, over the limit of "
                    f"{self._limits.max_steps}.",
                    hint=f"Use a strength of at least {1 / self._limits.max_steps:.3g}.",
                )
            return steps
        if not 1 <= params.steps <= self._limits.max_steps:
            raise InvalidRequest(f"steps {params.steps} is out of range.", hint=f"Use 1 to {self._limits.max_steps}.")
        if params.task is not Task.TEXT2IMG and int(params.steps * strength) < 1:
            raise InvalidRequest(
                f"steps {params.steps} at strength {strength} leaves no denoising step.",
                hint=f"Use at least {math.ceil(1 / strength)} steps, or a higher strength.",
            )
        return params.steps

    def _load_image(self, source: ImageSource | None, field: str, mode: str) -> Image.Image:
        return decode_image(self.image_bytes(source, field), field=field, limits=self._limits.images, mode=mode)

    def image_bytes(self, source: ImageSource | None, field: str) -> bytes:
        """The encoded bytes of an image a client sent as base64 or as a path, within the size and path rules."""
        limits = self._limits.images
        if source is None or (source.base64 is None) == (source.path is None):
            raise InvalidRequest(
                f"Send exactly one of {field} (base64) or {field}_path.",
                hint=f"{field} is required for this operation.",
            )
        if source.base64 is not None:
            return decode_base64(source.base64, field=field, limits=limits)
        assert source.path is not None
        return read_file(self._paths.resolve(source.path, field=f"{field}_path"), field=field, limits=limits)


def _sampling(params: GenerationParams, spec: ModelSpec) -> tuple[Sampler | None, Schedule]:
    """The sampler and schedule a request asks for, when its model runs them; a combination that would be ignored
    is refused, since the image would not be the one asked for."""
    try:
        sampler = None if params.sampler is None else Sampler(params.sampler)
    except ValueError:
        raise InvalidRequest(
            f"sampler {params.sampler!r} is not one of {', '.join(Sampler)}.",
            hint="Name one of those, or leave sampler out for the model's own.",
        ) from None
    try:
        schedule = Schedule(params.schedule)
    except ValueError:
        raise InvalidRequest(
            f"schedule {params.schedule!r} is not one of {', '.join(Schedule)}.",
            hint='Name one of those, or leave schedule out ("default").',
        ) from None
    if spec.backend is Backend.SDCPP and sampler is not None and sampler not in SDCPP_SAMPLE_METHODS:
        raise InvalidRequest(
            f"Model '{spec.key}' runs on stable-diffusion.cpp, which has no {sampler.value!r} sampler.",
            hint=f"Use one of {', '.join(SDCPP_SAMPLE_METHODS)}, or leave sampler out for the model's own.",
        )
    if spec.family in FLOW_FAMILIES:
        if (sampler is not None and sampler not in FLOW_MATCHING_SAMPLERS) or schedule is not Schedule.DEFAULT:
            raise InvalidRequest(
                f"Model '{spec.key}' ({spec.family.value}) samples by flow matching with its own scheduler.",
                hint=f"Leave sampler and schedule out for {spec.key}, or pick an sd or sdxl model.",
            )
        return sampler, schedule
    if schedule is not Schedule.DEFAULT:
        if sampler is None:
            raise InvalidRequest(
                f"schedule {schedule.value!r} needs a sampler.",
                hint=f"Name a sampler that runs it: {', '.join(_running(schedule))}.",
            )
        if schedule not in SAMPLER_SCHEDULES[sampler]:
            raise InvalidRequest(
                f"sampler {sampler.value!r} does not run the {schedule.value} schedule.",
                hint=f'Use schedule "default" with {sampler.value}, or a sampler that runs {schedule.value}: '
                f"{', '.join(_running(schedule))}.",
            )
    return sampler, schedule


def _loras(loras: tuple[LoraWeight, ...], spec: ModelSpec) -> tuple[LoraWeight, ...]:
    """The model's own LoRAs (`ModelSpec.loras`) then the request's, at most MAX_LORAS of those (again, for
    in-process callers; `LoraWeight` bounds each weight), each named once and without its `.safetensors`; a request
    naming one of the model's sets its weight. Whether the server has them is the service's to check."""
    if len(loras) > MAX_LORAS:
        raise InvalidRequest(f"{len(loras)} LoRAs are more than {MAX_LORAS}.", hint=f"Apply at most {MAX_LORAS}.")
    named = [lora.model_copy(update={"name": lora.name.removesuffix(".safetensors")}) for lora in loras]
    names = [lora.name for lora in named]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidRequest(
            f"LoRA {', '.join(map(repr, repeated))} is named more than once.",
            hint="Name each LoRA once, with the weight you meant.",
        )
    weights = {lora.name: lora for lora in spec.loras} | {lora.name: lora for lora in named}
    return tuple(weights.values())


def _running(schedule: Schedule) -> list[str]:
    return [sampler.value for sampler, schedules in SAMPLER_SCHEDULES.items() if schedule in schedules]


def require_texts(params: GenerationParams) -> None:
    """Every text a request carries is checked before any of it is used, echoed in an error, or queued."""
    for name in ("prompt", "negative_prompt", "model", "style", "decoder", "sampler", "schedule"):
        require_text(getattr(params, name), field=name)
    for name, source in (("init_image", params.init_image), ("mask_image", params.mask_image)):
        if source is not None:
            require_text(source.base64, field=name)
            require_text(source.path, field=f"{name}_path")


def assist_texts(prompt: str, style: str | None) -> tuple[str, str | None]:
    """A prompt and optional style for prompt assist, stripped; `InvalidRequest` when the prompt is empty or
    either is too long or not text."""
    require_text(prompt, field="prompt")
    require_text(style, field="style")
    if not prompt.strip():
        raise InvalidRequest("prompt is empty.", hint="Describe the image you want.")
    if len(prompt) > MAX_PROMPT_CHARS or len(style or "") > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"A prompt or style is longer than {MAX_PROMPT_CHARS} characters.", hint="Shorten it.")
    return prompt.strip(), (style or "").strip() or None
