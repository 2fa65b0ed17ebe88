"""Reading a tool's answer: its error body, or its structured content."""

from __future__ import annotations

import json
from typing import Any

from mcp_types import CallToolResult, TextContent


def error_of(result: CallToolResult) -> dict[str, str]:
    """The `{code, message, hint}` of a failed call (every tool error has exactly these)."""
    assert result.is_error, result.content
    block = result.content[0]
    assert isinstance(block, TextContent)
    error: dict[str, str] = json.loads(block.text)["error"]
    assert set(error) == {"code", "message", "hint"}
    return error


def structured_of(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a call that worked."""
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured
