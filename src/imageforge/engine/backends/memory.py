"""`DeviceMemory`: free and peak memory of the device the diffusers backend runs on.

How a run's peak is measured, and what each measure misses:

- CUDA: torch's allocator statistics (`max_memory_allocated` after `reset_peak_memory_stats`, less what was
  allocated when the run began). Exact for tensors torch allocates; it leaves out the allocator's fragmentation
  and what other processes take. Free memory is the driver's free memory plus what torch holds unused.
- CPU (Linux): the process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) less its
  resident set when the run began, after glibc's `malloc_trim` returned freed memory, so that memory the
  allocator kept from an earlier run is not silently reused. It counts everything this process allocates
  meanwhile (another thread's work too) and pages only once touched. Free memory is MemAvailable.
- MPS: the memory torch's MPS allocator holds, sampled every few milliseconds: a peak shorter than that may be
  missed. Free memory is torch's recommended maximum less what the driver has allocated.
- Elsewhere (no /proc: macOS and Windows on the CPU) nothing is measured, and estimates stay on the catalog's
  figures.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from imageforge.engine.backends import speed
from imageforge.engine.memory import PeakReading

log = logging.getLogger(__name__)

_GB = 2**30
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
#: How often the MPS sampler reads the allocator.
_SAMPLE_S = 0.005


def _torch() -> Any:
    import torch

    return torch


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # the symbols this process has loaded
    except (OSError, AttributeError, TypeError):  # not glibc, or not a POSIX system
        return None
    return trim


def trim_heap() -> None:
    """Give the memory glibc's allocator holds free back to the system (nothing where the C library is not glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # 5: reset the peak resident set size (Linux 4.0 on)
    except OSError:
        return False
    return True


class DeviceMemory:
    """Free and peak memory of the device that `device()` names (resolved on first use: it imports torch)."""

    def __init__(self, device: Callable[[], tuple[str, str]], *, offload: bool) -> None:
        #: the device ("cuda", "cpu", "mps") and the dtype of the runtime, from the backend
        self._device = device
        self._offload = offload

    def device(self) -> str:
        name, dtype = self._device()
        return f"{name}/{dtype}"

    def free_gb(self) -> float | None:
        name, _dtype = self._device()
        if name.startswith("cuda"):
            torch = _torch()
            unused = torch.cuda.memory_reserved(name) - torch.cuda.memory_allocated(name)
            free, _total = torch.cuda.mem_get_info(torch.device(name))
            return float(free + unused) / _GB
        if name == "mps":
            mps = _torch().mps
            return float(mps.recommended_max_memory() - mps.driver_allocated_memory()) / _GB
        return speed.free_memory_gb(name)

    def offloads_weights(self) -> bool:
        return self._offload and self._device()[0].startswith("cuda")

    @contextmanager
    def measure(self) -> Iterator[PeakReading]:
        name, _dtype = self._device()
        if name.startswith("cuda"):
            measuring = self._cuda(name)
        elif name == "mps":
            measuring = self._sampled(lambda: int(_torch().mps.current_allocated_memory()))
        else:
            measuring = self._resident_set()
        with measuring as reading:
            yield reading

    @contextmanager
    def _cuda(self, name: str) -> Iterator[PeakReading]:
        torch = _torch()
        reading = PeakReading()
        torch.cuda.reset_peak_memory_stats(name)
        base = torch.cuda.memory_allocated(name)
        try:
            yield reading
        finally:
            reading.peak_gb = max(0, torch.cuda.max_memory_allocated(name) - base) / _GB

    @contextmanager
    def _resident_set(self) -> Iterator[PeakReading]:
        reading = PeakReading()
        trim_heap()
        measurable = _reset_high_water_mark()
        base = _status_kb("VmRSS")
        try:
            yield reading
        finally:
            peak = _status_kb("VmHWM") if measurable else None
            if peak is not None and base is not None:
                reading.peak_gb = max(0, peak - base) * 1024 / _GB

    @contextmanager
    def _sampled(self, allocated: Callable[[], int]) -> Iterator[PeakReading]:
        reading = PeakReading()
        base = allocated()
        highest = base
        done = threading.Event()

        def sample() -> None:
            nonlocal highest
            while not done.wait(_SAMPLE_S):
                highest = max(highest, allocated())

        sampler = threading.Thread(target=sample, name="imageforge-memory-sampler", daemon=True)
        sampler.start()
        try:
            yield reading
        finally:
            done.set()
            sampler.join()
            reading.peak_gb = max(0, max(highest, allocated()) - base) / _GB
