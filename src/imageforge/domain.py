"""Pure types shared by every layer: what a generation asks for, what it returns, what a model is."""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator
from pydantic.fields import FieldInfo

from imageforge.errors import InvalidRequest


class Task(enum.StrEnum):
    """The operations a model can support."""

    #: prompt → image
    TEXT2IMG = "text2img"
    #: prompt + init image → image (`strength` says how far from the input)
    IMG2IMG = "img2img"
    #: prompt + init image + mask → image, repainting the white part of the mask
    INPAINT = "inpaint"


#: How far img2img and inpaint move from the input when a request leaves `strength` out.
DEFAULT_STRENGTH: dict[Task, float] = {Task.IMG2IMG: 0.6, Task.INPAINT: 1.0}


class Decoder(enum.StrEnum):
    """What turns the final latents into pixels."""

    #: the model's own VAE: full quality, the default
    FULL = "full"
    #: the tiny autoencoder (TAESD/TAESDXL): a much faster decode, an approximation of the VAE's
    FAST = "fast"


class Sampler(enum.StrEnum):
    """The sampling methods a request may choose (`sampler`), each run by a diffusers scheduler on SD and SDXL
    models; a request without one runs the model's own. FLUX models sample by flow matching: only `euler`."""

    #: Euler (EulerDiscreteScheduler)
    EULER = "euler"
    #: Euler ancestral (EulerAncestralDiscreteScheduler): adds fresh noise at each step
    EULER_A = "euler_a"
    #: Heun (HeunDiscreteScheduler): two model evaluations per step
    HEUN = "heun"
    #: DPM2 (KDPM2DiscreteScheduler)
    DPM2 = "dpm2"
    #: DPM2 ancestral (KDPM2AncestralDiscreteScheduler)
    DPM2_A = "dpm2_a"
    #: DPM++ 2M (DPMSolverMultistepScheduler, dpmsolver++)
    DPMPP_2M = "dpmpp_2m"
    #: DPM++ 2M SDE (DPMSolverMultistepScheduler, sde-dpmsolver++)
    DPMPP_2M_SDE = "dpmpp_2m_sde"
    #: DDIM (DDIMScheduler)
    DDIM = "ddim"
    #: PNDM (PNDMScheduler), which AUTOMATIC1111 calls PLMS
    PNDM = "pndm"
    #: UniPC (UniPCMultistepScheduler)
    UNIPC = "unipc"
    #: LCM (LCMScheduler): for latent-consistency models and LoRAs, at 4-8 steps
    LCM = "lcm"
    #: DEIS (DEISMultistepScheduler)
    DEIS = "deis"


class Schedule(enum.StrEnum):
    """How the noise levels of the steps are spaced (`schedule`)."""

    #: the sampler's own spacing, as the model configures it
    DEFAULT = "default"
    #: Karras et al. (2022): more steps at low noise
    KARRAS = "karras"
    #: evenly spaced in log noise
    EXPONENTIAL = "exponential"


_SPACED = frozenset(Schedule)
_OWN_SPACING = frozenset({Schedule.DEFAULT})
#: The schedules each sampler runs (those whose diffusers scheduler has the spacing's switch); the others are
#: refused rather than ignored.
SAMPLER_SCHEDULES: Mapping[Sampler, frozenset[Schedule]] = {
    Sampler.EULER: _SPACED,
    Sampler.EULER_A: _OWN_SPACING,
    Sampler.HEUN: _SPACED,
    Sampler.DPM2: _SPACED,
    Sampler.DPM2_A: _SPACED,
    Sampler.DPMPP_2M: _SPACED,
    Sampler.DPMPP_2M_SDE: _SPACED,
    Sampler.DDIM: _OWN_SPACING,
    Sampler.PNDM: _OWN_SPACING,
    Sampler.UNIPC: _SPACED,
    Sampler.LCM: _OWN_SPACING,
    Sampler.DEIS: _SPACED,
}
#: The samplers of the flow-matching families (FLUX): their own Euler only.
FLOW_MATCHING_SAMPLERS = frozenset({Sampler.EULER})
#: stable-diffusion.cpp's name (`sample_method`) for each sampler it runs; its models refuse the others.
SDCPP_SAMPLE_METHODS: Mapping[Sampler, str] = {
    Sampler.EULER: "euler",
    Sampler.EULER_A: "euler_a",
    Sampler.HEUN: "heun",
    Sampler.DPM2: "dpm2",
    Sampler.DPMPP_2M: "dpm++2m",
    Sampler.LCM: "lcm",
}

#: AUTOMATIC1111's name for each sampler: its infotext (the PNG `parameters` text) and its API say these.
A1111_SAMPLER_NAMES: Mapping[Sampler, str] = {
    Sampler.EULER: "Euler",
    Sampler.EULER_A: "Euler a",
    Sampler.HEUN: "Heun",
    Sampler.DPM2: "DPM2",
    Sampler.DPM2_A: "DPM2 a",
    Sampler.DPMPP_2M: "DPM++ 2M",
    Sampler.DPMPP_2M_SDE: "DPM++ 2M SDE",
    Sampler.DDIM: "DDIM",
    Sampler.PNDM: "PLMS",
    Sampler.UNIPC: "UniPC",
    Sampler.LCM: "LCM",
    # AUTOMATIC1111 has no DEIS; this is the name other front ends show.
    Sampler.DEIS: "DEIS",
}
#: AUTOMATIC1111's name for each schedule ("Schedule type"); its "Automatic" is the sampler's own.
A1111_SCHEDULE_NAMES: Mapping[Schedule, str] = {
    Schedule.DEFAULT: "Automatic",
    Schedule.KARRAS: "Karras",
    Schedule.EXPONENTIAL: "Exponential",
}


class Fallback(enum.StrEnum):
    """What the engine may change to retry a job that ran out of memory (`IMAGEFORGE_OOM_FALLBACK`), in the
    operator's order; the first three are memory savers, which change nothing a request asked for."""

    #: decode the latents with the VAE in tiles
    TILED_VAE = "tiled_vae"
    #: compute attention in slices
    ATTENTION_SLICING = "attention_slicing"
    #: keep the weights in RAM and move each component to the GPU while it runs (CUDA only)
    CPU_OFFLOAD = "cpu_offload"
    #: a smaller width and height, with the same shape; only for a request that allows it (`allow_downsize`)
    SMALLER_SIZE = "smaller_size"


#: The fallbacks that save memory without changing the request's size.
MEMORY_SAVERS = frozenset({Fallback.TILED_VAE, Fallback.ATTENTION_SLICING, Fallback.CPU_OFFLOAD})
#: The fallbacks of a retry after running out of memory when the operator sets none (`IMAGEFORGE_OOM_FALLBACK`).
DEFAULT_FALLBACK = (Fallback.TILED_VAE, Fallback.ATTENTION_SLICING, Fallback.CPU_OFFLOAD, Fallback.SMALLER_SIZE)


