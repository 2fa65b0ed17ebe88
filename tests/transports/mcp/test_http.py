"""MCP over Streamable HTTP at /mcp, on a real server on loopback, beside the HTTP API in the same process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp.client.client import Client
from mcp_types import ResourceLink

from imageforge.config import Settings
from imageforge.domain import ImageDescription
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.loopback import serving_app

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture
def server_url(service: ImageService, settings: Settings) -> Iterator[str]:
    with serving_app(create_app(service)) as url:
        yield url


async def test_tools_answer_over_http_with_a_link_to_the_full_image(server_url: str) -> None:
    reported: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if (message or "").startswith("step"):
            reported.append(progress)

    async with Client(f"{server_url}/mcp") as mcp:
        names = {tool.name for tool in (await mcp.list_tools()).tools}
        result = await mcp.call_tool("generate_image", {"prompt": "a fox", "seed": 1, **SMALL}, None, on_progress)

    assert {"generate_image", "submit_async_job", "get_job_result"} <= names
    assert not result.is_error
    assert reported == [1, 2]
    structured = result.structured_content
    assert structured is not None
    [link] = [block for block in result.content if isinstance(block, ResourceLink)]
    assert link.uri == structured["url"]
    assert link.uri.startswith(f"{server_url}/images/")
    image = httpx.get(link.uri)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert link.size == len(image.content)


async def test_mcp_and_http_share_one_queue(server_url: str) -> None:
    async with Client(f"{server_url}/mcp") as mcp:
        submitted = await mcp.call_tool("submit_async_job", {"prompt": "a fox", **SMALL})
    assert submitted.structured_content is not None
    job_id = submitted.structured_content["job_id"]

    job = httpx.get(f"{server_url}/jobs/{job_id}")

    assert job.status_code == 200
    assert job.json()["job_id"] == job_id


def test_a_foreign_host_header_is_refused_on_a_loopback_server(server_url: str) -> None:
    response = httpx.post(
        f"{server_url}/mcp",
        headers={"Host": "evil.example", "Accept": "application/json, text/event-stream"},
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "host_not_allowed"


async def test_list_models_over_mcp_answers_what_get_models_answers(server_url: str) -> None:
    over_http = httpx.get(f"{server_url}/models").json()
    async with Client(f"{server_url}/mcp") as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
        result = await mcp.call_tool("list_models", {})

    assert not result.is_error
    assert _steady({"ok": True, **(result.structured_content or {})}) == _steady(over_http)
    # The tool declares the shape it answers in, as the HTTP API's schema does.
    output_schema = tools["list_models"].output_schema or {}
    assert {"default", "max_res", "models"} <= set(output_schema.get("properties", {}))


def _steady(catalog: dict[str, Any]) -> dict[str, Any]:
    """A model listing without what the machine changes from one moment to the next: its free memory, and so
    whether each model fits in it now."""
    models = [
        {**model, "memory": {k: v for k, v in (model.get("memory") or {}).items() if k not in ("free_gb", "fits")}}
        for model in catalog["models"]
    ]
    return {**catalog, "models": models}


async def test_assist_prompt_over_mcp_answers_what_post_assist_answers(server_url: str) -> None:
    # No Ollama listens in the tests: both answer the passthrough, with the same fields and reason.
    over_http = httpx.post(f"{server_url}/assist", json={"prompt": "a fox"}).json()
    async with Client(f"{server_url}/mcp") as mcp:
        result = await mcp.call_tool("assist_prompt", {"prompt": "a fox"})

    assert not result.is_error
    assert {"ok": True, **(result.structured_content or {})} == over_http
    assert over_http["source"] == "passthrough"


async def test_an_image_is_described_alike_by_http_and_by_the_mcp_tools(server_url: str) -> None:
    body = {"prompt": "a fox", "seed": 5, **SMALL}
    over_http = httpx.post(f"{server_url}/generate", json={**body, "return_mode": "path"}, timeout=120).json()
    openapi = httpx.get(f"{server_url}/openapi.json").json()
    async with Client(f"{server_url}/mcp") as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
        result = await mcp.call_tool("generate_image", body)
    over_mcp = result.structured_content or {}

    described = set(ImageDescription.model_fields)
    assert described <= set(openapi["components"]["schemas"]["ImageResponse"]["properties"])
    for name in ("generate_image", "edit_image", "inpaint_image", "get_job_result"):
        assert described <= set((tools[name].output_schema or {}).get("properties", {})), name
    # The second request is the first one's cached image: the same description, bar how it was got.
    same = described - {"cached", "elapsed_s"}
    assert {name: over_mcp[name] for name in same} == {name: over_http[name] for name in same}
    assert (over_http["cached"], over_mcp["cached"]) == (False, True)
