"""A backend wrapper that holds every denoising step until the test releases it: timing without sleeps."""

from __future__ import annotations

import threading

from PIL import Image

from imageforge.domain import CancelCheck, GenerationRequest, ModelSpec, Progress, ProgressCallback
from imageforge.engine.protocol import DeviceInfo, ImageBackend, LoadedModel

WAIT_S = 30.0


class GatedBackend:
    """Wraps a real backend; each step of each generation waits on `release()`."""

    def __init__(self, inner: ImageBackend) -> None:
        self.inner = inner
        self._gate = threading.Semaphore(0)
        self._stepped = threading.Semaphore(0)

    def release(self, steps: int = 1) -> None:
        self._gate.release(steps)

    def wait_for_step(self) -> None:
        """Block until some generation has reached the end of a step and is holding there."""
        assert self._stepped.acquire(timeout=WAIT_S), "no generation reached a step"

    def hold(self) -> None:
        self._stepped.release()
        assert self._gate.acquire(timeout=WAIT_S), "the test never released the step"

    def device_info(self) -> DeviceInfo:
        return self.inner.device_info()

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def weights_present(self, spec: ModelSpec) -> bool:
        return self.inner.weights_present(spec)

    def pull(self, spec: ModelSpec) -> str:
        return self.inner.pull(spec)

    def load(self, spec: ModelSpec) -> LoadedModel:
        return _GatedModel(self.inner.load(spec), self)


class _GatedModel:
    def __init__(self, inner: LoadedModel, backend: GatedBackend) -> None:
        self.inner = inner
        self.spec = inner.spec
        self._backend = backend

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Image.Image:
        def gated(progress: Progress) -> None:
            on_progress(progress)
            self._backend.hold()

        return self.inner.generate(request, gated, should_cancel)

    def close(self) -> None:
        self.inner.close()
