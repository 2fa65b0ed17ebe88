"""MCP tests run on anyio's pytest plugin, on asyncio (the event loop uvicorn and the MCP SDK use)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
