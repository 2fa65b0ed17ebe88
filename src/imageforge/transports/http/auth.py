"""API keys: `Authorization: Bearer KEY` on every route of the port (HTTP API, job events, images, MCP).

With no key configured the server answers everyone, which `imageforge serve` allows on a loopback address only.
Open without a key: `GET /health` (reduced to liveness) and the web page's static files, which hold no data.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from imageforge.transports.http.errors import error_response

#: Paths anyone may read: liveness, and the web page (its data comes from the API, behind the key).
OPEN_PATHS = frozenset({"/health", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/ui/",)


@dataclass(frozen=True)
class ApiKeys:
    """Named API keys; `name_of` compares in constant time against every key."""

    keys: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def name_of(self, presented: str) -> str | None:
        """The name of the key `presented`, or None; every key is compared, so timing tells nothing."""
        found = None
        for name, key in self.keys:
            if hmac.compare_digest(presented.encode(), key.encode()):
                found = name
        return found


class RequireApiKey:
    """ASGI middleware answering 401 `unauthorized` unless the request carries one of `keys`.

    The caller's key name goes into the scope's state (`api_key_name`) for later use (audit, per-key limits).
    """

    def __init__(self, app: ASGIApp, *, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        name = self.keys.name_of(token.strip()) if scheme.lower() == "bearer" else None
        if name is not None:
            scope.setdefault("state", {})["api_key_name"] = name
        elif not _is_open(scope):
            response = error_response(
                401,
                "unauthorized",
                "This server needs an API key." if not token else "The API key is not valid here.",
                "Send the header 'Authorization: Bearer <key>' with a key from IMAGEFORGE_API_KEYS.",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_open(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return (scope.get("method") in ("GET", "HEAD")) and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
