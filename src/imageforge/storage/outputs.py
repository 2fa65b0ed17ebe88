"""OutputStore: every result as a PNG with its parameters embedded, plus a JSON sidecar.

The PNG carries two text chunks: `parameters`, AUTOMATIC1111's infotext (`imageforge.infotext`), which its PNG
Info, Civitai and other Stable Diffusion tools read, and `imageforge`, the full JSON record. Either is enough to
reproduce the image from the file alone.
"""

from __future__ import annotations

import io
import json
import re
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from imageforge.errors import ImageNotFound, storage_error
from imageforge.infotext import format_infotext
from imageforge.storage.files import probe_folder, write_with_sidecar

PNG_RECORD_KEY = "imageforge"
PNG_PARAMETERS_KEY = "parameters"


def encode_png(image: Image.Image, record: dict[str, Any]) -> bytes:
    """Encode `image` as PNG with `record` embedded as text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_PARAMETERS_KEY, format_infotext(record))
    info.add_text(PNG_RECORD_KEY, json.dumps(record, sort_keys=True))
    buffer = io.BytesIO()
    # zlib's fastest level: a 512 px result encodes in a third of the time of Pillow's default (level 6) for
    # files about 15% larger, and the encode is on every request's path (docs/benchmarks.md).
    image.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def read_record(png: bytes) -> dict[str, Any]:
    """The JSON record embedded by `encode_png` (empty when absent)."""
    with Image.open(io.BytesIO(png)) as image:
        text = image.info.get(PNG_RECORD_KEY)
    return json.loads(text) if isinstance(text, str) else {}


#: The only names the store writes, and so the only names it serves.
OUTPUT_NAME = re.compile(r"^\d{8}_\d{6}_[0-9a-f]{6}\.png$")


class OutputStore:
    """Writes results as `YYYYMMDD_HHMMSS_<6 hex>.png` plus a `.json` sidecar under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find(self, name: str) -> Path:
        """The stored image called `name`; `ImageNotFound` for any other name, so no path can escape the store."""
        path = self.root / name
        # The store writes regular files only: a link placed in the folder (by whoever can write there) could
        # point anywhere on the machine.
        if not OUTPUT_NAME.match(name) or path.is_symlink() or not path.is_file():
            raise ImageNotFound(f"No image '{name}'.", hint="Use the image link of a finished job.")
        return path

    def probe(self) -> None:
        """Write a file in the output folder and remove it; raises the `OSError` of what failed."""
        probe_folder(self.root)

    def delete(self, path: Path) -> None:
        """Remove a stored image and its sidecar; paths outside the store are left alone."""
        if path.parent.resolve() != self.root.resolve() or not OUTPUT_NAME.match(path.name):
            return
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)

    def new_path(self) -> Path:
        """A fresh output path; names never derive from user input."""
        stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        return self.root / f"{stamp}_{secrets.token_hex(3)}.png"

    def save(self, png: bytes, record: dict[str, Any]) -> Path:
        """Write an encoded PNG and its sidecar; returns the PNG's path.

        A write that fails leaves neither file and raises `StorageFull` or `StorageUnavailable`.
        """
        path = self.new_path()
        sidecar = {**record, "output_path": str(path)}
        try:
            write_with_sidecar(path, png, json.dumps(sidecar, indent=2, sort_keys=True).encode())
        except OSError as exc:
            raise storage_error(exc, "The output folder", "OUTPUT_DIR") from exc
        return path
