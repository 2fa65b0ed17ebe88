"""The Hugging Face diffusers backend: the only module (with `tiny.py`) that imports torch or diffusers.

Every model loads through `from_pretrained` (a Hub repo id or a local diffusers folder) or
`from_single_file` (one local `.safetensors`), always with safetensors only. img2img and inpaint pipelines
are made with `from_pipe`, so they share the text2img pipeline's weights instead of loading them twice.
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from imageforge.domain import (
    CancelCheck,
    Family,
    GenerationRequest,
    ModelSpec,
    Progress,
    ProgressCallback,
    Task,
)
from imageforge.engine.backends import tiny
from imageforge.engine.protocol import DeviceInfo
from imageforge.errors import Cancelled, ModelUnsupported, WeightsUnavailable

log = logging.getLogger(__name__)

_PIPELINES = {
    Family.SD: "StableDiffusionPipeline",
    Family.SDXL: "StableDiffusionXLPipeline",
    Family.FLUX: "FluxPipeline",
    Family.FLUX2_KLEIN: "Flux2KleinPipeline",
}
#: What `models pull` fetches: configs, tokenizers and safetensors weights, never pickles or other variants.
_PULL_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]
_PULL_IGNORE = ["*.fp16.safetensors", "*.ckpt", "*.bin", "*.pt", "*.onnx", "*.msgpack", "*.gguf"]


class _Interrupted(Exception):
    """Raised from the step callback to leave the denoising loop at once, skipping the VAE decode."""


def _torch() -> Any:
    """torch, imported on first use so that the CLI, the MCP handshake and /health start fast."""
    import torch

    return torch


def _diffusers_attr(name: str) -> Any:
    import diffusers

    return getattr(diffusers, name, None)


def _resolve_device(setting: str) -> str:
    torch = _torch()
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _hub_file(reference: str) -> tuple[str, str]:
    """Split `owner/repo/path/in/repo` into the repo id and the file name."""
    owner, repo, filename = reference.split("/", 2)
    return f"{owner}/{repo}", filename


def _is_local(source: str) -> bool:
    return Path(source).is_absolute()


class DiffusersBackend:
    """Loads catalog models with diffusers on one device."""

    def __init__(self, *, device: str, models_path: Path) -> None:
        self._device_setting = device
        self._models_path = models_path
        self._info: DeviceInfo | None = None
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
                torch = _torch()
                device = _resolve_device(self._device_setting)
                dtype = "float16" if device in ("cuda", "mps") else "float32"
                self._info = DeviceInfo(
                    device=device,
                    dtype=dtype,
                    cuda_available=torch.cuda.is_available(),
                    mps_available=torch.backends.mps.is_available(),
                    versions={
                        "torch": torch.__version__,
                        "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__,
                    },
                )
            return self._info

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
        if _is_local(source):
            return Path(source).exists()
        from huggingface_hub import try_to_load_from_cache

        for marker in ("model_index.json", "pytorch_lora_weights.safetensors"):
            if isinstance(try_to_load_from_cache(source, marker, revision=revision), str):
                return True
        return False

    @staticmethod
    def _file_present(reference: str) -> bool:
        if _is_local(reference):
            return Path(reference).is_file()
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = _hub_file(reference)
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    def pull(self, spec: ModelSpec) -> str:
        if spec.builtin:
            return str(tiny.build_tiny_sd(self._models_path / spec.key))
        from huggingface_hub import hf_hub_download, snapshot_download

        try:
            where = spec.source
            if not _is_local(spec.source):
                where = snapshot_download(
                    spec.source,
                    revision=spec.revision,
                    allow_patterns=_PULL_PATTERNS,
                    ignore_patterns=_PULL_IGNORE,
                )
            elif not Path(spec.source).exists():
                raise FileNotFoundError(spec.source)
            if spec.lora and not _is_local(spec.lora):
                snapshot_download(spec.lora, allow_patterns=["*.safetensors"])
            if spec.transformer_file and not _is_local(spec.transformer_file):
                hf_hub_download(*_hub_file(spec.transformer_file))
            return where
        except OSError as exc:
            raise self._unavailable(spec, exc) from exc

    def load(self, spec: ModelSpec) -> DiffusersModel:
        info = self.device_info()
        dtype = getattr(_torch(), info.dtype)
        pipeline_name = _PIPELINES[spec.family]
        pipeline_class = _diffusers_attr(pipeline_name)
        if pipeline_class is None:
            import diffusers

            raise ModelUnsupported(
                f"Model '{spec.key}' needs diffusers' {pipeline_name}, which diffusers {diffusers.__version__} lacks.",
                hint="Upgrade diffusers (pip install -U diffusers) and restart.",
            )
        try:
            pipe = self._load_pipeline(spec, pipeline_class, dtype)
        except ImportError as exc:
            raise ModelUnsupported(
                f"Model '{spec.key}' needs a package that is not installed: {exc}",
                hint="Install the package the message names into imageforge's environment and restart.",
            ) from exc
        except OSError as exc:
            raise self._unavailable(spec, exc) from exc
        pipe.set_progress_bar_config(disable=True)
        return DiffusersModel(spec, pipe.to(info.device), info.device)

    def _load_pipeline(self, spec: ModelSpec, pipeline_class: Any, dtype: Any) -> Any:
        source = str(tiny.build_tiny_sd(self._models_path / spec.key)) if spec.builtin else spec.source
        extra: dict[str, Any] = {}
        if spec.transformer_file:
            extra["transformer"] = self._load_quantized_transformer(spec.transformer_file, dtype)
        if source.endswith(".safetensors"):
            if not Path(source).is_file():
                raise FileNotFoundError(source)
            pipe = pipeline_class.from_single_file(source, dtype=dtype, **extra)
        else:
            if _is_local(source) and not Path(source).is_dir():
                raise FileNotFoundError(source)
            pipe = pipeline_class.from_pretrained(
                source, dtype=dtype, use_safetensors=True, revision=spec.revision, **extra
            )
        if spec.scheduler:
            scheduler_class = _diffusers_attr(spec.scheduler)
            if scheduler_class is None:
                raise ModelUnsupported(f"Unknown scheduler '{spec.scheduler}' for model '{spec.key}'.")
            pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
        if spec.lora:
            lora = Path(spec.lora)
            if _is_local(spec.lora):
                pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
            else:
                pipe.load_lora_weights(spec.lora)
            pipe.fuse_lora()
        return pipe

    @staticmethod
    def _load_quantized_transformer(reference: str, dtype: Any) -> Any:
        from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

        path = reference
        if not _is_local(reference):
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(*_hub_file(reference))
        return FluxTransformer2DModel.from_single_file(
            path, quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), dtype=dtype
        )

    @staticmethod
    def _unavailable(spec: ModelSpec, exc: BaseException) -> WeightsUnavailable:
        where = spec.source if _is_local(spec.source) else f"the Hugging Face Hub repo {spec.source}"
        return WeightsUnavailable(
            f"The weights of '{spec.key}' are not on this machine and could not be fetched from {where}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint=(
                f"On a machine with internet access run `imageforge models pull {spec.key}` (it fills the Hugging "
                "Face cache, HF_HOME), or put a diffusers folder on disk and add it to your models file."
            ),
        )


class DiffusersModel:
    """One loaded pipeline plus the img2img and inpaint pipelines that share its weights."""

    def __init__(self, spec: ModelSpec, pipe: Any, device: str) -> None:
        self.spec = spec
        self._device = device
        self._pipelines: dict[Task, Any] = {Task.TEXT2IMG: pipe}

    def _pipeline(self, task: Task) -> Any:
        if task not in self._pipelines:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForImage2Image if task is Task.IMG2IMG else AutoPipelineForInpainting
            pipe = auto.from_pipe(self._pipelines[Task.TEXT2IMG])
            pipe.set_progress_bar_config(disable=True)
            self._pipelines[task] = pipe
        return self._pipelines[task]

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Image.Image:
        torch = _torch()
        pipe = self._pipeline(request.task)

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_progress(Progress(step=step + 1, total=int(pipeline.num_timesteps)))
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
        if request.task is not Task.TEXT2IMG:
            arguments["image"] = request.init_image
            arguments["strength"] = request.strength
        if request.task is Task.INPAINT:
            arguments["mask_image"] = request.mask_image
        accepted = inspect.signature(pipe.__call__).parameters
        arguments = {name: value for name, value in arguments.items() if name in accepted}
        try:
            with torch.inference_mode():
                images = pipe(**arguments).images
        except _Interrupted:
            raise Cancelled("The generation was cancelled.") from None
        image: Image.Image = images[0]
        return image

    def close(self) -> None:
        self._pipelines.clear()
        gc.collect()
        torch = _torch()
        if self._device == "cuda":
            torch.cuda.empty_cache()
        elif self._device == "mps":
            torch.mps.empty_cache()
