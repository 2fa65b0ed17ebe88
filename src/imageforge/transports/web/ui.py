"""Serves the page at `/` and its assets at `/ui/`; the page itself only calls the public HTTP API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

#: What the page may load and who may frame it: its own script, style and API, images from this server plus
#: the `data:` previews and `blob:` downloads it makes itself, and no frame anywhere (no clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # For browsers that predate frame-ancestors.
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Image links may carry a signature; a page the user follows from here must not receive it.
    "Referrer-Policy": "no-referrer",
}


def mount_web_ui(app: FastAPI) -> None:
    """Add the page (`GET /`) and its script and stylesheet (`/ui/...`) to `app`."""

    # Excluded from the OpenAPI schema: the page is not part of the API it is a client of.
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="web-ui")
