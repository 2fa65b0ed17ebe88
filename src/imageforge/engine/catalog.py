"""The model catalog: the built-in entries and the user's own models file.

Users add models in a TOML file without touching code::

    [models.my-sdxl]
    source = "/srv/models/my-sdxl"   # a Hub repo id, a diffusers folder, or a single .safetensors file
    family = "sdxl"                   # sd | sdxl | flux | flux2-klein
    steps = 25
    guidance = 6.0
    size = 1024
    tasks = ["text2img", "img2img"]   # default: all three (flux2-klein: text2img)
    scheduler = "LCMScheduler"        # optional
    lora = "/srv/loras/style.safetensors"  # optional: a .safetensors file, a folder or a Hub repo id, fused in
    loras = [{name = "ink", weight = 0.8}]  # optional: LoRAs of the LoRA folder every request applies
    transformer_file = "q4.gguf"      # optional, flux only: a GGUF transformer (a path, owner/repo/file.gguf
                                      # or a huggingface.co file URL) replacing the source's
    fast_decoder = "/srv/taesdxl"     # optional: the tiny autoencoder for `decoder: "fast"` (a folder or repo
                                      # id); sd and sdxl default to madebyollin/taesd and madebyollin/taesdxl

A model that stable-diffusion.cpp runs (ADR 0027) names its files instead of a `source`: any architecture
sd.cpp loads (SD 1.x/2.x, SDXL, FLUX, Qwen-Image, ...) is added this way, without code::

    [models.my-qwen]
    backend = "sdcpp"
    family = "qwen-image"             # the architecture: sd | sdxl | flux | qwen-image (size multiple, samplers)
    diffusion_model = "/srv/qwen/Qwen_Image-Q4_K_M.gguf"   # or `model` for a whole checkpoint or diffusers folder
    vae = "/srv/qwen/qwen_image_vae.safetensors"
    llm = "/srv/qwen/Qwen2.5-VL-7B-Instruct.Q8_0.gguf"    # also: clip_l, clip_g, t5xxl, llm_vision
    sample_method = "euler"           # optional, sd.cpp's names; so are scheduler and flow_shift
    flow_shift = 3.0
    options = ["--diffusion-fa"]      # optional: more sd-server switches
    steps = 25
    guidance = 2.5
    size = 512
    memory_gb = 22

Each file is a path or a Hub file URL (`https://huggingface.co/<owner>/<repo>/blob/<revision>/<path>`), fetched
by `imageforge models pull`.

Relative paths are resolved against the models file's folder.

Weights load from safetensors only: a source ending in `.ckpt`, `.pt`, `.pth` or `.bin` is refused, because
those are pickles that can run code when loaded.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from imageforge.domain import (
    Backend,
    Family,
    LoraWeight,
    ModelDefaults,
    ModelGuard,
    ModelInfo,
    ModelSpec,
    SdcppFiles,
    Task,
)
from imageforge.errors import ModelGuarded, ModelNotFound

log = logging.getLogger(__name__)

TINY = "tiny"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_HUB_FILE = re.compile(r"^[\w.-]+/[\w.-]+/.+")
_HUB_URL = re.compile(r"^https://huggingface\.co/[\w.-]+/[\w.-]+/(blob|resolve)/[^/]+/.+")
#: What a user entry supports when it names no `tasks`: what diffusers' auto pipelines make of the family.
_DEFAULT_TASKS = {Family.FLUX2_KLEIN: (Task.TEXT2IMG,)}
#: What an sdcpp entry supports when it names no `tasks`: what the backend maps onto sd-server's request.
_SDCPP_TASKS = (Task.TEXT2IMG, Task.IMG2IMG)
#: The file switches of an sdcpp entry, in the models file as in `SdcppFiles`.
_SDCPP_FILES = ("model", "diffusion_model", "vae", "clip_l", "clip_g", "t5xxl", "llm", "llm_vision")

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
#: The tiny autoencoders (TAESD) that decode each family's latents for `decoder: "fast"` and live previews.
FAST_DECODERS = {Family.SD: "madebyollin/taesd", Family.SDXL: "madebyollin/taesdxl"}

_HUB = "https://huggingface.co"
#: The files of the Qwen entries: the GGUFs the write-up ran (Unsloth's 4-bit Qwen-Image-Edit-2511) and those
#: stable-diffusion.cpp's docs point to; sizes as the Hub lists them, not downloaded here.
QWEN_IMAGE_GGUF = f"{_HUB}/QuantStack/Qwen-Image-GGUF/blob/main/Qwen_Image-Q4_K_M.gguf"
QWEN_EDIT_GGUF = f"{_HUB}/unsloth/Qwen-Image-Edit-2511-GGUF/blob/main/qwen-image-edit-2511-Q4_K_M.gguf"
QWEN_VAE = f"{_HUB}/Comfy-Org/Qwen-Image_ComfyUI/blob/main/split_files/vae/qwen_image_vae.safetensors"
QWEN_LLM = f"{_HUB}/mradermacher/Qwen2.5-VL-7B-Instruct-GGUF/blob/main/Qwen2.5-VL-7B-Instruct.Q8_0.gguf"
QWEN_LLM_VISION = f"{_HUB}/mradermacher/Qwen2.5-VL-7B-Instruct-GGUF/blob/main/Qwen2.5-VL-7B-Instruct.mmproj-Q8_0.gguf"
#: Approximate download sizes in GB, named in the `weights_unavailable` hint.
DOWNLOAD_GB = {QWEN_IMAGE_GGUF: 13.1, QWEN_EDIT_GGUF: 13.1, QWEN_VAE: 0.25, QWEN_LLM: 8.1, QWEN_LLM_VISION: 0.9}
#: Sampling of both Qwen entries, from stable-diffusion.cpp's docs/qwen_image.md and qwen_image_edit.md examples;
#: a wrong value here makes a good model look broken (the write-up's lesson from its GLM trial).
QWEN_SAMPLER = "euler"
QWEN_FLOW_SHIFT = 3.0

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        key="sd-turbo",
        source="stabilityai/sd-turbo",
        family=Family.SD,
        fast_decoder=FAST_DECODERS[Family.SD],
        description="SD 2.1 distilled for 1-4 steps; the fastest real model, good on CPU and Apple silicon.",
        default_steps=1,
        default_guidance=0.0,
        default_size=512,
        est_memory_gb=3.5,
        quality_note="512x512 native; soft detail; guidance must stay 0, so negative prompts have no effect.",
    ),
    ModelSpec(
        key="sdxl-turbo",
        source="stabilityai/sdxl-turbo",
        family=Family.SDXL,
        fast_decoder=FAST_DECODERS[Family.SDXL],
        description="SDXL distilled for 1-4 steps: better composition than sd-turbo at a few times the cost.",
        default_steps=1,
        default_guidance=0.0,
        default_size=512,
        est_memory_gb=8.0,
        quality_note="512x512 native; guidance must stay 0.",
    ),
    ModelSpec(
        key="sdxl",
        source=SDXL_BASE,
        family=Family.SDXL,
        fast_decoder=FAST_DECODERS[Family.SDXL],
        description="SDXL 1.0 base: the quality reference, slow (25-40 steps).",
        default_steps=30,
        default_guidance=6.0,
        default_size=1024,
        est_memory_gb=10.0,
        quality_note="1024x1024 native; honours negative prompts.",
    ),
    ModelSpec(
        key="sdxl-lcm",
        source=SDXL_BASE,
        family=Family.SDXL,
        fast_decoder=FAST_DECODERS[Family.SDXL],
        description="SDXL base with the LCM LoRA and scheduler: SDXL quality in 4-8 steps.",
        default_steps=4,
        default_guidance=1.0,
        default_size=1024,
        est_memory_gb=10.0,
        quality_note="1024x1024 native; guidance 1-2; negative prompts have no effect at guidance 1.",
        scheduler="LCMScheduler",
        lora="latent-consistency/lcm-lora-sdxl",
    ),
    ModelSpec(
        key="sdxl-portrait",
        source=SDXL_BASE,
        family=Family.SDXL,
        fast_decoder=FAST_DECODERS[Family.SDXL],
        description="SDXL base with the portrait LoRA IMAGEFORGE_LORA_PORTRAIT names.",
        default_steps=30,
        default_guidance=6.0,
        default_size=1024,
        est_memory_gb=10.5,
        quality_note="1024x1024 native; the LoRA decides the look.",
    ),
    ModelSpec(
        key="flux-q4",
        source="black-forest-labs/FLUX.1-schnell",
        family=Family.FLUX,
        description="FLUX.1-schnell with a 4-bit GGUF transformer: the best prompt following here, heavy.",
        default_steps=4,
        default_guidance=0.0,
        default_size=1024,
        est_memory_gb=16.0,
        guard="ALLOW_FLUX",
        quality_note="Renders short text well; needs the `gguf` package and a large download (~17 GB).",
        transformer_file="https://huggingface.co/city96/FLUX.1-schnell-gguf/blob/main/flux1-schnell-Q4_K_S.gguf",
    ),
    ModelSpec(
        key="flux2-klein",
        source="black-forest-labs/FLUX.2-klein-4B",
        family=Family.FLUX2_KLEIN,
        description="FLUX.2 [klein] 4B: FLUX.2 quality in 4 steps; needs a diffusers with Flux2KleinPipeline.",
        default_steps=4,
        default_guidance=1.0,
        default_size=1024,
        tasks=(Task.TEXT2IMG,),
        est_memory_gb=16.0,
        guard="ALLOW_KLEIN",
        quality_note="Text-to-image only here.",
    ),
    ModelSpec(
        key="qwen-image",
        source=QWEN_IMAGE_GGUF,
        family=Family.QWEN_IMAGE,
        backend=Backend.SDCPP,
        sdcpp=SdcppFiles(
            diffusion_model=QWEN_IMAGE_GGUF,
            vae=QWEN_VAE,
            llm=QWEN_LLM,
            sample_method=QWEN_SAMPLER,
            flow_shift=QWEN_FLOW_SHIFT,
            options=("--diffusion-fa",),
        ),
        description="Qwen-Image (4-bit GGUF) on stable-diffusion.cpp: strong prompt following and lettering.",
        # 25 steps at 512x512: the write-up's service ran Qwen at these (seeds/004); 2.5: stable-diffusion.cpp's
        # docs/qwen_image.md, which also gives sampler, flow shift and flash attention.
        default_steps=25,
        default_guidance=2.5,
        default_size=512,
        tasks=(Task.TEXT2IMG, Task.IMG2IMG),
        # The write-up's cold start reads about 21 GB of GGUF plus the VAE: not measured here (no weights).
        est_memory_gb=22.0,
        guard="ALLOW_QWEN_IMAGE",
        quality_note="Renders short text; needs the sd.cpp engine (./start.sh sdcpp-build) and ~22 GB of downloads.",
    ),
    ModelSpec(
        key="qwen-image-edit",
        source=QWEN_EDIT_GGUF,
        family=Family.QWEN_IMAGE,
        backend=Backend.SDCPP,
        sdcpp=SdcppFiles(
            diffusion_model=QWEN_EDIT_GGUF,
            vae=QWEN_VAE,
            llm=QWEN_LLM,
            llm_vision=QWEN_LLM_VISION,
            sample_method=QWEN_SAMPLER,
            flow_shift=QWEN_FLOW_SHIFT,
            # stable-diffusion.cpp's docs/qwen_image_edit.md: 2511 edits degrade badly without this switch.
            options=("--diffusion-fa", "--qwen-image-zero-cond-t"),
            edit_with_reference=True,
        ),
        description="Qwen-Image-Edit 2511 (4-bit GGUF) on stable-diffusion.cpp: edits an image by instruction "
        '(img2img with the image and "make the sky orange").',
        default_steps=25,
        default_guidance=2.5,
        default_size=512,
        tasks=(Task.TEXT2IMG, Task.IMG2IMG),
        est_memory_gb=22.0,
        guard="ALLOW_QWEN_IMAGE",
        quality_note="img2img edits by instruction (strength has no effect); needs the sd.cpp engine and ~23 GB "
        "of downloads.",
    ),
    ModelSpec(
        key=TINY,
        source=TINY,
        family=Family.SD,
        fast_decoder=TINY,
        description="Smoke-test model: a real SD pipeline with tiny random weights. It draws noise, fast.",
        default_steps=2,
        default_guidance=0.0,
        default_size=256,
        est_memory_gb=0.1,
        quality_note="Smoke test only: random weights, the output is noise.",
        builtin=True,
    ),
)

GUARD_REASONS = {
    "ALLOW_FLUX": "FLUX needs about 16 GB of memory and a ~17 GB download, which stalls or crashes small machines.",
    "ALLOW_KLEIN": "FLUX.2 klein needs about 16 GB of memory, a ~13 GB download and a recent diffusers.",
    "ALLOW_QWEN_IMAGE": "Qwen-Image needs about 22 GB of memory, ~22 GB of downloads and the stable-diffusion.cpp "
    "engine.",
}


class Catalog:
    """The models this service knows, by key."""

    def __init__(self, specs: Iterable[ModelSpec], *, allowed_guards: Iterable[str] = ()) -> None:
        self._specs = {spec.key: spec for spec in specs}
        self._allowed_guards = frozenset(allowed_guards)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def get(self, key: str) -> ModelSpec:
        """The entry for `key`, or `ModelNotFound` naming the keys this server can run."""
        try:
            return self._specs[key]
        except KeyError:
            raise ModelNotFound(
                f"Unknown model '{key}'.",
                hint=f"Models this server can run: {', '.join(spec.key for spec in self if self.is_allowed(spec))} "
                "(GET /models or list_models describes each).",
            ) from None

    def is_allowed(self, spec: ModelSpec) -> bool:
        return spec.guard is None or spec.guard in self._allowed_guards

    def require(self, key: str) -> ModelSpec:
        """The entry for `key`, refused with `ModelGuarded` while its guard is closed."""
        spec = self.get(key)
        if not self.is_allowed(spec):
            assert spec.guard is not None
            raise ModelGuarded(
                f"Model '{key}' is disabled on this server. {GUARD_REASONS.get(spec.guard, '')}".strip(),
                hint=f"Set {spec.guard}=1 in the environment or .env and restart, if this machine can hold it.",
            )
        return spec

    def loaded_as(self, spec: ModelSpec) -> ModelSpec:
        """The entry whose loaded model runs `spec`: for an entry that only adds LoRAs applied per request
        (`ModelSpec.loras`) to the weights another entry loads the same way (`sdxl-portrait` with a LoRA folder name,
        and `sdxl`), that other entry, so that one resident copy serves both; else `spec` itself."""
        if not spec.loras:
            return spec
        return next(
            (other for other in self if not other.loras and _loading(other) == _loading(spec)),
            spec,
        )

    def info(self, spec: ModelSpec, *, weights_present: bool, resident: bool, default: bool) -> ModelInfo:
        """How the catalog lists `spec`, with what this process knows of it: whether its weights are on disk,
        whether it is loaded, whether it is the default."""
        allowed = self.is_allowed(spec)
        return ModelInfo(
            key=spec.key,
            description=spec.description,
            family=spec.family.value,
            engine=spec.backend.value,
            source=spec.source,
            tasks=[task.value for task in spec.tasks],
            defaults=ModelDefaults(
                steps=spec.default_steps,
                guidance=spec.default_guidance,
                width=spec.default_size,
                height=spec.default_size,
            ),
            size_multiple=spec.size_multiple,
            est_memory_gb=spec.est_memory_gb,
            guard=None
            if spec.guard is None
            else ModelGuard(setting=spec.guard, allowed=allowed, reason=GUARD_REASONS.get(spec.guard, "")),
            available=allowed,
            quality_note=spec.quality_note,
            loras=list(spec.loras),
            notice=spec.notice or None,
            smoke_test=spec.builtin,
            weights_present=weights_present,
            resident=resident,
            default=default,
        )


def _loading(spec: ModelSpec) -> tuple[object, ...]:
    """What decides the weights a loaded model holds and how it runs them."""
    return (
        spec.source,
        spec.family,
        spec.revision,
        spec.scheduler,
        spec.lora,
        spec.transformer_file,
        spec.fast_decoder,
        spec.builtin,
        spec.guard,
    )


def build_catalog(*, lora_portrait: str | None, models_file: Path | None, allowed_guards: Iterable[str]) -> Catalog:
    """The built-in entries, adjusted by settings, plus the user's models file when it exists."""
    specs = [_with_portrait_lora(spec, lora_portrait) for spec in BUILTIN_MODELS]
    if models_file is not None and models_file.is_file():
        for spec in load_models_file(models_file):
            if any(builtin.key == spec.key for builtin in BUILTIN_MODELS):
                log.warning(
                    "models file %s: [models.%s] replaces the built-in entry of that name", models_file, spec.key
                )
            specs.append(spec)
    return Catalog(specs, allowed_guards=allowed_guards)


