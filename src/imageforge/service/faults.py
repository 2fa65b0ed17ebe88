"""StorageFaults: which store a write failed in, until a probe write there works again."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from imageforge.errors import StorageUnavailable
from imageforge.storage.files import Probed

_T = TypeVar("_T")


class StorageFaults:
    """Writes to the stores go through `stored`; `current` says why jobs cannot be stored now.

    A full disk or a read-only folder shows in health and refuses submissions (they would only fail) until the
    store takes a write again; the job database reports its own fault through `database_fault`.
    """

    def __init__(self, database_fault: Callable[[], StorageUnavailable | None]) -> None:
        self._database_fault = database_fault
        self._faults: dict[Probed, StorageUnavailable] = {}

    def stored(self, store: Probed, write: Callable[[], _T]) -> _T:
        """Run a write to `store`; a failure is remembered as the store's fault and raised."""
        try:
            return write()
        except StorageUnavailable as exc:
            self._faults[store] = exc
            raise

    def current(self) -> StorageUnavailable | None:
        """Why jobs cannot be stored now, or None. Each store a write failed in is probed again, and cleared once
        it takes a write; so is the job database."""
        for store, fault in list(self._faults.items()):
            try:
                store.probe()
            except OSError:
                return fault
            self._faults.pop(store, None)
        return self._database_fault()
