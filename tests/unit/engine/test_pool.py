"""ModelPool: lazy loading, reuse, LRU eviction under a memory budget, idle unloading, out-of-memory recovery."""

from __future__ import annotations

import pytest
from PIL import Image

from imageforge.domain import CancelCheck, Family, GenerationRequest, ModelSpec, ProgressCallback
from imageforge.engine.pool import ModelPool, PoolPolicy
from imageforge.engine.protocol import DeviceInfo, Generated
from imageforge.errors import ModelBusy, OutOfMemory


def _spec(key: str, memory_gb: float = 1.0) -> ModelSpec:
    return ModelSpec(
        key=key,
        source=key,
        family=Family.SD,
        description="",
        default_steps=1,
        default_guidance=0.0,
        default_size=64,
        est_memory_gb=memory_gb,
    )


class RecordingModel:
    """A loaded model that records whether it was closed."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.closed = False

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Generated:
        return Generated(Image.new("RGB", (request.width, request.height)), {})

    def count_tokens(self, prompt: str) -> tuple[int, int] | None:
        return None

    def close(self) -> None:
        self.closed = True


class RecordingBackend:
    """A backend that counts its loads and can run out of memory: the pool's only dependency."""

    def __init__(self, memory_gb: float | None = None) -> None:
        self.loaded: list[RecordingModel] = []
        self.memory_gb = memory_gb
        #: loads that raise OutOfMemory before one succeeds
        self.failing_loads = 0

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(
            device="cpu",
            dtype="float32",
            cuda_available=False,
            mps_available=False,
            versions={},
            memory_gb=self.memory_gb,
        )

    def memory_in_use_gb(self) -> float | None:
        return None

    def fingerprint(self, spec: ModelSpec) -> str:
        return "recording"

    def weights_present(self, spec: ModelSpec) -> bool:
        return True

    def weights_digest(self, spec: ModelSpec) -> str | None:
        return None

    def pull(self, spec: ModelSpec) -> str:
        return spec.source

    def load(self, spec: ModelSpec) -> RecordingModel:
        if self.failing_loads:
            self.failing_loads -= 1
            raise OutOfMemory(f"no room for {spec.key}")
        model = RecordingModel(spec)
        self.loaded.append(model)
        return model

    def model(self, key: str) -> RecordingModel:
        """The last model loaded for `key`."""
        return [model for model in self.loaded if model.spec.key == key][-1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_use_loads_and_later_uses_reuse_the_resident_model() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)

    with pool.use(_spec("a")) as (first, first_load_s):
        pass
    with pool.use(_spec("a")) as (second, second_load_s):
        pass

    assert first is second
    assert len(backend.loaded) == 1
    assert first_load_s >= 0.0
    assert second_load_s == 0.0
    assert pool.resident() == ["a"]


def test_unload_closes_the_model_and_the_next_use_loads_again() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)
    pool.load(_spec("a"))

    assert pool.unload("a")
    assert backend.loaded[0].closed
    assert pool.resident() == []
    assert not pool.unload("a")
    pool.load(_spec("a"))
    assert len(backend.loaded) == 2


def test_a_model_in_use_cannot_be_unloaded() -> None:
    pool = ModelPool(RecordingBackend())

    with pool.use(_spec("a")), pytest.raises(ModelBusy):
        pool.unload("a")

    assert pool.unload("a")


def test_over_the_budget_the_least_recently_used_model_is_unloaded_first() -> None:
    backend = RecordingBackend()
    clock = Clock()
    pool = ModelPool(backend, PoolPolicy(memory_budget_gb=5.0, idle_unload_s=0), clock=clock)
    for key in ("a", "b"):
        pool.load(_spec(key, memory_gb=2.0))
        clock.now += 1
    pool.load(_spec("a", memory_gb=2.0))  # a is now more recent than b
    clock.now += 1

    pool.load(_spec("c", memory_gb=2.0))

    assert pool.resident() == ["a", "c"]
    assert backend.model("b").closed
    assert not backend.model("a").closed


