"""The Hugging Face diffusers backend: the only module (with `tiny.py`) that imports torch or diffusers.

Every model loads through `from_pretrained` (a Hub repo id or a local diffusers folder) or
`from_single_file` (one local `.safetensors`), always with safetensors only. img2img and inpaint pipelines
are made with `from_pipe`, so they share the text2img pipeline's weights instead of loading them twice.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from safetensors import SafetensorError

from imageforge.domain import (
    CancelCheck,
    Decoder,
    Family,
    GenerationRequest,
    ModelSpec,
    Progress,
    ProgressCallback,
    Task,
)
from imageforge.engine.backends import speed, tiny
from imageforge.engine.protocol import DeviceInfo, EngineOptions, Generated
from imageforge.errors import Cancelled, ModelUnsupported, OutOfMemory, WeightsUnavailable

log = logging.getLogger(__name__)

_PIPELINES = {
    Family.SD: "StableDiffusionPipeline",
    Family.SDXL: "StableDiffusionXLPipeline",
    Family.FLUX: "FluxPipeline",
    Family.FLUX2_KLEIN: "Flux2KleinPipeline",
}
#: What `models pull` fetches of a diffusers repo: configs, tokenizers (with chat templates) and the components'
#: safetensors weights, never pickles, and not the single-file checkpoints some repos also keep at their top
#: level (`sd_turbo.safetensors`), which `from_pretrained` never reads: their pattern needs a folder.
_PULL_PATTERNS = ["*.json", "*.txt", "*.model", "*.jinja", "*/*.safetensors"]
_PULL_IGNORE = ["*.ckpt", "*.bin", "*.pt", "*.onnx", "*.msgpack", "*.gguf"]
#: diffusers' name for the half-precision copies of a repository's weights (`unet/….fp16.safetensors`). Where
#: the weights run in fp16 or bf16 they are pulled and loaded instead of the fp32 files: half the download, and
#: a quarter off the peak memory of a load (docs/benchmarks.md).
_HALF_VARIANT = "fp16"
_HALF_SUFFIX = f".{_HALF_VARIANT}.safetensors"


#: How each latent channel of the Stable Diffusion VAEs (SD 1.x/2.x; close enough for SDXL's) tints the
#: image: a linear map from 4 latent channels to RGB that approximates the decoder at 1/8 resolution for a
#: preview, at no cost. Coefficients published by Birchlabs on the Hugging Face forum ("Decoding latents to
#: RGB without upscaling"). FLUX latents have 16 packed channels and no preview until the tiny autoencoder.
_LATENT_RGB = {
    Family.SD: ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473)),
    Family.SDXL: ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473)),
}


def _latent_preview(latents: Any, factors: tuple[tuple[float, ...], ...]) -> Image.Image:
    """The RGB approximation of the first image's latents, at latent resolution."""
    torch = _torch()
    weights = torch.tensor(factors, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[0].detach().float().cpu(), weights)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def _tiny_decode(decoder: Any, latents: Any) -> Image.Image:
    """The first image's latents decoded by the tiny autoencoder, at full resolution: the result of
    `decoder: "fast"`, and the live preview of the image so far."""
    pixels = decoder.decode(latents[:1].to(decoder.dtype)).sample
    array = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(_torch().uint8).permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy(), "RGB")


class _Interrupted(Exception):
    """Raised from the step callback to leave the denoising loop at once, skipping the VAE decode."""


def _torch() -> Any:
    """torch, imported on first use so that the CLI, the MCP handshake and /health start fast."""
    import torch

    return torch


def _diffusers_attr(name: str) -> Any:
    import diffusers

    return getattr(diffusers, name, None)


def _memory_gb(device: str) -> float | None:
    """The memory models on `device` live in: the GPU's on CUDA, the machine's RAM on CPU and MPS (unified)."""
    torch = _torch()
    if device.startswith("cuda"):
        return float(torch.cuda.get_device_properties(torch.device(device)).total_memory) / 2**30
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 2**30
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


#: How allocators word running out of memory: CUDA, MPS ("MPS backend out of memory") and the CPU allocator.
_OUT_OF_MEMORY_MARKERS = ("out of memory", "can't allocate memory", "not enough memory")


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, _torch().OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in _OUT_OF_MEMORY_MARKERS)


