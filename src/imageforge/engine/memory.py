"""What the service asks of the device's memory: how much is free for a job now, and how much one run took at
its peak. `DeviceMemory` (engine/backends/memory.py) answers for torch's devices; tests give their own."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass
class PeakReading:
    """What one measured run took at its peak beyond what was in use when it began, in GB; None until the run
    has ended, and when the device cannot tell."""

    peak_gb: float | None = None


class MemoryProbe(Protocol):
    """The memory of the device jobs run on."""

    def device(self) -> str:
        """The device and dtype that measurements hold for ("cuda/float16", "cpu/float32"): peaks recorded on
        one are never used to estimate another."""
        ...

    def free_gb(self) -> float | None:
        """Memory a job could take now: free GPU memory (plus what torch holds unused) on CUDA, available RAM on
        the CPU; None when the device cannot tell."""
        ...

    def offloads_weights(self) -> bool:
        """Whether a model whose weights do not fit the free memory is loaded with its weights kept in RAM (CPU
        offload on CUDA), so that only what generating takes must fit."""
        ...

    def measure(self) -> AbstractContextManager[PeakReading]:
        """Measure the block's peak memory; the reading is filled in when the block ends."""
        ...
