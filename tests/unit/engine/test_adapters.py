"""RequestLoras on a recording pipeline: each job's LoRAs go in as named adapters at their weights and always come
out again, and a LoRA's tensors are read from disk once while they fit the memory kept for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from imageforge.domain import LoraWeight
from imageforge.engine.backends.diffusers import adapters
from imageforge.engine.backends.diffusers.adapters import RequestLoras
from imageforge.engine.loras import LoraFolder


class RecordingPipe:
    """The three pipeline methods RequestLoras calls, recorded; `failing` names an adapter whose load fails."""

    def __init__(self, failing: str | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._failing = failing

    def load_lora_weights(self, state: dict[str, Any], adapter_name: str) -> None:
        if adapter_name == self._failing:
            raise ValueError("Invalid LoRA checkpoint.")
        self.calls.append(("load", adapter_name, sorted(state)))

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.calls.append(("set", names, adapter_weights))

    def unload_lora_weights(self) -> None:
        self.calls.append(("unload",))


@pytest.fixture
def folder(tmp_path: Path) -> LoraFolder:
    for index, name in enumerate(("ink", "film")):
        save_file(
            {f"unet.{name}.lora_A.weight": np.full((4, 4), index, dtype=np.float32)}, tmp_path / f"{name}.safetensors"
        )
    return LoraFolder(tmp_path)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every LoRA file read from disk."""
    import safetensors.torch

    paths: list[str] = []
    real = safetensors.torch.load_file

    def load_file(path: str) -> dict[str, Any]:
        paths.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(safetensors.torch, "load_file", load_file)
    return paths


LORAS = (LoraWeight(name="ink", weight=0.5), LoraWeight(name="film", weight=-1.0))


def test_a_jobs_loras_are_loaded_weighted_and_unloaded_after_it(folder: LoraFolder) -> None:
    pipe = RecordingPipe()

    with RequestLoras(folder).applied(pipe, LORAS):
        inside = list(pipe.calls)

    assert inside == [
        ("load", "request_0", ["unet.ink.lora_A.weight"]),
        ("load", "request_1", ["unet.film.lora_A.weight"]),
        ("set", ["request_0", "request_1"], [0.5, -1.0]),
    ]
    assert pipe.calls[len(inside) :] == [("unload",)]


def test_a_job_without_loras_touches_no_adapter(folder: LoraFolder) -> None:
    pipe = RecordingPipe()

    with RequestLoras(folder).applied(pipe, ()):
        pass

    assert pipe.calls == []


def test_the_adapters_come_out_when_the_job_fails_or_a_lora_fails_to_load(folder: LoraFolder) -> None:
    failed_job, failed_load = RecordingPipe(), RecordingPipe(failing="request_1")

    with pytest.raises(RuntimeError), RequestLoras(folder).applied(failed_job, LORAS):
        raise RuntimeError("the generation failed")
    with pytest.raises(ValueError, match="Invalid LoRA"), RequestLoras(folder).applied(failed_load, LORAS):
        pass

    assert failed_job.calls[-1] == ("unload",)
    assert failed_load.calls == [("load", "request_0", ["unet.ink.lora_A.weight"]), ("unload",)]


def test_a_loras_tensors_are_read_once_while_they_fit_the_memory_kept(folder: LoraFolder, reads: list[str]) -> None:
    loras = RequestLoras(folder)
    for _ in range(3):
        with loras.applied(RecordingPipe(), LORAS):
            pass

    assert sorted(reads) == ["film.safetensors", "ink.safetensors"]


def test_loras_past_the_memory_kept_are_read_again(
    folder: LoraFolder, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapters, "KEPT_BYTES", 64)  # one 4x4 float32 LoRA
    loras = RequestLoras(folder)
    for _ in range(2):
        with loras.applied(RecordingPipe(), LORAS):
            pass

    assert reads == ["ink.safetensors", "film.safetensors", "ink.safetensors", "film.safetensors"]
