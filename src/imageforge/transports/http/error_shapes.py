"""Errors in the shape of the API a path belongs to: a compatible API's clients parse only their own shape.

Every error is made once, in the native shape (`{"ok": false, "error": {"code", "message", "hint"}}`), by the
route, the exception handlers or a middleware; this middleware, outside all of them, rewrites the answer of a
path under a compatible API's prefix (`/v1/`, `/sdapi/v1/`) into that API's shape. No call site needs to know
which API it answers for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: A compatible API's error body, from the HTTP status and the native error (`{"code", "message", "hint"}`).
ErrorBody = Callable[[int, Mapping[str, str]], dict[str, Any]]


class SurfaceErrors:
    """ASGI middleware giving the error answers under each prefix of `shapes` that prefix's shape."""

    def __init__(self, app: ASGIApp, *, shapes: Mapping[str, ErrorBody]) -> None:
        self.app = app
        self.shapes = dict(shapes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        shape = next((body for prefix, body in self.shapes.items() if path.startswith(prefix)), None)
        if scope["type"] != "http" or shape is None:
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400 and _is_json(message):
                held = message  # an error answer: hold its start until its whole body is read
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status: int = held["status"]
            body = _reshaped(b"".join(chunks), status, shape)
            headers = [(name, value) for name, value in held.get("headers", []) if name.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshaping_send)


def _is_json(start: Message) -> bool:
    headers = dict(start.get("headers", []))
    return bool(headers.get(b"content-type", b"").startswith(b"application/json"))


def _reshaped(body: bytes, status: int, shape: ErrorBody) -> bytes:
    """`body` in the API's shape when it is a native error; anything else (a route's own answer) as it was."""
    try:
        native = json.loads(body)
    except ValueError:
        return body
    error = native.get("error") if isinstance(native, dict) and native.get("ok") is False else None
    if not isinstance(error, dict):
        return body
    return json.dumps(shape(status, error)).encode()