class Family(enum.StrEnum):
    """Model architectures: the pipeline families the diffusers backend loads, and those only the
    stable-diffusion.cpp backend runs (`qwen-image`)."""

    SD = "sd"
    SDXL = "sdxl"
    FLUX = "flux"
    FLUX2_KLEIN = "flux2-klein"
    #: Qwen-Image and Qwen-Image-Edit: a flow-matching transformer with a Qwen2.5-VL text encoder
    QWEN_IMAGE = "qwen-image"


#: The families that sample by flow matching with their own scheduler and pack 2x2 latent patches.
FLOW_FAMILIES = frozenset({Family.FLUX, Family.FLUX2_KLEIN, Family.QWEN_IMAGE})


class Backend(enum.StrEnum):
    """The engine that runs a model (ADR 0027)."""

    #: Hugging Face diffusers in this process
    DIFFUSERS = "diffusers"
    #: stable-diffusion.cpp's `sd-server`, as a child process
    SDCPP = "sdcpp"


@dataclass(frozen=True)
class SdcppFiles:
    """What stable-diffusion.cpp loads for a model and how it samples it. Each file is a local path or a file on
    the Hub (`https://huggingface.co/<owner>/<repo>/blob/<revision>/<path>`); the names follow sd-server's switches.
    """

    #: `-m`: a whole checkpoint (`.safetensors`, `.gguf`) or a diffusers folder
    model: str | None = None
    #: `--diffusion-model`: the denoiser alone (GGUF files of FLUX, Qwen-Image, ...)
    diffusion_model: str | None = None
    vae: str | None = None
    clip_l: str | None = None
    clip_g: str | None = None
    t5xxl: str | None = None
    #: `--llm`: a language-model text encoder (Qwen2.5-VL for Qwen-Image)
    llm: str | None = None
    #: `--llm_vision`: the vision tower of `llm`, for reference images when `llm` is a GGUF without it
    llm_vision: str | None = None
    #: sd.cpp's sampler and scheduler names (`euler`, `discrete`...); None: sd.cpp's choice for the model
    sample_method: str | None = None
    scheduler: str | None = None
    flow_shift: float | None = None
    #: `--type`: convert the weights when loading (`f16`, `q8_0`, `q4_K`...); None keeps the files' own
    weight_type: str | None = None
    #: further sd-server switches (`--diffusion-fa`, `--offload-to-cpu`, `--qwen-image-zero-cond-t`)
    options: tuple[str, ...] = ()
    #: an img2img request's image goes in as a reference image to edit by instruction (Qwen-Image-Edit), not as
    #: the starting point of the denoising
    edit_with_reference: bool = False

    def files(self) -> dict[str, str]:
        """The files by switch name, those set only."""
        names = ("model", "diffusion_model", "vae", "clip_l", "clip_g", "t5xxl", "llm", "llm_vision")
        return {name: value for name in names if (value := getattr(self, name))}


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry: where the weights are, how to run them, and what to tell users about them."""

    key: str
    #: a Hub repo id, a local diffusers folder, or a local single-file `.safetensors` checkpoint
    source: str
    family: Family
    description: str
    default_steps: int
    default_guidance: float
    default_size: int
    tasks: tuple[Task, ...] = (Task.TEXT2IMG, Task.IMG2IMG, Task.INPAINT)
    est_memory_gb: float = 4.0
    #: the setting name that must be true before the model may load (`ALLOW_FLUX`), if any
    guard: str | None = None
    quality_note: str = ""
    #: a scheduler class name to swap in after loading (`LCMScheduler`), if any
    scheduler: str | None = None
    #: LoRA weights (repo id or `.safetensors` file) fused in after loading
    lora: str | None = None
    #: LoRAs of the LoRA folder every request to this entry applies, as a request's own `loras` do (for one job,
    #: on the resident weights); a request naming one of them sets its weight
    loras: tuple[LoraWeight, ...] = ()
    #: a single `.safetensors`/`.gguf` file whose transformer replaces the source's (quantised FLUX)
    transformer_file: str | None = None
    revision: str | None = None
    #: why the entry behaves differently than its name suggests, shown to users (`sdxl-portrait` without its LoRA)
    notice: str = ""
    #: built in code by imageforge (the `tiny` model) rather than downloaded
    builtin: bool = False
    #: the tiny autoencoder for `decoder: "fast"` and previews (a Hub repo id or a local folder), if any
    fast_decoder: str | None = None
    #: the engine that runs it; `sdcpp` entries name their files in `sdcpp`
    backend: Backend = Backend.DIFFUSERS
    sdcpp: SdcppFiles | None = None

    def supports(self, task: Task) -> bool:
        return task in self.tasks

    def why_negative_prompt_ignored(self, guidance: float) -> str | None:
        """None when a negative prompt changes this model's output at `guidance`; otherwise the reason."""
        if self.family in (Family.FLUX, Family.FLUX2_KLEIN):
            return f"{self.family.value} pipelines take no negative prompt"
        if guidance <= 1:
            return f"at guidance {guidance:g} (1 or less) the model runs without a negative prompt"
        return None

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (FLUX packs 2x2 latent patches)."""
        return 16 if self.family in FLOW_FAMILIES else 8


@dataclass(frozen=True)
class ImageSource:
    """An input image as a client sent it: base64 data or a path (exactly one)."""

    base64: str | None = None
    path: str | None = None


class WebhookEvent(enum.StrEnum):
    """What a job's webhook is told about (`webhook_events`)."""

    #: the job began running
    STARTED = "started"
    #: one denoising step done (as many deliveries as steps)
    PROGRESS = "progress"
    #: the job ended: succeeded, failed or cancelled, with the job as the body
    COMPLETED = "completed"


class ReturnMode(enum.StrEnum):
    """How a synchronous HTTP answer carries its image."""

    #: the PNG inline, base64-encoded
    BASE64 = "base64"
    #: only where it is saved on the server
    PATH = "path"
    BOTH = "both"


# -- the generation request, declared once ----------------------------------------------------------------
#
# Each field of a generation request is declared here once, with its type, its static bounds, its default and
# its description. The HTTP bodies inherit `TextToImageFields`; the MCP tools and the CLI take the aliases and
# `REQUEST_FIELDS`; tests/contract/test_request_declaration.py checks that every surface agrees. What depends
# on the model or the server (MAX_RES, MAX_STEPS, the size multiple, the model's defaults) is checked by the
# service, which also checks these bounds again for in-process callers.

