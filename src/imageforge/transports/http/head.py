"""HEAD on every GET route: what GET would answer, status and headers, without the body.

FastAPI routes answer only the methods they declare, so without this a HEAD (a link checker's, curl -I's)
gets 405 everywhere.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    """ASGI middleware running a HEAD request as its GET and sending only the response's start.

    The inner app sees a copy of the scope: the server keeps its own, which still says HEAD, so that it expects
    no body after a Content-Length. A streaming answer (job events) is told the client left once its headers
    are out, so that it stops instead of streaming into the void.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        headers_sent = False

        async def receive_until_answered() -> Message:
            if headers_sent:
                return {"type": "http.disconnect"}
            return await receive()

        async def send_headers_only(message: Message) -> None:
            nonlocal headers_sent
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                headers_sent = True
            elif message["type"] not in ("http.response.body", "http.response.pathsend"):
                await send(message)

        await self.app({**scope, "method": "GET"}, receive_until_answered, send_headers_only)