def test_eviction_skips_a_model_in_use_and_loads_past_the_budget_rather_than_fail() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend, PoolPolicy(memory_budget_gb=3.0, idle_unload_s=0))

    with pool.use(_spec("a", memory_gb=2.0)):
        pool.load(_spec("b", memory_gb=2.0))
        assert sorted(pool.resident()) == ["a", "b"]

    assert not backend.model("a").closed


def test_auto_budget_is_a_share_of_the_device_memory() -> None:
    backend = RecordingBackend(memory_gb=10.0)
    pool = ModelPool(backend, PoolPolicy(memory_budget_gb="auto", idle_unload_s=0))
    pool.load(_spec("a", memory_gb=5.0))

    pool.load(_spec("b", memory_gb=5.0))

    assert pool.budget_gb() == 8.0
    assert pool.resident() == ["b"]
    assert pool.status()["resident_est_gb"] == 5.0


def test_auto_budget_on_a_device_of_unknown_memory_is_unlimited() -> None:
    pool = ModelPool(RecordingBackend(memory_gb=None), PoolPolicy(memory_budget_gb="auto", idle_unload_s=0))

    assert pool.budget_gb() is None


def test_models_idle_past_the_limit_are_unloaded_and_busy_ones_kept() -> None:
    backend = RecordingBackend()
    clock = Clock()
    pool = ModelPool(backend, PoolPolicy(memory_budget_gb=None, idle_unload_s=60), clock=clock)
    pool.load(_spec("idle"))
    with pool.use(_spec("busy")):
        clock.now += 61
        assert pool.unload_idle() == ["idle"]
        assert pool.resident() == ["busy"]

    assert pool.unload_idle() == []  # just used
    clock.now += 61
    assert pool.unload_idle() == ["busy"]
    assert all(model.closed for model in backend.loaded)


def test_idle_unloading_off_keeps_models_forever() -> None:
    clock = Clock()
    pool = ModelPool(RecordingBackend(), PoolPolicy(memory_budget_gb=None, idle_unload_s=0), clock=clock)
    pool.load(_spec("a"))
    clock.now += 10**6

    assert pool.unload_idle() == []
    assert pool.resident() == ["a"]


def test_out_of_memory_while_loading_unloads_idle_models_and_tries_once_more() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)
    pool.load(_spec("a"))
    backend.failing_loads = 1

    pool.load(_spec("b"))

    assert pool.resident() == ["b"]
    assert backend.model("a").closed


def test_out_of_memory_while_loading_with_nothing_to_free_is_reported() -> None:
    backend = RecordingBackend()
    backend.failing_loads = 1
    pool = ModelPool(backend)

    with pytest.raises(OutOfMemory):
        pool.load(_spec("a"))

    assert pool.resident() == []
    pool.load(_spec("a"))  # the next attempt runs normally
    assert pool.resident() == ["a"]


def test_out_of_memory_while_generating_frees_the_other_models_and_keeps_the_one_in_use() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)
    pool.load(_spec("other"))

    with pytest.raises(OutOfMemory), pool.use(_spec("a")):
        raise OutOfMemory("the step did not fit")

    assert pool.resident() == ["a"]
    assert backend.model("other").closed
    assert pool.status()["resident"][0]["in_use"] is False


def test_close_unloads_every_resident_model() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)
    pool.load(_spec("a"))
    pool.load(_spec("b"))

    pool.close()

    assert pool.resident() == []
    assert all(model.closed for model in backend.loaded)


def test_on_load_is_called_before_a_load_and_not_for_a_resident_model() -> None:
    backend = RecordingBackend()
    pool = ModelPool(backend)
    told: list[int] = []

    with pool.use(_spec("a"), on_load=lambda: told.append(len(backend.loaded))):
        pass
    with pool.use(_spec("a"), on_load=lambda: told.append(len(backend.loaded))):
        pass

    assert told == [0], "once, before the model was loaded"
