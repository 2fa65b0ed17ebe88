"""Finding earlier results: the tool list_images, and the resource template imageforge://images/{name} that
answers an image's PNG. A caller with its own API key finds only the images of its own jobs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

from anyio import to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import BaseModel, Field

from imageforge.domain import Job, JobStatus, iso_time
from imageforge.errors import ImageforgeError
from imageforge.transports.mcp.results import IMAGE_URI_TEMPLATE, McpOptions, image_uri, image_url
from imageforge.transports.mcp.tools.toolkit import READING, Toolkit, base_url, caller_of

#: How many images list_images answers when the call does not say.
DEFAULT_LISTED = 20
MAX_LISTED = 100


class ListedImage(BaseModel):
    """One earlier result, as list_images describes it."""

    job_id: str
    prompt: str = Field(description="The prompt drawn (after a style's frame and prompt assist).")
    seed: int
    model: str
    width: int
    height: int
    style: str | None = None
    created_at: str | None = Field(description="When it was made, ISO 8601 in UTC.")
    output_path: str = Field(description="Where the full image is saved on the server's machine.")
    uri: str = Field(description="The image as an MCP resource (imageforge://images/<name>): resources/read.")
    url: str | None = Field(None, description="The image over HTTP, when the server is reached over HTTP.")


class ImageListOutput(BaseModel):
    """What list_images answers."""

    images: list[ListedImage] = Field(description="Newest first.")


def register_history(mcp: MCPServer, kit: Toolkit) -> None:
    """Add the tool list_images and the resource template imageforge://images/{name} to `mcp`."""
    service = kit.service

    @mcp.tool(
        title="List earlier images",
        description="List your recent finished images, newest first: job_id, prompt, seed, model, size, "
        "created_at, output_path, and uri (imageforge://images/<name>, which resources/read answers as the "
        "PNG) or url. Use it to find an image made earlier in this or another conversation; images are kept "
        "until their job expires.",
        annotations=READING,
    )
    async def list_images(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=MAX_LISTED, description="How many images, at most.")] = DEFAULT_LISTED,
    ) -> ImageListOutput:
        jobs = await to_thread.run_sync(
            functools.partial(service.list_jobs, (JobStatus.SUCCEEDED,), limit=limit, caller=caller_of(ctx))
        )
        origin = base_url(ctx)
        return ImageListOutput(images=[_listed(job, origin, kit.options) for job in jobs if job.result])

    @mcp.resource(
        IMAGE_URI_TEMPLATE,
        name="image",
        title="An image made by imageforge",
        description="The full-resolution PNG of an earlier result, by the file name in its output_path (the uri "
        "that the image tools and list_images answer).",
        mime_type="image/png",
    )
    async def read_image(name: str, ctx: Context) -> bytes:
        try:
            path = await to_thread.run_sync(functools.partial(service.image_path, name, caller=caller_of(ctx)))
            return await to_thread.run_sync(path.read_bytes)
        except ImageforgeError as exc:
            raise MCPError(INVALID_PARAMS, exc.message, data={"code": exc.code, "hint": exc.hint}) from exc
        except OSError as exc:  # removed between the lookup and the read
            raise MCPError(INVALID_PARAMS, f"No image '{name}'.", data={"code": "image_not_found"}) from exc


def _listed(job: Job, origin: str | None, options: McpOptions) -> ListedImage:
    result: dict[str, Any] = job.result or {}
    name = Path(result["output_path"]).name
    created = result.get("created_at") or iso_time(job.finished_at)
    return ListedImage(
        job_id=job.id,
        prompt=result["prompt"],
        seed=result["seed"],
        model=result["model"],
        width=result["width"],
        height=result["height"],
        style=result.get("style"),
        created_at=created,
        output_path=result["output_path"],
        uri=image_uri(name),
        url=image_url(name, origin, options),
    )
