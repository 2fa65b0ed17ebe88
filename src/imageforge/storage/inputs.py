"""InputStore: the input images of queued jobs, each stored once by the digest of its pixels.

A job's payload names its init image and mask by digest and holds no image bytes, so any process that reaches
the store can run the job. `FolderInputStore` keeps them in one folder (the job database's data folder); a store
that other machines reach implements the same protocol.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Protocol

from PIL import Image

from imageforge.errors import InputMissing, storage_error
from imageforge.storage.files import probe_folder, write_atomic

#: A digest as `image_digest` writes it, and so the only names the store reads.
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def image_digest(image: Image.Image) -> str:
    """The SHA-256 of an image's pixels, mode and size: equal for equal images, whatever file they came from."""
    digest = hashlib.sha256(image.tobytes())
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()


class InputStore(Protocol):
    """Decoded, checked input images by digest: written at submit, read by whichever worker runs the job."""

    def put(self, image: Image.Image) -> str:
        """Store `image` (once, however often it is put) and return its `image_digest`; `StorageFull` or
        `StorageUnavailable` when it cannot be written."""
        ...

    def get(self, digest: str) -> Image.Image:
        """The image stored under `digest`, exactly as it was put; `InputMissing` when it is not there (removed
        with the jobs that used it, or damaged)."""
        ...

    def delete(self, digest: str) -> None:
        """Remove the image stored under `digest`, if any."""
        ...

    def probe(self) -> None:
        """Write something small where the images go, and remove it; raises the `OSError` of what failed."""
        ...


class FolderInputStore:
    """Input images as lossless PNGs, `<root>/<2 hex>/<digest>.png`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.png"

    def put(self, image: Image.Image) -> str:
        """Write `image` as `<digest>.png` unless an equal image is there; returns the digest."""
        digest = image_digest(image)
        path = self._path(digest)
        if path.is_file():
            return digest  # the name is the content: an equal image is already there
        buffer = io.BytesIO()
        # zlib's fastest level, as for outputs: the write is on the submitting request's path.
        image.save(buffer, format="PNG", compress_level=1)
        try:
            write_atomic(path, buffer.getvalue())
        except OSError as exc:
            raise storage_error(exc, "The input store", "IMAGEFORGE_DATA_DIR") from exc
        return digest

    def get(self, digest: str) -> Image.Image:
        """The image named `digest`, checked against it; `InputMissing` when absent, unreadable or altered."""
        if not DIGEST.match(digest):
            raise _missing()
        try:
            with Image.open(self._path(digest), formats=("PNG",)) as stored:
                image = stored.copy()
        except Exception:  # gone, unreadable or not a PNG: Pillow raises many types on a damaged file
            raise _missing() from None
        # A damaged or replaced file must not run as if it were the image the client sent.
        if image_digest(image) != digest:
            raise _missing()
        return image

    def delete(self, digest: str) -> None:
        """Remove the image named `digest`; anything not named like a digest is left alone."""
        if DIGEST.match(digest):
            self._path(digest).unlink(missing_ok=True)

    def probe(self) -> None:
        """Write a file in the store's folder and remove it; raises the `OSError` of what failed."""
        probe_folder(self.root)


def _missing() -> InputMissing:
    return InputMissing(
        "An input image of this job is no longer in the input store.",
        hint="Submit the request again with its images; inputs are removed with the jobs that used them.",
    )
