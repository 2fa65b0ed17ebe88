"""docs/a1111-api.md names every route the A1111 API serves and every field it refuses, so the table cannot
fall behind the code."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

from imageforge.transports.a1111 import router
from imageforge.transports.a1111.mapping import NEUTRAL_SETTINGS, REFUSED

DOC = (Path(__file__).parents[3] / "docs" / "a1111-api.md").read_text()


def test_every_a1111_route_is_in_the_docs_table() -> None:
    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    missing = [
        f"{method} {route.path}"
        for route in routes
        for method in route.methods or ()
        if f"`{method} {route.path}`" not in DOC
    ]
    assert missing == []


def test_every_refused_field_and_accepted_setting_is_in_the_docs_table() -> None:
    missing = [name for name in [*REFUSED, *NEUTRAL_SETTINGS] if f"`{name}`" not in DOC]
    assert missing == []
