"""ModelPool: loads catalog models on first use, keeps them within a memory budget, unloads idle ones."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from imageforge.domain import ModelSpec
from imageforge.engine.protocol import ImageBackend, LoadedModel
from imageforge.errors import ModelBusy, OutOfMemory
from imageforge.metrics import Metrics

log = logging.getLogger(__name__)

#: Share of the device's memory that an "auto" budget keeps models resident in; the rest is for activations.
AUTO_BUDGET_SHARE = 0.8
MemoryBudget = float | Literal["auto"] | None


@dataclass
class _Resident:
    model: LoadedModel
    loaded_at: float
    last_used: float
    users: int = 0


@dataclass(frozen=True)
class PoolPolicy:
    """How much stays resident and for how long.

    `memory_budget_gb`: models are kept resident while their estimated sizes fit in it, least recently used
    unloaded first; "auto" is a share of the device's memory, None no limit. `idle_unload_s`: a model unused
    this long is unloaded; 0 keeps models until they are evicted or unloaded by hand.
    """

    memory_budget_gb: MemoryBudget = "auto"
    idle_unload_s: float = 120.0


class ModelPool:
    """Lazy loading, one load at a time, LRU eviction under a memory budget, idle unloading.

    A model in use by a generation is never unloaded under it: eviction skips it and an explicit unload is
    `ModelBusy`. Out of memory while loading unloads every idle model and tries once more; out of memory while
    generating unloads the other idle models so that the next job has room. Loads, and which models are resident
    with their estimated memory, are counted in `metrics`.
    """

    def __init__(
        self,
        backend: ImageBackend,
        policy: PoolPolicy = PoolPolicy(memory_budget_gb=None, idle_unload_s=0),
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._backend = backend
        self._metrics = metrics or Metrics()
        self._policy = policy
        self._clock = clock
        self._resident: dict[str, _Resident] = {}
        #: guards `_resident`; held for bookkeeping only, never while loading or closing a model
        self._lock = threading.Condition()
        #: one load at a time: two large loads at once are the surest way to run out of memory
        self._load_lock = threading.Lock()
        #: the key of the model being loaded now, if any
        self._loading: str | None = None
        self._closing = False
        self._idle_thread: threading.Thread | None = None

    # -- use ----------------------------------------------------------------------------------------

    @contextmanager
    def use(self, spec: ModelSpec, *, on_load: Callable[[], None] | None = None) -> Iterator[tuple[LoadedModel, float]]:
        """The loaded model for `spec` and the seconds spent loading it now (0 when resident), held in use
        until the block ends. `on_load` is called once first when the model is not resident: what follows is a
        load (or a wait for another one), which may take minutes."""
        model, load_s = self._acquire(spec, on_load)
        try:
            yield model, load_s
        except OutOfMemory:
            self._free(keep=spec.key)
            raise
        finally:
            with self._lock:
                entry = self._resident.get(spec.key)
                if entry is not None and entry.model is model:
                    entry.users -= 1
                    entry.last_used = self._clock()

    def load(self, spec: ModelSpec) -> float:
        """Make `spec` resident now; the seconds spent loading (0 when it already was)."""
        with self.use(spec) as (_model, load_s):
            return load_s

    def _acquire(self, spec: ModelSpec, on_load: Callable[[], None] | None) -> tuple[LoadedModel, float]:
        # A resident model is handed out without waiting for another model's load to finish.
        resident = self._take_resident(spec.key)
        if resident is not None:
            return resident, 0.0
        if on_load is not None:
            on_load()
        with self._load_lock:
            resident = self._take_resident(spec.key)
            if resident is not None:
                return resident, 0.0
            self._make_room(spec)
            started = time.perf_counter()
            self._loading = spec.key
            try:
                model = self._backend.load(spec)
            except OutOfMemory:
                if not self._free(keep=None):
                    raise
                log.warning("out of memory loading %s; unloaded the idle models and trying again", spec.key)
                model = self._backend.load(spec)
            finally:
                self._loading = None
            load_s = time.perf_counter() - started
            log.info("loaded %s in %.2fs", spec.key, load_s)
            self._metrics.model_loaded(spec.key, load_s, spec.est_memory_gb)
            now = self._clock()
            with self._lock:
                self._resident[spec.key] = _Resident(model, loaded_at=now, last_used=now, users=1)
            return model, load_s

    def _take_resident(self, key: str) -> LoadedModel | None:
        with self._lock:
            entry = self._resident.get(key)
            if entry is None:
                return None
            entry.users += 1
            entry.last_used = self._clock()
            return entry.model

    # -- unloading ----------------------------------------------------------------------------------

    def unload(self, key: str) -> bool:
        """Drop a resident model; returns whether it was resident. `ModelBusy` while a job uses it."""
        with self._lock:
            entry = self._resident.get(key)
            if entry is None:
                return False
            if entry.users:
                raise ModelBusy(
                    f"Model '{key}' is running a job.",
                    hint="Unload it when the job has ended, or cancel the job first.",
                )
            del self._resident[key]
        self._close(key, entry.model, "on request")
        return True

    def unload_idle(self) -> list[str]:
        """Unload the models unused for `idle_unload_s` or longer; returns their keys."""
        if not self._policy.idle_unload_s:
            return []
        cutoff = self._clock() - self._policy.idle_unload_s
        with self._lock:
            idle = {
                key: entry for key, entry in self._resident.items() if not entry.users and entry.last_used <= cutoff
            }
            for key in idle:
                del self._resident[key]
        for key, entry in idle.items():
            self._close(key, entry.model, f"after {self._policy.idle_unload_s:g}s idle")
        return list(idle)

    def _make_room(self, spec: ModelSpec) -> None:
        """Unload the least recently used idle models until `spec` fits the budget with those that stay."""
        budget = self.budget_gb()
        if budget is None:
            return
        evicted: list[tuple[str, _Resident]] = []
        with self._lock:
            by_age = sorted(self._resident.items(), key=lambda item: item[1].last_used)
            used = sum(entry.model.spec.est_memory_gb for entry in self._resident.values())
            for key, entry in by_age:
                if used + spec.est_memory_gb <= budget:
                    break
                if entry.users:
                    continue
                del self._resident[key]
                used -= entry.model.spec.est_memory_gb
                evicted.append((key, entry))
        for key, entry in evicted:
            self._close(key, entry.model, f"to make room for {spec.key} (memory budget {budget:.1f} GB)")
        if used + spec.est_memory_gb > budget:
            log.warning(
                "%s (~%.1f GB) does not fit the memory budget of %.1f GB beside the models in use; loading it anyway",
                spec.key,
                spec.est_memory_gb,
                budget,
            )

    def release_idle(self, *, keep: str) -> bool:
        """Unload every idle model but `keep` (after a job of `keep` ran out of memory, before its retry);
        whether anything was unloaded."""
        return self._free(keep=keep)

    def _free(self, *, keep: str | None) -> bool:
        """After running out of memory: unload every idle model but `keep`; whether anything was unloaded."""
        with self._lock:
            victims = {key: entry for key, entry in self._resident.items() if key != keep and not entry.users}
            for key in victims:
                del self._resident[key]
        for key, entry in victims.items():
            self._close(key, entry.model, "to recover from running out of memory")
        return bool(victims)

    def _close(self, key: str, model: LoadedModel, why: str) -> None:
        self._metrics.model_unloaded(key)
        model.close()
        log.info("unloaded %s %s", key, why)

    # -- state --------------------------------------------------------------------------------------

    def budget_gb(self) -> float | None:
        """The memory budget in GB; None when unlimited (or "auto" on a device of unknown memory)."""
        budget = self._policy.memory_budget_gb
        if budget == "auto":
            total = self._backend.device_info().memory_gb
            return None if total is None else round(total * AUTO_BUDGET_SHARE, 1)
        return budget

    def loading(self) -> str | None:
        """The key of the model being loaded now, or None."""
        return self._loading

    def resident(self) -> list[str]:
        """The keys of the resident models, least recently used first."""
        with self._lock:
            return [key for key, _ in sorted(self._resident.items(), key=lambda item: item[1].last_used)]

    def status(self) -> dict[str, Any]:
        """What is resident, how big and how idle, against the budget: the truth `/health` reports."""
        now = self._clock()
        with self._lock:
            entries = sorted(self._resident.items(), key=lambda item: item[1].last_used)
            models = [
                {
                    "key": key,
                    "est_memory_gb": entry.model.spec.est_memory_gb,
                    "in_use": entry.users > 0,
                    "idle_s": 0.0 if entry.users else round(now - entry.last_used, 1),
                    "loaded_s_ago": round(now - entry.loaded_at, 1),
                }
                for key, entry in entries
            ]
        return {
            "memory_budget_gb": self.budget_gb(),
            "resident_est_gb": round(sum(entry.model.spec.est_memory_gb for _, entry in entries), 2),
            "idle_unload_s": self._policy.idle_unload_s,
            "resident": models,
        }

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the idle-unload timer (nothing to start when idle unloading is off)."""
        if not self._policy.idle_unload_s or self._idle_thread is not None:
            return
        self._closing = False
        self._idle_thread = threading.Thread(target=self._watch_idle, name="imageforge-idle-unload", daemon=True)
        self._idle_thread.start()

    def _watch_idle(self) -> None:
        # Checking four times per idle period unloads a model at most a quarter period late.
        interval = min(max(self._policy.idle_unload_s / 4, 0.05), 5.0)
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closing, timeout=interval)
                if self._closing:
                    return
            try:
                self.unload_idle()
            except Exception:
                log.exception("idle unloading failed")

    def close(self) -> None:
        """Stop the timer and unload every model."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._idle_thread is not None:
            self._idle_thread.join(timeout=10)
            self._idle_thread = None
        with self._lock:
            entries = list(self._resident.items())
            self._resident.clear()
        for key, entry in entries:
            self._close(key, entry.model, "at shutdown")