def _with_portrait_lora(spec: ModelSpec, lora: str | None) -> ModelSpec:
    """`sdxl-portrait` with its LoRA: a name of the LoRA folder is applied per request (a request may reweigh it),
    a `.safetensors` path or a Hub repo id is fused in at load."""
    if spec.key != "sdxl-portrait":
        return spec
    if lora and is_lora_name(lora):
        return replace(spec, loras=(LoraWeight(name=lora),))
    if lora:
        return replace(spec, lora=lora)
    return replace(
        spec,
        notice="IMAGEFORGE_LORA_PORTRAIT is not set, so sdxl-portrait runs as plain sdxl.",
        quality_note="Plain SDXL until IMAGEFORGE_LORA_PORTRAIT names a LoRA.",
    )


def is_lora_name(reference: str) -> bool:
    """Whether a LoRA setting names a file of the LoRA folder (`portrait`) rather than a path or a Hub repo id."""
    return not any(mark in reference for mark in ("/", "\\", ".")) and not reference.startswith("~")


def load_models_file(path: Path) -> list[ModelSpec]:
    """Parse the user's models file; an invalid entry (or file) is skipped with a logged reason, never fatal."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        log.error("models file %s is unreadable, so none of its models are available: %s", path, exc)
        return []
    entries = document.get("models", {})
    if not isinstance(entries, Mapping):
        log.error("models file %s: `models` must be a table of [models.<key>] entries; ignoring it", path)
        return []
    specs: list[ModelSpec] = []
    for key, entry in entries.items():
        try:
            specs.append(_parse_entry(key, entry, base=path.parent))
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("models file %s: skipping [models.%s]: %s", path, key, exc)
    return specs


def _parse_entry(key: str, entry: Mapping[str, Any], *, base: Path) -> ModelSpec:
    if not isinstance(entry, Mapping):
        raise TypeError("an entry must be a table")
    backend = Backend(entry.get("backend", Backend.DIFFUSERS.value))
    if backend is Backend.SDCPP:
        return _parse_sdcpp_entry(key, entry, base=base)
    if Family(entry.get("family", "sd")) is Family.QWEN_IMAGE:
        raise ValueError('family qwen-image runs on the stable-diffusion.cpp engine only: add backend = "sdcpp"')
    source = _source(str(entry["source"]), base)
    lora = _source(str(entry["lora"]), base) if entry.get("lora") else None
    if lora is not None and Path(lora).is_file() and not lora.lower().endswith(".safetensors"):
        raise ValueError(f"the LoRA {lora!r} is not a .safetensors file")
    family = Family(entry.get("family", "sd"))
    size = int(entry.get("size", 1024 if family is not Family.SD else 512))
    default_tasks = _DEFAULT_TASKS.get(family, tuple(Task))
    tasks = tuple(Task(t) for t in _strings(entry.get("tasks", [t.value for t in default_tasks]), "tasks"))
    if not tasks:
        raise ValueError("tasks must name at least one of text2img, img2img, inpaint")
    spec = ModelSpec(
        key=key,
        source=source,
        family=family,
        description=str(entry.get("description", f"User model from {source}")),
        default_steps=int(entry.get("steps", 25)),
        default_guidance=float(entry.get("guidance", 5.0)),
        default_size=size,
        tasks=tasks,
        est_memory_gb=float(entry.get("memory_gb", 8.0)),
        quality_note=str(entry.get("quality_note", "")),
        scheduler=_optional_string(entry, "scheduler"),
        lora=lora,
        loras=_loras(entry.get("loras", [])),
        revision=_optional_string(entry, "revision"),
        transformer_file=_transformer_file(entry, family, base),
        fast_decoder=_source(str(entry["fast_decoder"]), base)
        if entry.get("fast_decoder")
        else FAST_DECODERS.get(family),
    )
    if spec.default_steps < 1:
        raise ValueError(f"steps must be at least 1, not {spec.default_steps}")
    if size <= 0 or size % spec.size_multiple:
        raise ValueError(f"size must be a positive multiple of {spec.size_multiple} for {family.value}, not {size}")
    return spec


def _loras(value: Any) -> tuple[LoraWeight, ...]:
    """An entry's `loras`: tables of a LoRA folder name and a weight (1 when left out)."""
    if not isinstance(value, list):
        raise TypeError("loras must be a list of {name = ..., weight = ...} tables")
    return tuple(LoraWeight.model_validate(item) for item in value)


