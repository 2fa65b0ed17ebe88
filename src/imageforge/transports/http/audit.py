"""AuditTrail: the HTTP API's audit records (who, what, when, outcome), one per request of interest.

Of interest: every state-changing request (job submissions, cancels, model loads and unloads) and every request
refused at the door (no or wrong API key, no key left at all, foreign Host, foreign Origin, another client's or one
too many MCP session), whatever its method. Routes add what only
they know (the job id, the prompt) with `note_audit`. Calls to `/mcp` are recorded by the MCP tools themselves,
per tool, so only their refusals are recorded here.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageforge import errors
from imageforge.service import ImageService
from imageforge.transports.clients import client_of
from imageforge.transports.http.browser import STATE_CHANGING
from imageforge.transports.http.errors import HTTP_ERROR

#: The error codes of requests refused before any route ran.
REFUSALS = frozenset(
    {
        errors.Unauthorized.code,
        errors.NoApiKeys.code,
        errors.HostNotAllowed.code,
        errors.OriginNotAllowed.code,
        errors.McpSessionNotFound.code,
        errors.McpSessionLimit.code,
    }
)
#: Where in the request's state the routes leave details for its audit record.
_NOTES = "audit"
#: How much of an error body is read for its code: error bodies are small JSON.
_ERROR_BODY_BYTES = 4096


def note_audit(request: Request, **details: Any) -> None:
    """Add `details` (job_id, prompt) to the audit record of `request`."""
    request.scope.setdefault("state", {}).setdefault(_NOTES, {}).update(details)


class AuditTrail:
    """ASGI middleware writing an audit record through the service per request of interest, after its response.

    `tool_paths` are endpoints whose calls are recorded by what serves them (the MCP tools).
    """

    def __init__(self, app: ASGIApp, *, service: ImageService, tool_paths: Collection[str] = ()) -> None:
        self.app = app
        self.service = service
        self.tool_paths = frozenset(tool_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.service.auditing:
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before it answers
        error_body = bytearray()
        recorded = False

        async def observe(message: Message) -> None:
            nonlocal status, recorded
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                if status >= 400 and len(error_body) < _ERROR_BODY_BYTES:
                    error_body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    # Before the last of the answer goes out: a client that has it can read the record.
                    self._record(scope, status, bytes(error_body))
                    recorded = True
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            if not recorded:
                self._record(scope, status, bytes(error_body))

    def _record(self, scope: Scope, status: int, error_body: bytes) -> None:
        code = _error_code(error_body, status) if status >= 400 else None
        writes = scope["method"] in STATE_CHANGING and scope["path"] not in self.tool_paths
        if writes or code in REFUSALS:
            self.service.audit(
                client=client_of(scope),
                action=f"{scope['method']} {scope['path']}",
                outcome=code or "ok",
                status=status,
                **scope.get("state", {}).get(_NOTES, {}),
            )


def _error_code(body: bytes, status: int) -> str:
    """The code of an error response; a response that is not in the error shape is named by its status."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return errors.ImageforgeError.code if status >= 500 else HTTP_ERROR
