"""RequestContext: what a request's handling tells the log and the trace: its client on every log line, and a
span that continues the caller's trace (`traceparent`) when tracing is on."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from imageforge import tracing
from imageforge.logs import client_context
from imageforge.transports.clients import client_of


class RequestContext:
    """ASGI middleware, inside the API key check (which names the key holder): the request's lines, its access
    line included (the server writes it when the answer starts, from within this call), carry its client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = client_of(scope)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", [])}
        method = scope.get("method", "GET")
        with (
            client_context(client),
            tracing.continuing(headers),
            tracing.span(f"HTTP {method}", **{"http.request.method": method, "url.path": scope["path"]}),
        ):
            await self.app(scope, receive, send)
