"""The generation request is declared once (`imageforge.domain.REQUEST_FIELDS`), and every surface agrees with
it: the OpenAPI schema of the HTTP bodies, the MCP image tools' input schemas and the CLI's `generate` options
show each field under its name with the declared default, bounds and description; the web page's number inputs
stay within the bounds, and the Python client's options are the declared fields.

Changing a default or a bound on one surface only fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_origin, get_type_hints

import anyio
import pytest
import typer
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from imageforge.cli.main import app as cli_app
from imageforge.client import GenerationOptions
from imageforge.domain import DEFAULT_STRENGTH, HTTP_NAMES, REQUEST_FIELDS, Task, TextToImageFields, declared_enum
from imageforge.service import ImageService
from imageforge.transports.mcp.server import build_mcp_server
from imageforge.transports.web.ui import STATIC_DIR

#: JSON Schema's name for each pydantic bound.
SCHEMA_BOUNDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
    "min_length": "minLength",
    "max_length": "maxLength",
}
#: JSON Schema's name for a length bound on a list (`webhook_events`, `loras`).
LIST_BOUNDS = {"minLength": "minItems", "maxLength": "maxItems"}
#: The HTTP bodies and what their `strength` defaults to (absent: the body has none).
BODIES = {
    "GenerateBody": None,
    "EditBody": DEFAULT_STRENGTH[Task.IMG2IMG],
    "InpaintBody": DEFAULT_STRENGTH[Task.INPAINT],
    "JobBody": REQUEST_FIELDS["strength"].default,
}
IMAGE_TOOLS = ("generate_image", "edit_image", "inpaint_image", "submit_async_job")
#: Surface names that are not the declared name.
MCP_NAMES = {"assist": "assist_prompt"}
CLI_NAMES = {"negative": "negative_prompt", "assist": "assist_prompt"}
HTTP_WIRE_NAMES = {wire: name for name, wire in HTTP_NAMES.items()}
#: What a surface takes besides the declared request fields.
MCP_OWN = {"image", "mask"}
#: What an MCP input schema adds from the running server: its MAX_RES and MAX_STEPS, the models it can run.
SERVER_BOUNDS = {
    "width": {"maximum", "multipleOf"},
    "height": {"maximum", "multipleOf"},
    "steps": {"maximum"},
    "model": {"enum"},
    "style": {"enum"},
}
HTTP_OWN = {"init_image", "init_image_path", "mask_image", "mask_image_path"}


def declared_schema(name: str) -> dict[str, Any]:
    """The default, bounds, choices and description the declaration gives `name`, as JSON Schema says them."""
    field = REQUEST_FIELDS[name]
    expected: dict[str, Any] = {"description": field.description}
    if not field.is_required():
        assert field.annotation is not None, name
        expected["default"] = TypeAdapter[Any](field.annotation).dump_python(field.default, mode="json")
    listed = get_origin(field.annotation) in (tuple, list)
    for rule in field.metadata:
        for bound, keyword in SCHEMA_BOUNDS.items():
            if getattr(rule, bound, None) is not None:
                expected[LIST_BOUNDS.get(keyword, keyword) if listed else keyword] = getattr(rule, bound)
    choices = declared_enum(field)
    if choices is not None:
        expected["enum"] = [member.value for member in choices]
    return expected


def shown(prop: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """What a JSON Schema property says of a field, in `declared_schema`'s terms: `anyOf [X, null]` and `$ref`
    resolved."""
    seen: dict[str, Any] = {key: prop[key] for key in ("description", "default") if key in prop}
    for branch in [prop, *prop.get("anyOf", []), *([prop["items"]] if "items" in prop else [])]:
        if "$ref" in branch:
            branch = definitions[branch["$ref"].rsplit("/", 1)[-1]]
        keywords = [*SCHEMA_BOUNDS.values(), *LIST_BOUNDS.values(), "enum"]
        seen.update({key: branch[key] for key in keywords if key in branch})
    return seen


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


@pytest.fixture
def tool_schemas(service: ImageService) -> dict[str, dict[str, Any]]:
    tools = anyio.run(build_mcp_server(service).list_tools)
    return {tool.name: tool.input_schema for tool in tools if tool.name in IMAGE_TOOLS}


def cli_options() -> Iterator[Any]:
    command = typer.main.get_command(cli_app)
    yield from command.commands["generate"].params  # type: ignore[attr-defined]


def test_the_openapi_bodies_show_every_field_as_declared(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for body, strength in BODIES.items():
        properties = {HTTP_WIRE_NAMES.get(wire, wire): prop for wire, prop in schemas[body]["properties"].items()}
        assert set(properties) <= set(REQUEST_FIELDS) | HTTP_OWN, body
        for name in set(properties) & set(REQUEST_FIELDS):
            expected = declared_schema(name)
            if name == "strength":
                expected["default"] = strength
            seen = shown(properties[name], schemas)
            if HTTP_NAMES.get(name, name) not in schemas[body].get("required", []):
                seen.setdefault("default", None)  # FastAPI leaves out a default of null
            assert seen == expected, (body, name)
    job_body = {HTTP_WIRE_NAMES.get(wire, wire) for wire in schemas["JobBody"]["properties"]}
    assert set(REQUEST_FIELDS) <= job_body, "POST /jobs takes every declared field"


def test_the_mcp_image_tools_show_every_field_as_declared(tool_schemas: dict[str, dict[str, Any]]) -> None:
    assert set(tool_schemas) == set(IMAGE_TOOLS)
    for tool, schema in tool_schemas.items():
        definitions = schema.get("$defs", {})
        for argument, prop in schema["properties"].items():
            name = MCP_NAMES.get(argument, argument)
            if name in MCP_OWN:
                continue
            assert name in REQUEST_FIELDS, f"{tool}.{argument} is not a declared request field"
            # The tools also say what this server takes beyond the declaration (tested in test_agent_terms.py).
            seen = {k: v for k, v in shown(prop, definitions).items() if k not in SERVER_BOUNDS.get(name, ())}
            assert seen == declared_schema(name), (tool, argument)
    submitted = {MCP_NAMES.get(name, name) for name in tool_schemas["submit_async_job"]["properties"]}
    # use_cache and return_mode are HTTP's: an agent always gets the cache and an inline preview.
    assert set(REQUEST_FIELDS) - submitted == {"use_cache", "return_mode"}


def test_the_cli_generate_options_show_every_field_they_take_as_declared() -> None:
    taken = set()
    for option in cli_options():
        name = CLI_NAMES.get(option.name or "", option.name or "")
        if name not in REQUEST_FIELDS:
            continue
        taken.add(name)
        expected = declared_schema(name)
        assert option.default == expected.get("default"), name
        assert option.help == expected["description"], name
        bounds = (getattr(option, "min", None), getattr(option, "max", None))
        assert bounds == (expected.get("minimum"), expected.get("maximum")), name
    assert taken == {
        "prompt",
        "model",
        "style",
        "seed",
        "steps",
        "guidance",
        "width",
        "height",
        "count",
        "sampler",
        "schedule",
        "allow_downsize",
        *CLI_NAMES.values(),
    }


def test_the_web_page_number_inputs_stay_within_the_declared_bounds() -> None:
    page = (STATIC_DIR / "index.html").read_text()
    for name in ("steps", "guidance", "width", "height", "strength", "count"):
        tag = re.search(rf'<input id="{name}"[^>]*>', page)
        assert tag is not None, name
        attributes = dict(re.findall(r'(min|max)="([^"]+)"', tag[0]))
        expected = declared_schema(name)
        low = expected.get("minimum", expected.get("exclusiveMinimum"))
        if low is not None:
            assert "min" in attributes, f"#{name} has no min"
            assert float(attributes["min"]) >= low, name
            if "exclusiveMinimum" in expected:
                assert float(attributes["min"]) > low, name
        if "maximum" in expected:
            assert float(attributes.get("max", "inf")) <= expected["maximum"], name


def test_the_python_client_takes_the_declared_fields_under_their_names() -> None:
    options = set(get_type_hints(GenerationOptions))

    assert options == set(TextToImageFields.model_fields) - {"prompt"}
