"""McpSessions: the MCP endpoint's Streamable HTTP sessions, kept apart per client and capped per client.

A session (its `mcp-session-id`) belongs to the client that initialized it: with API keys on, another key that
uses or deletes it gets 404, exactly as for a session that does not exist. Each client (a key's name, or a peer
address without keys) may hold `per_client` live sessions; one more initialize answers 429 until one of them ends,
by DELETE or by the SDK's idle timeout.
"""

from __future__ import annotations

from collections import Counter

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageforge.errors import McpSessionLimit, McpSessionNotFound
from imageforge.transports.clients import caller_of
from imageforge.transports.http.errors import error_response

_SESSION_HEADER = MCP_SESSION_ID_HEADER.encode()
_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.encode()


class McpSessions:
    """ASGI wrapper of the MCP endpoint `app`, whose sessions `manager` runs (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, manager: StreamableHTTPSessionManager, per_client: int) -> None:
        self.app = app
        self.manager = manager
        self.per_client = per_client
        #: session id -> the client that initialized it
        self._owners: dict[str, str] = {}
        #: initializes in flight per client, counted against the cap until they answer
        self._opening: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        caller = caller_of(scope)
        client = caller.name
        headers = dict(scope.get("headers", []))
        session = headers.get(_SESSION_HEADER, b"").decode("latin-1")
        if session:
            owner = self._owners.get(session)
            # Without keys nobody proved who they are, so a session is everyone's (as jobs are); an admin key
            # sees every job but uses only its own sessions.
            if owner is not None and owner != client and caller.isolated:
                await _not_found()(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if not _may_open_session(scope["method"], headers):
            await self.app(scope, receive, send)
            return
        if self._held_by(client) >= self.per_client:
            await _over_cap(self.per_client)(scope, receive, send)
            return
        self._opening[client] += 1
        try:
            await self.app(scope, receive, self._recording(client, send))
        finally:
            self._opening[client] -= 1
            if not self._opening[client]:
                del self._opening[client]

    def _recording(self, client: str, send: Send) -> Send:
        """`send`, noting the session id an initialize answer opens as `client`'s."""

        async def recorded(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                opened = dict(message.get("headers", [])).get(_SESSION_HEADER)
                if opened:
                    self._owners[opened.decode("latin-1")] = client
            await send(message)

        return recorded

    def _held_by(self, client: str) -> int:
        """The live sessions of `client`, plus its initializes in flight; forgets sessions that have ended."""
        # The SDK offers no hook when a session ends (DELETE, idle timeout, crash); its table of live sessions
        # is the one truth about which still run.
        live = self.manager._server_instances
        for ended in [session for session in self._owners if session not in live]:
            del self._owners[ended]
        return sum(1 for owner in self._owners.values() if owner == client) + self._opening[client]


def _may_open_session(method: str, headers: dict[bytes, bytes]) -> bool:
    """Whether the SDK may open a session for this request: a POST without a session id, in the protocol versions
    that have a handshake (later versions are served without sessions)."""
    version = headers.get(_VERSION_HEADER)
    return method == "POST" and (version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS)


def _not_found() -> Response:
    return error_response(
        404,
        McpSessionNotFound.code,
        "No such MCP session.",
        "Initialize a new session (send a request without the mcp-session-id header).",
    )


def _over_cap(per_client: int) -> Response:
    return error_response(
        429,
        McpSessionLimit.code,
        f"You have {per_client} MCP sessions open, the most one client may hold.",
        "End sessions you no longer use (DELETE /mcp with their mcp-session-id header), or wait for idle ones to "
        "expire; the server's admin sets the cap with IMAGEFORGE_MCP_SESSIONS_PER_CLIENT.",
    )
