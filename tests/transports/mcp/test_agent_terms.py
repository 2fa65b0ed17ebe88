"""What an agent reading only the tool schemas meets: schemas that say every bound this server keeps and refuse
arguments they do not declare, input images in the forms an agent has them, and errors in the tools' own terms.
Through the official MCP client, in memory, on the real tiny model."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from mcp.client.client import Client

from imageforge.config import Settings
from imageforge.transports.mcp.server import build_mcp_server
from tests.transports.mcp.answers import error_of

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2}
DRAWING_TOOLS = ("generate_image", "edit_image", "inpaint_image", "submit_async_job")


async def _drawn(mcp: Client) -> Path:
    """The saved path of a fresh 64-pixel image."""
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", **SMALL})
    assert result.structured_content is not None, result.content
    return Path(result.structured_content["output_path"])


async def test_an_unknown_argument_is_refused_naming_it_and_the_tools_arguments(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "num_images": 4, **SMALL})

    error = error_of(result)
    assert error["code"] == "invalid_request"
    assert "num_images" in error["message"]
    assert "prompt" in error["hint"]
    assert "width" in error["hint"]


async def test_every_tool_has_a_title_and_its_input_schema_refuses_undeclared_arguments(mcp: Client) -> None:
    tools = (await mcp.list_tools()).tools

    for tool in tools:
        assert tool.title, tool.name
        assert tool.input_schema.get("additionalProperties") is False, tool.name
    reading = {tool.name: tool.annotations for tool in tools if tool.name in ("get_job_status", "list_models")}
    assert all(annotations and annotations.idempotent_hint for annotations in reading.values())


async def test_the_schemas_carry_this_servers_size_step_and_model_bounds(settings: Settings) -> None:
    from imageforge.bootstrap import build_service

    guarded = settings.model_copy(update={"max_res": 512, "max_steps": 12})
    service = build_service(guarded)
    async with Client(build_mcp_server(service)) as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
    listed = {model.key: model.available for model in service.list_models().models}

    for name in DRAWING_TOOLS:
        properties = tools[name].input_schema["properties"]
        if name != "inpaint_image":  # an inpainted image has its input's size
            [width] = [branch for branch in properties["width"]["anyOf"] if branch["type"] == "integer"]
            assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 512, 8), name
        [steps] = [branch for branch in properties["steps"]["anyOf"] if branch["type"] == "integer"]
        [model] = [branch for branch in properties["model"]["anyOf"] if branch["type"] == "string"]
        assert (steps["minimum"], steps["maximum"]) == (1, 12), name
        assert set(model["enum"]) == {key for key, available in listed.items() if available}, name
        [style] = [branch for branch in properties["style"]["anyOf"] if branch["type"] == "string"]
        assert set(style["enum"]) == {template.key for template in service.list_templates()}, name
    assert "flux-q4" in listed, "the catalog lists a guarded model"
    assert "flux-q4" not in model["enum"], "a model whose guard is closed is not offered"
    [strength] = [b for b in tools["edit_image"].input_schema["properties"]["strength"]["anyOf"] if b["type"] != "null"]
    assert (strength["exclusiveMinimum"], strength["maximum"]) == (0, 1)
    submit = tools["submit_async_job"].input_schema
    task = submit["$defs"][submit["properties"]["task"]["$ref"].rsplit("/", 1)[-1]]
    assert set(task["enum"]) == {"text2img", "img2img", "inpaint"}


async def test_edit_image_takes_a_path_base64_a_data_url_or_an_earlier_results_uri(
    mcp: Client, settings: Settings
) -> None:
    drawn = await _drawn(mcp)
    encoded = base64.b64encode(drawn.read_bytes()).decode()
    forms = {
        "path": str(drawn),
        "base64": encoded,
        "data URL": f"data:image/png;base64,{encoded}",
        "result URI": f"imageforge://images/{drawn.name}",
    }

    for form, image in forms.items():
        result = await mcp.call_tool("edit_image", {"prompt": "at night", "image": image, "steps": 2})
        assert result.structured_content is not None, (form, result.content)
        assert result.structured_content["task"] == "img2img", form
        assert (result.structured_content["width"], result.structured_content["height"]) == (64, 64), form


async def test_edit_image_draws_at_the_size_it_is_given(mcp: Client) -> None:
    drawn = await _drawn(mcp)

    result = await mcp.call_tool(
        "edit_image", {"prompt": "wider", "image": str(drawn), "width": 128, "height": 64, "steps": 2}
    )

    assert result.structured_content is not None, result.content
    assert (result.structured_content["width"], result.structured_content["height"]) == (128, 64)


async def test_a_forbidden_path_is_refused_in_the_tools_terms_naming_the_folders_it_may_read(
    mcp: Client, settings: Settings
) -> None:
    result = await mcp.call_tool("edit_image", {"prompt": "a fox", "image": "/etc/passwd"})

    error = error_of(result)
    assert error["code"] == "path_forbidden"
    assert error["message"].startswith("image '/etc/passwd'")
    assert "init_image" not in error["message"] + error["hint"]
    assert str(settings.output_path.resolve()) in error["hint"]
    assert "IMAGEFORGE_INPUT_DIRS" in error["hint"]


async def test_an_unknown_result_uri_is_image_not_found(mcp: Client) -> None:
    result = await mcp.call_tool("edit_image", {"prompt": "a fox", "image": "imageforge://images/nope.png"})

    assert error_of(result)["code"] == "image_not_found"


async def test_an_unknown_model_is_answered_with_the_models_that_can_run_now(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "model": "nope", **SMALL})

    error = error_of(result)
    assert error["code"] == "model_not_found"
    assert "tiny" in error["hint"]
    assert "flux" not in error["hint"], "a model whose guard is closed cannot run"
    assert "GET /models or list_models" in error["hint"]


async def test_a_wrong_type_is_the_same_error_body_without_library_links(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "width": "wide"})

    error = error_of(result)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("width:")
    assert "http" not in error["message"] + error["hint"]
