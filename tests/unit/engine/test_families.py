"""Every pipeline family of the catalog, loaded the way a user's models file loads it and run once.

Each family is built as a tiny random-weight diffusers folder, named in a `models.toml` like a user would, read
by `build_catalog`, loaded by `DiffusersBackend.load` and run by `DiffusersModel.generate`: the real loading code,
without a network.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch
from PIL import Image

from imageforge.domain import (
    SAMPLER_SCHEDULES,
    GenerationRequest,
    LoraWeight,
    ModelSpec,
    Progress,
    Sampler,
    Schedule,
    Task,
)
from imageforge.engine.backends import tiny
from imageforge.engine.backends.diffusers import DiffusersBackend, DiffusersModel
from imageforge.engine.catalog import Catalog, build_catalog
from imageforge.engine.loras import LoraFolder
from imageforge.errors import Cancelled, ModelUnsupported, WeightsUnavailable

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 64, 48
HAS_FLUX = hasattr(diffusers, "FluxPipeline")
HAS_KLEIN = hasattr(diffusers, "Flux2KleinPipeline")
HAS_GGUF = importlib.util.find_spec("gguf") is not None

MODELS_FILE = """
[models.tiny-sdxl]
source = "sdxl"
family = "sdxl"
steps = 2
guidance = 0.0
size = 64

[models.tiny-sdxl-lcm]
source = "sdxl"
family = "sdxl"
steps = 2
guidance = 1.0
size = 64
scheduler = "LCMScheduler"

[models.tiny-sdxl-lora]
source = "sdxl"
family = "sdxl"
steps = 2
guidance = 0.0
size = 64
lora = "loras/pytorch_lora_weights.safetensors"

[models.tiny-flux]
source = "flux"
family = "flux"
steps = 2
guidance = 0.0
size = 64

[models.tiny-flux-q8]
source = "flux"
family = "flux"
steps = 2
guidance = 0.0
size = 64
tasks = ["text2img"]
transformer_file = "flux-transformer-Q8_0.gguf"

[models.tiny-flux2-klein]
source = "flux2-klein"
family = "flux2-klein"
steps = 2
guidance = 1.0
size = 64
"""


@dataclass(frozen=True)
class Families:
    """The user's models folder with every family built into it, and what the service would build from it."""

    folder: Path
    catalog: Catalog
    backend: DiffusersBackend

    def load(self, key: str) -> DiffusersModel:
        return self.backend.load(self.catalog.require(key))


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Families:
    folder = tmp_path_factory.mktemp("families")
    tiny.build_tiny_sdxl(folder / "sdxl")
    tiny.build_tiny_sdxl_lora(folder / "sdxl", folder / "loras")
    if HAS_FLUX:
        tiny.build_tiny_flux(folder / "flux")
        if HAS_GGUF:
            tiny.write_tiny_flux_gguf(folder / "flux", folder / "flux-transformer-Q8_0.gguf")
    if HAS_KLEIN:
        tiny.build_tiny_flux2_klein(folder / "flux2-klein")
    models_file = folder / "models.toml"
    models_file.write_text(MODELS_FILE)
    catalog = build_catalog(lora_portrait=None, models_file=models_file, allowed_guards=())
    return Families(folder, catalog, DiffusersBackend(device="cpu", models_path=folder / "built"))


