"""Errors under a compatible API's prefix take that API's shape; every other answer passes as it was."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from imageforge import errors
from imageforge.transports.http.error_shapes import SurfaceErrors
from imageforge.transports.http.errors import install_error_handlers


def _other_shape(status: int, error: Mapping[str, str]) -> dict[str, Any]:
    return {"failure": {"status": status, "kind": error["code"], "text": error["message"]}}


def _client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/other/refused")
    @app.get("/native/refused")
    def refused() -> None:
        raise errors.InvalidRequest("steps must be at least 1", hint="Send steps >= 1.")

    @app.get("/other/fine")
    def fine() -> dict[str, bool]:
        return {"ok": False}  # a route's own answer, even one that looks like an error, is left alone

    app.add_middleware(SurfaceErrors, shapes={"/other/": _other_shape})
    return TestClient(app)


def test_an_error_under_a_compatible_prefix_is_answered_in_that_apis_shape() -> None:
    answer = _client().get("/other/refused")
    assert answer.status_code == 400
    assert answer.json() == {"failure": {"status": 400, "kind": "invalid_request", "text": "steps must be at least 1"}}
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_an_unknown_route_under_a_compatible_prefix_is_answered_in_that_apis_shape() -> None:
    answer = _client().get("/other/nowhere")
    assert answer.status_code == 404
    assert answer.json()["failure"]["kind"] == errors.RouteNotFound.code


def test_native_errors_and_successful_answers_keep_their_shape() -> None:
    client = _client()
    assert client.get("/native/refused").json()["error"]["code"] == "invalid_request"
    assert client.get("/other/fine").json() == {"ok": False}
