"""A request's LoRAs on the tiny model, through the real service and diffusers backend: they change the pixels
by their weights, are part of the cache key, load without reloading the base model, and leave no adapter for the
next job."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import GenerationParams, LoraWeight, ModelSpec, Task
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.engine.loras import LoraFolder
from imageforge.engine.protocol import LoadedModel
from imageforge.errors import GenerationFailed, LoraNotFound, PathForbidden, UnsafeWeights
from imageforge.service import ImageService
from tests.gated import StepHookBackend


class CountingBackend(StepHookBackend):
    """The real backend, counting the models it loads."""

    def __init__(self, inner: DiffusersBackend) -> None:
        super().__init__(inner, lambda progress: None)
        self.loads: list[str] = []

    def load(self, spec: ModelSpec) -> LoadedModel:
        self.loads.append(spec.key)
        return super().load(spec)


@pytest.fixture
def backend(settings: Settings, loras: Path) -> CountingBackend:
    return CountingBackend(
        DiffusersBackend(device="cpu", models_path=settings.models_path, loras=LoraFolder(settings.lora_path))
    )


@pytest.fixture
def counted(settings: Settings, backend: CountingBackend) -> Iterator[ImageService]:
    service = build_service(settings, backend=backend)
    service.start()
    yield service
    service.close()


def _params(*loras: tuple[str, float], **fields: Any) -> GenerationParams:
    chosen = tuple(LoraWeight(name=name, weight=weight) for name, weight in loras)
    return GenerationParams(
        task=Task.TEXT2IMG, prompt="a red fox", seed=11, width=64, height=64, loras=chosen, **fields
    )


def _pixels(service: ImageService, params: GenerationParams) -> np.ndarray[Any, Any]:
    result = service.generate(params)
    return np.asarray(Image.open(io.BytesIO(result.png)).convert("RGB"), dtype=np.int16)


def test_two_loras_change_the_image_and_their_weights_matter(counted: ImageService) -> None:
    base = _pixels(counted, _params(use_cache=False))
    both = _pixels(counted, _params(("one", 1.0), ("two", 0.5), use_cache=False))
    reweighted = _pixels(counted, _params(("one", 1.0), ("two", -1.0), use_cache=False))
    one_only = _pixels(counted, _params(("one", 1.0), use_cache=False))

    assert np.abs(both - base).mean() > 1
    assert np.abs(both - reweighted).mean() > 1
    assert np.abs(both - one_only).mean() > 1


def test_after_a_lora_job_the_next_job_draws_the_base_model_again(counted: ImageService) -> None:
    before = _pixels(counted, _params(use_cache=False))
    _pixels(counted, _params(("one", 1.5), ("two", 1.0), use_cache=False))

    after = _pixels(counted, _params(use_cache=False))

    assert np.array_equal(before, after)


def test_loras_load_into_the_resident_model_without_reloading_it(
    counted: ImageService, backend: CountingBackend
) -> None:
    _pixels(counted, _params(use_cache=False))
    _pixels(counted, _params(("one", 1.0), use_cache=False))
    _pixels(counted, _params(("two", 0.7), ("one", 0.2), use_cache=False))
    _pixels(counted, _params(use_cache=False))

    assert backend.loads == ["tiny"]


def test_the_loras_and_their_weights_are_part_of_the_cache_key(counted: ImageService) -> None:
    plain = counted.generate(_params())
    with_lora = counted.generate(_params(("one", 1.0)))
    again = counted.generate(_params(("one", 1.0)))
    other_weight = counted.generate(_params(("one", 0.5)))

    assert not plain.cached
    assert not with_lora.cached
    assert again.cached
    assert again.png == with_lora.png
    assert not other_weight.cached
    assert with_lora.loras == [LoraWeight(name="one", weight=1.0)]
    assert plain.loras == []


def test_a_lora_file_replaced_under_its_name_is_not_answered_from_the_cache(counted: ImageService, loras: Path) -> None:
    first = counted.generate(_params(("one", 1.0)))
    (loras / "one.safetensors").write_bytes((loras / "two.safetensors").read_bytes())

    second = counted.generate(_params(("one", 1.0)))

    assert not second.cached
    assert second.png != first.png


@pytest.mark.parametrize(
    ("name", "error"),
    [("watercolour", LoraNotFound), ("pickled", UnsafeWeights), ("pickled.ckpt", UnsafeWeights),
     ("../loras/one", PathForbidden)],
)  # fmt: skip
def test_a_lora_the_folder_does_not_offer_is_refused_before_a_job_is_queued(
    counted: ImageService, name: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        counted.submit(_params((name, 1.0)))

    assert counted.list_jobs() == []


def test_a_lora_that_does_not_fit_the_model_fails_its_job_and_leaves_the_model_as_it_was(
    counted: ImageService, loras: Path, backend: CountingBackend
) -> None:
    from safetensors.numpy import save_file

    save_file({"unet.not_a_layer.weight": np.zeros((2, 2), dtype=np.float32)}, str(loras / "broken.safetensors"))
    before = _pixels(counted, _params(use_cache=False))

    with pytest.raises(GenerationFailed):
        counted.generate(_params(("one", 1.0), ("broken", 1.0), use_cache=False))

    assert np.array_equal(_pixels(counted, _params(use_cache=False)), before)
    assert backend.loads == ["tiny"]


def test_a_lora_applies_to_the_text_encoder_even_for_a_prompt_encoded_before(counted: ImageService) -> None:
    _pixels(counted, _params(use_cache=False))
    after_the_plain_prompt = _pixels(counted, _params(("one", 1.0), use_cache=False))
    counted.unload_model("tiny")

    fresh = _pixels(counted, _params(("one", 1.0), use_cache=False))

    assert np.array_equal(after_the_plain_prompt, fresh)


@pytest.fixture
def inked(settings: Settings, backend: CountingBackend) -> Iterator[ImageService]:
    """A service whose models file adds `tiny-base`, the tiny model's folder, and `tiny-inked`, the same with the
    LoRA `one` at 0.7 on every request: as `sdxl` and `sdxl-portrait` with a LoRA folder name in
    IMAGEFORGE_LORA_PORTRAIT."""
    entry = f'source = "{settings.models_path / "tiny"}"\nfamily = "sd"\nsteps = 2\nguidance = 0.0\nsize = 64\n'
    (settings.root_dir / "models.toml").write_text(
        f'[models.tiny-base]\n{entry}\n[models.tiny-inked]\n{entry}loras = [{{name = "one", weight = 0.7}}]\n'
    )
    service = build_service(settings, backend=backend)
    service.start()
    yield service
    service.close()


def test_a_models_own_lora_applies_through_the_request_path_and_a_request_may_reweigh_it(
    inked: ImageService,
) -> None:
    own = inked.generate(_params(model="tiny-inked", use_cache=False))
    same = _pixels(inked, _params(("one", 0.7), model="tiny-base", use_cache=False))
    off = _pixels(inked, _params(("one", 0.0), model="tiny-inked", use_cache=False))
    plain = _pixels(inked, _params(model="tiny-base", use_cache=False))

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(own.png)).convert("RGB"), dtype=np.int16), same)
    assert own.loras == [LoraWeight(name="one", weight=0.7)]
    assert np.array_equal(off, plain)


def test_an_entry_that_only_adds_loras_runs_on_the_resident_copy_of_the_entry_it_builds_on(
    inked: ImageService, backend: CountingBackend
) -> None:
    inked.generate(_params(model="tiny-base", use_cache=False))
    inked.generate(_params(model="tiny-inked", use_cache=False))
    resident = {model.key: model.resident for model in inked.list_models().models}

    assert backend.loads == ["tiny-base"]
    assert resident["tiny-inked"]
    assert resident["tiny-base"]
    assert inked.unload_model("tiny-inked")
    assert inked.resident_models() == []
