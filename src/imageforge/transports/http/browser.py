"""Browser protections for the whole port (HTTP API, /mcp, web page): what a web page elsewhere could make a
browser on this machine or LAN send here.

- `AllowedHosts`: a request must name this server in its Host header. A page on evil.example whose name is
  made to resolve to 127.0.0.1 (DNS rebinding) sends `Host: evil.example` and is refused.
- `SameOriginWrites`: a state-changing request that a page sends carries its `Origin`; only this server's own
  origin and those in IMAGEFORGE_CORS_ORIGINS may change anything, or open a websocket. Clients that are not
  browsers (curl, SDKs, MCP clients) send no Origin and pass.
- CORS headers only for IMAGEFORGE_CORS_ORIGINS (Starlette's CORSMiddleware, added by `create_app`).
"""

from __future__ import annotations

import socket
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from imageforge.domain import is_loopback
from imageforge.errors import HostNotAllowed, OriginNotAllowed
from imageforge.transports.http.errors import error_response

#: The names a loopback server answers to, on any port.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: `IMAGEFORGE_ALLOWED_HOSTS` entry that switches the Host check off.
ANY_HOST = "*"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The connections the checks cover: requests and websockets (a lifespan scope carries no Host).
CONNECTIONS = frozenset({"http", "websocket"})
#: A websocket's own origin is the page's: `ws://host` belongs to `http://host`.
WEBSOCKET_SCHEMES = {"ws": "http", "wss": "https"}
#: The websocket close code for "refused by policy" (RFC 6455).
POLICY_VIOLATION = 1008
#: Binding these listens on every interface of the machine.
ALL_INTERFACES = frozenset({"0.0.0.0", "::", ""})


def allowed_hosts(bind: str, extra: Collection[str] = ()) -> frozenset[str] | None:
    """The host names a server bound to `bind` answers to, plus `extra`; None when `extra` holds `*` (any).

    Loopback names and the bound address always (a bind on every interface listens on loopback too); on a
    network bind also this machine's host name, its fully qualified name and their addresses.
    """
    if ANY_HOST in extra:
        return None
    names = set(LOOPBACK_HOSTS) | {_hostname(host) for host in extra}
    if bind not in ALL_INTERFACES:
        names.add(_hostname(bind))
    if not is_loopback(bind):
        names |= _machine_names()
    return frozenset(names)


def _machine_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    addresses = set()
    for name in names:
        try:
            addresses |= {str(info[4][0]).partition("%")[0] for info in socket.getaddrinfo(name, None)}
        except OSError:  # a host name that does not resolve still names this machine
            continue
    return {_hostname(name) for name in names | addresses}


def _hostname(host: str) -> str:
    """`host` without its port or IPv6 brackets, lower case, without a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _header(scope: Scope, name: bytes) -> str:
    headers: dict[bytes, bytes] = dict(scope.get("headers", []))
    return headers.get(name, b"").decode("latin-1")


class AllowedHosts:
    """ASGI middleware answering 400 `host_not_allowed` unless the Host header names one of `hosts`."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = _header(scope, b"host")
        if scope["type"] in CONNECTIONS and self.hosts is not None and _hostname(host) not in self.hosts:
            if scope["type"] == "websocket":
                await refuse_websocket(send)
                return
            await error_response(
                400,
                HostNotAllowed.code,
                f"This server does not answer to the host name {host!r}.",
                "Reach it at an address it serves (such as 127.0.0.1 on this machine), or add the name to "
                "IMAGEFORGE_ALLOWED_HOSTS on the server.",
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SameOriginWrites:
    """ASGI middleware answering 403 `origin_not_allowed` to a state-changing request from a foreign web page.

    A request's own origin is its scheme and Host; `origins` are the other pages allowed (IMAGEFORGE_CORS_ORIGINS).
    """

    def __init__(self, app: ASGIApp, *, origins: Collection[str]) -> None:
        self.app = app
        self.origins = frozenset(origin.lower() for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self._foreign(scope):
            # A browser opens a websocket from any page, with the user's access: cross-site websocket hijacking.
            await refuse_websocket(send)
            return
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING and self._foreign(scope):
            await error_response(
                403,
                OriginNotAllowed.code,
                f"A web page at {_header(scope, b'origin').lower()} may not send {scope['method']} requests to "
                "this server.",
                "Use the page this server serves, or add that page's origin to IMAGEFORGE_CORS_ORIGINS on the server.",
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _foreign(self, scope: Scope) -> bool:
        """Whether a web page elsewhere sent this: it names an Origin other than this server's and the allowed."""
        origin = _header(scope, b"origin").lower()
        scheme = WEBSOCKET_SCHEMES.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        own = f"{scheme}://{_header(scope, b'host')}".lower()
        return bool(origin) and origin != own and origin not in self.origins


async def refuse_websocket(send: Send) -> None:
    """Refuse a websocket before accepting it: the server answers the handshake with 403."""
    await send({"type": "websocket.close", "code": POLICY_VIOLATION})
