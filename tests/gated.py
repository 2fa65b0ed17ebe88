"""Backend wrappers that run test code inside each denoising step of the real backend: timing without sleeps,
and failures where the real ones happen."""

from __future__ import annotations

import threading
from collections.abc import Callable

from imageforge.domain import CancelCheck, GenerationRequest, ModelSpec, Progress, ProgressCallback
from imageforge.engine.protocol import DeviceInfo, Generated, ImageBackend, LoadedModel

WAIT_S = 30.0


class StepHookBackend:
    """Wraps a real backend; `on_step` runs inside each step of each generation, after its progress report."""

    def __init__(self, inner: ImageBackend, on_step: Callable[[Progress], None]) -> None:
        self.inner = inner
        self._on_step = on_step

    def device_info(self) -> DeviceInfo:
        return self.inner.device_info()

    def memory_in_use_gb(self) -> float | None:
        return self.inner.memory_in_use_gb()

    def fingerprint(self, spec: ModelSpec) -> str:
        return self.inner.fingerprint(spec)

    def weights_present(self, spec: ModelSpec) -> bool:
        return self.inner.weights_present(spec)

    def weights_digest(self, spec: ModelSpec) -> str | None:
        return self.inner.weights_digest(spec)

    def pull(self, spec: ModelSpec) -> str:
        return self.inner.pull(spec)

    def load(self, spec: ModelSpec) -> LoadedModel:
        return _HookedModel(self.inner.load(spec), self._on_step)


class _HookedModel:
    def __init__(self, inner: LoadedModel, on_step: Callable[[Progress], None]) -> None:
        self.inner = inner
        self.spec = inner.spec
        self._on_step = on_step

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Generated:
        def hooked(progress: Progress) -> None:
            on_progress(progress)
            self._on_step(progress)

        return self.inner.generate(request, hooked, should_cancel)

    def count_tokens(self, prompt: str) -> tuple[int, int] | None:
        return self.inner.count_tokens(prompt)

    def close(self) -> None:
        self.inner.close()


class GatedBackend(StepHookBackend):
    """Wraps a real backend; each step of each generation waits on `release()`."""

    def __init__(self, inner: ImageBackend) -> None:
        super().__init__(inner, self._hold)
        self._gate = threading.Semaphore(0)
        self._stepped = threading.Semaphore(0)

    def release(self, steps: int = 1) -> None:
        self._gate.release(steps)

    def wait_for_step(self) -> None:
        """Block until some generation has reached the end of a step and is holding there."""
        assert self._stepped.acquire(timeout=WAIT_S), "no generation reached a step"

    def _hold(self, progress: Progress) -> None:
        self._stepped.release()
        assert self._gate.acquire(timeout=WAIT_S), "the test never released the step"
