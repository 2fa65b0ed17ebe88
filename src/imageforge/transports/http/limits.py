"""A request-body size limit enforced before the body is parsed, for declared and streamed lengths alike."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageforge.errors import PayloadTooLarge
from imageforge.transports.http.errors import BODY_TOO_LARGE_HINT, error_response


def too_large_message(max_bytes: int) -> str:
    return f"The request body is over the {max_bytes / (1024 * 1024):g} MiB limit."


class BodySizeLimit:
    """ASGI middleware answering 413 `payload_too_large` for bodies over `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(413, PayloadTooLarge.code, too_large_message(self.max_bytes), BODY_TOO_LARGE_HINT)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            # A streamed body has no declared length: count it, and stop reading past the limit.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail=too_large_message(self.max_bytes))
            return message

        await self.app(scope, counting_receive, send)
