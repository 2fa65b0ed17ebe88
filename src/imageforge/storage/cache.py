"""ArtifactCache: seeded results addressed by the hash of everything that changes their pixels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from imageforge.errors import storage_error
from imageforge.metrics import Metrics
from imageforge.storage.files import probe_folder, write_with_sidecar


def cache_key(parameters: dict[str, Any]) -> str:
    """A stable hash of `parameters` (JSON-serialisable, order-independent)."""
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ArtifactCache:
    """PNG bytes plus their JSON record, stored as `<root>/<2 hex>/<key>.png|.json`; lookups are counted in
    `metrics` as hits and misses."""

    def __init__(self, root: Path, *, metrics: Metrics | None = None) -> None:
        self.root = root
        self._metrics = metrics or Metrics()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def probe(self) -> None:
        """Write a file in the cache folder and remove it; raises the `OSError` of what failed."""
        probe_folder(self.root)

    def get(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        png_path = self._path(key)
        try:
            record = json.loads(png_path.with_suffix(".json").read_text())
            found = png_path.read_bytes(), record
        except (OSError, ValueError):
            self._metrics.cache_lookups.labels("miss").inc()
            return None
        self._metrics.cache_lookups.labels("hit").inc()
        return found

    def put(self, key: str, png: bytes, record: dict[str, Any]) -> None:
        """Store a result; the record is written last, so a reader never finds a record without its image.

        A write that fails leaves neither file and raises `StorageFull` or `StorageUnavailable`.
        """
        png_path = self._path(key)
        try:
            write_with_sidecar(png_path, png, json.dumps(record, sort_keys=True).encode())
        except OSError as exc:
            raise storage_error(exc, "The cache", "CACHE_DIR") from exc
