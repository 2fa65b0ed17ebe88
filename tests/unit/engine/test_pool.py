"""ModelPool: lazy loading, reuse of resident models, unloading."""

from __future__ import annotations

from PIL import Image

from imageforge.domain import CancelCheck, Family, GenerationRequest, ModelSpec, ProgressCallback
from imageforge.engine.pool import ModelPool
from imageforge.engine.protocol import DeviceInfo


def _spec(key: str) -> ModelSpec:
    return ModelSpec(
        key=key, source=key, family=Family.SD, description="", default_steps=1, default_guidance=0.0, default_size=64
    )


class RecordingModel:
    """A loaded model that records whether it was closed."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.closed = False

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Image.Image:
        return Image.new("RGB", (request.width, request.height))

    def close(self) -> None:
        self.closed = True


class RecordingBackend:
    """A backend that counts its loads; the pool's only dependency, so no real model is needed here."""

    def __init__(self) -> None:
        self.loaded: list[RecordingModel] = []

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(device="cpu", dtype="float32", cuda_available=False, mps_available=False, versions={})

    def fingerprint(self) -> str:
        return "recording"

    def weights_present(self, spec: ModelSpec) -> bool:
        return True

    def pull(self, spec: ModelSpec) -> str:
        return spec.source

    def load(self, spec: ModelSpec) -> RecordingModel:
        model = RecordingModel(spec)
        self.loaded.append(model)
        return model


def test_first_get_loads_and_later_gets_reuse_the_resident_model() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)

    first, first_load_s = pool.get(_spec("a"))
    second, second_load_s = pool.get(_spec("a"))

    assert first is second
    assert len(backend.loaded) == 1
    assert first_load_s >= 0.0
    assert second_load_s == 0.0
    assert pool.resident() == ["a"]


def test_unload_closes_the_model_and_the_next_get_loads_again() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)
    pool.get(_spec("a"))

    assert pool.unload("a")
    assert backend.loaded[0].closed
    assert pool.resident() == []
    assert not pool.unload("a")
    pool.get(_spec("a"))
    assert len(backend.loaded) == 2


def test_close_unloads_every_resident_model() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)
    pool.get(_spec("a"))
    pool.get(_spec("b"))

    pool.close()

    assert pool.resident() == []
    assert all(model.closed for model in backend.loaded)
