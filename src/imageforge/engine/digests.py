"""Content digests of weight files, for the manifest that says which weights made an image.

A file's digest is read once per process and kept while its size and modification time stay the same: a model of
several GB costs its read (seconds) on its first manifest, not on every image.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

#: The weight files a model folder's digest covers.
WEIGHT_SUFFIXES = (".safetensors", ".gguf")
_CHUNK = 1 << 20

_known: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_digest(path: Path) -> str:
    """The SHA-256 of one file's bytes, as hex."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _known.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as weights:
        while chunk := weights.read(_CHUNK):
            digest.update(chunk)
    with _lock:
        _known[key] = digest.hexdigest()
    return _known[key]


def weights_digest(paths: Iterable[Path]) -> str | None:
    """One digest for the weight files under `paths` (files, or folders searched for `WEIGHT_SUFFIXES`), by
    their names and contents: `sha256:<hex>`. None when there are none."""
    files: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_file():
            files.append((path.name, path))
        elif path.is_dir():
            files += [
                (found.relative_to(path).as_posix(), found)
                for found in path.rglob("*")
                if found.suffix in WEIGHT_SUFFIXES and found.is_file()
            ]
    if not files:
        return None
    combined = hashlib.sha256()
    for name, path in sorted(files):
        combined.update(f"{name}\0{file_digest(path)}\n".encode())
    return f"sha256:{combined.hexdigest()}"
