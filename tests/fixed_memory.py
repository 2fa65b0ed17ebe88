"""A memory probe whose free memory the test sets: admission by memory tested without depending on this
machine's RAM."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from imageforge.engine.memory import PeakReading


class FixedMemory:
    """`free` GB free on a CPU device; it measures nothing, so estimates stay on the catalog's seed."""

    def __init__(self, free: float) -> None:
        self.free = free

    def device(self) -> str:
        return "cpu/float32"

    def free_gb(self) -> float | None:
        return self.free

    def offloads_weights(self) -> bool:
        return False

    @contextmanager
    def measure(self) -> Iterator[PeakReading]:
        yield PeakReading()
