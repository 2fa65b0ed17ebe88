"""What a tool result carries to the agent: a preview that fits client limits, the metadata, a link.

MCP clients cap a tool result (Claude's at 1 MiB) and some resize or drop large images; a full-resolution PNG
of a 1024x1024 image is several MB as base64. The preview is therefore bounded twice: in pixels
(`IMAGEFORGE_MCP_PREVIEW_PX`) and in encoded bytes, falling back from PNG to JPEG and then to smaller sizes.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

from mcp_types import ImageContent, ResourceLink, TextContent
from PIL import Image

#: The most base64 bytes the inline preview may take; the rest of the 1 MiB is metadata and framing.
PREVIEW_BUDGET_BYTES = 768 * 1024
_JPEG_QUALITIES = (90, 80, 65)


def preview_content(png: bytes, max_px: int, budget_bytes: int = PREVIEW_BUDGET_BYTES) -> ImageContent:
    """The image as an inline preview: at most `max_px` on its longest side and `budget_bytes` in base64."""
    with Image.open(io.BytesIO(png)) as original:
        original.load()
        image = original.convert("RGB")
    side = max_px
    while True:
        candidate = image.copy()
        candidate.thumbnail((side, side))
        for mime, data in _encodings(candidate):
            encoded = base64.b64encode(data).decode()
            if len(encoded) <= budget_bytes:
                return ImageContent(data=encoded, mime_type=mime)
        side = max(1, side * 3 // 4)


def _encodings(image: Image.Image) -> Iterator[tuple[str, bytes]]:
    """PNG first (exact, and what the image is), then JPEG at falling quality; each made only when the one
    before it was over budget. The PNG uses zlib's fastest level: at 512 px, `optimize` cost ~150 ms a call
    for a file about 15% smaller (docs/benchmarks.md)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    yield "image/png", buffer.getvalue()
    for quality in _JPEG_QUALITIES:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        yield "image/jpeg", buffer.getvalue()


def metadata_content(metadata: dict[str, Any]) -> TextContent:
    """The metadata as pretty JSON text: what clients that ignore structured content still show."""
    return TextContent(text=json.dumps(metadata, indent=2))


def image_link(url: str, name: str, size: int) -> ResourceLink:
    """A link to the full-resolution image on the HTTP API."""
    return ResourceLink(uri=url, name=name, mime_type="image/png", size=size, description="The full-resolution image.")
