"""Prompt assist through the MCP tools (the official MCP client, in memory), with OLLAMA_URL pointing at a fake
Ollama on loopback, on the tiny model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from mcp.client.client import Client

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.mcp.server import McpOptions, build_mcp_server
from tests.fake_ollama import TAGS, FakeOllama, Mode, expansion_of, serving_fake_ollama

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2}
MODEL = "gemma4:latest"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with serving_fake_ollama(models=(MODEL,)) as fake:
        yield fake


@pytest.fixture
async def mcp(settings: Settings, ollama: FakeOllama) -> AsyncIterator[Client]:
    service = build_service(settings.model_copy(update={"ollama_url": ollama.url, "ollama_model": MODEL}))
    service.start()
    try:
        async with Client(build_mcp_server(service, McpOptions())) as client:
            yield client
    finally:
        service.close()


async def test_assist_prompt_returns_the_expansion_in_the_style_asked(mcp: Client, ollama: FakeOllama) -> None:
    result = await mcp.call_tool("assist_prompt", {"prompt": "a red fox", "style": "pencil sketch"})

    assert not result.is_error
    assert result.structured_content == {
        "prompt": expansion_of("a red fox"),
        "original_prompt": "a red fox",
        "tags": TAGS,
        "source": "ollama",
        "assisted": True,
        "reason": "",
    }
    [prompt] = ollama.prompts
    assert "pencil sketch" in prompt


async def test_generate_image_with_assist_reports_the_original_and_expanded_prompts(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a red fox", "assist": True, **SMALL})

    assert not result.is_error, result.content
    output = result.structured_content
    assert output is not None
    assert (output["prompt"], output["original_prompt"]) == (expansion_of("a red fox"), "a red fox")
    assert output["assisted"] is True
    assert output["assist"] == {"source": "ollama", "reason": "", "tags": TAGS}


async def test_generate_image_with_assist_draws_the_prompt_and_says_why_when_ollama_fails(
    mcp: Client, ollama: FakeOllama
) -> None:
    ollama.mode = Mode.MALFORMED

    result = await mcp.call_tool("generate_image", {"prompt": "a red fox", "assist": True, **SMALL})

    assert not result.is_error, result.content
    output = result.structured_content
    assert output is not None
    assert (output["prompt"], output["assisted"]) == ("a red fox", False)
    assert output["assist"]["source"] == "passthrough"
    assert output["assist"]["reason"].startswith("Ollama's answer was not the expected JSON")
