"""API keys on the whole port: every route but liveness and the page's static files needs one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from imageforge.config import Settings
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from imageforge.transports.http.keyfile import KeyFile
from tests.loopback import LOCAL_URL, serving_app

ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"
SMALL = {"width": 64, "height": 64, "steps": 1}


@pytest.fixture
def keyed(service: ImageService) -> Iterator[TestClient]:
    app = create_app(service, api_keys=ApiKeys((("alice", ALICE), ("bob", BOB))))
    with TestClient(app, base_url=LOCAL_URL) as client:
        yield client


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/models"),
        ("POST", "/generate"),
        ("POST", "/jobs"),
        ("GET", "/jobs"),
        ("GET", "/jobs/someid/events"),
        ("GET", "/images/20260101_000000_abcdef.png"),
        ("GET", "/policy"),
        ("POST", "/mcp"),
    ],
)
def test_every_surface_refuses_a_request_without_a_key(keyed: TestClient, method: str, path: str) -> None:
    response = keyed.request(method, path, json={"prompt": "a fox"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["error"]["hint"]


def test_a_wrong_key_or_scheme_is_refused(keyed: TestClient) -> None:
    wrong = keyed.get("/models", headers=_bearer("not-a-key-at-all-000"))
    basic = keyed.get("/models", headers={"Authorization": f"Basic {ALICE}"})

    assert (wrong.status_code, wrong.json()["error"]["message"]) == (401, "The API key is not valid here.")
    assert basic.status_code == 401


def test_each_named_key_is_let_through(keyed: TestClient) -> None:
    for key in (ALICE, BOB):
        assert keyed.get("/models", headers=_bearer(key)).status_code == 200
    generated = keyed.post("/generate", json={"prompt": "a fox", **SMALL}, headers=_bearer(ALICE))
    assert generated.status_code == 200


def test_health_without_a_key_says_only_that_the_server_lives(keyed: TestClient) -> None:
    anonymous = keyed.get("/health").json()
    known = keyed.get("/health", headers=_bearer(ALICE)).json()

    assert anonymous == {"ok": True, "status": "ok", "auth": "required"}
    assert known["auth"] == "api_key"
    assert "device" in known


def test_the_page_loads_without_a_key(keyed: TestClient) -> None:
    assert keyed.get("/").status_code == 200


def test_without_keys_on_loopback_health_says_auth_is_off(client: TestClient) -> None:
    assert client.get("/health").json()["auth"] == "off (loopback only)"
    assert client.get("/models").status_code == 200


@pytest.mark.anyio
async def test_mcp_over_http_takes_the_key_as_a_bearer_token(service: ImageService, settings: Settings) -> None:
    app = create_app(service, api_keys=ApiKeys((("alice", ALICE),)))
    with serving_app(app) as url:
        async with httpx2.AsyncClient(headers=_bearer(ALICE)) as http:
            transport = streamable_http_client(f"{url}/mcp", http_client=http)
            async with Client(transport) as mcp:
                tools = await mcp.list_tools()
        refused = httpx.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})

    assert "generate_image" in {tool.name for tool in tools.tools}
    assert refused.status_code == 401


def test_a_network_address_served_without_keys_on_purpose_says_so_loudly_in_health(service: ImageService) -> None:
    with TestClient(create_app(service, host="0.0.0.0", insecure_no_auth=True), base_url=LOCAL_URL) as client:
        assert client.get("/health").json()["auth"].startswith("OFF: no authentication")
        assert client.get("/models").status_code == 200


@pytest.mark.parametrize("take_away", ["keys remove", "empty the file", "delete the file"])
def test_removing_the_last_key_refuses_every_request_on_a_network_bind(
    service: ImageService, tmp_path: Path, caplog: pytest.LogCaptureFixture, take_away: str
) -> None:
    keys_file = KeyFile(tmp_path / "keys.toml")
    key = keys_file.add("only")
    app = create_app(service, host="0.0.0.0", api_keys=ApiKeys(file=keys_file.path))
    with TestClient(app, base_url=LOCAL_URL) as client:
        assert client.get("/jobs", headers=_bearer(key)).status_code == 200
        if take_away == "keys remove":
            keys_file.remove("only")
        elif take_away == "empty the file":
            keys_file.path.write_text("")
        else:
            keys_file.path.unlink()
        listed = client.get("/jobs")
        submitted = client.post("/jobs", json={"prompt": "a fox", **SMALL})
        mcp = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        stale_key = client.get("/jobs", headers=_bearer(key))
        health = client.get("/health").json()
        page = client.get("/")

    for refused in (listed, submitted, mcp, stale_key):
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "no_api_keys"
        assert "imageforge keys add" in error["hint"]
    assert health["auth"] == "no_api_keys"
    assert "device" not in health
    assert page.status_code == 200
    locked_logs = [record for record in caplog.records if "no_api_keys" in record.getMessage()]
    assert len(locked_logs) == 1, "logged once when it changed, not per request"


def test_a_key_added_to_a_locked_network_server_lets_its_holder_in(service: ImageService, tmp_path: Path) -> None:
    keys_file = KeyFile(tmp_path / "keys.toml")
    app = create_app(service, host="192.168.1.20", api_keys=ApiKeys(file=keys_file.path))
    with TestClient(app, base_url=LOCAL_URL) as client:
        locked = client.get("/models")
        key = keys_file.add("first")
        anonymous = client.get("/models")
        known = client.get("/models", headers=_bearer(key))

    assert locked.json()["error"]["code"] == "no_api_keys"
    assert anonymous.status_code == 401
    assert known.status_code == 200


def test_keys_from_the_keys_file_work_and_stop_without_a_restart(service: ImageService, tmp_path: Path) -> None:
    keys_file = KeyFile(tmp_path / "keys.toml")
    app = create_app(service, api_keys=ApiKeys([("alice", ALICE)], file=keys_file.path))
    with TestClient(app, base_url=LOCAL_URL) as client:
        before = client.get("/models", headers=_bearer("x" * 43))
        carol = keys_file.add("carol")
        added = client.get("/models", headers=_bearer(carol))
        health = client.get("/health", headers=_bearer(carol)).json()
        keys_file.remove("carol")
        removed = client.get("/models", headers=_bearer(carol))
        alice = client.get("/models", headers=_bearer(ALICE))

    assert before.status_code == 401
    assert added.status_code == 200
    assert health["auth"] == "api_key"
    assert removed.status_code == 401
    assert alice.status_code == 200


def test_the_keys_file_holds_only_hashes_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    keys_file = KeyFile(tmp_path / "data" / "keys.toml")

    key = keys_file.add("laptop")

    assert len(key) >= 40
    text = keys_file.path.read_text()
    assert key not in text
    assert "laptop" in text
    assert keys_file.path.stat().st_mode & 0o777 == 0o600
    [stored] = keys_file.read()
    assert (stored.name, stored.created[:2]) == ("laptop", "20")


def test_a_key_file_only_server_turns_auth_on_and_a_broken_file_keeps_the_last_keys(
    service: ImageService, tmp_path: Path
) -> None:
    keys_file = KeyFile(tmp_path / "keys.toml")
    key = keys_file.add("phone")
    with TestClient(create_app(service, api_keys=ApiKeys(file=keys_file.path)), base_url=LOCAL_URL) as client:
        assert client.get("/models").status_code == 401
        assert client.get("/models", headers=_bearer(key)).status_code == 200
        keys_file.path.write_text("[keys\nbroken")
        assert client.get("/models", headers=_bearer(key)).status_code == 200
        assert client.get("/models").status_code == 401


def test_a_key_added_to_an_empty_keys_file_turns_auth_on_without_a_restart(
    service: ImageService, tmp_path: Path
) -> None:
    keys_file = KeyFile(tmp_path / "keys.toml")
    with TestClient(create_app(service, api_keys=ApiKeys(file=keys_file.path)), base_url=LOCAL_URL) as client:
        before = client.get("/models")
        key = keys_file.add("first")
        anonymous = client.get("/models")
        known = client.get("/models", headers=_bearer(key))

    assert before.status_code == 200
    assert anonymous.status_code == 401
    assert known.status_code == 200