def _release_memory(device: str) -> None:
    """Give freed tensors back to the device: after unloading a model and after running out of memory."""
    gc.collect()
    torch = _torch()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def _out_of_memory(device: str, doing: str, reason: str) -> OutOfMemory:
    return OutOfMemory(
        f"The {device} ran out of memory while {doing}: {reason}",
        hint=(
            "Try a smaller size or a lighter model (sd-turbo), unload other models (POST /models/{key}/unload) "
            "or lower IMAGEFORGE_MEMORY_BUDGET; the server keeps running."
        ),
    )


def _resolve_device(setting: str) -> str:
    torch = _torch()
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


_HUB_URL = "https://huggingface.co/"


def _hub_file(reference: str) -> tuple[str, str, str | None]:
    """The repo id, file name and revision of `owner/repo/path/in/repo` or of a Hub file URL.

    A URL is `https://huggingface.co/owner/repo/blob/<revision>/path` (or `/resolve/`), as the Hub's pages show it.
    """
    if reference.startswith(_HUB_URL):
        parts = reference.removeprefix(_HUB_URL).split("/")
        if len(parts) < 5 or parts[2] not in ("blob", "resolve"):
            raise ValueError(f"{reference} is not a Hugging Face Hub file URL (…/owner/repo/blob/revision/file)")
        return f"{parts[0]}/{parts[1]}", "/".join(parts[4:]), parts[3]
    parts = reference.split("/", 2)
    if len(parts) < 3:
        raise ValueError(f"{reference} names no file: expected owner/repo/path/in/repo")
    return f"{parts[0]}/{parts[1]}", parts[2], None


def _offline() -> bool:
    """Whether HF_HUB_OFFLINE is set now (huggingface_hub reads it once, when it is imported)."""
    from huggingface_hub import constants

    setting = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return setting in ("1", "on", "yes", "true") or bool(constants.is_offline_mode())


def _is_local(source: str) -> bool:
    return Path(source).is_absolute()


def _full_twins(files: list[str]) -> list[str]:
    """The fp32 files of `files` that have a half-precision twin: what a half-precision pull leaves out."""
    return [name.removesuffix(_HALF_SUFFIX) + ".safetensors" for name in files if name.endswith(_HALF_SUFFIX)]


def _weights_variant(folder: Path | None, dtype: str) -> str | None:
    """Which weights to load from a diffusers folder: the fp16 files where the model runs in half precision and
    the folder has them (components without them load their fp32 files), else the fp32 files. A folder pulled
    in half precision that lacks some fp32 files loads its fp16 ones even in fp32, upcast, and says so."""
    if folder is None or not folder.is_dir():
        return None
    half = {path.relative_to(folder).as_posix() for path in folder.glob(f"*/*{_HALF_SUFFIX}")}
    if not half:
        return None
    if dtype != "float32":
        return _HALF_VARIANT
    missing = [name for name in _full_twins(sorted(half)) if not (folder / name).is_file()]
    if not missing:
        return None
    log.warning(
        "%s has only fp16 weights for %s: loading them upcast to fp32; `imageforge models pull` fetches the fp32 files",
        folder,
        ", ".join(name.split("/")[0] for name in missing),
    )
    return _HALF_VARIANT


def _load_lora(pipe: Any, reference: str) -> None:
    """Load LoRA weights (a local `.safetensors` file or folder, or a Hub repo id) and fuse them into the pipeline.

    `use_safetensors=True` also turns off diffusers' fallback to pickled `.bin` LoRA weights, and a local
    file must be `.safetensors`: diffusers would unpickle a file of any other name it is given.
    """
    if _is_local(reference):
        path = Path(reference)
        if not path.exists():
            raise FileNotFoundError(reference)
        if path.is_file():
            if path.suffix.lower() != ".safetensors":
                raise WeightsUnavailable(
                    f"The LoRA file {reference} is not a .safetensors file.",
                    hint="imageforge loads safetensors weights only; pickled LoRA files can run code when loaded.",
                )
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, use_safetensors=True)
        else:
            pipe.load_lora_weights(str(path), use_safetensors=True)
    else:
        pipe.load_lora_weights(reference, use_safetensors=True)
    pipe.fuse_lora()


