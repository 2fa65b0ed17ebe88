"""Pure types shared by every layer: what a generation asks for, what it returns, what a model is."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image


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


class Family(enum.StrEnum):
    """Pipeline families the diffusers backend knows how to load."""

    SD = "sd"
    SDXL = "sdxl"
    FLUX = "flux"
    FLUX2_KLEIN = "flux2-klein"


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
    #: a single `.safetensors`/`.gguf` file whose transformer replaces the source's (quantised FLUX)
    transformer_file: str | None = None
    revision: str | None = None
    #: why the entry behaves differently than its name suggests, shown to users (`sdxl-portrait` without its LoRA)
    notice: str = ""
    #: built in code by imageforge (the `tiny` model) rather than downloaded
    builtin: bool = False
    #: the tiny autoencoder for `decoder: "fast"` and previews (a Hub repo id or a local folder), if any
    fast_decoder: str | None = None

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
        return 16 if self.family in (Family.FLUX, Family.FLUX2_KLEIN) else 8


@dataclass(frozen=True)
class ImageSource:
    """An input image as a client sent it: base64 data or a path (exactly one)."""

    base64: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class GenerationParams:
    """What a client asked for, before validation; `None` means "the model's default"."""

    task: Task
    prompt: str
    negative_prompt: str = ""
    model: str | None = None
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


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request, with defaults filled in from the model and inputs decoded."""

    task: Task
    model: str
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    width: int
    height: int
    seed: int
    strength: float = 0.6
    decoder: Decoder = Decoder.FULL
    init_image: Image.Image | None = field(default=None, compare=False)
    mask_image: Image.Image | None = field(default=None, compare=False)


@dataclass(frozen=True)
class QueuedRequest:
    """A validated request as its job carries it: plain values, its input images as digests in the input store.

    It holds no image bytes and no path to read later, so any process that reaches the stores can run the job.
    """

    task: Task
    model: str
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    width: int
    height: int
    strength: float
    decoder: Decoder
    #: None: drawn when the job runs (the result reports it), so that two equal unseeded requests are equal here
    seed: int | None
    #: the `image_digest` of the init image and of the mask, as stored (resized to width x height)
    init_image: str | None
    mask_image: str | None
    assist_prompt: bool
    use_cache: bool

    def to_payload(self) -> dict[str, Any]:
        """This request as plain JSON data (a job's payload)."""
        return {**asdict(self), "task": self.task.value, "decoder": self.decoder.value}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> QueuedRequest:
        """The request `to_payload` wrote; `ValueError` for anything else (a payload of an older version)."""
        try:
            fields = {name: payload[name] for name in cls.__dataclass_fields__}
            fields["task"], fields["decoder"] = Task(fields["task"]), Decoder(fields["decoder"])
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
        return GenerationRequest(
            task=self.task,
            model=self.model,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            steps=self.steps,
            guidance=self.guidance,
            width=self.width,
            height=self.height,
            seed=seed,
            strength=self.strength,
            decoder=self.decoder,
            init_image=init_image,
            mask_image=mask_image,
        )


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


@dataclass(frozen=True)
class ImageResult:
    """A finished generation: the parameters that made it and where the image lies."""

    task: Task
    model: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    strength: float | None
    prompt: str
    negative_prompt: str
    original_prompt: str
    assisted: bool
    cached: bool
    elapsed_s: float
    output_path: str
    png: bytes = field(repr=False)
    mime: str = "image/png"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], png: bytes) -> ImageResult:
        """The result described by `record` (a job's stored result, or the JSON of `/generate`) with its PNG."""
        return cls(
            task=Task(record["task"]),
            model=record["model"],
            seed=record["seed"],
            steps=record["steps"],
            guidance=record["guidance"],
            width=record["width"],
            height=record["height"],
            strength=record.get("strength"),
            prompt=record["prompt"],
            negative_prompt=record.get("negative_prompt", ""),
            original_prompt=record.get("original_prompt", record["prompt"]),
            assisted=bool(record.get("assisted")),
            cached=bool(record.get("cached")),
            elapsed_s=record.get("elapsed_s", 0.0),
            output_path=record.get("output_path") or "",
            png=png,
            mime=record.get("mime") or "image/png",
            extra={
                key: record[key]
                for key in ("assist", "notice", "policy_applied", "decoder", "runtime")
                if record.get(key) is not None
            },
        )

    def described(self) -> dict[str, Any]:
        """What every surface reports about the image besides the image and where it lies (HTTP, MCP)."""
        return {
            "task": self.task.value,
            "model": self.model,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "strength": self.strength,
            "prompt": self.prompt,
            "original_prompt": self.original_prompt,
            "negative_prompt": self.negative_prompt,
            "assisted": self.assisted,
            "cached": self.cached,
            "elapsed_s": self.elapsed_s,
            "notice": self.extra.get("notice"),
            "assist": self.extra.get("assist"),
            "policy_applied": self.extra.get("policy_applied"),
            "decoder": self.extra.get("decoder", "full"),
            "runtime": self.extra.get("runtime"),
        }


#: `AssistResult.source` when the local LLM wrote the prompt.
ASSIST_SOURCE_OLLAMA = "ollama"
#: `AssistResult.source` when the original prompt is used unchanged (the result's `reason` says why).
ASSIST_SOURCE_PASSTHROUGH = "passthrough"


@dataclass(frozen=True)
class AssistResult:
    """A prompt after prompt assist: the prompt to use, the one asked for, and where the first came from."""

    prompt: str
    original_prompt: str
    #: "ollama" or "passthrough"
    source: str
    tags: list[str] = field(default_factory=list)
    #: why the prompt was passed through; empty when the local LLM wrote it
    reason: str = ""

    @property
    def assisted(self) -> bool:
        """Whether the local LLM wrote `prompt` (False: it is the original, unchanged)."""
        return self.source != ASSIST_SOURCE_PASSTHROUGH

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AssistResult:
        """The result described by `record` (the JSON of `POST /assist` or of the `assist_prompt` tool)."""
        return cls(
            prompt=record["prompt"],
            original_prompt=record.get("original_prompt", record["prompt"]),
            source=record["source"],
            tags=[str(tag) for tag in record.get("tags") or []],
            reason=record.get("reason") or "",
        )