def _parse_sdcpp_entry(key: str, entry: Mapping[str, Any], *, base: Path) -> ModelSpec:
    """An entry that stable-diffusion.cpp runs: its files by sd-server switch, its sampling in sd.cpp's names."""
    files = {name: _sdcpp_file(name, entry[name], base) for name in _SDCPP_FILES if entry.get(name)}
    if ("model" in files) == ("diffusion_model" in files):
        raise ValueError("an sdcpp entry names exactly one of model (a whole checkpoint) or diffusion_model")
    if entry.get("source") or entry.get("transformer_file") or entry.get("lora"):
        raise ValueError("an sdcpp entry names its files (model, diffusion_model, vae, ...), not source/lora")
    family = Family(entry.get("family", "sd"))
    flow_shift = entry.get("flow_shift")
    sdcpp = SdcppFiles(
        **files,
        sample_method=_optional_string(entry, "sample_method"),
        scheduler=_optional_string(entry, "scheduler"),
        flow_shift=None if flow_shift is None else float(flow_shift),
        weight_type=_optional_string(entry, "weight_type"),
        options=tuple(_strings(entry.get("options", []), "options")),
        edit_with_reference=bool(entry.get("edit_with_reference", False)),
    )
    size = int(entry.get("size", 512 if family is Family.SD else 1024))
    tasks = tuple(Task(t) for t in _strings(entry.get("tasks", [t.value for t in _SDCPP_TASKS]), "tasks"))
    if not tasks:
        raise ValueError("tasks must name at least one of text2img, img2img, inpaint")
    spec = ModelSpec(
        key=key,
        source=files.get("model") or files["diffusion_model"],
        family=family,
        description=str(entry.get("description", f"User model on stable-diffusion.cpp from {files}")),
        default_steps=int(entry.get("steps", 25)),
        default_guidance=float(entry.get("guidance", 5.0)),
        default_size=size,
        tasks=tasks,
        est_memory_gb=float(entry.get("memory_gb", 8.0)),
        quality_note=str(entry.get("quality_note", "")),
        backend=Backend.SDCPP,
        sdcpp=sdcpp,
    )
    if spec.default_steps < 1:
        raise ValueError(f"steps must be at least 1, not {spec.default_steps}")
    if size <= 0 or size % spec.size_multiple:
        raise ValueError(f"size must be a positive multiple of {spec.size_multiple} for {family.value}, not {size}")
    return spec


