"""Atomic file writes shared by the output, cache and input stores, and the check that a folder takes writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

#: What a probe writes: a block's worth, since a full disk may still take an empty file (a free inode).
_PROBE = b"\0" * 4096


def write_temporary(folder: Path, data: bytes, prefix: str) -> Path:
    """Write `data` to a new hidden file in `folder` (made when missing) and return its path; every write of the
    output, cache and input stores goes through here. A failed write leaves no file and raises its `OSError`."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Path(temporary)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    temporary = write_temporary(path.parent, data, prefix=f".{path.name}.")
    try:
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_with_sidecar(path: Path, data: bytes, sidecar: bytes) -> None:
    """Write `data` to `path`, then `sidecar` beside it (`.json`), each atomically: a reader never finds the
    sidecar without its file, and a failed write leaves neither (its `OSError` is raised)."""
    write_atomic(path, data)
    try:
        write_atomic(path.with_suffix(".json"), sidecar)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class Probed(Protocol):
    """A store the service writes to, which it probes after a failed write to learn when writes work again."""

    def probe(self) -> None:
        """Write something small where the store writes, and remove it; raises the `OSError` of what failed."""
        ...


def probe_folder(folder: Path) -> None:
    """Make `folder` if missing, then write a file in it and remove it; raises the `OSError` of what failed."""
    write_temporary(folder, _PROBE, prefix=".probe.").unlink()
