"""The one engine interface. Above `engine/`, nothing knows torch exists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from imageforge.domain import CancelCheck, GenerationRequest, ModelSpec, ProgressCallback


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "dtype": self.dtype,
            "cuda_available": self.cuda_available,
            "mps_available": self.mps_available,
            "versions": self.versions,
            "memory_gb": self.memory_gb,
        }


class LoadedModel(Protocol):
    """A model resident in memory, ready to generate."""

    spec: ModelSpec

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Image.Image:
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

    def fingerprint(self) -> str:
        """What besides the request changes the pixels (library versions, device, dtype): part of cache keys."""
        ...

    def weights_present(self, spec: ModelSpec) -> bool:
        """Whether loading `spec` would need no download."""
        ...

    def pull(self, spec: ModelSpec) -> str:
        """Fetch the weights of `spec` ahead of time; returns where they are."""
        ...

    def load(self, spec: ModelSpec) -> LoadedModel: ...
