"""Input images from clients: base64 payloads or paths confined to allowed roots, decoded safely."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imageforge.errors import InvalidImage, InvalidRequest, PathForbidden, PayloadTooLarge


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what an input image may cost to decode."""

    max_bytes: int = 20 * 1024 * 1024
    #: decoded pixels; a small PNG can claim a huge canvas (a decompression bomb)
    max_pixels: int = 4096 * 4096


class InputPaths:
    """Resolves client paths against the project root and refuses anything outside the allowed roots."""

    def __init__(self, root: Path, allowed: Sequence[Path]) -> None:
        self._root = root
        self._allowed = [path.resolve() for path in allowed]

    def resolve(self, raw: str, *, field: str) -> Path:
        """The real path of `raw`, following symlinks, or `PathForbidden` when it lies outside every root."""
        candidate = Path(raw).expanduser()
        if not candidate.is_absolute():
            candidate = self._root / candidate
        real = candidate.resolve()
        if not any(real.is_relative_to(root) for root in self._allowed):
            raise PathForbidden(
                f"{field} '{raw}' is outside the folders this server may read.",
                hint="Use a file under the output folder or a folder listed in IMAGEFORGE_INPUT_DIRS, "
                "or send the image as base64.",
            )
        if not real.is_file():
            raise InvalidRequest(f"{field} '{raw}' does not exist.", hint="Check the path; it must name a file.")
        return real


def decode_base64(data: str, *, field: str, limits: ImageLimits) -> bytes:
    """The bytes of a base64 image, with or without a `data:image/...;base64,` prefix."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) * 3 // 4 > limits.max_bytes:
        raise PayloadTooLarge(
            f"{field} is larger than {limits.max_bytes // (1024 * 1024)} MiB.", hint="Send a smaller image."
        )
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(
            f"{field} is not valid base64.", hint="Send the file's bytes base64-encoded (standard alphabet)."
        ) from None


def read_file(path: Path, *, field: str, limits: ImageLimits) -> bytes:
    if path.stat().st_size > limits.max_bytes:
        raise PayloadTooLarge(f"{field} is larger than {limits.max_bytes // (1024 * 1024)} MiB.")
    return path.read_bytes()


def decode_image(data: bytes, *, field: str, limits: ImageLimits, mode: str = "RGB") -> Image.Image:
    """Decode an encoded image fully, refusing undecodable data and decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise PayloadTooLarge(
                    f"{field} is {width}x{height} pixels, over the limit of {limits.max_pixels} pixels.",
                    hint="Downscale the image before sending it.",
                )
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(
            f"{field} could not be decoded as an image ({type(exc).__name__}).",
            hint="Send a PNG, JPEG or WebP file.",
        ) from None
    except Image.DecompressionBombWarning:
        raise PayloadTooLarge(f"{field} decodes to too many pixels.", hint="Downscale the image.") from None
    return image.convert(mode)
