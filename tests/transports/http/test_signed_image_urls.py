"""Signed, expiring image links: with API keys on, a result's image opens without a header for a while."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ResourceLink

from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from imageforge.transports.http.signed_urls import ImageUrlSigner
from tests.loopback import LOCAL_URL, serving_app

KEY = "alice-key-0123456789"
BEARER = {"Authorization": f"Bearer {KEY}"}
SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1}
LIFETIME_S = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keyed(service: ImageService, clock: Clock) -> Iterator[TestClient]:
    signer = ImageUrlSigner(secrets.token_bytes(32), LIFETIME_S, clock=clock)
    app = create_app(service, api_keys=ApiKeys([("alice", KEY)]), image_urls=signer)
    with TestClient(app, base_url=LOCAL_URL) as client:
        yield client


def _finished_job(client: TestClient, seed: int = 1) -> dict[str, object]:
    job = client.post("/jobs", json={**SMALL, "seed": seed}, headers=BEARER).json()
    client.get(f"/jobs/{job['job_id']}/events", headers=BEARER)  # the stream ends with the job
    done: dict[str, object] = client.get(f"/jobs/{job['job_id']}", headers=BEARER).json()
    assert done["status"] == "succeeded"
    return done


def _image_link(job: dict[str, object]) -> str:
    links = job["links"]
    assert isinstance(links, dict)
    parts = urlsplit(links["image"])
    return f"{parts.path}?{parts.query}"


def test_a_signed_link_opens_its_image_without_a_header(keyed: TestClient) -> None:
    link = _image_link(_finished_job(keyed))

    assert "exp=" in link
    assert "sig=" in link
    image = keyed.get(link)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"


def test_an_image_without_a_key_or_signature_is_unauthorized(keyed: TestClient) -> None:
    path = _image_link(_finished_job(keyed)).split("?")[0]

    response = keyed.get(path)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert keyed.get(path, headers=BEARER).status_code == 200  # a key still opens it


def test_a_tampered_signature_or_expiry_is_refused_as_bad_signature(keyed: TestClient) -> None:
    link = _image_link(_finished_job(keyed))
    path, query = link.split("?")
    expires = dict(part.split("=") for part in query.split("&"))["exp"]
    signature = dict(part.split("=") for part in query.split("&"))["sig"]

    forged = keyed.get(f"{path}?exp={expires}&sig={'0' * len(signature)}")
    extended = keyed.get(f"{path}?exp={int(expires) + 86400}&sig={signature}")

    for response in (forged, extended):
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "bad_signature"
        assert "Authorization: Bearer" in error["hint"]


def test_an_expired_link_is_refused_as_url_expired_and_the_job_gives_a_fresh_one(
    keyed: TestClient, clock: Clock
) -> None:
    job = _finished_job(keyed)
    clock.now += LIFETIME_S + 1

    expired = keyed.get(_image_link(job))
    fresh = keyed.get(_image_link(keyed.get(f"/jobs/{job['job_id']}", headers=BEARER).json()))

    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "url_expired"
    assert "fresh link" in expired.json()["error"]["hint"]
    assert fresh.status_code == 200


def test_a_signature_opens_only_its_own_image_and_nothing_else(keyed: TestClient) -> None:
    first = _image_link(_finished_job(keyed, seed=1))
    second = _image_link(_finished_job(keyed, seed=2))
    first_query = first.split("?")[1]
    job_id = keyed.get("/jobs", headers=BEARER).json()["jobs"][0]["job_id"]

    other_image = keyed.get(f"{second.split('?')[0]}?{first_query}")
    job_api = keyed.get(f"/jobs/{job_id}?{first_query}")
    listing = keyed.get(f"/jobs?{first_query}")

    assert other_image.status_code == 403
    assert other_image.json()["error"]["code"] == "bad_signature"
    assert (job_api.status_code, listing.status_code) == (401, 401)


def test_a_key_in_the_query_string_is_not_accepted(keyed: TestClient) -> None:
    for name in ("api_key", "key", "token", "access_token"):
        response = keyed.get(f"/models?{name}={KEY}")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_without_keys_links_carry_no_signature(client: TestClient) -> None:
    job = client.post("/jobs", json=SMALL).json()
    client.get(f"/jobs/{job['job_id']}/events")

    image = client.get(f"/jobs/{job['job_id']}").json()["links"]["image"]

    assert "?" not in image


@pytest.mark.anyio
async def test_the_mcp_resource_link_over_http_is_signed(service: ImageService) -> None:
    with serving_app(create_app(service, api_keys=ApiKeys([("alice", KEY)]))) as url:
        async with (
            httpx2.AsyncClient(headers=BEARER) as http,
            Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
        ):
            result = await mcp.call_tool("generate_image", {**SMALL, "seed": 3})
        [link] = [block for block in result.content if isinstance(block, ResourceLink)]
        image = httpx.get(link.uri)  # no header: the signature opens it
        bare = httpx.get(link.uri.split("?")[0])

    assert not result.is_error
    assert "sig=" in link.uri
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert bare.status_code == 401
