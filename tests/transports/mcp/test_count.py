"""`count` on the MCP image tools, through the official MCP client: several images with consecutive seeds in one
job, their previews within the result bound, one cancel for all of them, and each image cached as a single one."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.client.client import Client
from mcp_types import CallToolResult, ImageContent, ResourceLink
from PIL import Image

from imageforge.config import Settings
from imageforge.domain import JobStatus
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.mcp.server import build_mcp_server
from tests.gated import GatedBackend
from tests.loopback import serving_app
from tests.transports.mcp.answers import error_of

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2}
WAIT_S = 30.0
MEBIBYTE = 1024 * 1024


def _previews(result: CallToolResult) -> list[Image.Image]:
    blocks = [block for block in result.content if isinstance(block, ImageContent)]
    return [Image.open(io.BytesIO(base64.b64decode(block.data))) for block in blocks]


async def test_count_makes_that_many_images_with_consecutive_seeds_each_saved_and_previewed(mcp: Client) -> None:
    reported: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("step "):  # the queue and the model load report without a total
            reported.append((progress, total))

    result = await mcp.call_tool(
        "generate_image", {"prompt": "a fox", "seed": 40, "count": 3, **SMALL}, None, on_progress
    )

    assert not result.is_error
    structured = result.structured_content
    assert structured is not None
    images = structured["images"]
    assert [image["seed"] for image in images] == [40, 41, 42]
    paths = [Path(image["output_path"]) for image in images]
    assert len(set(paths)) == 3
    assert all(path.is_file() for path in paths)
    assert (structured["seed"], structured["output_path"]) == (40, images[0]["output_path"]), "the first, as before"
    assert [preview.size for preview in _previews(result)] == [(64, 64)] * 3
    assert reported == [(step, 6) for step in range(1, 7)], "the progress counts over all three images"


async def test_count_4_previews_of_large_images_stay_under_one_mebibyte(mcp: Client) -> None:
    arguments = {"prompt": "noise", "width": 1024, "height": 1024, "steps": 1, "count": 4}

    result = await mcp.call_tool("generate_image", arguments)

    assert not result.is_error
    assert result.structured_content is not None
    images = result.structured_content["images"]
    assert len(images) == 4
    assert all(Path(image["output_path"]).stat().st_size > MEBIBYTE for image in images), "the full images are large"
    assert len(_previews(result)) == 4
    assert len(result.model_dump_json(by_alias=True)) < MEBIBYTE


async def test_a_seeded_count_2_request_repeated_comes_from_the_cache_image_by_image(mcp: Client) -> None:
    request = {"prompt": "a fox", "seed": 9, "count": 2, **SMALL}

    first = await mcp.call_tool("generate_image", request)
    again = await mcp.call_tool("generate_image", request)
    second_alone = await mcp.call_tool("generate_image", {**request, "seed": 10, "count": 1})

    assert first.structured_content is not None
    assert again.structured_content is not None
    assert second_alone.structured_content is not None
    made, repeated = first.structured_content["images"], again.structured_content["images"]
    assert [image["cached"] for image in made] == [False, False]
    assert [image["cached"] for image in repeated] == [True, True]
    assert [image["output_path"] for image in repeated] == [image["output_path"] for image in made]
    assert second_alone.structured_content["cached"], "each image is cached as a request for its seed alone"
    assert second_alone.structured_content["output_path"] == made[1]["output_path"]


async def test_count_5_is_refused_with_invalid_request_naming_the_field(mcp: Client) -> None:
    refused = await mcp.call_tool("generate_image", {"prompt": "a fox", "count": 5})
    queued = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "count": 0})

    for result in (refused, queued):
        assert error_of(result)["code"] == "invalid_request"
        assert error_of(result)["message"].startswith("count:")
        assert error_of(result)["hint"].startswith("count: at least 1 and at most 4.")


async def test_one_cancel_stops_a_running_count_3_job_and_no_further_image_is_made(
    gated: tuple[ImageService, GatedBackend], settings: Settings
) -> None:
    service, backend = gated
    async with Client(build_mcp_server(service)) as mcp:
        submitted = await mcp.call_tool("submit_async_job", {"prompt": "slow", "count": 3, **SMALL})
        assert submitted.structured_content is not None
        job_id = submitted.structured_content["job_id"]
        # The first image's two steps, then the second image's first step.
        for _ in range(2):
            await anyio.to_thread.run_sync(backend.wait_for_step)
            backend.release(1)
        await anyio.to_thread.run_sync(backend.wait_for_step)

        running = await mcp.call_tool("get_job_status", {"job_id": job_id})
        cancelled = await mcp.call_tool("cancel_job", {"job_id": job_id})
        backend.release(1)
        ended = await anyio.to_thread.run_sync(lambda: service.wait_job(job_id, WAIT_S))
        result = await mcp.call_tool("get_job_result", {"job_id": job_id})

    assert running.structured_content is not None
    assert (running.structured_content["step"], running.structured_content["total"]) == (3, 6)
    assert cancelled.structured_content is not None
    assert cancelled.structured_content["status"] == "running"
    assert ended.status is JobStatus.CANCELLED
    assert ended.step == 3, "the third image never began"
    assert error_of(result)["code"] == "cancelled"
    assert list(settings.output_path.glob("*.png")) == [], "a cancelled job leaves no images behind"


async def test_over_http_each_image_has_its_own_link(service: ImageService) -> None:
    with serving_app(create_app(service)) as server_url:
        async with Client(f"{server_url}/mcp") as mcp:
            result = await mcp.call_tool("generate_image", {"prompt": "a fox", "seed": 3, "count": 2, **SMALL})

        assert result.structured_content is not None
        images = result.structured_content["images"]
        links = [block for block in result.content if isinstance(block, ResourceLink)]
        assert [link.uri for link in links] == [image["url"] for image in images]
        assert images[0]["url"] == result.structured_content["url"]
        for image, link in zip(images, links, strict=True):
            response = httpx.get(link.uri)
            assert response.status_code == 200
            assert response.content == Path(image["output_path"]).read_bytes()
