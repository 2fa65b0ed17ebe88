"""The drawing tools' `style` argument and list_styles, through the official MCP client on the real tiny model.

The server's MAX_RES is 128 here, so each template's size comes scaled down (icon 512x512 → 128x128, photo
768x512 → 128x64): small images, and the scaling shown on the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp.client.client import Client
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.prompting.templates import BUILTIN_TEMPLATES
from imageforge.service import ImageService
from imageforge.transports.mcp.server import build_mcp_server
from tests.transports.mcp.answers import error_of, structured_of

pytestmark = pytest.mark.anyio

ONE_STEP = {"steps": 1}


@pytest.fixture
def small_service(settings: Settings) -> Iterator[ImageService]:
    service = build_service(settings.model_copy(update={"max_res": 128}))
    service.start()
    yield service
    service.close()


@pytest.fixture
async def mcp(small_service: ImageService) -> AsyncIterator[Client]:
    async with Client(build_mcp_server(small_service)) as client:
        yield client


async def test_a_style_wraps_the_prompt_in_its_template_at_its_size_with_its_negative_prompt(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a paper plane", "style": "icon", **ONE_STEP})

    drawn = structured_of(result)
    assert str(drawn["prompt"]).startswith("a flat vector clipart icon of a paper plane, ")
    assert str(drawn["negative_prompt"]).startswith("photorealistic, 3d render")
    assert (drawn["width"], drawn["height"]) == (128, 128), "icon's 512x512, scaled to MAX_RES"
    assert drawn["style"] == "icon"
    with Image.open(str(drawn["output_path"])) as saved:
        assert saved.size == (128, 128)


async def test_the_size_and_negative_prompt_the_caller_gives_win_over_the_styles(mcp: Client) -> None:
    arguments = {"prompt": "a fox", "style": "photo", "width": 64, "height": 64, "negative_prompt": "cats"}
    result = await mcp.call_tool("generate_image", {**arguments, **ONE_STEP})

    drawn = structured_of(result)
    assert str(drawn["prompt"]).startswith("a photograph of a fox, ")
    assert (drawn["width"], drawn["height"], drawn["negative_prompt"]) == (64, 64, "cats")


async def test_an_edit_in_a_style_keeps_the_input_images_size(mcp: Client, settings: Settings) -> None:
    source = settings.output_path / "source.png"
    source.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), "white").save(source)

    result = await mcp.call_tool("edit_image", {"prompt": "a fox", "style": "sketch", "image": str(source), "steps": 2})

    drawn = structured_of(result)
    assert str(drawn["prompt"]).startswith("a graphite pencil sketch of a fox, ")
    assert (drawn["width"], drawn["height"]) == (64, 64)


async def test_submit_async_job_takes_a_style_too(mcp: Client, small_service: ImageService) -> None:
    submitted = structured_of(await mcp.call_tool("submit_async_job", {"prompt": "a fox", "style": "photo"}))

    job = small_service.get_job(str(submitted["job_id"]))
    assert str(job.payload["prompt"]).startswith("a photograph of a fox, ")
    assert (job.payload["width"], job.payload["height"], job.payload["style"]) == (128, 64, "photo")


async def test_an_unknown_style_is_refused_with_template_not_found_and_the_keys(
    mcp: Client, small_service: ImageService
) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "style": "watercolour"})

    error = error_of(result)
    assert error["code"] == "template_not_found"
    assert "Use one of: whiteboard, icon, illustration, photo, sketch, poster" in error["hint"]
    assert "list_styles" in error["hint"]
    assert small_service.list_jobs() == [], "nothing was queued"


async def test_list_styles_gives_each_styles_key_title_purpose_and_size(mcp: Client) -> None:
    tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
    result = await mcp.call_tool("list_styles", {})

    styles = structured_of(result)["styles"]
    assert isinstance(styles, list)
    assert [style["key"] for style in styles] == [template.key for template in BUILTIN_TEMPLATES]
    icon = next(style for style in styles if style["key"] == "icon")
    assert (icon["title"], icon["width"], icon["height"]) == ("Flat clipart icon", 512, 512)
    assert "clipart icon" in icon["description"]
    assert tools["list_styles"].annotations is not None
    assert tools["list_styles"].annotations.read_only_hint is True
    assert "styles" in (tools["list_styles"].output_schema or {}).get("properties", {})


async def test_the_styles_of_the_templates_file_are_styles_too(settings: Settings, tmp_path: Path) -> None:
    templates = tmp_path / "templates.toml"
    templates.write_text('[templates.blueprint]\ntitle = "Blueprint"\nbody = "a blueprint of {subject}"\n')
    service = build_service(settings.model_copy(update={"templates_file": templates, "max_res": 128}))
    service.start()
    try:
        async with Client(build_mcp_server(service)) as mcp:
            listed = structured_of(await mcp.call_tool("list_styles", {}))["styles"]
            drawn = structured_of(await mcp.call_tool("generate_image", {"prompt": "a bridge", "style": "blueprint"}))
    finally:
        service.close()

    assert isinstance(listed, list)
    assert listed[-1]["key"] == "blueprint"
    assert (drawn["prompt"], drawn["width"]) == ("a blueprint of a bridge", 128)
