"""The peak log keeps the newest peaks of each model, task and device, across a restart."""

from __future__ import annotations

from pathlib import Path

from imageforge.storage.peaks import KEPT, Peak, PeakLog


def test_peaks_are_kept_per_model_task_and_device_across_a_restart(tmp_path: Path) -> None:
    log = PeakLog(tmp_path / "memory.sqlite")
    log.record("tiny", "text2img", "cpu/float32", Peak(64, 64, 2, 0.5))
    log.record("tiny", "img2img", "cpu/float32", Peak(64, 64, 1, 0.7))
    log.record("tiny", "text2img", "cuda/float16", Peak(64, 64, 1, 0.9))
    log.close()

    reopened = PeakLog(tmp_path / "memory.sqlite")

    assert reopened.peaks("tiny", "text2img", "cpu/float32") == [Peak(64, 64, 2, 0.5)]
    assert reopened.peaks("tiny", "img2img", "cpu/float32") == [Peak(64, 64, 1, 0.7)]
    assert reopened.peaks("sd-turbo", "text2img", "cpu/float32") == []


def test_only_the_newest_peaks_of_a_model_are_kept(tmp_path: Path) -> None:
    log = PeakLog(tmp_path / "memory.sqlite")
    for index in range(KEPT + 5):
        log.record("tiny", "text2img", "cpu/float32", Peak(64, 64, 1, float(index)))

    kept = log.peaks("tiny", "text2img", "cpu/float32")

    assert [peak.peak_gb for peak in kept] == [float(index) for index in range(5, KEPT + 5)]
