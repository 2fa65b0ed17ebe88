"""The diffusers backend's reading of device memory in use, which /metrics serves: what torch's allocator holds
on CUDA (a model loaded there holds some), nothing on the CPU, and no torch import for a scrape before the device
was chosen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.engine.catalog import BUILTIN_MODELS, TINY


def test_the_cpu_reports_no_memory_in_use_before_or_after_the_device_is_chosen(data_dir: Path) -> None:
    backend = DiffusersBackend(device="cpu", models_path=data_dir / "models")
    assert backend.memory_in_use_gb() is None, "nothing is read before the device is chosen"

    backend.device_info()

    assert backend.memory_in_use_gb() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_loaded_on_cuda_holds_memory_in_use(data_dir: Path) -> None:
    backend = DiffusersBackend(device="cuda", models_path=data_dir / "models")
    backend.device_info()
    before = backend.memory_in_use_gb()
    model = backend.load(next(spec for spec in BUILTIN_MODELS if spec.key == TINY))
    try:
        during = backend.memory_in_use_gb()
    finally:
        model.close()

    assert before is not None
    assert during is not None
    assert during > before
