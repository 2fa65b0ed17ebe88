"""The stable-diffusion.cpp engine through the MCP tools: generate, edit and cancel on a real `sd-server` child."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp.client.client import Client

from imageforge.bootstrap import build_sdcpp_backend, build_service
from imageforge.config import Settings
from imageforge.domain import JobStatus
from imageforge.service import ImageService
from imageforge.transports.mcp.server import build_mcp_server
from tests.gated import GatedBackend
from tests.sdcpp.conftest import SMALL, WAIT_S, sd_server_children
from tests.transports.mcp.answers import error_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def gated_service(sdcpp_settings: Settings) -> Iterator[tuple[ImageService, GatedBackend]]:
    backend = GatedBackend(build_sdcpp_backend(sdcpp_settings))
    service = build_service(sdcpp_settings, sdcpp=backend)
    service.start()
    try:
        yield service, backend
    finally:
        backend.release(1000)
        service.close()


async def test_generate_and_edit_image_tools_run_on_the_child(sdcpp_service: ImageService) -> None:
    async with Client(build_mcp_server(sdcpp_service)) as mcp:
        made = await mcp.call_tool("generate_image", {"prompt": "a lighthouse", "seed": 3, **SMALL})
        assert made.structured_content is not None, made.content
        path = Path(made.structured_content["output_path"])
        edited = await mcp.call_tool("edit_image", {"prompt": "at night", "image": str(path), "strength": 1.0, **SMALL})

    assert path.is_file()
    assert made.structured_content["model"] == SMALL["model"]
    assert edited.structured_content is not None, edited.content
    assert edited.structured_content["task"] == "img2img"
    assert Path(edited.structured_content["output_path"]).is_file()


async def test_cancel_job_stops_a_running_job_on_the_child(gated_service: tuple[ImageService, GatedBackend]) -> None:
    service, backend = gated_service
    async with Client(build_mcp_server(service)) as mcp:
        submitted = await mcp.call_tool("submit_async_job", {"prompt": "slow", **SMALL})
        assert submitted.structured_content is not None, submitted.content
        job_id = submitted.structured_content["job_id"]
        await anyio.to_thread.run_sync(backend.wait_for_step)
        [child] = sd_server_children()

        cancelled = await mcp.call_tool("cancel_job", {"job_id": job_id})
        backend.release(1)
        ended = await anyio.to_thread.run_sync(lambda: service.wait_job(job_id, WAIT_S))
        result = await mcp.call_tool("get_job_result", {"job_id": job_id})

    assert cancelled.structured_content is not None
    assert ended.status is JobStatus.CANCELLED
    assert error_of(result)["code"] == "cancelled"
    assert child not in sd_server_children(), "sd-server cannot stop a running job: its child was stopped"
