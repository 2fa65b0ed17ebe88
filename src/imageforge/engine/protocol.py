"""The one engine interface. Above `engine/`, nothing knows torch exists."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from imageforge.domain import CancelCheck, GenerationRequest, ModelSpec, ProgressCallback, Sampler, Schedule


@dataclass(frozen=True)
class EngineOptions:
    """How the backend should run models, from the settings; "auto" lets it choose per device (ADR 0012)."""

    dtype: str = "auto"
    channels_last: str = "auto"
    threads: int | None = None
    memory_savers: str = "auto"
    compile: bool = False
    #: where torch.compile keeps compiled kernels between runs
    compile_cache: Path | None = None
    #: what runs the networks on the CPU: "auto", "torch" or "openvino" (ADR 0025)
    runtime: str = "auto"
    #: "auto" (the dtype) or "int8" (the UNet quantized, OpenVINO only)
    precision: str = "auto"
    #: where converted OpenVINO models are kept between runs
    openvino_cache: Path | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """What the backend runs on, as `/health` reports it."""

    device: str
    dtype: str
    cuda_available: bool
    mps_available: bool
    versions: dict[str, str]
    #: the device's memory in GB (GPU memory on CUDA, the machine's RAM on CPU and MPS); None when unknown
    memory_gb: float | None = None
    #: the speed settings the engine chose (dtype, channels_last, attention, threads, memory_savers, compile)
    runtime: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "dtype": self.dtype,
            "cuda_available": self.cuda_available,
            "mps_available": self.mps_available,
            "versions": self.versions,
            "memory_gb": self.memory_gb,
            "runtime": self.runtime,
        }


@dataclass(frozen=True)
class Generated:
    """One generated image and how it was made: the engine's speed settings plus what this request switched
    on (memory savers, the decoder, a first compile), reported in the result as `runtime`."""

    image: Image.Image
    runtime: dict[str, Any]
    #: the sampler and schedule that ran (the model's own when the request named none); None when the engine
    #: cannot name them
    sampler: Sampler | None = None
    schedule: Schedule | None = None
    #: the scheduler that ran, as `{"class": name, "config": {...}}` (JSON values); None when the engine cannot say
    scheduler: dict[str, Any] | None = None


class LoadedModel(Protocol):
    """A model resident in memory, ready to generate."""

    spec: ModelSpec

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Generated:
        """Run one generation; raises `Cancelled` when `should_cancel` turned true between steps."""
        ...

    def count_tokens(self, prompt: str) -> tuple[int, int] | None:
        """The prompt's length in its text encoder's tokens and the encoder's window; None when unbounded."""
        ...

    def close(self) -> None:
        """Release the weights and any device memory they hold."""
        ...


class ImageBackend(Protocol):
    """Loads catalog models and tells what it runs on."""

    def device_info(self) -> DeviceInfo: ...

    def memory_in_use_gb(self) -> float | None:
        """The memory the device's allocator holds now, in GB, where the device reports it (CUDA, MPS); None on
        the CPU, and before anything ran on the device."""
        ...

    def fingerprint(self, spec: ModelSpec) -> str:
        """What besides the request changes the pixels of `spec` (library versions, device, dtype): part of cache
        keys."""
        ...

    def weights_present(self, spec: ModelSpec) -> bool:
        """Whether loading `spec` would need no download."""
        ...

    def weights_digest(self, spec: ModelSpec) -> str | None:
        """A digest of the weight files `spec` loads here (`sha256:…`); None when they cannot be named."""
        ...

    def pull(self, spec: ModelSpec) -> str:
        """Fetch the weights of `spec` ahead of time; returns where they are."""
        ...

    def load(self, spec: ModelSpec) -> LoadedModel: ...
