"""OpenVINO as the runtime of the diffusers engine on the CPU, and int8, on the real loading path with the `tiny`
model (ADR 0025): the same image as torch within a tolerance, converted models kept on disk and read back by a
later load, a broken entry converted again, int8 calibrated, a failed conversion falling back to torch, and
everything as before without OpenVINO installed."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import Decoder, GenerationParams, LoraWeight, Progress, Task
from imageforge.engine.backends import speed
from imageforge.engine.backends.diffusers import DiffusersBackend, DiffusersModel
from imageforge.engine.backends.diffusers.openvino import NOT_CONVERTED
from imageforge.engine.catalog import BUILTIN_MODELS
from imageforge.engine.loras import LoraFolder
from imageforge.engine.protocol import EngineOptions, Generated
from imageforge.errors import ServerSideMissing, WeightsUnavailable
from tests.unit.engine.test_speed import HEIGHT, WIDTH, never_cancel, tiny_request

pytestmark = pytest.mark.slow

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
    reason="OpenVINO and NNCF are not installed: pip install 'imageforge[openvino]' (./start.sh test does)",
)

TINY = next(spec for spec in BUILTIN_MODELS if spec.key == "tiny")
#: How far an OpenVINO image may be from torch's, as the mean absolute difference of 8-bit pixel values: both
#: compute in bf16 where the CPU has it, with differently ordered sums, and the tiny model's random weights
#: amplify those last-bit differences more than trained ones would.
MEAN_PIXEL_TOLERANCE = 12.0


def _ignore(progress: Progress) -> None:
    return None


def _load(
    models_path: Path, cache: Path, *, precision: str = "auto", runtime: str = "openvino", loras: Path | None = None
) -> DiffusersModel:
    options = EngineOptions(runtime=runtime, precision=precision, openvino_cache=cache)
    folder = None if loras is None else LoraFolder(loras)
    return DiffusersBackend(device="cpu", models_path=models_path, options=options, loras=folder).load(TINY)


def _pixels(image: Image.Image) -> Any:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


class _Conversions:
    """Counts `openvino.convert_model` calls (the real function still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import openvino

        self.count = 0
        original: Callable[..., Any] = openvino.convert_model

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(openvino, "convert_model", counted)


@pytest.fixture(scope="module")
def models_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def first_use(models_path: Path, cache: Path) -> tuple[DiffusersModel, Generated]:
    """A model loaded on OpenVINO and its first image, which converts the UNet and the VAE decoder."""
    model = _load(models_path, cache)
    return model, model.generate(tiny_request(), _ignore, never_cancel)


# -- the OpenVINO runtime ----------------------------------------------------------------------------------


@needs_openvino
def test_openvino_gives_the_image_torch_gives_within_the_stated_tolerance(
    models_path: Path, first_use: tuple[DiffusersModel, Generated]
) -> None:
    torch_image = (
        DiffusersBackend(device="cpu", models_path=models_path)
        .load(TINY)
        .generate(tiny_request(), _ignore, never_cancel)
    )
    _model, openvino_image = first_use

    assert openvino_image.runtime["runtime"] == "openvino"
    assert openvino_image.runtime["openvino"]["networks"] == ["unet", "vae_decoder"]
    assert openvino_image.runtime["openvino"]["converted"] == ["unet", "vae_decoder"]
    assert openvino_image.image.size == (WIDTH, HEIGHT)
    difference = np.abs(_pixels(openvino_image.image) - _pixels(torch_image.image))
    assert difference.mean() <= MEAN_PIXEL_TOLERANCE
    assert torch_image.runtime["runtime"] == "torch"


@needs_openvino
def test_a_second_load_reads_the_converted_models_from_the_cache_instead_of_converting(
    models_path: Path, cache: Path, first_use: tuple[DiffusersModel, Generated], monkeypatch: pytest.MonkeyPatch
) -> None:
    conversions = _Conversions(monkeypatch)

    again = _load(models_path, cache).generate(tiny_request(), _ignore, never_cancel)

    assert conversions.count == 0
    assert "converted" not in again.runtime["openvino"]
    assert again.runtime["openvino"]["from_cache"] == ["unet", "vae_decoder"]
    assert again.image.tobytes() == first_use[1].image.tobytes()


@needs_openvino
def test_the_same_shape_runs_without_converting_again_and_keeps_progress_previews_and_fast_decode(
    first_use: tuple[DiffusersModel, Generated],
) -> None:
    model, _ = first_use
    steps: list[int] = []
    previews: list[tuple[int, int]] = []

    def watch(progress: Progress) -> None:
        steps.append(progress.step)
        assert progress.preview is not None
        previews.append(progress.preview().size)

    fast = model.generate(tiny_request(Decoder.FAST, seed=2), watch, never_cancel)

    assert steps == [1, 2]
    assert previews == [(WIDTH, HEIGHT)] * 2
    assert fast.runtime["decoder"] == "fast"
    assert fast.runtime["openvino"]["networks"] == ["fast_decoder", "unet"], fast.runtime["openvino"]
    assert fast.runtime["openvino"]["converted"] == ["fast_decoder"]  # the UNet's model of this shape is kept


@needs_openvino
def test_a_request_s_loras_run_the_unet_in_torch_with_its_adapters_and_the_next_job_on_openvino_again(
    models_path: Path, cache: Path, tiny_loras: Path, first_use: tuple[DiffusersModel, Generated]
) -> None:
    model = _load(models_path, cache, loras=tiny_loras)
    request = replace(tiny_request(), loras=(LoraWeight(name="one", weight=2.0),))
    in_torch = _load(models_path, cache, runtime="torch", loras=tiny_loras).generate(request, _ignore, never_cancel)

    styled = model.generate(request, _ignore, never_cancel)
    after = model.generate(tiny_request(), _ignore, never_cancel)

    assert styled.runtime["openvino"]["torch_fallback"] == {"unet": "a request's LoRAs apply to the torch UNet"}
    assert styled.runtime["openvino"]["networks"] == ["vae_decoder"]
    # The LoRA took effect as it does on torch: only the VAE decode differs (OpenVINO's), by far less than the
    # LoRA changes the image (measured: 0.2 against 10.5 levels).
    near = np.abs(_pixels(styled.image) - _pixels(in_torch.image)).mean()
    apart = np.abs(_pixels(styled.image) - _pixels(after.image)).mean()
    assert near <= 1.0
    assert apart >= 10 * near
    assert after.runtime["openvino"]["networks"] == ["unet", "vae_decoder"]
    assert after.image.tobytes() == first_use[1].image.tobytes()


@needs_openvino
def test_img2img_runs_the_vae_encoder_on_openvino_too(first_use: tuple[DiffusersModel, Generated]) -> None:
    model, _ = first_use
    init = Image.new("RGB", (WIDTH, HEIGHT), (200, 120, 40))

    edited = model.generate(
        replace(tiny_request(), task=Task.IMG2IMG, strength=0.6, init_image=init), _ignore, never_cancel
    )

    assert edited.image.size == (WIDTH, HEIGHT)
    assert "vae_encoder" in edited.runtime["openvino"]["networks"]


@needs_openvino
def test_a_conversion_that_would_not_fit_the_free_memory_waits_and_the_image_comes_from_torch(
    models_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _load(models_path, tmp_path / "cache")
    conversions = _Conversions(monkeypatch)
    with monkeypatch.context() as short:
        short.setattr(speed, "free_memory_gb", lambda device: 0.0)
        waited = model.generate(tiny_request(), _ignore, never_cancel)

    converted = model.generate(tiny_request(), _ignore, never_cancel)

    # (with no memory free, the VAE also decodes in tiles, which run in torch)
    assert waited.runtime["openvino"]["networks"] == []
    assert "GB of free memory and 0.0 GB is free" in waited.runtime["openvino"]["torch_fallback"]["unet"]
    assert waited.image.size == (WIDTH, HEIGHT)
    assert converted.runtime["openvino"]["converted"] == ["unet", "vae_decoder"]
    assert conversions.count == 2


# -- `auto`: OpenVINO where converted, nothing converted --------------------------------------------------


@needs_openvino
def test_auto_runs_on_openvino_the_sizes_an_earlier_run_converted_and_converts_no_other(
    models_path: Path, cache: Path, first_use: tuple[DiffusersModel, Generated], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _load(models_path, cache, runtime="auto")
    conversions = _Conversions(monkeypatch)
    entries = sorted(cache.iterdir())

    converted = model.generate(tiny_request(), _ignore, never_cancel)
    wider = model.generate(replace(tiny_request(), width=WIDTH + 16), _ignore, never_cancel)

    assert (converted.runtime["runtime"], converted.runtime["openvino_converts"]) == ("openvino", False)
    assert converted.runtime["openvino"]["from_cache"] == ["unet", "vae_decoder"]
    assert converted.image.tobytes() == first_use[1].image.tobytes()
    assert wider.image.size == (WIDTH + 16, HEIGHT)
    assert wider.runtime["openvino"]["networks"] == []
    assert wider.runtime["openvino"]["torch_fallback"] == {"unet": NOT_CONVERTED, "vae_decoder": NOT_CONVERTED}
    assert conversions.count == 0
    assert sorted(cache.iterdir()) == entries


@needs_openvino
def test_auto_runs_a_model_openvino_never_ran_here_in_torch_and_writes_nothing(
    models_path: Path, tmp_path: Path
) -> None:
    in_torch = _load(models_path, tmp_path / "torch-cache", runtime="torch").generate(
        tiny_request(), _ignore, never_cancel
    )

    generated = _load(models_path, tmp_path / "cache", runtime="auto").generate(tiny_request(), _ignore, never_cancel)

    assert generated.runtime["runtime"] == "torch"
    assert "openvino" not in generated.runtime
    assert generated.image.tobytes() == in_torch.image.tobytes()
    assert not (tmp_path / "cache").exists()


BROKEN = b"not what it was"


def _copy_breaking(cache: Path, tmp_path: Path, pattern: str) -> tuple[Path, Path]:
    """A copy of the cache whose one file matching `pattern` is overwritten with `BROKEN`; the copy and the file."""
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    [broken] = copy.glob(pattern)
    broken.write_bytes(BROKEN)
    return copy, broken


def _mapped_from(path: Path) -> list[tuple[int, int]]:
    """The address ranges of this process that map `path` (from /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = (int(address, 16) for address in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def _unet_mapped_from(model: DiffusersModel, cache: Path) -> bool:
    [parked] = cache.glob("torch-unet-*.pt")
    ranges = _mapped_from(parked)
    pointers = [parameter.data_ptr() for parameter in model.pipeline.unet.parameters()]
    return bool(ranges) and all(any(start <= at < end for start, end in ranges) for at in pointers)


@needs_openvino
def test_while_openvino_runs_the_unet_its_torch_weights_are_mapped_from_the_cache_not_held_in_memory(
    models_path: Path, cache: Path, first_use: tuple[DiffusersModel, Generated]
) -> None:
    model, first = first_use
    assert _unet_mapped_from(model, cache), "every UNet weight lies in the mapped file"

    again = _load(models_path, cache)
    assert _unet_mapped_from(again, cache)
    assert again.generate(tiny_request(), _ignore, never_cancel).image.tobytes() == first.image.tobytes()


@needs_openvino
def test_the_seeded_cache_never_answers_an_openvino_request_with_an_image_auto_made_in_torch(
    settings: Settings,
) -> None:
    params = GenerationParams(task=Task.TEXT2IMG, prompt="a fox", seed=5, width=64, height=64)
    made = []
    for runtime in ("auto", "openvino", "auto"):
        service = build_service(settings.model_copy(update={"runtime": runtime}))
        service.start()
        try:
            made.append(service.generate(params))
        finally:
            service.close()

    auto, openvino, auto_again = made
    assert (auto.cached, auto.runtime and auto.runtime["runtime"]) == (False, "torch")
    assert (openvino.cached, openvino.runtime and openvino.runtime["runtime"]) == (False, "openvino")
    assert auto_again.cached  # its own image, from before the size was converted


@contextmanager
def _scrambled(path: Path) -> Iterator[None]:
    """`path` overwritten with bytes no loader reads, keeping its size and times, then put back."""
    original, times = path.read_bytes(), path.stat()
    path.write_bytes(bytes(len(original)))
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    try:
        yield
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


def _unet_file(models_path: Path) -> Path:
    [weights] = (models_path / TINY.key / "unet").glob("*.safetensors")
    return weights


@needs_openvino
def test_a_later_load_builds_the_unet_from_its_parked_weights_without_reading_the_model_s_unet_file(
    models_path: Path, cache: Path, first_use: tuple[DiffusersModel, Generated]
) -> None:
    with _scrambled(_unet_file(models_path)):
        again = _load(models_path, cache)
        image = again.generate(tiny_request(), _ignore, never_cancel).image

    assert _unet_mapped_from(again, cache)
    assert image.tobytes() == first_use[1].image.tobytes()


@needs_openvino
def test_a_changed_unet_file_is_read_again_not_the_weights_parked_from_the_old_one(
    models_path: Path, cache: Path, first_use: tuple[DiffusersModel, Generated], tmp_path: Path
) -> None:
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    weights = _unet_file(models_path)
    times = weights.stat()
    try:
        os.utime(weights, ns=(times.st_atime_ns, times.st_mtime_ns + 10**9))  # as a new download would leave it
        with _scrambled(weights), pytest.raises(WeightsUnavailable, match="unet"):
            _load(models_path, copy)
    finally:
        os.utime(weights, ns=(times.st_atime_ns, times.st_mtime_ns))


@needs_openvino
def test_a_broken_file_of_mapped_weights_is_written_again(
    models_path: Path, cache: Path, first_use: tuple[DiffusersModel, Generated], tmp_path: Path
) -> None:
    copy, parked = _copy_breaking(cache, tmp_path, "torch-unet-*.pt")

    model = _load(models_path, copy)

    assert parked.stat().st_size > len(BROKEN)
    assert _unet_mapped_from(model, copy)
    assert model.generate(tiny_request(), _ignore, never_cancel).image.tobytes() == first_use[1].image.tobytes()


@needs_openvino
def test_a_broken_cache_entry_is_converted_again(
    models_path: Path, cache: Path, first_use: tuple[DiffusersModel, Generated], tmp_path: Path
) -> None:
    copy, decoder_weights = _copy_breaking(cache, tmp_path, "vae_decoder-*/model.bin")

    again = _load(models_path, copy).generate(tiny_request(), _ignore, never_cancel)

    assert again.runtime["openvino"]["converted"] == ["vae_decoder"]
    assert again.runtime["openvino"]["from_cache"] == ["unet"]
    assert decoder_weights.stat().st_size > len(BROKEN)
    difference = np.abs(_pixels(again.image) - _pixels(first_use[1].image))
    assert difference.mean() <= MEAN_PIXEL_TOLERANCE


@needs_openvino
def test_a_failed_conversion_runs_that_network_in_torch_and_says_why(
    models_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import openvino

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unsupported operation aten::frobnicate")

    monkeypatch.setattr(openvino, "convert_model", refuse)

    generated = _load(models_path, tmp_path / "cache").generate(tiny_request(), _ignore, never_cancel)

    assert generated.image.size == (WIDTH, HEIGHT)
    fallback = generated.runtime["openvino"]["torch_fallback"]
    assert set(fallback) == {"unet", "vae_decoder"}
    assert "aten::frobnicate" in fallback["unet"]
    assert "runs in torch" in caplog.text


@needs_openvino
def test_int8_calibrates_and_quantizes_the_unet_and_caches_it_beside_the_float_model(
    models_path: Path, cache: Path, first_use: tuple[DiffusersModel, Generated]
) -> None:
    generated = _load(models_path, cache, precision="int8").generate(tiny_request(), _ignore, never_cancel)

    assert generated.runtime["precision"] == "int8"
    assert generated.runtime["openvino"]["converted"] == ["unet"]  # the VAE decoder's float model is shared
    assert generated.image.size == (WIDTH, HEIGHT)
    quantized = [entry for entry in cache.glob("unet-*") if "FakeQuantize" in (entry / "model.xml").read_text()]
    assert len(quantized) == 1


# -- without OpenVINO --------------------------------------------------------------------------------------


@pytest.fixture
def openvino_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without the openvino extra: importing OpenVINO or NNCF fails."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "nncf", None)


@pytest.mark.usefixtures("openvino_absent")
def test_without_openvino_auto_runs_torch_and_int8_is_not_offered(models_path: Path) -> None:
    assert speed.choose_runtime("cpu", EngineOptions()).library == "torch"
    assert speed.choose_runtime("cpu", EngineOptions(precision="int8")).precision != "int8"

    generated = (
        DiffusersBackend(device="cpu", models_path=models_path)
        .load(TINY)
        .generate(tiny_request(), _ignore, never_cancel)
    )

    assert generated.runtime["runtime"] == "torch"
    assert "openvino" not in generated.runtime


@pytest.mark.usefixtures("openvino_absent")
@pytest.mark.parametrize(("setting", "value"), [("IMAGEFORGE_RUNTIME", "openvino"), ("IMAGEFORGE_PRECISION", "int8")])
def test_without_openvino_asking_for_it_refuses_to_start_with_the_install_command(
    setting: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(setting, value)

    with pytest.raises(ServerSideMissing) as refused:
        build_service(Settings(_env_file=None, root_dir=tmp_path, data_dir=tmp_path / "data"))

    assert f"{setting}={value}" in refused.value.message
    assert "pip install 'imageforge[openvino]'" in (refused.value.hint or "")
