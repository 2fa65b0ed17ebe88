"""The torch device the diffusers backend runs on: which one, how much memory it has, what running out of it means.

torch is imported on first use, never when this module is, so that the CLI, the MCP handshake and /health start
fast.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from imageforge.errors import OutOfMemory


def import_torch() -> Any:
    """torch, imported on first use."""
    import torch

    return torch


def resolve_device(setting: str) -> str:
    """The device that `setting` names; "auto" is the first of CUDA, MPS and the CPU that this machine has."""
    if setting != "auto":
        return setting
    torch = import_torch()
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def memory_gb(device: str) -> float | None:
    """The memory models on `device` live in: the GPU's on CUDA, the machine's RAM on CPU and MPS (unified)."""
    torch = import_torch()
    if device.startswith("cuda"):
        return float(torch.cuda.get_device_properties(torch.device(device)).total_memory) / 2**30
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 2**30
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def memory_in_use_gb(device: str) -> float | None:
    """What torch's allocator holds on `device` now, in GB (CUDA, MPS); None on the CPU, which does not say."""
    torch = import_torch()
    if device.startswith("cuda"):
        return float(torch.cuda.memory_allocated(torch.device(device))) / 2**30
    if device == "mps":
        return float(torch.mps.current_allocated_memory()) / 2**30
    return None


#: How allocators word running out of memory: CUDA, MPS ("MPS backend out of memory") and the CPU allocator.
_OUT_OF_MEMORY_MARKERS = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocator of any device running out of memory."""
    if isinstance(exc, (MemoryError, import_torch().OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in _OUT_OF_MEMORY_MARKERS)


def release_memory(device: str) -> None:
    """Give freed tensors back to the device: after unloading a model and after running out of memory."""
    gc.collect()
    torch = import_torch()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def out_of_memory(device: str, doing: str, reason: str) -> OutOfMemory:
    """The error a client sees when `device` ran out of memory while `doing` something."""
    return OutOfMemory(
        f"The {device} ran out of memory while {doing}: {reason}",
        hint=(
            "Try a smaller size or a lighter model (sd-turbo), unload other models (POST /models/{key}/unload) "
            "or lower IMAGEFORGE_MEMORY_BUDGET; the server keeps running."
        ),
    )
