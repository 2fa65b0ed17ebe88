"""Serves the page at `/` and its assets at `/ui/`; the page itself only calls the public HTTP API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def mount_web_ui(app: FastAPI) -> None:
    """Add the page (`GET /`) and its script and stylesheet (`/ui/...`) to `app`."""

    # Excluded from the OpenAPI schema: the page is not part of the API it is a client of.
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="web-ui")
