"""Style templates over MCP: a resource and a prompt per template, through the official client in memory."""

from __future__ import annotations

import json

import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import GetPromptResult, TextContent, TextResourceContents

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.prompting.templates import BUILTIN_TEMPLATES
from imageforge.transports.mcp.server import build_mcp_server

pytestmark = pytest.mark.anyio


def _text(result: GetPromptResult) -> str:
    [message] = result.messages
    assert message.role == "user"
    assert isinstance(message.content, TextContent)
    return message.content.text


def _arguments(text: str) -> dict[str, object]:
    """The generate_image arguments the prompt hands the agent: the one JSON line of its message."""
    [line] = [line for line in text.splitlines() if line.startswith("{")]
    arguments: dict[str, object] = json.loads(line)
    return arguments


async def test_every_template_is_listed_as_a_json_resource(mcp: Client) -> None:
    resources = {resource.uri: resource for resource in (await mcp.list_resources()).resources}

    for template in BUILTIN_TEMPLATES:
        resource = resources[f"imageforge://templates/{template.key}"]
        assert resource.mime_type == "application/json"
        assert resource.title == template.title


async def test_reading_a_template_resource_returns_the_template(mcp: Client) -> None:
    result = await mcp.read_resource("imageforge://templates/poster")

    [contents] = result.contents
    assert isinstance(contents, TextResourceContents)
    assert json.loads(contents.text) == next(t for t in BUILTIN_TEMPLATES if t.key == "poster").model_dump()


async def test_every_template_is_listed_as_a_style_prompt_with_a_required_subject(mcp: Client) -> None:
    prompts = {prompt.name: prompt for prompt in (await mcp.list_prompts()).prompts}

    assert set(prompts) == {f"style_{template.key}" for template in BUILTIN_TEMPLATES}
    for template in BUILTIN_TEMPLATES:
        [argument] = prompts[f"style_{template.key}"].arguments or []
        assert (argument.name, argument.required) == ("subject", True)


async def test_each_style_prompt_renders_its_own_template(mcp: Client) -> None:
    for template in BUILTIN_TEMPLATES:
        text = _text(await mcp.get_prompt(f"style_{template.key}", {"subject": "a red fox"}))

        assert "generate_image" in text
        assert "edit" in text, "the agent is told the prompt is a starting point"
        assert _arguments(text) == {
            "prompt": template.render("a red fox"),
            "width": template.width,
            "height": template.height,
            "negative_prompt": template.negative_prompt,
        }


async def test_the_prompts_arguments_draw_an_image_at_the_templates_size(mcp: Client) -> None:
    text = _text(await mcp.get_prompt("style_icon", {"subject": "a fox"}))

    result = await mcp.call_tool("generate_image", {**_arguments(text), "steps": 1})

    assert not result.is_error
    assert result.structured_content is not None
    assert (result.structured_content["width"], result.structured_content["height"]) == (512, 512)
    assert result.structured_content["prompt"].startswith("a flat vector clipart icon of a fox, ")


async def test_an_empty_subject_is_a_protocol_error_that_says_so(mcp: Client) -> None:
    with pytest.raises(MCPError, match="subject is empty"):
        await mcp.get_prompt("style_photo", {"subject": " "})


async def test_templates_from_the_templates_file_get_a_resource_and_a_prompt(settings: Settings) -> None:
    (settings.root_dir / "templates.toml").write_text('[templates.blueprint]\nbody = "a blueprint of {subject}"\n')
    service = build_service(settings)

    try:
        async with Client(build_mcp_server(service)) as mcp:
            resource = await mcp.read_resource("imageforge://templates/blueprint")
            prompt = await mcp.get_prompt("style_blueprint", {"subject": "a bridge"})
    finally:
        service.close()

    [contents] = resource.contents
    assert isinstance(contents, TextResourceContents)
    assert json.loads(contents.text)["body"] == "a blueprint of {subject}"
    assert _arguments(_text(prompt)) == {"prompt": "a blueprint of a bridge", "width": 512, "height": 512}
