"""LoRAs over MCP, through the official client on the tiny model: list_loras lists the folder's LoRAs, the image
tools take `loras` and report them, and what the folder does not offer is a tool error with the HTTP code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp.client.client import Client
from mcp_types import TextContent

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 5}


async def test_list_loras_names_the_loras_a_request_may_apply(mcp: Client, loras: Path) -> None:
    result = await mcp.call_tool("list_loras", {})

    assert not result.is_error
    assert result.structured_content is not None
    assert [lora["name"] for lora in result.structured_content["loras"]] == ["one", "two"]


async def test_generate_image_applies_the_loras_and_reports_them(mcp: Client, loras: Path) -> None:
    plain = await mcp.call_tool("generate_image", {"prompt": "a fox", **SMALL})
    applied = [{"name": "one", "weight": 1.5}, {"name": "two", "weight": 0.5}]
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "loras": applied, **SMALL})

    assert not result.is_error
    assert result.structured_content is not None
    assert plain.structured_content is not None
    assert result.structured_content["loras"] == applied
    assert not result.structured_content["cached"]
    assert result.structured_content["output_path"] != plain.structured_content["output_path"]


@pytest.mark.parametrize(
    ("name", "code"), [("watercolour", "lora_not_found"), ("pickled", "unsafe_weights"), ("../one", "path_forbidden")]
)
async def test_a_lora_the_folder_does_not_offer_is_a_tool_error_with_the_http_code(
    mcp: Client, loras: Path, name: str, code: str
) -> None:
    result = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "loras": [{"name": name}]})

    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    assert json.loads(block.text)["error"]["code"] == code


async def test_a_weight_outside_the_declared_bounds_is_refused_by_the_tool_schema(mcp: Client, loras: Path) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "loras": [{"name": "one", "weight": -3}]})

    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    error = json.loads(block.text)["error"]
    assert error["code"] == "invalid_request"
    assert "loras" in error["hint"]