def _sdcpp_file(name: str, value: Any, base: Path) -> str:
    """A file of an sdcpp entry: a Hub file URL as it is, else a path made absolute against the models file."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    if value.lower().endswith(PICKLE_SUFFIXES):
        raise ValueError(f"{name} {value!r} is a pickle checkpoint; only .safetensors, .gguf and folders load")
    if value.startswith("https://"):
        if not _HUB_URL.match(value):
            raise ValueError(f"{name} {value!r} is not a huggingface.co/<owner>/<repo>/blob/<revision>/ URL")
        return value
    candidate = Path(value).expanduser()
    return str((candidate if candidate.is_absolute() else base / candidate).resolve())


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{name} must be a list of strings")
    return value


def _optional_string(entry: Mapping[str, Any], name: str) -> str | None:
    value = entry.get(name)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a string")


def _transformer_file(entry: Mapping[str, Any], family: Family, base: Path) -> str | None:
    raw = _optional_string(entry, "transformer_file")
    if raw is None:
        return None
    if family is not Family.FLUX:
        raise ValueError("transformer_file is supported for family flux only")
    if not raw.lower().endswith(".gguf"):
        raise ValueError(f"transformer_file {raw!r} is not a .gguf file")
    if raw.startswith("https://"):
        if not _HUB_URL.match(raw):
            raise ValueError(f"transformer_file {raw!r} is not a huggingface.co/<owner>/<repo>/blob/<revision>/ URL")
        return raw
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    if candidate.exists() or not _HUB_FILE.match(raw):
        return str(candidate.resolve())
    return raw


def _source(raw: str, base: Path) -> str:
    """A Hub repo id stays as it is; a path is made absolute against the models file's folder."""
    if raw.lower().endswith(PICKLE_SUFFIXES):
        raise ValueError(f"{raw!r} is a pickle checkpoint; only .safetensors files and diffusers folders load")
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    # `owner/repo` is a Hub repo id unless it is on disk; a name ending in .safetensors is always a file.
    if candidate.exists() or not _HUB_ID.match(raw) or raw.lower().endswith(".safetensors"):
        return str(candidate.resolve())
    return raw
