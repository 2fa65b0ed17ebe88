"""The `decoder` argument of the MCP image tools, through the official MCP client on the real tiny model."""

from __future__ import annotations

import json

import pytest
from mcp.client.client import Client
from mcp_types import TextContent

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 5}


async def test_generate_image_with_the_fast_decoder_reports_it_and_how_the_engine_ran(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "decoder": "fast", **SMALL})

    assert not result.is_error
    structured = result.structured_content
    assert structured is not None
    assert structured["decoder"] == "fast"
    assert structured["runtime"]["decoder"] == "fast"
    assert structured["runtime"]["attention"] == "sdpa"


async def test_a_bad_decoder_is_a_tool_error_with_the_http_code(mcp: Client) -> None:
    result = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "decoder": "turbo"})

    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    error = json.loads(block.text)["error"]
    assert error["code"] == "invalid_request"
    assert "full" in error["hint"]
