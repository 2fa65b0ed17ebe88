"""MCP tests run on anyio's pytest plugin, on asyncio (the event loop uvicorn and the MCP SDK use), mostly with the
official client connected in memory to the server on the real tiny model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from mcp.client.client import Client

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.service import ImageService
from imageforge.transports.mcp.server import McpOptions, build_mcp_server
from tests.gated import GatedBackend


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def mcp(service: ImageService) -> AsyncIterator[Client]:
    """The official MCP client on the test's service, with 512-pixel previews."""
    async with Client(build_mcp_server(service, McpOptions(preview_px=512))) as client:
        yield client


@pytest.fixture
def gated(settings: Settings) -> Iterator[tuple[ImageService, GatedBackend]]:
    """A started service whose jobs wait at each step until the test lets them go on (`GatedBackend`)."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings, backend=backend)
    service.start()
    try:
        yield service, backend
    finally:
        backend.release(1000)
        service.close()