@pytest.fixture
def torch_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every call to `torch.load`, the way pickled weights are read; each is refused.

    Recorded rather than only raised, because the libraries turn any exception while reading weights into their own.
    """
    calls: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError(f"torch.load was called with {args!r}: pickled weights were read")

    monkeypatch.setattr(torch, "load", refuse)
    return calls


def _request(
    spec: ModelSpec, task: Task = Task.TEXT2IMG, *, steps: int | None = None, strength: float = 0.5, seed: int = 7
) -> GenerationRequest:
    return GenerationRequest(
        task=task,
        model=spec.key,
        prompt="a lighthouse on a cliff at dusk",
        negative_prompt="",
        steps=steps or spec.default_steps,
        guidance=spec.default_guidance,
        width=WIDTH,
        height=HEIGHT,
        seed=seed,
        strength=strength,
        init_image=None if task is Task.TEXT2IMG else Image.new("RGB", (WIDTH, HEIGHT), (200, 40, 40)),
        mask_image=Image.new("L", (WIDTH, HEIGHT), 255) if task is Task.INPAINT else None,
    )


def _never() -> bool:
    return False


def _generate(model: DiffusersModel, request: GenerationRequest) -> tuple[Image.Image, list[Progress]]:
    events: list[Progress] = []
    image = model.generate(request, events.append, _never).image
    return image, events


def _assert_one_event_per_step(events: list[Progress], total: int) -> None:
    assert events == [Progress(step=step, total=total) for step in range(1, total + 1)]


def _assert_image(image: Image.Image) -> None:
    assert isinstance(image, Image.Image)
    assert image.size == (WIDTH, HEIGHT)


@pytest.mark.parametrize("key", ["tiny", "tiny-sdxl"])
def test_every_sampler_runs_each_of_its_schedules_and_the_model_gets_its_own_back(families: Families, key: str) -> None:
    model = families.load(key)
    own = model.generate(_request(model.spec), _record, _never)
    assert (own.sampler, own.schedule) == (Sampler.EULER, Schedule.DEFAULT)

    for sampler, schedules in SAMPLER_SCHEDULES.items():
        images = {}
        for schedule in schedules:
            # Four steps: at two, every spacing runs between the same two noise levels.
            chosen = replace(_request(model.spec, steps=4), sampler=sampler, schedule=schedule)

            generated = model.generate(chosen, _record, _never)

            _assert_image(generated.image)
            assert (generated.sampler, generated.schedule) == (sampler, schedule)
            images[schedule] = generated.image.tobytes()
        assert len(set(images.values())) == len(schedules), f"{sampler}: a schedule changed nothing"
    again = model.generate(_request(model.spec), _record, _never)
    assert again.image.tobytes() == own.image.tobytes()


def test_a_catalog_scheduler_is_the_models_own_and_named_in_the_result(families: Families) -> None:
    model = families.load("tiny-sdxl-lcm")

    generated = model.generate(_request(model.spec), _record, _never)

    assert (generated.sampler, generated.schedule) == (Sampler.LCM, Schedule.DEFAULT)


def _record(progress: Progress) -> None:
    pass


def test_models_file_entries_carry_their_settings(families: Families) -> None:
    spec = families.catalog.get("tiny-sdxl-lcm")

    assert spec.source == str((families.folder / "sdxl").resolve())
    assert (spec.default_steps, spec.default_guidance, spec.default_size) == (2, 1.0, 64)
    assert spec.scheduler == "LCMScheduler"
    assert families.catalog.get("tiny-sdxl-lora").lora == str(
        (families.folder / "loras" / "pytorch_lora_weights.safetensors").resolve()
    )


def test_a_requests_lora_on_sdxl_comes_and_goes_while_the_entrys_fused_lora_stays(families: Families) -> None:
    backend = DiffusersBackend(
        device="cpu", models_path=families.folder / "built", loras=LoraFolder(families.folder / "loras")
    )
    model = backend.load(families.catalog.require("tiny-sdxl-lora"))
    request = _request(model.spec)
    fused, _ = _generate(model, request)

    with_lora, _ = _generate(model, replace(request, loras=(LoraWeight(name="pytorch_lora_weights", weight=1.0),)))
    fused_again, _ = _generate(model, request)

    assert with_lora.tobytes() != fused.tobytes()
    assert fused_again.tobytes() == fused.tobytes()


def test_tiny_sd_runs_text2img_img2img_and_inpaint(families: Families) -> None:
    spec = families.catalog.get("tiny")
    model = families.backend.load(spec)

    image, events = _generate(model, _request(spec, Task.TEXT2IMG, steps=2))
    _assert_image(image)
    _assert_one_event_per_step(events, 2)
    for task in (Task.IMG2IMG, Task.INPAINT):
        # Stable Diffusion runs `strength` of the steps when it starts from an image.
        image, events = _generate(model, _request(spec, task, steps=4, strength=0.5))
        _assert_image(image)
        _assert_one_event_per_step(events, 2)


def test_sdxl_runs_text2img_img2img_and_inpaint(families: Families) -> None:
    model = families.load("tiny-sdxl")
    assert type(model.pipeline).__name__ == "StableDiffusionXLPipeline"

    image, events = _generate(model, _request(model.spec, Task.TEXT2IMG))
    _assert_image(image)
    _assert_one_event_per_step(events, 2)
    for task in (Task.IMG2IMG, Task.INPAINT):
        image, events = _generate(model, _request(model.spec, task, steps=4, strength=0.5))
        _assert_image(image)
        _assert_one_event_per_step(events, 2)


def test_sdxl_entry_with_lcm_scheduler_runs_on_lcm(families: Families) -> None:
    model = families.load("tiny-sdxl-lcm")

    assert isinstance(model.pipeline.scheduler, diffusers.LCMScheduler)
    image, events = _generate(model, _request(model.spec))
    _assert_image(image)
    _assert_one_event_per_step(events, 2)


def test_sdxl_entry_with_lora_fuses_it_into_the_weights_and_changes_the_pixels(families: Families) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    plain = families.load("tiny-sdxl")
    with_lora = families.load("tiny-sdxl-lora")

    # Fused into the base weights, with no adapter layer left for a request's own LoRAs to meet.
    assert not [module for module in with_lora.pipeline.unet.modules() if isinstance(module, BaseTunerLayer)]
    request = _request(plain.spec)
    plain_image, _ = _generate(plain, request)
    again, _ = _generate(plain, request)
    lora_image, events = _generate(with_lora, replace(request, model=with_lora.spec.key))
    _assert_image(lora_image)
    _assert_one_event_per_step(events, 2)
    assert plain_image.tobytes() == again.tobytes()
    assert lora_image.tobytes() != plain_image.tobytes()


@pytest.mark.skipif(not HAS_FLUX, reason="this diffusers has no FluxPipeline")
def test_flux_entry_runs_text2img_img2img_and_inpaint(families: Families) -> None:
    model = families.load("tiny-flux")

    assert type(model.pipeline).__name__ == "FluxPipeline"
    image, events = _generate(model, _request(model.spec))
    _assert_image(image)
    _assert_one_event_per_step(events, 2)
    for task in (Task.IMG2IMG, Task.INPAINT):
        image, events = _generate(model, _request(model.spec, task, steps=4, strength=0.5))
        _assert_image(image)
        _assert_one_event_per_step(events, 2)


@pytest.mark.skipif(not HAS_FLUX, reason="this diffusers has no FluxPipeline")
def test_flux_runs_its_own_flow_matching_euler_when_euler_is_asked_for(families: Families) -> None:
    model = families.load("tiny-flux")
    own = model.generate(_request(model.spec), _record, _never)

    euler = model.generate(replace(_request(model.spec), sampler=Sampler.EULER), _record, _never)

    assert type(model.pipeline.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert (own.sampler, own.schedule) == (euler.sampler, euler.schedule) == (Sampler.EULER, Schedule.DEFAULT)
    assert euler.image.tobytes() == own.image.tobytes()


@pytest.mark.skipif(not (HAS_FLUX and HAS_GGUF), reason="needs diffusers' FluxPipeline and the gguf package")
def test_flux_entry_with_gguf_transformer_loads_it_quantised_offline(families: Families) -> None:
    from gguf import GGMLQuantizationType

    spec = families.catalog.get("tiny-flux-q8")
    assert families.backend.weights_present(spec)
    model = families.backend.load(spec)

    weight: Any = model.pipeline.transformer.transformer_blocks[0].attn.to_q.weight
    assert type(weight).__name__ == "GGUFParameter"
    assert weight.quant_type == GGMLQuantizationType.Q8_0
    image, events = _generate(model, _request(spec))
    _assert_image(image)
    _assert_one_event_per_step(events, 2)


@pytest.mark.skipif(not HAS_FLUX, reason="needs diffusers' FluxPipeline")
def test_a_gguf_entry_without_the_gguf_package_is_unsupported_and_names_the_extra_to_install(
    families: Families, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None in sys.modules is how Python marks a module that cannot be imported: what a plain install looks like.
    monkeypatch.setitem(sys.modules, "gguf", None)

    with pytest.raises(ModelUnsupported) as refused:
        families.load("tiny-flux-q8")

    assert "needs the gguf package" in refused.value.message
    assert "pip install 'imageforge[gguf]'" in refused.value.hint


@pytest.mark.skipif(not HAS_KLEIN, reason="this diffusers has no Flux2KleinPipeline")
def test_flux2_klein_entry_runs_text2img(families: Families) -> None:
    model = families.load("tiny-flux2-klein")

    assert model.spec.tasks == (Task.TEXT2IMG,)
    assert type(model.pipeline).__name__ == "Flux2KleinPipeline"
    image, events = _generate(model, _request(model.spec))
    _assert_image(image)
    _assert_one_event_per_step(events, 2)


def test_cancel_after_the_first_step_raises_cancelled(families: Families) -> None:
    spec = families.catalog.get("tiny")
    model = families.backend.load(spec)
    events: list[Progress] = []

    def after_first_step() -> bool:
        return len(events) >= 1

    with pytest.raises(Cancelled):
        model.generate(_request(spec, steps=4), events.append, after_first_step)
    assert events == [Progress(step=1, total=4)]


class _Tripwire:
    """A pickle that creates the folder `path` when it is unpickled: proof that a loader ran pickled code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.path),)


