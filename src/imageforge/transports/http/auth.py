"""API keys: `Authorization: Bearer KEY` on every route of the port (HTTP API, job events, images, MCP).

Keys come from IMAGEFORGE_API_KEYS and from the keys file of `imageforge keys` (hashes only), which is read
again whenever it changes, so that a key added or removed while the server runs counts at once. With no key
at all the server answers everyone only where `AccessRule` allows it: on a loopback address, or with
IMAGEFORGE_INSECURE_NO_AUTH set. Anywhere else no key means no entry, for the life of the process: removing the
last key locks the server (503 `no_api_keys`) rather than opening it.
Under the prefixes a compatible API names (A1111's `/sdapi/`, whose clients know only HTTP Basic auth), the
key may also come as the password of `Authorization: Basic`, with any user name.
Open without a key: `GET /health` (reduced to liveness), the orchestrators' `/health/live` and `/health/ready`
(check names and error codes only), the web page's static files, which hold no data, and
`GET /images/{name}` with a valid signature (signed_urls.py), so that `<img src>` and curl need no header.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from imageforge.errors import NoApiKeys, Unauthorized, UrlExpired
from imageforge.transports.http.browser import CONNECTIONS, refuse_websocket
from imageforge.transports.http.errors import error_response
from imageforge.transports.http.keyfile import KeyFile, KeyFileError, digest
from imageforge.transports.http.signed_urls import IMAGES_PREFIX, ImageUrlSigner

log = logging.getLogger(__name__)

#: Paths anyone may read: liveness and readiness (an orchestrator's probe carries no key), and the web page (its
#: data comes from the API, behind the key). /metrics is not among them: it is behind the key like every route.
OPEN_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/ui/",)


@dataclass(frozen=True)
class KeyHolder:
    """Who presented a valid key: the key's name, and whether it is an admin key."""

    name: str
    admin: bool = False


class ApiKeys:
    """Named API keys, from the environment (`keys`: name and key, and optionally whether it is an admin key) and
    the keys file (`file`); false when there are none.

    `holder_of` hashes the presented key and compares it in constant time against every stored hash.
    """

    def __init__(
        self, keys: Iterable[tuple[str, str] | tuple[str, str, bool]] = (), *, file: Path | None = None
    ) -> None:
        self._env = tuple((KeyHolder(entry[0], len(entry) > 2 and bool(entry[2])), digest(entry[1])) for entry in keys)
        self._file = KeyFile(file) if file is not None else None
        self._stamp: tuple[int, int, int] | None = None
        self._stored: tuple[tuple[KeyHolder, bytes], ...] = ()

    def __bool__(self) -> bool:
        return bool(self._entries())

    def holder_of(self, presented: str) -> KeyHolder | None:
        """Who holds the key `presented`, or None; every key is compared, so timing tells nothing."""
        presented_digest = digest(presented)
        found = None
        for holder, stored in self._entries():
            if hmac.compare_digest(presented_digest, stored):
                found = holder
        return found

    def _entries(self) -> tuple[tuple[KeyHolder, bytes], ...]:
        if self._file is not None:
            self._refresh(self._file)
        return self._env + self._stored

    def _refresh(self, file: KeyFile) -> None:
        """Read the keys file again when it changed (a rename gives a new inode even within one mtime tick)."""
        try:
            info = file.path.stat()
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._stored = tuple((KeyHolder(key.name, key.admin), bytes.fromhex(key.sha256)) for key in file.read())
        except (KeyFileError, ValueError) as exc:
            # Keep the keys read last: a half-edited file must not lock everyone out, nor let anyone in.
            log.error("API keys file not reloaded, the previous keys stay in force: %s", exc)


class AccessRule:
    """Who may in, one decision for the life of the process: with any key, key holders; without, everyone on a
    loopback bind or with IMAGEFORGE_INSECURE_NO_AUTH set (`open_without_keys`), and nobody anywhere else."""

    def __init__(self, keys: ApiKeys, *, loopback: bool, insecure_no_auth: bool = False) -> None:
        self.keys = keys
        self.loopback = loopback
        self.open_without_keys = loopback or insecure_no_auth
        self._last_mode: str | None = None

    def mode(self) -> str:
        """`api_key` (a key is needed), `open` (no key and none needed) or `locked` (no key left on a network bind).

        A change of mode is logged once, when a request first sees it.
        """
        mode = "api_key" if self.keys else "open" if self.open_without_keys else "locked"
        if mode != self._last_mode:
            if mode == "locked":
                log.error("No API key left on a network address: every request is refused (no_api_keys). %s", _ADD_KEY)
            elif self._last_mode is not None:
                log.warning("Authentication is now %s.", self.describe(mode))
            self._last_mode = mode
        return mode

    def describe(self, mode: str) -> str:
        """The auth mode in words, as /health reports it to a caller who may see it."""
        if mode == "open":
            if self.loopback:
                return "off (loopback only)"
            return "OFF: no authentication on a network address (IMAGEFORGE_INSECURE_NO_AUTH)"
        return mode


