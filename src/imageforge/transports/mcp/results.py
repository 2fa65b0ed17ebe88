"""What the tools answer: the structured outputs, an image as preview, metadata and link, a failure as the HTTP
API's error body."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mcp_types import CallToolResult, ContentBlock, TextContent
from pydantic import BaseModel, Field

from imageforge.domain import ImageDescription, ImageResult, ResultImage, StyleTemplate
from imageforge.errors import ImageforgeError
from imageforge.transports.mcp.content import PREVIEW_BUDGET_BYTES, image_link, metadata_content, preview_content

#: What an image tool's description says of its result.
RESULT_NOTE = (
    " Returns an inline preview (at most IMAGEFORGE_MCP_PREVIEW_PX px; some clients do not show it, so tell the "
    "user the saved output_path, and the url when given), the metadata (seed, model, steps, size, elapsed_s, "
    "output_path, url) and, over HTTP, a link to the full-resolution image. A seed makes the image reproducible. "
    "With count, one preview and one link per image, and every image's seed, output_path and url under images."
)


@dataclass(frozen=True)
class McpOptions:
    """How the MCP surface presents results."""

    #: longest side of the inline preview
    preview_px: int = 512
    #: what follows an image link to open it without an API key ("?exp=…&sig=…", "" when none is needed)
    image_query: Callable[[str], str] = lambda name: ""
    #: how often a drawing tool repeats its last progress notification while its job shows nothing new (a queue
    #: wait, a model download), so that a client that resets its timeout on progress keeps waiting
    progress_every_s: float = 10.0


class OutputImage(ResultImage):
    """One image of an image tool's result: its seed, where it is saved (a local copy through the remote proxy),
    and its link over HTTP."""

    url: str | None = Field(None, description="The full image over HTTP, when the server is reached over HTTP.")
    uri: str = Field(description="The full image as an MCP resource (imageforge://images/<name>).")
    remote_output_path: str | None = Field(None, description="Through the remote proxy: the server's own path.")


class ImageOutput(ImageDescription):
    """The structured result of the image tools: the first image's description and where the full image is, and
    every image of the request (`count` of them) under `images`."""

    job_id: str
    output_path: str = Field(
        description="Where the full image is saved: on the server's machine, or this machine's copy through the "
        "remote proxy."
    )
    remote_output_path: str | None = Field(None, description="Through the remote proxy: the server's own path.")
    url: str | None = Field(None, description="The full image over HTTP, when the server is reached over HTTP.")
    uri: str = Field(
        description="The full image as an MCP resource of the server that made it (imageforge://images/<name>): "
        "resources/read answers the PNG."
    )
    images: list[OutputImage] = Field(
        description="Every image, with consecutive seeds; the first is the one described above."
    )


class JobOutput(BaseModel):
    """A job's state, as the async tools report it."""

    job_id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled.")
    queue_position: int | None = Field(None, description="1 = next to run; 0 = running; null once ended.")
    step: int
    total: int
    eta_s: float | None = Field(
        None,
        description="About how many seconds until the job ends, from recent step and run times; null once ended "
        "or when nothing has run yet to go by.",
    )
    error: dict[str, str] | None = None
    expires_at: str | None = Field(
        None, description="When the result is gone (ISO 8601, UTC), as GET /jobs/{id} says it; null until it ends."
    )
    message: str | None = Field(
        None, description="What the call did, when the status does not say it (cancel_job on a running job)."
    )
    next: str = Field(description="What to do next.")


class StyleListOutput(BaseModel):
    """What list_styles answers: the style templates the drawing tools' `style` argument takes."""

    styles: list[StyleTemplate] = Field(
        description="Each style: its key (the `style` argument), title, what it is for, its prompt frame, size "
        "and suggested negative prompt."
    )


#: The MCP resource of a result image, by its file name.
IMAGE_URI_TEMPLATE = "imageforge://images/{name}"


def image_uri(name: str) -> str:
    """The MCP resource of the result image called `name`."""
    return IMAGE_URI_TEMPLATE.format(name=name)


def image_url(name: str, base_url: str | None, options: McpOptions) -> str | None:
    """The result image called `name` on the HTTP API, when the client came over HTTP (`base_url`)."""
    return f"{base_url}/images/{name}{options.image_query(name)}" if base_url else None


def image_result(job_id: str, result: ImageResult, base_url: str | None, options: McpOptions) -> CallToolResult:
    """A job's images as a tool result: an inline preview of each (together within the preview budget), the
    metadata, and a link to each full image: on the HTTP API when the client came over HTTP (`base_url`), else the
    MCP resource."""
    images = [
        OutputImage(
            seed=image.seed,
            output_path=image.output_path,
            cached=image.cached,
            elapsed_s=image.elapsed_s,
            url=image_url(Path(image.output_path).name, base_url, options),
            uri=image_uri(Path(image.output_path).name),
        )
        for image in result.images
    ]
    output = ImageOutput(
        **result.described().model_dump(),
        job_id=job_id,
        output_path=images[0].output_path,
        url=images[0].url,
        uri=images[0].uri,
        images=images,
    )
    structured = output.model_dump(mode="json")
    budget = PREVIEW_BUDGET_BYTES // len(images)
    previews = [preview_content(image.png, options.preview_px, budget) for image in result.images]
    content: list[ContentBlock] = [*previews, metadata_content(structured)]
    for image, listed in zip(result.images, images, strict=True):
        content.append(image_link(listed.url or listed.uri, Path(image.output_path).name, len(image.png)))
    return CallToolResult(content=content, structured_content=structured)


def structured_result(output: BaseModel) -> CallToolResult:
    """`output` as a tool result: structured content, and the same as text for clients that show only text."""
    structured = output.model_dump(mode="json")
    return CallToolResult(content=[metadata_content(structured)], structured_content=structured)


#: The HTTP API's names of the input images, as the service's errors say them, and what the MCP tools call them.
_AGENT_TERMS = {"init_image_path": "image", "mask_image_path": "mask", "init_image": "image", "mask_image": "mask"}
_HTTP_TERM = re.compile(r"\b(" + "|".join(sorted(_AGENT_TERMS, key=len, reverse=True)) + r")\b")


def error_result(exc: ImageforgeError) -> CallToolResult:
    """A failed tool call: the HTTP API's error body with the tools' names for what it names, as text an agent
    reads."""
    message, hint = (_HTTP_TERM.sub(lambda match: _AGENT_TERMS[match[1]], text) for text in (exc.message, exc.hint))
    body = {"error": {"code": exc.code, "message": message, "hint": hint}}
    return CallToolResult(content=[TextContent(text=json.dumps(body))], is_error=True)
