"""ClientLogContext: every log line written while a request is handled names its client."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from imageforge.logs import client_context
from imageforge.transports.clients import client_of


class ClientLogContext:
    """ASGI middleware, inside the API key check (which names the key holder): the request's lines, its access
    line included (the server writes it when the answer starts, from within this call), carry its client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with client_context(client_of(scope)):
            await self.app(scope, receive, send)