_ADD_KEY = "Add a key with `imageforge keys add NAME` (or IMAGEFORGE_API_KEYS); it counts at once."


class RequireApiKey:
    """ASGI middleware answering 401 `unauthorized` unless the request carries one of the rule's keys (or opens an
    image with a valid signature of `signer`), and 503 `no_api_keys` while the rule is locked.

    The caller's key name and role go into the scope's state (`api_key_name`, `api_key_admin`) for later use
    (job ownership, audit, per-key limits).
    """

    def __init__(
        self, app: ASGIApp, *, rule: AccessRule, signer: ImageUrlSigner, basic_prefixes: Collection[str] = ()
    ) -> None:
        self.app = app
        self.rule = rule
        self.signer = signer
        self.basic_prefixes = tuple(basic_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in CONNECTIONS:
            await self.app(scope, receive, send)
            return
        mode = self.rule.mode()
        if mode == "open" or (mode == "locked" and _is_open(scope)):
            await self.app(scope, receive, send)
            return
        if mode == "locked":
            await (refuse_websocket(send) if scope["type"] == "websocket" else _locked()(scope, receive, send))
            return
        headers = dict(scope.get("headers", []))
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        holder = self.rule.keys.holder_of(token.strip()) if scheme.lower() == "bearer" else None
        if scheme.lower() == "basic" and scope.get("path", "").startswith(self.basic_prefixes):
            holder = self.rule.keys.holder_of(_basic_password(token.strip()))
        if holder is not None:
            state = scope.setdefault("state", {})
            state["api_key_name"], state["api_key_admin"] = holder.name, holder.admin
        elif scope["type"] == "websocket":
            await refuse_websocket(send)  # a handshake has no body to carry an error: the server answers 403
            return
        elif not _is_open(scope):
            if _is_signed_image(scope) and not token:
                refusal = self._signature_refusal(scope)
                if refusal is None:
                    await self.app(scope, receive, send)
                    return
            else:
                refusal = _unauthorized(token)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _signature_refusal(self, scope: Scope) -> Response | None:
        """None for a valid signed image URL, else the 403 answer saying what is wrong with it."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = scope["path"].removeprefix(IMAGES_PREFIX)
        problem = self.signer.check(name, query.get("exp", [""])[0], query.get("sig", [""])[0])
        if problem is None:
            return None
        if problem == UrlExpired.code:
            message = "This image link has expired."
        else:
            message = "This image link's signature does not match the image and expiry time it names."
        return error_response(
            403,
            problem,
            message,
            "Ask for the job again (GET /jobs/{id}) for a fresh link, or send 'Authorization: Bearer <key>'.",
        )


def _basic_password(credentials: str) -> str:
    """The password of HTTP Basic credentials (`user:password`, base64), or empty when they are malformed."""
    try:
        return base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")[2]
    except (binascii.Error, ValueError):
        return ""


def _locked() -> Response:
    return error_response(
        503,
        NoApiKeys.code,
        "This server is on a network address and has no API key left, so it answers nobody.",
        _ADD_KEY + " To serve without authentication instead, set IMAGEFORGE_INSECURE_NO_AUTH=1 and restart.",
    )


def _unauthorized(token: str) -> Response:
    return error_response(
        401,
        Unauthorized.code,
        "This server needs an API key." if not token else "The API key is not valid here.",
        "Send the header 'Authorization: Bearer <key>' with a key from IMAGEFORGE_API_KEYS or `imageforge keys add`.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _is_open(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return (scope.get("method") in ("GET", "HEAD")) and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


def _is_signed_image(scope: Scope) -> bool:
    return (
        scope.get("method") in ("GET", "HEAD")
        and scope.get("path", "").startswith(IMAGES_PREFIX)
        and b"sig=" in scope.get("query_string", b"")
    )
