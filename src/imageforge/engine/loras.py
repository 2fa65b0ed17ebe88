"""LoraFolder: the LoRAs a request may apply, by name, from one configured folder (IMAGEFORGE_LORA_DIR).

A request names a LoRA, never a path: a name is matched against the entries of the folder itself (no subfolders),
so no name reaches a file the server's operator did not put there. Only `.safetensors` files load; a name whose
file is a pickle (`.ckpt`, `.pt`, …) is refused, since loading one can run code.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from imageforge.domain import LoraCatalog, LoraInfo
from imageforge.engine.catalog import PICKLE_SUFFIXES
from imageforge.errors import LoraNotFound, PathForbidden, UnsafeWeights

SUFFIX = ".safetensors"
_HINT = "GET /loras (or the MCP tool list_loras) lists the names this server has."


@dataclass(frozen=True)
class LoraFile:
    """A LoRA a request named, found in the folder: its file and the SHA-256 of its bytes (the cache key's)."""

    name: str
    path: Path
    sha256: str


class LoraFolder:
    """The `.safetensors` files of one folder, by name (the file name without `.safetensors`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: digests by (path, size, mtime): a LoRA is hashed once, again only when its file changes
        self._digests: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def _entries(self) -> dict[str, Path]:
        """The folder's files by name, skipping hidden ones; empty when the folder does not exist."""
        try:
            with os.scandir(self.root) as scan:
                return {e.name: Path(e.path) for e in scan if not e.name.startswith(".") and e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            return {}

    def catalog(self) -> LoraCatalog:
        """Every LoRA a request may name, sorted by name."""
        loras = [
            LoraInfo(name=file[: -len(SUFFIX)], file=file, size_mb=round(path.stat().st_size / 1e6, 1))
            for file, path in sorted(self._entries().items())
            if file.lower().endswith(SUFFIX)
        ]
        return LoraCatalog(loras=loras)

    def find(self, name: str) -> LoraFile:
        """The LoRA `name`, hashed; `PathForbidden` for a name that is a path, `UnsafeWeights` for a pickle,
        `LoraNotFound` when the folder has no `.safetensors` file of that name."""
        if name.lower().endswith(SUFFIX):
            name = name[: -len(SUFFIX)]
        if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
            raise PathForbidden(
                f"LoRA name {name!r} is a path or a hidden file; a LoRA is named by its file name in the server's "
                "LoRA folder, without .safetensors.",
                hint=_HINT,
            )
        entries = self._entries()
        path = entries.get(name + SUFFIX)
        if path is None:
            pickled = [file for file in entries if _stem(file) == name and file.lower().endswith(PICKLE_SUFFIXES)]
            if pickled or name.lower().endswith(PICKLE_SUFFIXES):
                raise UnsafeWeights(
                    f"LoRA {name!r} is a pickled checkpoint ({', '.join(pickled) or name}); imageforge loads "
                    ".safetensors weights only, since loading a pickle can run code.",
                    hint="Convert it to .safetensors on the server, or name another LoRA. " + _HINT,
                )
            raise LoraNotFound(f"No LoRA named {name!r} in the server's LoRA folder.", hint=_HINT)
        return LoraFile(name, path, self._sha256(path))

    def _sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            digest = self._digests.get(key)
        if digest is None:
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            with self._lock:
                self._digests[key] = digest
        return digest


def _stem(file: str) -> str:
    return file.rsplit(".", 1)[0]
