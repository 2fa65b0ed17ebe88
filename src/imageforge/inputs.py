"""Input images from clients: base64 payloads or paths confined to allowed roots, decoded safely."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from imageforge.errors import ImageforgeError, InvalidImage, InvalidRequest, PathForbidden, PayloadTooLarge

#: The formats an input image may have. Pillow can open dozens more, some through external programs
#: (EPS runs Ghostscript); a server decoding what strangers send keeps the parsers it exposes few.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
_FORMAT_HINT = "Send a PNG, JPEG or WebP file."
_WHITESPACE = str.maketrans("", "", " \t\r\n")


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
        try:
            candidate = _own_home(raw)
            if not candidate.is_absolute():
                candidate = self._root / candidate
            real = candidate.resolve()
        except (OSError, RuntimeError, ValueError):
            # A NUL byte, a name over the OS limit: not a path this server could read.
            raise InvalidRequest(
                f"{field} is not a usable path.", hint="Send a plain file path, or the image as base64."
            ) from None
        if not any(real.is_relative_to(root) for root in self._allowed):
            raise PathForbidden(
                f"{field} '{raw}' is outside the folders this server may read.",
                hint=f"This server reads images only under {', '.join(str(root) for root in self._allowed)}; "
                "IMAGEFORGE_INPUT_DIRS adds folders (a restart reads it). Or send the image itself as base64.",
            )
        try:
            exists, is_file = real.exists(), real.is_file()
        except OSError:
            exists = is_file = False
        if not exists:
            raise InvalidRequest(f"{field} '{raw}' does not exist.", hint="Check the path; it must name a file.")
        if not is_file:
            raise InvalidRequest(f"{field} '{raw}' is not a file.", hint="Name an image file, not a folder.")
        return real


def _own_home(raw: str) -> Path:
    """`raw` with a leading `~` or `~/` standing for the server user's home; `~name` stays a plain name.

    Expanding `~name` would read the password database, and whether a user exists would show in the answer.
    """
    if raw == "~" or raw.startswith("~/"):
        return Path(raw).expanduser()
    return Path(raw)


def require_text(value: str | None, *, field: str) -> None:
    """Refuse text that cannot be written as UTF-8: a lone surrogate (JSON's `"\\udfff"`) passes every other
    check and would fail only when the result is written, after the work."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"{field} holds a character that is not valid Unicode text (an unpaired surrogate at position "
            f"{exc.start}).",
            hint="Send the text as valid UTF-8; a \\ud800-\\udfff escape must be one half of a pair.",
        ) from None


def decode_base64(data: str, *, field: str, limits: ImageLimits) -> bytes:
    """The bytes of a base64 image, with or without a `data:image/...;base64,` prefix or line breaks."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    # `base64` and many encoders wrap their output at 76 columns.
    data = data.translate(_WHITESPACE)
    if len(data) * 3 // 4 > limits.max_bytes:
        raise PayloadTooLarge(f"{field} is larger than {_mib(limits.max_bytes)}.", hint="Send a smaller image.")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(
            f"{field} is not valid base64.", hint="Send the file's bytes base64-encoded (standard alphabet)."
        ) from None


def read_file(path: Path, *, field: str, limits: ImageLimits) -> bytes:
    """The bytes of an input file already confined by `InputPaths`, refused past `limits.max_bytes`."""
    try:
        with path.open("rb") as handle:
            # Read one byte past the limit rather than trusting a size taken before the read.
            data = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        raise InvalidRequest(
            f"{field} could not be read ({exc.strerror or type(exc).__name__}).",
            hint="Check that the file is readable by the server, or send the image as base64.",
        ) from None
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"{field} is larger than {_mib(limits.max_bytes)}.", hint="Send a smaller image.")
    return data


def decode_image(data: bytes, *, field: str, limits: ImageLimits, mode: str = "RGB") -> Image.Image:
    """Decode an encoded image fully, refusing undecodable data and decompression bombs."""
    too_many_pixels = f"{field} claims more pixels than the limit of {limits.max_pixels}."
    try:
        with warnings.catch_warnings():
            # Pillow warns, then refuses, past its own pixel limit; both mean a bomb here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width * height > limits.max_pixels:
                raise PayloadTooLarge(
                    f"{field} is {width}x{height} pixels, over the limit of {limits.max_pixels} pixels.",
                    hint="Downscale the image before sending it.",
                )
            image.load()
            # A camera's JPEG stores its pixels as the sensor saw them and the way to hold the photo in an EXIF
            # tag; a viewer turns it, and so does the model's input.
            return ImageOps.exif_transpose(image).convert(mode)
    except ImageforgeError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise PayloadTooLarge(too_many_pixels, hint="Downscale the image before sending it.") from None
    except Exception as exc:
        # Pillow's decoders raise many types on hostile input (OSError, SyntaxError, struct.error, IndexError…);
        # each is the client's bad file, never a server fault.
        raise InvalidImage(
            f"{field} could not be decoded as an image ({type(exc).__name__}).", hint=_FORMAT_HINT
        ) from None


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"
