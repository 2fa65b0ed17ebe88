"""The `sampler` and `schedule` arguments of the MCP image tools, through the official MCP client on the tiny
model: the tools take them as declared, and refuse what HTTP refuses with the same code."""

from __future__ import annotations

import json

import pytest
from mcp.client.client import Client
from mcp_types import TextContent

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 5}


async def test_generate_image_runs_the_sampler_and_schedule_asked_for_and_reports_them(mcp: Client) -> None:
    arguments = {"prompt": "a fox", "sampler": "unipc", "schedule": "karras", **SMALL}
    result = await mcp.call_tool("generate_image", arguments)

    assert not result.is_error
    assert result.structured_content is not None
    assert (result.structured_content["sampler"], result.structured_content["schedule"]) == ("unipc", "karras")


async def test_a_schedule_the_sampler_does_not_run_is_a_tool_error_with_the_http_code(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "sampler": "lcm", "schedule": "exponential"})

    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    error = json.loads(block.text)["error"]
    assert error["code"] == "invalid_request"
    assert "unipc" in error["hint"]


async def test_a_sampler_outside_the_declared_choices_is_refused_by_the_tool_schema(mcp: Client) -> None:
    result = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "sampler": "dpm_fast"})

    assert result.is_error
    block = result.content[0]
    assert isinstance(block, TextContent)
    error = json.loads(block.text)["error"]
    assert error["code"] == "invalid_request"
    assert "euler_a" in error["hint"]
