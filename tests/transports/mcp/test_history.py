"""Finding earlier results over MCP: list_images, the resource imageforge://images/{name}, and the link to it in
each image result; in memory (as over stdio) and, with API keys, over HTTP, where a key finds only its own."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import BlobResourceContents, CallToolResult, ResourceLink

from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.loopback import serving_app
from tests.transports.mcp.answers import structured_of

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 1}
#: Long enough for a first load of the tiny model on a busy machine.
WAIT_S = 120.0
ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"
ROOT = "root-key-0123456789ab"
KEYS = ApiKeys((("alice", ALICE), ("bob", BOB), ("root", ROOT, True)))


async def _png(mcp: Client, uri: str) -> bytes:
    [contents] = (await mcp.read_resource(uri)).contents
    assert isinstance(contents, BlobResourceContents)
    assert contents.mime_type == "image/png"
    return base64.b64decode(contents.blob)


async def test_an_image_result_without_http_links_to_the_images_resource(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", **SMALL})

    drawn = structured_of(result)
    name = Path(drawn["output_path"]).name
    [link] = [block for block in result.content if isinstance(block, ResourceLink)]
    assert drawn["uri"] == link.uri == f"imageforge://images/{name}"
    assert (link.mime_type, link.size) == ("image/png", Path(drawn["output_path"]).stat().st_size)
    assert drawn["url"] is None


async def test_reading_an_images_uri_answers_its_png(mcp: Client) -> None:
    drawn = structured_of(await mcp.call_tool("generate_image", {"prompt": "a fox", **SMALL}))

    png = await _png(mcp, drawn["uri"])

    assert png == Path(drawn["output_path"]).read_bytes()
    templates = {template.uri_template for template in (await mcp.list_resource_templates()).resource_templates}
    assert "imageforge://images/{name}" in templates


async def test_reading_an_unknown_image_is_an_error_with_image_not_found(mcp: Client) -> None:
    with pytest.raises(MCPError) as raised:
        await mcp.read_resource("imageforge://images/0123456789abcdef.png")

    assert raised.value.error.data is not None
    assert raised.value.error.data["code"] == "image_not_found"


async def test_list_images_lists_the_finished_images_newest_first_with_where_they_are(mcp: Client) -> None:
    first = structured_of(await mcp.call_tool("generate_image", {"prompt": "a fox", "seed": 1, **SMALL}))
    second = structured_of(await mcp.call_tool("generate_image", {"prompt": "a cat", "seed": 2, **SMALL}))
    failed = await mcp.call_tool("submit_async_job", {"prompt": "no weights here", "model": "sd-turbo"})
    assert not failed.is_error

    listed = structured_of(await mcp.call_tool("list_images", {}))["images"]
    one = structured_of(await mcp.call_tool("list_images", {"limit": 1}))["images"]

    assert [image["job_id"] for image in listed] == [second["job_id"], first["job_id"]], "only finished images"
    newest = listed[0]
    assert (newest["prompt"], newest["seed"], newest["model"]) == ("a cat", 2, "tiny")
    assert (newest["width"], newest["height"]) == (64, 64)
    assert (newest["output_path"], newest["uri"], newest["url"]) == (second["output_path"], second["uri"], None)
    assert newest["created_at"].endswith("+00:00")
    assert one == [newest]


@pytest.fixture
def keyed_url(service: ImageService) -> Iterator[str]:
    with serving_app(create_app(service, api_keys=KEYS)) as url:
        yield url


async def _as(url: str, key: str, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=WAIT_S) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
    ):
        return await mcp.call_tool(tool, arguments)


async def _read_as(url: str, key: str, uri: str) -> bytes | dict[str, Any]:
    """The PNG, or the error's data when the read is refused."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=WAIT_S) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
    ):
        try:
            return await _png(mcp, uri)
        except MCPError as exc:
            data: dict[str, Any] = exc.error.data or {}
            return data


async def test_a_key_lists_and_reads_only_the_images_of_its_own_jobs(keyed_url: str) -> None:
    alices = structured_of(await _as(keyed_url, ALICE, "generate_image", {"prompt": "alice's fox", **SMALL}))

    listed = {
        key: [image["job_id"] for image in structured_of(await _as(keyed_url, key, "list_images", {}))["images"]]
        for key in (ALICE, BOB, ROOT)
    }
    refused = await _read_as(keyed_url, BOB, alices["uri"])
    read_by_alice = await _read_as(keyed_url, ALICE, alices["uri"])
    [alices_entry] = structured_of(await _as(keyed_url, ALICE, "list_images", {}))["images"]
    name = Path(alices["output_path"]).name

    assert listed == {ALICE: [alices["job_id"]], BOB: [], ROOT: [alices["job_id"]]}
    assert isinstance(refused, dict)
    assert refused["code"] == "image_not_found"
    assert read_by_alice == Path(alices["output_path"]).read_bytes()
    # Over HTTP, a signed link to the image, as the image tools give (signed anew, so with its own expiry).
    assert alices_entry["url"].split("?")[0] == alices["url"].split("?")[0] == f"{keyed_url}/images/{name}"
    assert "sig=" in alices_entry["url"]
