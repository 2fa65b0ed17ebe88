"""Browser protections on the whole port: the Host allow-list (DNS rebinding), Origin checks on state-changing
requests, and CORS only for the configured origins."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from fastapi import WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.loopback import serving_app

SMALL = {"width": 64, "height": 64, "steps": 1}
PARTNER = "https://studio.example"
KEY = "alice-key-0123456789"


@pytest.fixture
def served(service: ImageService) -> Iterator[str]:
    with serving_app(create_app(service)) as url:
        yield url


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/models"), ("POST", "/jobs"), ("GET", "/"), ("POST", "/mcp"), ("GET", "/health")],
)
def test_a_foreign_host_header_is_refused_on_every_surface(served: str, method: str, path: str) -> None:
    # What a page on evil.example whose name was rebound to 127.0.0.1 makes the browser send.
    response = httpx.request(
        method,
        f"{served}{path}",
        headers={"Host": "evil.example:8765", "Accept": "application/json, text/event-stream"},
        json={"prompt": "a fox", **SMALL},
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "host_not_allowed"
    assert "evil.example" in error["message"]
    assert "IMAGEFORGE_ALLOWED_HOSTS" in error["hint"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:9999", "[::1]:8765", "LOCALHOST."])
def test_loopback_names_on_any_port_are_answered_on_a_loopback_server(served: str, host: str) -> None:
    response = httpx.get(f"{served}/models", headers={"Host": host})

    assert response.status_code == 200


def test_a_network_server_answers_to_this_machines_name_and_refuses_others(service: ImageService) -> None:
    app = create_app(service, host="0.0.0.0", insecure_no_auth=True)
    with TestClient(app, base_url=f"http://{socket.gethostname()}:8765") as client:
        assert client.get("/models").status_code == 200
        foreign = client.get("/models", headers={"Host": "evil.example"})
    assert foreign.json()["error"]["code"] == "host_not_allowed"


def test_allowed_hosts_adds_names_and_health_shows_them(service: ImageService) -> None:
    app = create_app(service, allowed_hosts=["imageforge.lan"])
    with TestClient(app, base_url="http://imageforge.lan:8765") as client:
        health = client.get("/health").json()
        assert client.get("/models").status_code == 200
        other = client.get("/models", headers={"Host": "other.lan"})

    assert "imageforge.lan" in health["allowed_hosts"]
    assert "localhost" in health["allowed_hosts"]
    assert other.status_code == 400


def test_a_star_in_allowed_hosts_answers_any_host(service: ImageService) -> None:
    with TestClient(create_app(service, allowed_hosts=["*"]), base_url="http://anything.example") as client:
        assert client.get("/models").status_code == 200
        assert client.get("/health").json()["allowed_hosts"] == "*"


@pytest.mark.parametrize(("method", "path"), [("POST", "/jobs"), ("POST", "/mcp"), ("DELETE", "/jobs/someid")])
def test_a_state_changing_request_from_a_cross_site_page_is_refused(served: str, method: str, path: str) -> None:
    response = httpx.request(
        method,
        f"{served}{path}",
        headers={"Origin": "https://evil.example", "Accept": "application/json, text/event-stream"},
        json={"prompt": "a fox", **SMALL},
    )

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "origin_not_allowed"
    assert "IMAGEFORGE_CORS_ORIGINS" in error["hint"]


def test_a_post_from_the_servers_own_page_and_one_without_origin_pass(served: str) -> None:
    # The web UI's fetch sends its own origin: the scheme and Host of the server it was loaded from.
    own = httpx.post(f"{served}/jobs", headers={"Origin": served}, json={"prompt": "a fox", **SMALL})
    bare = httpx.post(f"{served}/jobs", json={"prompt": "a fox", **SMALL})

    assert own.status_code == 202
    assert bare.status_code == 202


def test_reads_from_another_origin_get_no_cors_headers_by_default(served: str) -> None:
    response = httpx.get(f"{served}/models", headers={"Origin": PARTNER})
    preflight = httpx.options(f"{served}/jobs", headers={"Origin": PARTNER, "Access-Control-Request-Method": "POST"})

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight.headers


@pytest.fixture
def partnered(service: ImageService) -> Iterator[str]:
    app = create_app(service, cors_origins=[PARTNER], api_keys=ApiKeys((("alice", KEY),)))
    with serving_app(app) as url:
        yield url


def test_a_preflight_from_a_listed_origin_gets_cors_headers_without_a_key(partnered: str) -> None:
    request = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    listed = httpx.options(f"{partnered}/jobs", headers={"Origin": PARTNER, **request})
    other = httpx.options(f"{partnered}/jobs", headers={"Origin": "https://evil.example", **request})

    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == PARTNER
    assert "authorization" in listed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in other.headers


def test_a_listed_origin_may_submit_and_read_the_answer(partnered: str) -> None:
    response = httpx.post(
        f"{partnered}/jobs",
        headers={"Origin": PARTNER, "Authorization": f"Bearer {KEY}"},
        json={"prompt": "a fox", **SMALL},
    )

    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == PARTNER
    assert "location" in response.headers["access-control-expose-headers"].lower()


PROBE = "ws://127.0.0.1:8765/ws-probe"


def _with_websocket(service: ImageService, api_keys: ApiKeys | None = None) -> TestClient:
    """The app with a websocket route, standing for any the API may grow: the checks must cover it already."""
    app = create_app(service, api_keys=api_keys)

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("open")
        await websocket.close()

    app.add_api_websocket_route("/ws-probe", echo)
    return TestClient(app, base_url="http://127.0.0.1:8765")


@pytest.fixture
def with_websocket(service: ImageService) -> TestClient:
    return _with_websocket(service)


def test_with_keys_a_websocket_opens_only_with_a_key(service: ImageService) -> None:
    keyed = _with_websocket(service, ApiKeys((("alice", KEY),)))

    with keyed.websocket_connect(PROBE, headers={"Authorization": f"Bearer {KEY}"}) as socket_:
        assert socket_.receive_text() == "open"
    for headers in ({}, {"Authorization": "Bearer not-a-key-0123456789"}):
        with pytest.raises(WebSocketDisconnect) as refused, keyed.websocket_connect(PROBE, headers=headers):
            pass
        assert refused.value.code == 1008


def test_a_websocket_from_this_server_opens(with_websocket: TestClient) -> None:
    with with_websocket.websocket_connect(PROBE, headers={"Origin": "http://127.0.0.1:8765"}) as socket_:
        assert socket_.receive_text() == "open"


@pytest.mark.parametrize(
    "headers",
    [{"Host": "evil.example:8765"}, {"Origin": "https://evil.example"}],
    ids=["foreign-host", "foreign-origin"],
)
def test_a_websocket_from_a_foreign_page_is_refused(with_websocket: TestClient, headers: dict[str, str]) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, with_websocket.websocket_connect(PROBE, headers=headers):
        pass

    assert refused.value.code == 1008


@pytest.mark.parametrize("path", ["/health", "/models", "/jobs", "/", "/ui/app.js", "/openapi.json"])
def test_head_answers_every_get_route_with_its_headers_and_no_body(served: str, path: str) -> None:
    got = httpx.get(f"{served}{path}")
    head = httpx.head(f"{served}{path}")

    assert head.status_code == got.status_code == 200
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.content == b""


def test_head_on_a_route_without_get_still_answers_405(served: str) -> None:
    assert httpx.head(f"{served}/generate").status_code == 405


def test_head_on_job_events_answers_the_stream_headers_and_ends(service: ImageService, served: str) -> None:
    job = httpx.post(f"{served}/jobs", json={"prompt": "a fox", **SMALL}).json()

    head = httpx.head(f"{served}/jobs/{job['job_id']}/events", timeout=30)

    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/event-stream")
