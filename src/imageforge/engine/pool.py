"""ModelPool: loads catalog models on first use and keeps them resident."""

from __future__ import annotations

import logging
import threading
import time

from imageforge.domain import ModelSpec
from imageforge.engine.protocol import ImageBackend, LoadedModel

log = logging.getLogger(__name__)


class ModelPool:
    """Lazy loading, one load at a time, and explicit unloading of resident models."""

    def __init__(self, backend: ImageBackend) -> None:
        self._backend = backend
        self._resident: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec) -> tuple[LoadedModel, float]:
        """The loaded model for `spec` and the seconds spent loading it now (0 when it was resident)."""
        with self._lock:
            model = self._resident.get(spec.key)
            if model is not None:
                return model, 0.0
            started = time.perf_counter()
            model = self._backend.load(spec)
            load_s = time.perf_counter() - started
            log.info("loaded %s in %.2fs", spec.key, load_s)
            self._resident[spec.key] = model
            return model, load_s

    def unload(self, key: str) -> bool:
        """Drop a resident model; returns whether it was resident."""
        with self._lock:
            model = self._resident.pop(key, None)
        if model is None:
            return False
        model.close()
        log.info("unloaded %s", key)
        return True

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._resident)

    def close(self) -> None:
        for key in self.resident():
            self.unload(key)
