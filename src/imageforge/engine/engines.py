"""`Engines`: one `ImageBackend` over several, each model sent to the engine its catalog entry names (ADR 0027)."""

from __future__ import annotations

from collections.abc import Mapping

from imageforge.domain import Backend, ModelSpec
from imageforge.engine.protocol import DeviceInfo, ImageBackend, LoadedModel
from imageforge.errors import ModelUnsupported


class Engines:
    """Routes `load`, `pull` and `weights_present` by `ModelSpec.backend`; the pool, the queue and the service see
    one backend. The device and its memory are the diffusers engine's, which every installation has."""

    def __init__(self, engines: Mapping[Backend, ImageBackend]) -> None:
        if Backend.DIFFUSERS not in engines:
            raise ValueError("the diffusers engine is always there")
        self._engines = dict(engines)

    def engine(self, spec: ModelSpec) -> ImageBackend:
        """The engine that runs `spec`; `ModelUnsupported` when this installation has none for it."""
        engine = self._engines.get(spec.backend)
        if engine is None:
            raise ModelUnsupported(
                f"Model '{spec.key}' runs on the {spec.backend.value} engine, which this server does not have.",
                hint="Pick another model (GET /models lists them).",
            )
        return engine

    def device_info(self) -> DeviceInfo:
        return self._engines[Backend.DIFFUSERS].device_info()

    def memory_in_use_gb(self) -> float | None:
        return self._engines[Backend.DIFFUSERS].memory_in_use_gb()

    def fingerprint(self, spec: ModelSpec) -> str:
        return self.engine(spec).fingerprint(spec)

    def weights_digest(self, spec: ModelSpec) -> str | None:
        return self.engine(spec).weights_digest(spec)

    def weights_present(self, spec: ModelSpec) -> bool:
        return self.engine(spec).weights_present(spec)

    def pull(self, spec: ModelSpec) -> str:
        return self.engine(spec).pull(spec)

    def load(self, spec: ModelSpec) -> LoadedModel:
        return self.engine(spec).load(spec)
