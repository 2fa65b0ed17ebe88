"""The diffusers backend turns every allocator's out-of-memory failure into `out_of_memory`, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from imageforge.engine.backends.diffusers import DiffusersBackend, loading
from imageforge.engine.backends.diffusers.device import is_out_of_memory
from imageforge.engine.catalog import build_catalog
from imageforge.errors import OutOfMemory


@pytest.mark.parametrize(
    "failure",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.00 GB)"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1125899906842624 bytes."),
        MemoryError(),
    ],
    ids=["cuda", "mps", "cpu", "python"],
)
def test_allocator_failures_of_every_device_count_as_out_of_memory(failure: BaseException) -> None:
    assert is_out_of_memory(failure)


def test_other_runtime_errors_are_not_out_of_memory() -> None:
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_running_out_of_memory_while_loading_is_reported_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = DiffusersBackend(device="cpu", models_path=tmp_path)
    spec = build_catalog(lora_portrait=None, models_file=None, allowed_guards=()).get("tiny")

    def exhaust(*args: Any) -> Any:
        return torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: the real CPU allocator refuses

    monkeypatch.setattr(loading, "_pipeline_from_weights", exhaust)

    with pytest.raises(OutOfMemory) as raised:
        backend.load(spec)

    assert "ran out of memory while loading 'tiny'" in raised.value.message
    assert "lighter model" in raised.value.hint
