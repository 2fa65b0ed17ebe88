"""Small image helpers for tests."""

from __future__ import annotations

import base64
import io

from PIL import Image


def png_base64(
    size: tuple[int, int] = (64, 64), color: int | tuple[int, int, int] = (200, 40, 40), mode: str = "RGB"
) -> str:
    """A solid-colour PNG, base64-encoded."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode_png(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))
