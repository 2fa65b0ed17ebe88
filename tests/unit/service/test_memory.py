"""The memory estimate's fit from recorded peaks, and the one retry the fallback policy plans after running out of
memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageforge.domain import DEFAULT_FALLBACK, Fallback, GenerationRequest, Task
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.engine.catalog import build_catalog
from imageforge.engine.pool import ModelPool
from imageforge.errors import OutOfMemory
from imageforge.service.memory import MemoryPlanner, MemoryPolicy, fit
from imageforge.storage.peaks import Peak, PeakLog
from tests.fixed_memory import FixedMemory

MB = 1 / 1024


def _peaks(*points: tuple[int, float]) -> list[Peak]:
    return [Peak(side, side, 1, gb) for side, gb in points]


def test_without_peaks_there_is_no_fit() -> None:
    assert fit([]) is None


def test_two_sizes_give_the_line_through_the_median_of_each() -> None:
    # The first run at 64 filled caches (an outlier); the medians are 1 MB at 64x64 and 4 MB at 128x128.
    fitted = fit(_peaks((64, 9 * MB), (64, 1 * MB), (64, 1 * MB), (128, 4 * MB), (128, 4 * MB)))

    assert fitted is not None
    assert fitted(64 * 64) == pytest.approx(1 * MB)
    assert fitted(128 * 128) == pytest.approx(4 * MB)
    assert fitted(256 * 256) == pytest.approx(16 * MB)


def test_more_sizes_give_the_least_squares_line() -> None:
    fitted = fit(_peaks((64, 1.1 * MB), (128, 3.9 * MB), (192, 9.0 * MB)))

    assert fitted is not None
    # Within a tenth of each point that the line fits: 1.1, 3.9 and 9.0 MB lie near 0.25 MB per 4096 pixels.
    for side, gb in ((64, 1.1 * MB), (128, 3.9 * MB), (192, 9.0 * MB)):
        assert fitted(side * side) == pytest.approx(gb, rel=0.1, abs=0.3 * MB)


def test_one_size_is_scaled_by_pixels() -> None:
    fitted = fit(_peaks((128, 2.0)))

    assert fitted is not None
    assert fitted(256 * 256) == pytest.approx(8.0)


def test_a_line_falling_with_size_is_replaced_by_the_proportion_through_the_largest_size() -> None:
    fitted = fit(_peaks((64, 3.0), (128, 2.0)))

    assert fitted is not None
    assert fitted(256 * 256) == pytest.approx(8.0)


def _planner(tmp_path: Path, device: str, fallback: tuple[Fallback, ...] = DEFAULT_FALLBACK) -> MemoryPlanner:
    probe = FixedMemory(free=64.0)
    probe.device = lambda: device  # type: ignore[method-assign]
    pool = ModelPool(DiffusersBackend(device="cpu", models_path=tmp_path))
    return MemoryPlanner(probe, PeakLog(tmp_path / "memory.sqlite"), pool, MemoryPolicy(fallback=fallback))


def _request(side: int = 512) -> GenerationRequest:
    return GenerationRequest(
        task=Task.TEXT2IMG, model="tiny", prompt="p", negative_prompt="", steps=2, guidance=0.0,
        width=side, height=side, seed=1,
    )  # fmt: skip


TINY = build_catalog(lora_portrait=None, models_file=None, allowed_guards=()).get("tiny")


def test_a_retry_switches_on_every_saver_of_the_policy_that_was_off_cpu_offload_only_on_cuda(tmp_path: Path) -> None:
    ran_out = OutOfMemory("The cuda ran out of memory", savers=frozenset({"tiled_vae"}))

    on_cuda = _planner(tmp_path, "cuda/float16").retry(ran_out, TINY, _request(), downsize=True)
    on_cpu = _planner(tmp_path, "cpu/float32").retry(ran_out, TINY, _request(), downsize=True)

    assert on_cuda is not None
    assert on_cpu is not None
    assert on_cuda.applied == (Fallback.ATTENTION_SLICING, Fallback.CPU_OFFLOAD)
    assert on_cuda.request.memory_savers == {Fallback.ATTENTION_SLICING, Fallback.CPU_OFFLOAD}
    assert on_cpu.applied == (Fallback.ATTENTION_SLICING,)


def test_with_every_saver_on_the_retry_is_smaller_only_when_the_request_allows_it(tmp_path: Path) -> None:
    planner = _planner(tmp_path, "cpu/float32")
    ran_out = OutOfMemory("ran out", savers=frozenset({"tiled_vae", "attention_slicing"}))

    allowed = planner.retry(ran_out, TINY, _request(), downsize=True)
    refused = planner.retry(ran_out, TINY, _request(), downsize=False)
    smallest = planner.retry(ran_out, TINY, _request(64), downsize=True)

    assert allowed is not None
    assert (allowed.applied, allowed.request.width, allowed.request.height) == ((Fallback.SMALLER_SIZE,), 384, 384)
    assert refused is None
    assert smallest is None


def test_an_empty_policy_plans_no_retry(tmp_path: Path) -> None:
    assert _planner(tmp_path, "cuda/float16", ()).retry(OutOfMemory("ran out"), TINY, _request(), downsize=True) is None