def test_diffusers_folder_with_only_pickled_weights_is_refused_unread(
    families: Families, tmp_path: Path, torch_loads: list[tuple[Any, ...]]
) -> None:
    built = Path(families.backend.pull(families.catalog.get("tiny")))
    folder = tmp_path / "pickled"
    shutil.copytree(built, folder)
    tripwire = tmp_path / "unpickled"
    for weights in folder.rglob("*.safetensors"):
        # The names diffusers and transformers look for when pickles are allowed.
        pickled = "pytorch_model.bin" if weights.name == "model.safetensors" else "diffusion_pytorch_model.bin"
        weights.with_name(pickled).write_bytes(pickle.dumps(_Tripwire(tripwire)))
        weights.unlink()
    spec = replace(families.catalog.get("tiny"), key="pickled", source=str(folder), builtin=False)

    with pytest.raises(WeightsUnavailable) as caught:
        families.backend.load(spec)
    assert "safetensors" in caught.value.hint
    assert torch_loads == []
    assert not tripwire.exists()


@pytest.mark.parametrize("lora_file", ["pytorch_lora_weights.bin", "pytorch_lora_weights.safetensors"])
def test_lora_holding_a_pickle_is_refused_unread(
    families: Families, tmp_path: Path, torch_loads: list[tuple[Any, ...]], lora_file: str
) -> None:
    tripwire = tmp_path / "unpickled"
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / lora_file).write_bytes(pickle.dumps(_Tripwire(tripwire)))
    spec = replace(families.catalog.get("tiny-sdxl"), key="pickled-lora", lora=str(tmp_path / "lora"))

    with pytest.raises(WeightsUnavailable):
        families.backend.load(spec)
    assert torch_loads == []
    assert not tripwire.exists()


def test_lora_file_not_named_safetensors_is_refused_unread(
    families: Families, tmp_path: Path, torch_loads: list[tuple[Any, ...]]
) -> None:
    tripwire = tmp_path / "unpickled"
    lora = tmp_path / "style.lora"
    lora.write_bytes(pickle.dumps(_Tripwire(tripwire)))
    spec = replace(families.catalog.get("tiny-sdxl"), key="pickled-lora", lora=str(lora))

    with pytest.raises(WeightsUnavailable) as caught:
        families.backend.load(spec)
    assert "safetensors" in caught.value.hint
    assert torch_loads == []
    assert not tripwire.exists()