#: Width and height are at least this.
MIN_SIZE = 64
MAX_SEED = 2**32 - 1
#: The most images one request may ask for (`count`).
MAX_COUNT = 4
MAX_GUIDANCE = 30.0
MAX_PROMPT_CHARS = 4000
#: The most LoRAs one request may apply (`loras`).
MAX_LORAS = 4
#: A LoRA's weight is within ±this: past 2 a LoRA overwhelms its base model and draws noise.
MAX_LORA_WEIGHT = 2.0
#: The longest LoRA name: a file name without its `.safetensors`.
MAX_LORA_NAME = 200

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What to draw, in plain words.")]
NegativePrompt = Annotated[
    str,
    Field(
        "",
        max_length=MAX_PROMPT_CHARS,
        description="What to keep out of the image; no effect at guidance 1 or less (turbo models) nor on FLUX.",
    ),
]
ModelKey = Annotated[
    str | None, Field(None, description="A catalog key (GET /models, list_models); the server's default when absent.")
]
StyleKey = Annotated[
    str | None,
    Field(
        None,
        description="A style template's key (GET /templates, list_styles): the prompt becomes the subject of the "
        "template's prompt, and its size (text to image only) and negative prompt apply where the request leaves "
        "them out.",
    ),
]
Steps = Annotated[
    int | None,
    Field(None, ge=1, description="Denoising steps, at most the server's MAX_STEPS; the model's default when absent."),
]
Guidance = Annotated[
    float | None,
    Field(
        None,
        ge=0.0,
        le=MAX_GUIDANCE,
        description="Classifier-free guidance scale; the model's default when absent (0 for turbo models).",
    ),
]
_SIDE = f"at least {MIN_SIZE} px, a multiple of 8 (16 for FLUX), at most the server's MAX_RES"
Width = Annotated[
    int | None,
    Field(None, ge=MIN_SIZE, description=f"Width: {_SIDE}; the model's size (or the input image's) when absent."),
]
Height = Annotated[
    int | None,
    Field(None, ge=MIN_SIZE, description=f"Height: {_SIDE}; the model's size (or the input image's) when absent."),
]
Seed = Annotated[
    int | None,
    Field(None, ge=0, le=MAX_SEED, description="Makes the image reproducible; random when absent, always returned."),
]
Strength = Annotated[
    float | None,
    Field(
        None,
        gt=0.0,
        le=1.0,
        description="How far to move from the input image: near 0 keeps it, 1 ignores it (inpaint: inside the "
        f"mask); by default {DEFAULT_STRENGTH[Task.IMG2IMG]:g} for img2img and "
        f"{DEFAULT_STRENGTH[Task.INPAINT]:g} for inpaint.",
    ),
]
Count = Annotated[
    int,
    Field(
        1,
        ge=1,
        le=MAX_COUNT,
        description="How many images to make, with consecutive seeds (seed, seed+1, …): one job, cancelled as one.",
    ),
]
TaskChoice = Annotated[
    Task, Field(Task.TEXT2IMG, description="text2img, img2img (needs an input image) or inpaint (and a mask).")
]
AssistPrompt = Annotated[
    bool, Field(False, description="Expand the prompt through the local LLM first (used as is if that fails).")
]
UseCache = Annotated[bool, Field(True, description="Return a stored result for an identical seeded request.")]
DecoderChoice = Annotated[
    Decoder,
    Field(
        Decoder.FULL, description='"full" (the model\'s VAE) or "fast" (the tiny autoencoder: a much faster decode).'
    ),
]
SamplerChoice = Annotated[
    Sampler | None,
    Field(
        None,
        description="The sampling method; the model's own scheduler when absent. FLUX models take only euler "
        "(their own).",
    ),
]
ScheduleChoice = Annotated[
    Schedule,
    Field(
        Schedule.DEFAULT,
        description="How the steps' noise levels are spaced: default (the sampler's own), or karras or exponential "
        "with a sampler that runs them ("
        + ", ".join(sampler.value for sampler, schedules in SAMPLER_SCHEDULES.items() if len(schedules) > 1)
        + ").",
    ),
]


class LoraWeight(BaseModel):
    """One LoRA a request applies: a `.safetensors` file of the server's LoRA folder by name, and how strongly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=MAX_LORA_NAME,
        description="The LoRA's name as GET /loras (list_loras) lists it: its file name without .safetensors.",
    )
    weight: float = Field(
        1.0,
        ge=-MAX_LORA_WEIGHT,
        le=MAX_LORA_WEIGHT,
        description="How strongly it applies: 1 as trained, 0 not at all, negative against it.",
    )


Loras = Annotated[
    tuple[LoraWeight, ...],
    Field(
        (),
        max_length=MAX_LORAS,
        description=f"LoRAs to apply to the model for this request only, at most {MAX_LORAS}, each by name from the "
        f"server's LoRA folder (GET /loras, list_loras) with a weight from {-MAX_LORA_WEIGHT:g} to "
        f"{MAX_LORA_WEIGHT:g}; they must suit the model's family. Never read from the prompt's text.",
    ),
]
AllowDownsize = Annotated[
    bool,
    Field(
        False,
        description="If the image runs out of memory even with the server's memory savers, retry it once at a "
        "smaller size of the same shape (where the server's fallback policy has smaller_size) instead of failing; "
        "the result's `downgraded` says so.",
    ),
]
ReturnModeChoice = Annotated[
    ReturnMode, Field(ReturnMode.BOTH, description="both (the PNG as base64, and its path), base64 or path.")
]
#: The longest webhook URL a job may carry.
MAX_WEBHOOK_URL = 2000
WebhookUrl = Annotated[
    str | None,
    Field(
        None,
        max_length=MAX_WEBHOOK_URL,
        description="An http(s) URL to post the job's events to, signed the Standard Webhooks way and retried on "
        "failure; its host must be one the server's IMAGEFORGE_WEBHOOK_ALLOW lists. None: no webhook.",
    ),
]
WebhookEvents = Annotated[
    tuple[WebhookEvent, ...],
    Field(
        (WebhookEvent.COMPLETED,),
        min_length=1,
        description="Which events the webhook gets: started, progress (each step) and completed (the job ended: "
        "succeeded, failed or cancelled).",
    ),
]


class TextToImageFields(BaseModel):
    """The fields of every generation request, with their defaults: a text-to-image request as a whole, and the
    common part of the others (which add `strength`, `task` and their input images)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    prompt: Prompt = Field(examples=["a red fox in the snow"])
    negative_prompt: NegativePrompt
    model: ModelKey
    style: StyleKey
    steps: Steps
    guidance: Guidance
    width: Width
    height: Height
    seed: Seed
    assist_prompt: AssistPrompt
    use_cache: UseCache
    decoder: DecoderChoice
    count: Count
    sampler: SamplerChoice
    schedule: ScheduleChoice
    loras: Loras
    allow_downsize: AllowDownsize

    def to_params(
        self,
        task: Task = Task.TEXT2IMG,
        *,
        init_image: ImageSource | None = None,
        mask_image: ImageSource | None = None,
        strength: float | None = None,
    ) -> GenerationParams:
        """The request for `ImageService.submit`, as `task` on these inputs."""
        values = {name: getattr(self, name) for name in TextToImageFields.model_fields}
        return GenerationParams(
            **values
            | {
                "decoder": self.decoder.value,
                "sampler": None if self.sampler is None else self.sampler.value,
                "schedule": self.schedule.value,
            },
            task=task,
            init_image=init_image,
            mask_image=mask_image,
            strength=strength,
        )


