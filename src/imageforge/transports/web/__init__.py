"""The web UI: static files served beside the HTTP API, speaking to it like any other client."""

from imageforge.transports.web.ui import mount_web_ui

__all__ = ["mount_web_ui"]