class _TruncatedPromptRedaction(logging.Filter):
    """diffusers logs the part of a long prompt that its text encoder cut off; prompts stay out of the server's
    log (the audit log keeps them when IMAGEFORGE_AUDIT_PROMPTS asks for it)."""

    MARKER = "was truncated because"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.MARKER in message:
            reason = message.partition(" tokens:")[0]
            record.msg, record.args = f"{reason} tokens (the text that was cut off is not logged)", None
        return True


def _keep_prompts_out_of_logs(library: logging.Logger) -> None:
    """Redact prompts on every handler the library logs through (its records do not reach the root logger)."""
    handlers = library.handlers if not library.propagate else [*library.handlers, *logging.getLogger().handlers]
    for handler in handlers:
        if not any(isinstance(existing, _TruncatedPromptRedaction) for existing in handler.filters):
            handler.addFilter(_TruncatedPromptRedaction())


class DiffusersBackend:
    """Loads catalog models with diffusers on one device."""

    def __init__(self, *, device: str, models_path: Path, options: EngineOptions | None = None) -> None:
        self._device_setting = device
        self._models_path = models_path
        self._options = options or EngineOptions()
        self._info: DeviceInfo | None = None
        self._runtime: speed.Runtime | None = None
        self._info_lock = threading.Lock()

    def device_info(self) -> DeviceInfo:
        with self._info_lock:
            if self._info is None:
                import diffusers
                import transformers

                # A service logs; per-component loading bars from the libraries would only clutter it.
                diffusers.utils.logging.disable_progress_bar()
                transformers.utils.logging.disable_progress_bar()
                transformers.utils.logging.set_verbosity_error()
                _keep_prompts_out_of_logs(logging.getLogger("diffusers"))
                torch = _torch()
                device = _resolve_device(self._device_setting)
                self._runtime = speed.choose_runtime(device, self._options)
                self._info = DeviceInfo(
                    device=device,
                    dtype=self._runtime.dtype,
                    cuda_available=torch.cuda.is_available(),
                    mps_available=torch.backends.mps.is_available(),
                    versions={
                        "torch": torch.__version__,
                        "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__,
                    },
                    memory_gb=_memory_gb(device),
                    runtime=self._runtime.as_dict(),
                )
            return self._info

    def runtime(self) -> speed.Runtime:
        """The speed settings chosen for this device (chosen with `device_info`, once per backend)."""
        self.device_info()
        assert self._runtime is not None
        return self._runtime

    def fingerprint(self) -> str:
        info = self.device_info()
        return f"diffusers={info.versions['diffusers']};torch={info.versions['torch']};{info.device};{info.dtype}"

    def weights_present(self, spec: ModelSpec) -> bool:
        if spec.builtin:
            return True
        sources = [spec.source] + ([spec.lora] if spec.lora else [])
        return all(self._present(source, spec.revision) for source in sources) and (
            spec.transformer_file is None or self._file_present(spec.transformer_file)
        )

    @staticmethod
    def _present(source: str, revision: str | None) -> bool:
        markers = ("model_index.json", "pytorch_lora_weights.safetensors")
        return any(DiffusersBackend._present_file(source, marker, revision) for marker in markers)

    @staticmethod
    def _present_file(source: str, marker: str, revision: str | None = None) -> bool:
        """Whether a local folder exists, or the Hub cache holds `marker` of the repo `source`."""
        if _is_local(source):
            return Path(source).exists()
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(source, marker, revision=revision), str)

    @staticmethod
    def _on_disk(source: str, revision: str | None) -> Path | None:
        """The folder of a diffusers model: a local one, or the Hub cache's snapshot of a repo; None if not pulled."""
        if _is_local(source):
            return Path(source)
        from huggingface_hub import try_to_load_from_cache

        index = try_to_load_from_cache(source, "model_index.json", revision=revision)
        return Path(index).parent if isinstance(index, str) else None

    @staticmethod
    def _file_present(reference: str) -> bool:
        if _is_local(reference):
            return Path(reference).is_file()
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename, revision = _hub_file(reference)
        return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)

    def pull(self, spec: ModelSpec) -> str:
        if spec.builtin:
            tiny.build_tiny_taesd(self._tiny_taesd_path)
            return str(tiny.build_tiny_sd(self._models_path / spec.key))
        from huggingface_hub import hf_hub_download, snapshot_download

        try:
            where = spec.source
            if not _is_local(spec.source):
                where = self._download(spec)
            elif not Path(spec.source).exists():
                raise FileNotFoundError(spec.source)
            if spec.lora and not _is_local(spec.lora):
                snapshot_download(spec.lora, allow_patterns=["*.safetensors"])
            if spec.transformer_file and not _is_local(spec.transformer_file):
                repo_id, filename, revision = _hub_file(spec.transformer_file)
                hf_hub_download(repo_id, filename, revision=revision)
            if spec.fast_decoder and not _is_local(spec.fast_decoder):
                snapshot_download(spec.fast_decoder, allow_patterns=["*.json", "*.safetensors"])
            return where
        except OSError as exc:
            raise self._unavailable(spec, exc, pulling=True) from exc

    def _download(self, spec: ModelSpec) -> str:
        """Fetch the model's Hub repo into the Hub cache: the files this runtime's dtype reads, and not the
        transformer that `transformer_file` replaces; returns their folder."""
        from huggingface_hub import HfApi, snapshot_download

        leave_out = ["transformer/*"] if spec.transformer_file else []
        if self.device_info().dtype == "float32":
            leave_out.append(f"*{_HALF_SUFFIX}")
        else:  # the fp16 files where the repository has them, the fp32 ones of the other components
            leave_out += _full_twins(HfApi().list_repo_files(spec.source, revision=spec.revision))
        folder: str = snapshot_download(
            spec.source, revision=spec.revision, allow_patterns=_PULL_PATTERNS, ignore_patterns=_PULL_IGNORE + leave_out
        )
        return folder

    @property
    def _tiny_taesd_path(self) -> Path:
        return self._models_path / "tiny-taesd"

    def load(self, spec: ModelSpec) -> DiffusersModel:
        info = self.device_info()
        runtime = self.runtime()
        dtype = getattr(_torch(), info.dtype)
        pipeline_name = _PIPELINES[spec.family]
        pipeline_class = _diffusers_attr(pipeline_name)
        if pipeline_class is None:
            import diffusers

            raise ModelUnsupported(
                f"Model '{spec.key}' needs diffusers' {pipeline_name}, which diffusers {diffusers.__version__} lacks.",
                hint="Upgrade diffusers (pip install -U diffusers) and restart.",
            )
        failure = None
        try:
            pipe = self._load_pipeline(spec, pipeline_class, dtype)
            pipe.set_progress_bar_config(disable=True)
            if speed.offload_to_cpu(runtime, spec.est_memory_gb):
                log.info(
                    "%s (~%.1f GB) does not fit the free GPU memory: offloading to the CPU",
                    spec.key,
                    spec.est_memory_gb,
                )
                pipe.enable_model_cpu_offload(device=info.device)
            else:
                pipe = pipe.to(info.device)
            speed.prepare(pipe, runtime)
            fast_decoder = self._load_fast_decoder(spec, dtype) if self._fast_decoder_present(spec) else None
        except Exception as exc:
            if not _is_out_of_memory(exc):
                error = self._load_error(spec, exc)
                if error is exc:
                    raise
                raise error from exc
            failure = str(exc).splitlines()[0]
        if failure is not None:
            # Outside the handler, so that the traceback no longer holds the half-loaded weights.
            _release_memory(info.device)
            raise _out_of_memory(info.device, f"loading '{spec.key}'", failure)
        return DiffusersModel(spec, pipe, runtime, fast_decoder, partial(self._load_fast_decoder, spec, dtype))

    def _fast_decoder_present(self, spec: ModelSpec) -> bool:
        if spec.fast_decoder is None:
            return False
        if spec.builtin:
            return True
        return self._present_file(spec.fast_decoder, "config.json")

    def _load_fast_decoder(self, spec: ModelSpec, dtype: Any) -> Any:
        """The tiny autoencoder of `spec`, through the same offline and safetensors rules as every model."""
        from diffusers import AutoencoderTiny

        assert spec.fast_decoder is not None
        source = str(tiny.build_tiny_taesd(self._tiny_taesd_path)) if spec.builtin else spec.fast_decoder
        try:
            if _is_local(source) and not Path(source).is_dir():
                raise FileNotFoundError(source)
            if not _is_local(source) and _offline() and not self._present_file(source, "config.json"):
                raise FileNotFoundError(f"{source} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
            decoder = AutoencoderTiny.from_pretrained(source, dtype=dtype, use_safetensors=True)
        except OSError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsUnavailable(
                f"The fast decoder of '{spec.key}' ({source}) is not on this machine and could not be fetched: "
                f"{reason}",
                hint=(
                    f'Use decoder "full", or on a machine with internet access run `imageforge models pull '
                    f"{spec.key}` (it fetches the fast decoder too)."
                ),
            ) from exc
        decoder = decoder.to(self.device_info().device)
        if self.runtime().channels_last:
            decoder.to(memory_format=_torch().channels_last)
        return decoder

    def _load_error(self, spec: ModelSpec, exc: Exception) -> Exception:
        """What a failed load tells the client: missing weights, a missing package, an unreadable file."""
        if isinstance(exc, ImportError):
            return ModelUnsupported(
                f"Model '{spec.key}' needs a package that is not installed: {exc}",
                hint="Install the package the message names into imageforge's environment and restart.",
            )
        if isinstance(exc, OSError):
            return self._unavailable(spec, exc)
        if isinstance(exc, SafetensorError):
            return WeightsUnavailable(
                f"A weights file of '{spec.key}' is not a readable safetensors file: {exc}",
                hint="Fetch the file again; imageforge loads safetensors only, never pickled weights under any name.",
            )
        return exc

    def _load_pipeline(self, spec: ModelSpec, pipeline_class: Any, dtype: Any) -> Any:
        source = str(tiny.build_tiny_sd(self._models_path / spec.key)) if spec.builtin else spec.source
        extra: dict[str, Any] = {}
        if spec.transformer_file:
            extra["transformer"] = self._load_quantized_transformer(
                spec.transformer_file, dtype, config=source, revision=spec.revision
            )
        if source.endswith(".safetensors"):
            if not Path(source).is_file():
                raise FileNotFoundError(source)
            pipe = pipeline_class.from_single_file(source, dtype=dtype, **extra)
        else:
            if _is_local(source) and not Path(source).is_dir():
                raise FileNotFoundError(source)
            folder = self._on_disk(source, spec.revision)
            if folder is None and not _offline():  # a first use fetches what `models pull` does, then reads it
                folder = Path(self.pull(spec))
                source = str(folder)
            variant = _weights_variant(folder, str(dtype).removeprefix("torch."))
            pipe = pipeline_class.from_pretrained(
                source, dtype=dtype, use_safetensors=True, revision=spec.revision, variant=variant, **extra
            )
        if spec.scheduler:
            scheduler_class = _diffusers_attr(spec.scheduler)
            if scheduler_class is None:
                raise ModelUnsupported(f"Unknown scheduler '{spec.scheduler}' for model '{spec.key}'.")
            pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
        if spec.lora:
            _load_lora(pipe, spec.lora)
        return pipe

    @staticmethod
    def _load_quantized_transformer(reference: str, dtype: Any, *, config: str, revision: str | None) -> Any:
        """The FLUX transformer from one `.gguf` file, configured from the `transformer` folder of `config`.

        Naming the config source keeps the load offline once the source is on disk; without it diffusers
        guesses a Hub repo from the checkpoint's keys and fetches that repo's config.
        """
        from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

        if not reference.lower().endswith(".gguf"):
            raise ModelUnsupported(f"The transformer file {reference} is not a .gguf file; only GGUF files load here.")
        path = reference
        if not _is_local(reference):
            from huggingface_hub import hf_hub_download

            repo_id, filename, file_revision = _hub_file(reference)
            path = hf_hub_download(repo_id, filename, revision=file_revision)
        elif not Path(reference).is_file():
            raise FileNotFoundError(reference)
        return FluxTransformer2DModel.from_single_file(
            path,
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
            dtype=dtype,
            config=config,
            subfolder="transformer",
            config_revision=revision,
        )

    @staticmethod
    def _unavailable(spec: ModelSpec, exc: BaseException, *, pulling: bool = False) -> WeightsUnavailable:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if ".safetensors" in reason and "no file named" in reason.lower():
            return WeightsUnavailable(
                f"The weights of '{spec.key}' could not be loaded: {reason}",
                hint=(
                    "imageforge loads safetensors weights only, never pickled .bin/.ckpt/.pt files (loading those "
                    "can run code). Convert the model with save_pretrained(..., safe_serialization=True) or use a "
                    "safetensors release of it."
                ),
            )
        where = spec.source if _is_local(spec.source) else f"the Hugging Face Hub repo {spec.source}"
        if pulling:
            return WeightsUnavailable(
                f"Could not download the weights of '{spec.key}' from {where}: {reason}",
                hint="Check the network connection, unset HF_HUB_OFFLINE, and set HF_TOKEN for gated repos.",
            )
        return WeightsUnavailable(
            f"The weights of '{spec.key}' are not on this machine and could not be fetched from {where}: {reason}",
            hint=(
                f"On a machine with internet access run `imageforge models pull {spec.key}` (it fills the Hugging "
                "Face cache, HF_HOME), or put a diffusers folder on disk and add it to your models file."
            ),
        )


#: Prompt embeddings kept per model: a person iterating on seeds or sizes repeats the same prompt.
_EMBEDDINGS_CACHED = 32
#: The families whose pipelines take precomputed prompt embeddings in the same shape from `encode_prompt`.
_EMBEDDING_KEYS = {
    Family.SD: ("prompt_embeds", "negative_prompt_embeds"),
    Family.SDXL: ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"),
}


class DiffusersModel:
    """One loaded pipeline plus the img2img and inpaint pipelines that share its weights."""

    def __init__(
        self,
        spec: ModelSpec,
        pipe: Any,
        runtime: speed.Runtime,
        fast_decoder: Any = None,
        load_fast_decoder: Callable[[], Any] | None = None,
    ) -> None:
        self.spec = spec
        self._runtime = runtime
        self._device = runtime.device
        self._pipelines: dict[Task, Any] = {Task.TEXT2IMG: pipe}
        self._fast_decoder = fast_decoder
        self._load_fast_decoder = load_fast_decoder
        self._embeddings: OrderedDict[tuple[str, str, bool], dict[str, Any]] = OrderedDict()
        self._savers_on = False
        #: the shapes already run once; with compile on, the first run of each compiles
        self._shapes: set[tuple[Task, int, int, Decoder]] = set()

    @property
    def pipeline(self) -> Any:
        """The text2img diffusers pipeline (its scheduler and weights are shared with the other tasks')."""
        return self._pipelines[Task.TEXT2IMG]

    @property
    def fast_decoder(self) -> Any:
        """The tiny autoencoder when it is loaded (it then draws the previews too), else None."""
        return self._fast_decoder

    def _pipeline(self, task: Task) -> Any:
        if task not in self._pipelines:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForImage2Image if task is Task.IMG2IMG else AutoPipelineForInpainting
            pipe = auto.from_pipe(self._pipelines[Task.TEXT2IMG])
            pipe.set_progress_bar_config(disable=True)
            self._pipelines[task] = pipe
        return self._pipelines[task]

    def _preview(self, latents: Any) -> Callable[[], Image.Image] | None:
        if latents is None or latents.ndim != 4 or latents.shape[1] != 4:
            return None
        if self._fast_decoder is not None:
            return partial(_tiny_decode, self._fast_decoder, latents)
        factors = _LATENT_RGB.get(self.spec.family)
        return None if factors is None else partial(_latent_preview, latents, factors)

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Generated:
        torch = _torch()
        pipe = self._pipeline(request.task)
        fast = request.decoder is Decoder.FAST
        if fast and self._fast_decoder is None:
            assert self._load_fast_decoder is not None
            self._fast_decoder = self._load_fast_decoder()

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            preview = self._preview(tensors.get("latents"))
            on_progress(Progress(step=step + 1, total=int(pipeline.num_timesteps), preview=preview))
            if should_cancel():
                raise _Interrupted
            return tensors

        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "width": request.width,
            "height": request.height,
            "generator": torch.Generator("cpu").manual_seed(request.seed),
            "callback_on_step_end": on_step_end,
        }
        if fast:
            arguments["output_type"] = "latent"
        if request.task is not Task.TEXT2IMG:
            arguments["image"] = request.init_image
            arguments["strength"] = request.strength
        if request.task is Task.INPAINT:
            arguments["mask_image"] = request.mask_image
        accepted = inspect.signature(pipe.__call__).parameters
        arguments = {name: value for name, value in arguments.items() if name in accepted}
        savers = self._switch_memory_savers(pipe, request)
        shape = (request.task, request.width, request.height, request.decoder)
        started = time.perf_counter()
        failure = None
        try:
            with torch.inference_mode():
                arguments |= self._prompt_embeddings(pipe, request)
                images = pipe(**arguments).images
                image = _tiny_decode(self._fast_decoder, images) if fast else images[0]
        except _Interrupted:
            raise Cancelled("The generation was cancelled.") from None
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            failure = str(exc).splitlines()[0]
        if failure is not None:
            # Outside the handler, so that the traceback no longer holds the step's activations.
            _release_memory(self._device)
            raise _out_of_memory(
                self._device, f"generating {request.width}x{request.height} with '{self.spec.key}'", failure
            )
        runtime = {**self._runtime.as_dict(), "decoder": request.decoder.value, "memory_savers": savers}
        if self._runtime.compile and shape not in self._shapes:
            # The first run of each shape compiles (or reads the on-disk cache): report what that cost.
            runtime["first_run_with_compile_s"] = round(time.perf_counter() - started, 2)
            log.info(
                "first %s run at %dx%d with torch.compile took %.1fs", *shape[:3], runtime["first_run_with_compile_s"]
            )
        self._shapes.add(shape)
        return Generated(image, runtime)

    def _prompt_embeddings(self, pipe: Any, request: GenerationRequest) -> dict[str, Any]:
        """The prompt's embeddings from a small LRU, so a repeated prompt skips the text encoder.

        Only for the families whose pipelines take embeddings; the others encode the prompt themselves.
        """
        names = _EMBEDDING_KEYS.get(self.spec.family)
        if names is None:
            return {}
        guided = request.guidance > 1
        key = (request.prompt, request.negative_prompt if guided else "", guided)
        cached = self._embeddings.get(key)
        if cached is None:
            encoded = pipe.encode_prompt(
                prompt=request.prompt,
                device=pipe._execution_device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=guided,
                negative_prompt=request.negative_prompt or None,
            )
            cached = dict(zip(names, encoded, strict=True))
            self._embeddings[key] = cached
            if len(self._embeddings) > _EMBEDDINGS_CACHED:
                self._embeddings.popitem(last=False)
        self._embeddings.move_to_end(key)
        return {"prompt": None, "negative_prompt": None, **cached}

    def _switch_memory_savers(self, pipe: Any, request: GenerationRequest) -> bool:
        """VAE tiling and attention slicing on when this request needs them, off again when it does not."""
        wanted = speed.memory_savers(self._runtime, request.width, request.height)
        if wanted != self._savers_on and hasattr(pipe, "enable_attention_slicing"):
            if wanted:
                pipe.vae.enable_tiling()
                pipe.enable_attention_slicing()
            else:
                pipe.vae.disable_tiling()
                pipe.disable_attention_slicing()
            self._savers_on = wanted
        return self._savers_on

    def count_tokens(self, prompt: str) -> tuple[int, int] | None:
        """Tokens of the encoder that reads the prompt's words: CLIP's 77 for SD and SDXL (both encoders share
        the window), T5's `max_sequence_length` for FLUX.1."""
        pipe = self.pipeline
        if self.spec.family in (Family.SD, Family.SDXL):
            tokenizer, window = pipe.tokenizer, int(pipe.tokenizer.model_max_length)
        elif self.spec.family is Family.FLUX and getattr(pipe, "tokenizer_2", None) is not None:
            tokenizer, window = pipe.tokenizer_2, 512
        else:
            return None
        # BOS and EOS count: they take two of CLIP's 77 places.
        return len(tokenizer(prompt, truncation=False).input_ids), window

    def close(self) -> None:
        self._pipelines.clear()
        self._embeddings.clear()
        self._fast_decoder = None
        _release_memory(self._device)