class _RequestFields(TextToImageFields):
    """Every declared field: the common ones, and those of the requests on an input image and of HTTP."""

    strength: Strength
    task: TaskChoice
    return_mode: ReturnModeChoice
    webhook: WebhookUrl
    webhook_events: WebhookEvents


#: Every declared request field by name, with its type, bounds, default and description.
REQUEST_FIELDS: Mapping[str, FieldInfo] = _RequestFields.model_fields
#: The declared request fields that the HTTP API (and so its Python client) names otherwise: `n`, the name OpenAI's
#: Images API and its clients give the number of images.
HTTP_NAMES: Mapping[str, str] = {"count": "n"}


_BOUND_WORDS = (
    ("ge", "at least {}"),
    ("gt", "more than {}"),
    ("le", "at most {}"),
    ("min_length", "{} or more characters"),
    ("max_length", "at most {} characters"),
)


def declared_enum(declared: FieldInfo) -> type[enum.Enum] | None:
    """The enum a declared field's values come from (`Sampler` for `Sampler | None`), or None."""
    for candidate in (declared.annotation, *get_args(declared.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def accepted(name: str, shown: str | None = None) -> str:
    """What the declaration of the request field `name` accepts, in words, with its description: the hint for a
    value a surface refused before the service saw it. `shown` is the surface's name for the field, if another."""
    declared = REQUEST_FIELDS[name]
    shown = shown or name
    rules = [
        words.format(f"{value:g}" if isinstance(value, float) else value)
        for rule in declared.metadata
        for bound, words in _BOUND_WORDS
        if (value := getattr(rule, bound, None)) is not None
    ]
    choices = declared_enum(declared)
    if choices is not None:
        rules.append("one of " + ", ".join(str(member.value) for member in choices))
    return f"{shown}: {' and '.join(rules)}. {declared.description}" if rules else f"{shown}: {declared.description}"


def accepted_fields(names: Iterable[str], declared_as: Mapping[str, str] | None = None) -> str:
    """`accepted` for each declared request field among `names` (once each, in order), as one hint; empty when
    none is a request field. HTTP bodies and MCP tool arguments refused by their schema answer with it;
    `declared_as` maps a surface's own names to the declared ones (HTTP's `n` to `count`)."""
    declared_as = declared_as or {}
    return " ".join(
        accepted(declared_as.get(name, name), name)
        for name in dict.fromkeys(names)
        if declared_as.get(name, name) in REQUEST_FIELDS
    )


@dataclass(frozen=True)
class GenerationParams:
    """What a client asked for, before validation; `None` means "the model's default"."""

    task: Task
    prompt: str
    negative_prompt: str = ""
    model: str | None = None
    #: a style template's key, applied by the service before validation (`StyleTemplate.frame`)
    style: str | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    strength: float | None = None
    init_image: ImageSource | None = None
    mask_image: ImageSource | None = None
    assist_prompt: bool = False
    use_cache: bool = True
    #: "full" or "fast" (a `Decoder`); a string until validated
    decoder: str = Decoder.FULL.value
    #: how many images, with the seeds from `seed` on
    count: int = 1
    #: a `Sampler`, or None for the model's own; a string until validated
    sampler: str | None = None
    #: a `Schedule`; a string until validated
    schedule: str = Schedule.DEFAULT.value
    #: where to post the job's events (an http(s) URL the server allows), or None
    webhook: str | None = None
    webhook_events: tuple[WebhookEvent, ...] = (WebhookEvent.COMPLETED,)
    #: the LoRAs to apply, in order; their names are checked against the LoRA folder by the service
    loras: tuple[LoraWeight, ...] = ()
    #: a retry after running out of memory may make the image smaller
    allow_downsize: bool = False


@dataclass(frozen=True, kw_only=True)
class RequestValues:
    """What a validated request asks its model for, whichever form carries it: defaults filled in, checked."""

    task: Task
    model: str
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    width: int
    height: int
    strength: float = 0.6
    decoder: Decoder = Decoder.FULL
    #: None: the model's own scheduler
    sampler: Sampler | None = None
    schedule: Schedule = Schedule.DEFAULT
    #: applied for this request only, on top of the model (and of any LoRA its catalog entry fuses in)
    loras: tuple[LoraWeight, ...] = ()

    def shared(self) -> dict[str, Any]:
        """These values as keyword arguments, to carry them into another form of the request."""
        return {name: getattr(self, name) for name in RequestValues.__dataclass_fields__}

    def values(self) -> dict[str, Any]:
        """These values as a result record and a cache key name them (no strength for text to image)."""
        return {
            "task": self.task.value,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "strength": self.strength if self.task is not Task.TEXT2IMG else None,
            "decoder": self.decoder.value,
            "sampler": None if self.sampler is None else self.sampler.value,
            "schedule": self.schedule.value,
            "loras": [lora.model_dump() for lora in self.loras],
        }


@dataclass(frozen=True, kw_only=True)
class GenerationRequest(RequestValues):
    """A validated request as the engine runs it: its seed and its input images decoded."""

    seed: int
    init_image: Image.Image | None = field(default=None, compare=False)
    mask_image: Image.Image | None = field(default=None, compare=False)
    #: memory savers (of `MEMORY_SAVERS`) the engine switches on for this run whatever its free memory: a retry
    #: after running out of memory
    memory_savers: frozenset[Fallback] = field(default=frozenset(), compare=False)


@dataclass(frozen=True, kw_only=True)
class QueuedRequest(RequestValues):
    """A validated request as its job carries it: plain values, its input images as digests in the input store.

    It holds no image bytes and no path to read later, so any process that reaches the stores can run the job.
    """

    #: None: drawn when the job runs (the result reports it), so that two equal unseeded requests are equal here
    seed: int | None
    #: the `image_digest` of the init image and of the mask, as stored (resized to width x height)
    init_image: str | None
    mask_image: str | None
    assist_prompt: bool
    use_cache: bool
    #: how many images, with the seeds from `seed` (or the drawn one) on
    count: int = 1
    #: the style template the request named (its prompt and defaults are already in the fields above), or None
    style: str | None = None
    #: False: the prompts go to the model as they are, without the server's policy (a replay's were recorded
    #: after it)
    policy: bool = True
    #: a retry after running out of memory may make the image smaller
    allow_downsize: bool = False

    def to_payload(self) -> dict[str, Any]:
        """This request as plain JSON data (a job's payload)."""
        return {
            **asdict(self),
            "task": self.task.value,
            "decoder": self.decoder.value,
            "sampler": None if self.sampler is None else self.sampler.value,
            "schedule": self.schedule.value,
            "loras": [lora.model_dump() for lora in self.loras],
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> QueuedRequest:
        """The request `to_payload` wrote; `ValueError` for anything else (a payload of an older version)."""
        # A payload from before `count` asks for one image; one from before styles names none; one from before
        # samplers runs the model's own; one from before LoRAs applies none; one from before replays goes
        # through the policy; one from before allow_downsize keeps its size.
        payload = {
            "count": 1,
            "style": None,
            "sampler": None,
            "schedule": Schedule.DEFAULT.value,
            "loras": [],
            "policy": True,
            "allow_downsize": False,
            **payload,
        }
        try:
            fields = {name: payload[name] for name in cls.__dataclass_fields__}
            fields["task"], fields["decoder"] = Task(fields["task"]), Decoder(fields["decoder"])
            fields["sampler"] = None if fields["sampler"] is None else Sampler(fields["sampler"])
            fields["schedule"] = Schedule(fields["schedule"])
            fields["loras"] = tuple(LoraWeight.model_validate(lora) for lora in fields["loras"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a queued request: {exc!r}") from None
        # An older payload has the same names, with None for the defaults and the images themselves.
        numbers = ("steps", "guidance", "width", "height", "strength")
        if not all(isinstance(fields[name], int | float) for name in numbers):
            raise ValueError("not a queued request: a number is missing")
        if not all(fields[name] is None or isinstance(fields[name], str) for name in ("init_image", "mask_image")):
            raise ValueError("not a queued request: an input image is not a digest")
        return cls(**fields)

    def request(
        self, *, seed: int, init_image: Image.Image | None = None, mask_image: Image.Image | None = None
    ) -> GenerationRequest:
        """The request to run, with its seed and the images its digests name."""
        return GenerationRequest(**self.shared(), seed=seed, init_image=init_image, mask_image=mask_image)


@dataclass(frozen=True)
class Progress:
    """One denoising step done, and a way to see the image so far when the backend has one."""

    step: int
    total: int
    #: a low-resolution approximation of the image after this step; call it during the callback (the
    #: latents it reads change at the next step), and only when someone watches: it costs a little compute
    preview: Callable[[], Image.Image] | None = field(default=None, compare=False, repr=False)


#: Called once per denoising step.
ProgressCallback = Callable[[Progress], None]
#: Polled between steps; returning True stops the generation.
CancelCheck = Callable[[], bool]


class ImageDescription(BaseModel):
    """A finished image as every surface describes it: what made it and how it was made. HTTP results and the MCP
    image tools answer these fields, plus how to get the image itself."""

    task: Task = Field(description="text2img, img2img or inpaint.")
    model: str
    seed: int = Field(description="The seed that made it: the same request with it makes the same image.")
    steps: int
    guidance: float
    width: int
    height: int
    strength: float | None = Field(description="How far img2img or inpaint moved from the input; null for text2img.")
    prompt: str = Field(description="The prompt drawn: after prompt assist, when it was asked for.")
    original_prompt: str = Field(description="The prompt as sent.")
    negative_prompt: str
    assisted: bool = Field(description="Whether the local LLM wrote `prompt`.")
    cached: bool = Field(description="Whether the image came from the cache of seeded results.")
    elapsed_s: float = Field(description="Seconds the generation took (0 for a cached image).")
    notice: str | None = Field(None, description="Why the model behaves other than its name says, when it does.")
    assist: dict[str, Any] | None = Field(
        None,
        description='With assist: {"source": "ollama" or "passthrough", "reason": why it passed through, "tags"}.',
    )
    policy_applied: dict[str, Any] | None = Field(
        None,
        description="What the server's policy added to the prompts (GET /policy shows it), by version, and why not.",
    )
    decoder: str = Field("full", description="The decoder that made the image: full or fast.")
    sampler: str | None = Field(
        None, description="The sampler that made the image (the model's own unless the request chose one)."
    )
    schedule: str | None = Field(None, description="The noise schedule it ran: default, karras or exponential.")
    style: str | None = Field(
        None, description="The style template the request named (its frame is in `prompt`); null when none."
    )
    loras: list[LoraWeight] = Field(
        default_factory=list, description="The LoRAs applied for this request, with their weights; empty when none."
    )
    runtime: dict[str, Any] | None = Field(
        None,
        description="How the engine ran it: dtype, channels_last, attention, threads, memory_savers, compile, and "
        "`savers`, the memory savers that were on (tiled_vae, attention_slicing, cpu_offload).",
    )
    downgraded: dict[str, Any] | None = Field(
        None,
        description='When the first try ran out of memory and a retry made the image: {"from": the width and height '
        'asked for, "applied": the fallbacks switched on (tiled_vae, attention_slicing, cpu_offload, smaller_size), '
        '"reason": what ran out}; null when nothing was changed.',
    )
    manifest: dict[str, Any] | None = Field(
        None,
        description="How to make this image again: the model and a digest of its weights, the scheduler and its "
        "config, the seed and its generator, the numbers, the exact prompts sent, library versions, device, "
        "runtime, how reproducible it is (`determinism`) and a digest of its pixels. POST /replay (replay_image) "
        "takes it back.",
    )
    replay: dict[str, Any] | None = Field(
        None,
        description="On a replay only: whether its pixels match those the manifest recorded (`matches`), and by "
        "how much they differ when the original image was sent.",
    )


class ResultImage(BaseModel):
    """One image of a result: a request for `count` images has `count` of them, with consecutive seeds; the
    result's own fields describe the first."""

    seed: int = Field(description="The seed that made it: the first image's seed plus its place in the list.")
    output_path: str = Field(description="Where it is saved on the server.")
    cached: bool = Field(False, description="Whether it came from the cache of seeded results.")
    elapsed_s: float = Field(0.0, description="Seconds its generation took (0 for a cached image).")


def result_images(record: Mapping[str, Any]) -> list[ResultImage]:
    """The images a job's result record describes: its `images`, or the one its own fields describe (a record
    from before `count`)."""
    return [ResultImage.model_validate(entry) for entry in record.get("images") or [record]]


class ImageResult(ImageDescription):
    """A finished image: its description, where it was saved, and its bytes (which no surface serializes)."""

    output_path: str = ""
    png: bytes = Field(repr=False, exclude=True)
    mime: str = "image/png"
    #: every image of the request, this one first, each with no `images` of its own (`count` of them)
    images: list[ImageResult] = Field(default_factory=list, repr=False, exclude=True)

    @classmethod
    def from_images(cls, record: Mapping[str, Any], pngs: Sequence[bytes]) -> ImageResult:
        """The result described by `record` with every image of it (`result_images`) and their PNGs, in order:
        the first image, with all of them as `images`."""
        images = [
            cls.from_record({**record, **image.model_dump()}, png)
            for image, png in zip(result_images(record), pngs, strict=True)
        ]
        return images[0].model_copy(update={"images": images})

    @classmethod
    def from_record(cls, record: Mapping[str, Any], png: bytes) -> ImageResult:
        """The result described by `record` (a job's stored result, or the JSON of `/generate`) with its PNG;
        fields a record does not describe are left out, and so are its other images (`from_images` reads them)."""
        known = {
            name: value
            for name, value in record.items()
            if name in cls.model_fields and name != "images" and value is not None
        }
        # Records stored by earlier versions may lack these.
        defaults = {
            "original_prompt": record["prompt"],
            "negative_prompt": "",
            "strength": None,
            "assisted": False,
            "cached": False,
            "elapsed_s": 0.0,
        }
        return cls.model_validate({**defaults, **known, "png": png})

    def described(self) -> ImageDescription:
        """What every surface reports about the image besides the image and where it lies (HTTP, MCP)."""
        return ImageDescription.model_validate(self.model_dump(include=set(ImageDescription.model_fields)))


#: `AssistResult.source` when the local LLM wrote the prompt.
ASSIST_SOURCE_OLLAMA = "ollama"
#: `AssistResult.source` when the original prompt is used unchanged (the result's `reason` says why).
ASSIST_SOURCE_PASSTHROUGH = "passthrough"


class AssistResult(BaseModel):
    """A prompt after prompt assist: the prompt to use, the one asked for, and where the first came from.

    `POST /assist`, the MCP tool `assist_prompt`, the Python client and `imageforge assist --json` all answer in
    this shape.
    """

    model_config = ConfigDict(frozen=True)

    prompt: str = Field(description="The prompt to use: the expansion, or the original on passthrough.")
    original_prompt: str = Field(description="The prompt as sent.")
    tags: list[str] = Field(default_factory=list, description="Keywords the local LLM gave; empty on passthrough.")
    source: str = Field(
        description='"ollama" when the local LLM wrote `prompt`, "passthrough" when it is the original.'
    )
    reason: str = Field("", description="Why the prompt was passed through; empty when assisted.")

    @computed_field(description='Whether `source` is "ollama": the local LLM wrote `prompt`.')  # type: ignore[prop-decorator]
    @property
    def assisted(self) -> bool:
        """Whether the local LLM wrote `prompt` (False: it is the original, unchanged)."""
        return self.source != ASSIST_SOURCE_PASSTHROUGH

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AssistResult:
        """The result described by `record` (the JSON of `POST /assist` or of the `assist_prompt` tool); an
        older server's answer without `original_prompt` names the prompt itself."""
        return cls.model_validate({"original_prompt": record["prompt"], **record, "reason": record.get("reason") or ""})


# -- jobs -------------------------------------------------------------------------------------------------


#: The client of the command line and of MCP over stdio: the user of this machine.
LOCAL_CLIENT = "local"


def iso_time(timestamp: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC, to the millisecond: how every surface shows a job's times."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


class JobStatus(enum.StrEnum):
    """Where a job is in its life; the last three are terminal."""

    #: accepted and waiting for the worker
    QUEUED = "queued"
    #: the worker is running it
    RUNNING = "running"
    #: finished with a result
    SUCCEEDED = "succeeded"
    #: finished with an error (code and message)
    FAILED = "failed"
    #: stopped on request before it finished
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass
class Job:
    """One unit of queued work and everything a client may ask about it."""

    id: str
    #: the registered function that runs it
    kind: str
    payload: dict[str, Any]
    status: JobStatus = JobStatus.QUEUED
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    step: int = 0
    total: int = 0
    result: dict[str, Any] | None = None
    #: {"code", "message", "hint"} when failed or cancelled
    error: dict[str, str] | None = None
    #: queue_ms, run_ms and whatever the job function reports (load_ms)
    timings: dict[str, float] = field(default_factory=dict)
    idempotency_key: str | None = None
    #: a hash of the submitted payload, to tell a repeated Idempotency-Key with another body
    request_hash: str = ""
    #: jobs with the same key that are in flight together run once (seeded image requests)
    dedupe_key: str | None = None
    #: who submitted it: an API key's name, a peer address, or `local`; per-client limits count by it
    client: str = LOCAL_CLIENT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Caller:
    """Who asks the queue for something, and so which jobs they may see, cancel and find again by key.

    With API keys on, `name` is the key's name and proven (`isolated`): the caller sees only the jobs it submitted,
    and its idempotency keys are its own, unless it is an `admin`, who sees and cancels every job. Without keys
    there is no identity to tell users apart: `name` (a peer address, or `local`) only counts for per-client limits,
    and every caller sees every job.
    """

    name: str = LOCAL_CLIENT
    #: `name` is a proven identity (an API key's), so the caller's jobs are kept apart from other callers'
    isolated: bool = False
    #: an admin key: sees and cancels every client's jobs
    admin: bool = False

    @property
    def sees_all(self) -> bool:
        """Whether this caller may see every client's jobs."""
        return not self.isolated or self.admin

    def sees(self, job: Job) -> bool:
        """Whether this caller may see (and so cancel) `job`."""
        return self.sees_all or job.client == self.name

    def scoped(self, key: str) -> str:
        """`key` (an idempotency or dedupe key) in this caller's own namespace: the same key from two isolated
        callers names two jobs. A newline cannot come in an HTTP header, so no client can forge another's."""
        return f"{self.name}\n{key}" if self.isolated else key


#: The user of this machine (CLI, MCP over stdio), who sees every job.
LOCAL_CALLER = Caller()


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job: `state` (status change), `queue` (its new place while it waits), `stage`
    (what it does before its steps: loading its model), `progress` (one step) or `preview`."""

    type: str
    job_id: str
    data: dict[str, Any]
    #: position in the job's event log, so that a reader can resume after the last event it saw
    index: int = 0

    @property
    def is_terminal(self) -> bool:
        return self.type == "state" and JobStatus(self.data["status"]).is_terminal


# -- webhooks ---------------------------------------------------------------------------------------------


class DeliveryStatus(enum.StrEnum):
    """Where one webhook delivery is."""

    #: not yet answered with a 2xx: its next attempt is at `next_attempt_at`
    PENDING = "pending"
    #: the receiver answered 2xx
    DELIVERED = "delivered"
    #: every attempt failed, or the URL is no longer allowed: no more attempts
    GIVEN_UP = "given_up"


class WebhookDelivery(BaseModel):
    """One event of a job posted to its webhook: what was sent, how many times, and how it went."""

    id: str = Field(description="The `webhook-id` header: the same on every attempt, so a receiver drops repeats.")
    event: WebhookEvent
    status: DeliveryStatus
    attempts: int = Field(description="How many times it was posted.")
    last_status_code: int | None = Field(None, description="The receiver's HTTP status at the last attempt.")
    last_error: str | None = Field(None, description="Why the last attempt failed, when it did.")
    next_attempt_at: str | None = Field(None, description="When it is posted again, while pending (ISO 8601, UTC).")
    finished_at: str | None = Field(None, description="When it was delivered or given up (ISO 8601, UTC).")


class JobWebhook(BaseModel):
    """A job's webhook: where its events go, which ones, and each delivery so far."""

    url: str
    events: list[WebhookEvent]
    deliveries: list[WebhookDelivery] = Field(default_factory=list, description="Oldest first.")


# -- style templates --------------------------------------------------------------------------------------


#: Where the caller's subject goes in a style template's body.
PLACEHOLDER = "{subject}"
#: Template sizes are multiples of this, which every model family's own multiple (8 or 16) divides.
SIZE_STEP = 64
MAX_SIZE = 1024
#: Template keys appear in URLs, MCP resource URIs and prompt names (`style_<key>`), so they stay plain.
_TEMPLATE_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class RenderedTemplate(BaseModel):
    """A template filled with a subject: the starting point of a request, which the caller may edit
    (`GET /templates/{key}`, the MCP prompt `style_<key>`, `imageforge generate --style`)."""

    model_config = ConfigDict(frozen=True)

    key: str
    title: str
    subject: str
    prompt: str = Field(description="The template's body with the subject in place: the prompt to send.")
    negative_prompt: str = Field(description="A suggested negative prompt; send it only if you want it.")
    width: int = Field(description="The template's size, scaled down to fit the server's MAX_RES.")
    height: int


class StyleTemplate(BaseModel):
    """A named style: a prompt body to start from, with `{subject}` where the caller's subject goes, and the
    size that suits it (`GET /templates`, the MCP resource `imageforge://templates/<key>`)."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="Lowercase letters, digits, '-' or '_': the name in URLs and prompt names.")
    title: str
    description: str
    body: str = Field(description="The prompt, with {subject} where the caller's subject goes.")
    width: int = Field(description=f"A multiple of {SIZE_STEP} from {SIZE_STEP} to {MAX_SIZE}.")
    height: int
    negative_prompt: str = Field(
        "", description="A suggestion for the request's negative prompt; models at guidance <= 1 ignore it anyway."
    )

    @model_validator(mode="after")
    def _usable(self) -> StyleTemplate:
        if not _TEMPLATE_KEY.match(self.key):
            raise ValueError(f"key {self.key!r} must be lowercase letters, digits, '-' or '_' (at most 40)")
        if PLACEHOLDER not in self.body:
            # Without it the caller's subject would be dropped without a word.
            raise ValueError(f"body must contain {PLACEHOLDER}")
        for name, value in (("width", self.width), ("height", self.height)):
            if value % SIZE_STEP or not SIZE_STEP <= value <= MAX_SIZE:
                raise ValueError(f"{name} {value} must be a multiple of {SIZE_STEP} from {SIZE_STEP} to {MAX_SIZE}")
        return self

    def render(self, subject: str) -> str:
        """The body with `subject` in place of `{subject}`; other braces in the body stay as written."""
        subject = subject.strip()
        if not subject:
            raise InvalidRequest("subject is empty.", hint=f"Say what to draw in the style '{self.key}'.")
        return self.body.replace(PLACEHOLDER, subject)

    def start(self, subject: str, *, max_side: int = MAX_SIZE) -> RenderedTemplate:
        """The filled-in prompt and size; a size over `max_side` (the server's MAX_RES) is scaled down to fit,
        keeping its shape, so that the starting point is a request the server accepts."""
        width, height = self.width, self.height
        if max(width, height) > max_side:
            scale = max_side / max(width, height)
            width, height = (max(SIZE_STEP, int(side * scale) // SIZE_STEP * SIZE_STEP) for side in (width, height))
        return RenderedTemplate(
            key=self.key,
            title=self.title,
            subject=subject.strip(),
            prompt=self.render(subject),
            negative_prompt=self.negative_prompt,
            width=width,
            height=height,
        )

    def frame(self, params: GenerationParams, *, max_side: int = MAX_SIZE) -> GenerationParams:
        """`params` in this style: its prompt as the template's subject, and the template's negative prompt and
        size (scaled to `max_side`) where `params` leaves them out. The size applies to text to image only: an
        edit keeps its input image's size unless the request gives one."""
        start = self.start(params.prompt, max_side=max_side)
        sized = params.task is Task.TEXT2IMG
        return replace(
            params,
            prompt=start.prompt,
            negative_prompt=params.negative_prompt or start.negative_prompt,
            width=start.width if params.width is None and sized else params.width,
            height=start.height if params.height is None and sized else params.height,
        )


# -- health ----------------------------------------------------------------------------------------------


class Health(BaseModel):
    """How the service is: whether it takes jobs, on what device, with which models loaded (GET /health with a
    key, `imageforge check`)."""

    ok: bool = True
    status: str = Field(description='"ok", or "degraded" while jobs cannot be stored (then `reason` says why).')
    reason: dict[str, str] | None = Field(
        None, description="While degraded: the storage error's code, message and hint (it names no server path)."
    )
    version: str
    device: str = Field(description="cuda, mps or cpu.")
    dtype: str
    cuda: bool
    mps: bool
    engine_constructed: bool = True
    resident_models: list[str] = Field(description="The loaded models, least recently used first.")
    model_memory: dict[str, Any] = Field(description="The memory budget and what the resident models take.")
    default_model: str
    versions: dict[str, str] = Field(description="torch, diffusers and transformers.")
    runtime: dict[str, Any] = Field(description="How the engine runs: dtype, channels_last, attention, threads, …")
    ollama: dict[str, Any] = Field(description="Prompt assist's Ollama: url, model, reachable, model_available.")
    queue: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "embedded"},
        description='The job queue: `kind` ("embedded", or "redis" across machines, with `reachable`, `waiting`, '
        "`running` and the `workers` seen: name, host, pid, models, device, running job).",
    )


# -- the policy --------------------------------------------------------------------------------------------


#: The baseline negative prompt: the original design's terms against gibberish text (taken as they are), then
#: imageforge's own against common artefacts. Baseline terms that do not fit the encoder's window are left out from
#: the end, so the text terms go first.
DEFAULT_NEGATIVE_PROMPT = (
    "lorem ipsum, placeholder text, gibberish text, fake words, invented letterforms, text-shaped scribbles, "
    "garbled text, lowres, blurry, jpeg artifacts, watermark, signature, deformed, disfigured, extra fingers, "
    "extra limbs"
)
#: The text-faithfulness directive for a prompt that asks for text: the original design's instructions, reworded.
DEFAULT_DIRECTIVE = (
    "text only as real, correctly spelled words that make sense in the scene, in the prompt's language "
    "(English unless it names another), quoted words exactly as written, no made-up words, placeholder "
    "or lorem ipsum text, no fake letters"
)
#: The text-faithfulness directive for a prompt that asks for no text: none is drawn rather than invented.
DEFAULT_NO_TEXT_DIRECTIVE = "no text, letters or writing anywhere in the image"
DEFAULT_RESTRICTED_USE = (
    "Do not use it for sexual content involving minors, sexual or degrading images of real people, or images "
    "meant to deceive (forged documents, fake photos of real events or people presented as real)."
)

#: The ready policy profiles a setting turns on (`IMAGEFORGE_POLICY_PROFILE`); `none` adds nothing.
PolicyProfileName = Literal["none", "no-engineering"]


class Policy(BaseModel):
    """The policy imageforge adds to generations, and where it came from (`GET /policy`): a baseline negative
    prompt, a text-faithfulness directive for prompts that ask for text and one for prompts that do not, and the
    restricted-use text agents read in the MCP tool descriptions; a profile's texts are already in them."""

    model_config = ConfigDict(frozen=True)

    negative_prompt: str = Field(DEFAULT_NEGATIVE_PROMPT, description="Put before the caller's negative prompt.")
    directive: str = Field(
        DEFAULT_DIRECTIVE,
        description="Appended to a prompt that asks for text (quotes words or names lettering), where it fits.",
    )
    no_text_directive: str = Field(
        DEFAULT_NO_TEXT_DIRECTIVE, description="Appended to a prompt that asks for no text, where it fits."
    )
    restricted_use: str = Field(DEFAULT_RESTRICTED_USE, description="What agents are told not to make.")
    profile: PolicyProfileName = Field(
        "none", description="The ready profile added to the texts above (IMAGEFORGE_POLICY_PROFILE), or none."
    )
    source: str = Field(
        "built-in defaults", description='"built-in defaults", or the policy file (and why it was not read, if not).'
    )

    @computed_field(description="A short hash of the texts and the profile: results and cache keys name it.")  # type: ignore[prop-decorator]
    @property
    def version(self) -> str:
        """A short hash of the texts and the profile: results and cache keys name the policy they were made under."""
        texts = json.dumps(
            [self.negative_prompt, self.directive, self.no_text_directive, self.restricted_use, self.profile]
        )
        return hashlib.sha256(texts.encode()).hexdigest()[:12]


# -- where the server listens -----------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


# -- the model catalog as clients see it ------------------------------------------------------------------


class ModelDefaults(BaseModel):
    """What a request to this model gets for each field it leaves out."""

    steps: int
    guidance: float
    width: int
    height: int


class ModelGuard(BaseModel):
    """The setting that must be on before a model may load, and why it is off by default."""

    setting: str = Field(description="The setting that allows it, e.g. ALLOW_FLUX.")
    allowed: bool = Field(description="Whether this server has it on.")
    reason: str


class MemoryEstimate(BaseModel):
    """About how much memory a job of one model needs at one size on this machine, against what is free now."""

    width: int
    height: int
    need_gb: float = Field(description="Weights (0 when loaded already) plus the memory generating takes.")
    weights_gb: float = Field(description="What loading it adds: 0 while it is loaded, else the catalog's figure.")
    activations_gb: float = Field(description="What generating one image takes on top of the weights.")
    source: str = Field(
        description='"measured" (fitted from the peaks this machine recorded) or "catalog" (seeded from the '
        "catalog's figure, scaled by pixels, until a job of this model has run here)."
    )
    free_gb: float | None = Field(description="What this machine has free for it now; null when it cannot tell.")
    fits: bool | None = Field(description="Whether a job at this size would be admitted now; null when unknown.")


class ModelInfo(BaseModel):
    """One catalog entry with its capabilities, defaults, guard and local availability: GET /models and the MCP
    tool list_models show the same."""

    key: str = Field(description="What a request's `model` names.")
    description: str
    family: str = Field(description="sd, sdxl, flux, flux2-klein or qwen-image.")
    engine: str = Field("diffusers", description="What runs it: diffusers, or sdcpp (stable-diffusion.cpp).")
    source: str = Field(description="A Hugging Face repo id, a local path, or (sdcpp) its main file.")
    tasks: list[str] = Field(description="The operations it runs: text2img, img2img, inpaint.")
    defaults: ModelDefaults
    size_multiple: int = Field(description="Width and height must be multiples of this.")
    est_memory_gb: float = Field(description="About how much memory it takes once loaded.")
    guard: ModelGuard | None = None
    available: bool = Field(description="Whether this server may run it (its guard, if any, is on).")
    quality_note: str = ""
    loras: list[LoraWeight] = Field(
        default_factory=list,
        description="LoRAs of the LoRA folder every request to it applies (a request naming one sets its weight).",
    )
    notice: str | None = Field(None, description="Why it behaves other than its name says, when it does.")
    smoke_test: bool = Field(description="Built by imageforge from random weights (the offline `tiny` model).")
    weights_present: bool = Field(description="Whether its weights are on this machine.")
    resident: bool = Field(description="Whether it is loaded now.")
    default: bool = Field(description="Whether requests without `model` use it.")
    memory: MemoryEstimate | None = Field(
        None, description="What a text-to-image job at its default size needs on this machine, and whether it fits."
    )


class ModelCatalog(BaseModel):
    """Every model this server knows, with the default and the largest size it accepts."""

    default: str = Field(description="The model of requests that name none.")
    max_res: int = Field(description="The largest width or height accepted (MAX_RES).")
    models: list[ModelInfo]


class LoraInfo(BaseModel):
    """One LoRA of the server's LoRA folder, as a request's `loras` names it."""

    name: str = Field(description="What a request's `loras` entry names: the file name without .safetensors.")
    file: str = Field(description="The file's name in the LoRA folder.")
    size_mb: float = Field(description="The file's size in MB.")


class LoraCatalog(BaseModel):
    """The LoRAs a request may apply (GET /loras, the MCP tool list_loras): the `.safetensors` files of the
    server's LoRA folder (IMAGEFORGE_LORA_DIR), by name."""

    loras: list[LoraInfo]
    max_per_request: int = Field(MAX_LORAS, description="The most LoRAs one request may apply.")
    max_weight: float = Field(MAX_LORA_WEIGHT, description="A weight is from -max_weight to max_weight.")
