"""run_proxy(remote_url): a remote imageforge's MCP tools, served on this machine over stdio.

The desktop-extension case: an MCP client such as Claude Desktop starts a local process and speaks MCP over its
stdin and stdout, while the models and the GPU are on another machine that runs `imageforge serve`. The proxy
lists the remote's tools as they are (names, descriptions, input and output schemas, from the remote's `/mcp`),
forwards each call with its progress notifications relayed and its cancellation passed on, and copies each
full-resolution image into a folder of this machine, so that the `output_path` an agent reads is a file it can
open here (the server's own path stays under `remote_output_path`). The folder is /tmp on macOS and Linux and
%TEMP% on Windows, not Python's temp folder: under the macOS App Sandbox that Claude Desktop runs in, $TMPDIR is
a container folder of the app's own, which the user's other programs cannot see.

Reconnecting: the proxy holds no MCP session between requests. Each forwarded request opens its own session on
the remote, over one shared HTTP connection pool, so a remote that restarted (and so forgot its sessions) simply
meets a new one, and a remote that is down fails only the calls made meanwhile: each answers a tool error with
code `server_unavailable`, and the first call after the remote is back works. A session is one discovery
request more per call, which is nothing beside a generation. A remote that refuses the API key (or its absence)
is no outage: at startup the proxy stops with `unauthorized` and what to set, and a call answers that error.

stdout carries the protocol; every log line goes to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from anyio import to_thread
from anyio.lowlevel import checkpoint
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    CallToolRequestParams,
    CallToolResult,
    ContentBlock,
    ListToolsResult,
    PaginatedRequestParams,
    ResourceLink,
    TextContent,
    Tool,
)

from imageforge import __version__
from imageforge.errors import ImageforgeError, ServerUnavailable, Unauthorized, from_code
from imageforge.transports.mcp.content import metadata_content
from imageforge.transports.mcp.results import error_result

log = logging.getLogger(__name__)

#: A remote that does not accept the connection by then is taken to be down.
CONNECT_TIMEOUT_S = 10.0
#: The longest silence on a call: a first model load sends no progress for minutes (weights from the Hub).
READ_TIMEOUT_S = 900.0
#: How long startup waits for the remote's instructions and tools before serving without them.
STARTUP_TIMEOUT_S = 15.0
#: Prefix of the images copied into the image folder, so that a user finds them among other programs' files.
LOCAL_IMAGE_PREFIX = "imageforge-"

_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


def run_proxy(
    remote_url: str,
    *,
    api_key: str | None = None,
    verify_tls: bool | ssl.SSLContext = True,
    image_folder: Path | None = None,
) -> None:
    """Serve the tools of the imageforge at `remote_url` (its base URL, e.g. http://host:8765) over stdio.

    Blocks until the client closes stdin. `api_key` goes out as `Authorization: Bearer KEY` on every request;
    `verify_tls` is True to check the certificate against the system's CAs, an SSL context that trusts a given
    certificate (a self-signed one on a home server), or False to accept any. Full images are saved in
    `image_folder` (default: `default_image_folder()`). `Unauthorized` when the remote refuses the key.
    """
    base_url = remote_base_url(remote_url)
    _log_to_stderr()
    folder = image_folder or default_image_folder()
    anyio.run(partial(serve_proxy, base_url, api_key=api_key, verify_tls=verify_tls, image_folder=folder))


async def serve_proxy(
    base_url: str,
    *,
    api_key: str | None = None,
    verify_tls: bool | ssl.SSLContext = True,
    image_folder: Path | None = None,
) -> None:
    """The proxy's event loop body: what `run_proxy` runs, for a caller that already has a loop."""
    async with remote_http_client(api_key=api_key, verify_tls=verify_tls) as http:
        server = await build_proxy_server(RemoteImageforge(base_url, http), image_folder or default_image_folder())
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


def default_image_folder() -> Path:
    """Where the full images go: /tmp on macOS and Linux, %TEMP% on Windows (never a sandboxed $TMPDIR)."""
    if sys.platform == "win32":
        return Path(os.environ.get("TEMP") or tempfile.gettempdir())
    return Path("/tmp")


def remote_base_url(remote_url: str) -> str:
    """`remote_url` checked and without a trailing slash or `/mcp` (users paste the MCP endpoint too)."""
    parts = urlsplit(remote_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"The remote URL {remote_url!r} is not an http:// or https:// address like http://host:8765.")
    path = parts.path.rstrip("/").removesuffix("/mcp").rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path}"


def remote_http_client(*, api_key: str | None, verify_tls: bool | ssl.SSLContext) -> httpx2.AsyncClient:
    """The one HTTP client of the proxy: the MCP transport and the image downloads share its pool and key."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = httpx2.Timeout(30.0, connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
    # The MCP transport follows only same-origin redirects by itself; downloads follow none either.
    return httpx2.AsyncClient(headers=headers, timeout=timeout, verify=verify_tls)


class ProgressRelay:
    """Passes the remote's progress notifications on to the local client, and lets the call wait for those still
    on their way.

    The SDK runs each progress callback as a task of its own, so the remote's answer can arrive while the last
    steps are still being relayed, and closing the remote session then cancels them; a step relayed after the
    answer would belong to a finished call, and the local client would drop it.
    """

    def __init__(self, ctx: ServerRequestContext[Any]) -> None:
        self._ctx = ctx
        self._sending = 0
        self._idle = anyio.Event()
        self._idle.set()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        if self._sending == 0:
            self._idle = anyio.Event()
        self._sending += 1
        try:
            await self._ctx.session.report_progress(progress, total, message)
        finally:
            self._sending -= 1
            if self._sending == 0:
                self._idle.set()

    async def drained(self) -> None:
        """Return once every step reported before the answer was relayed."""
        await checkpoint()  # relays spawned before the answer arrived start first
        await self._idle.wait()


class RemoteImageforge:
    """An imageforge server reached over HTTP: its `/mcp` endpoint for the tools, its image URLs for the files.

    Every method opens a fresh MCP session, so none depends on the remote having stayed up in between; a remote
    that cannot be reached raises `ServerUnavailable`, one that refuses the request at its door (no API key, a
    wrong one) the error it answered, `Unauthorized` for a key.
    """

    def __init__(self, base_url: str, http: httpx2.AsyncClient) -> None:
        self.base_url = base_url
        self.mcp_url = f"{base_url}/mcp"
        self._http = http
        #: what the remote answered the last refused MCP request, until one is accepted again
        self._refusal: ImageforgeError | None = None
        # The MCP transport turns a refusal into a bare "Server returned an error response", dropping its status
        # and body; a hook on the shared client reads them first.
        http.event_hooks["response"].append(self._note_refusal)

    async def describe(self) -> tuple[str | None, list[Tool]]:
        """The remote's instructions and its tools."""
        async with self._session() as client:
            return client.instructions, await _all_tools(client)

    async def list_tools(self) -> list[Tool]:
        """The remote's tools, as it lists them now."""
        async with self._session() as client:
            return await _all_tools(client)

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None, on_progress: ProgressRelay | None
    ) -> CallToolResult:
        """Call the remote tool `name`; a cancelled caller cancels the remote call (the request is dropped)."""
        async with self._session() as client:
            result = await client.call_tool(name, arguments, progress_callback=on_progress)
            if on_progress is not None:
                # Inside the session: closing it cancels the relays of the last steps if they are still running.
                await on_progress.drained()
            return result

    async def fetch(self, url: str) -> bytes:
        """The file at `url`, a link in one of the remote's results."""
        try:
            response = await self._http.get(self._on_remote(url))
            response.raise_for_status()
        except httpx2.TransportError as exc:
            raise self._unavailable(exc) from exc
        return response.content

    def _on_remote(self, url: str) -> str:
        """`url` on the origin the proxy was given.

        The server builds its links from the Host it saw, which behind a TLS-terminating reverse proxy is an
        internal http:// address this machine may not reach; the path is what identifies the file. It also keeps
        the API key from going to any other origin.
        """
        link = urlsplit(url)
        base = urlsplit(self.base_url)
        if (link.scheme, link.netloc) == (base.scheme, base.netloc):
            return url
        return f"{self.base_url}{link.path}"

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Client]:
        """A new MCP session on the remote; any failure to reach it, at any point, raises `ServerUnavailable`."""
        try:
            transport = streamable_http_client(self.mcp_url, http_client=self._http)
            # No response cache: a session lives for one request, so nothing cached would ever be read.
            async with Client(transport, cache=None) as client:
                yield client
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise self._refusal or exc from exc
            raise self._unavailable(exc) from exc
        except Exception as exc:
            # The transport's task group wraps a refused connection or a dropped stream in an exception group.
            failure = _network_failure(exc)
            if failure is None:
                raise self._refusal or exc from exc
            raise self._unavailable(failure) from exc

    async def _note_refusal(self, response: httpx2.Response) -> None:
        """Keep the error of an MCP request the remote refused (401, 403), or forget it once one is accepted."""
        if urlsplit(str(response.request.url)).path != urlsplit(self.mcp_url).path:
            return
        if response.status_code not in (401, 403):
            if response.status_code < 400:
                self._refusal = None
            return
        await response.aread()
        try:
            error = response.json()["error"]
            refusal = from_code(str(error["code"]), str(error["message"]), str(error.get("hint") or ""))
        except (ValueError, KeyError, TypeError):
            refusal = from_code("forbidden", f"HTTP {response.status_code} {response.reason_phrase}")
        if isinstance(refusal, Unauthorized):
            refusal = Unauthorized(
                f"The imageforge server at {self.base_url} refused the request: {refusal.message}",
                hint="Set IMAGEFORGE_API_KEY to one of its API keys where `imageforge mcp` starts (or pass "
                "--api-key; in Claude Desktop, the extension's API key setting). `imageforge keys add NAME` on "
                "the server's machine makes one.",
            )
        self._refusal = refusal

    def _unavailable(self, cause: BaseException) -> ServerUnavailable:
        if isinstance(cause, MCPError):
            message = f"The connection to the imageforge server at {self.base_url} closed before it answered: "
            message += f"{cause.message}."
        else:
            message = (
                f"The imageforge server at {self.base_url} cannot be reached: {str(cause) or type(cause).__name__}."
            )
        return ServerUnavailable(
            message,
            hint="Check that it is running (imageforge serve) and reachable from this machine, then call again: "
            "the proxy reconnects by itself, nothing needs a restart.",
        )


async def build_proxy_server(remote: RemoteImageforge, image_folder: Path) -> Server[Any]:
    """A low-level MCP server that serves `remote`'s tools, saving full images in `image_folder`; asks the remote
    for its tools once before serving.

    A remote that is down at startup is no failure: the proxy serves anyway and lists the tools once it answers.
    One that refuses the request (`Unauthorized` for the API key) is: nothing would work until it is fixed.
    """
    instructions: str | None = None
    tools: list[Tool] = []
    with anyio.move_on_after(STARTUP_TIMEOUT_S) as waited:
        try:
            instructions, tools = await remote.describe()
        except ServerUnavailable as exc:
            log.warning("%s The tools will be listed once it answers.", exc.message)
    if waited.cancelled_caught:
        log.warning("The imageforge server at %s did not answer within %.0fs.", remote.base_url, STARTUP_TIMEOUT_S)
    if tools:
        log.info("Serving %d tools of the imageforge server at %s.", len(tools), remote.base_url)
    proxy = _Proxy(remote, tools, image_folder)
    return Server(
        "imageforge",
        version=__version__,
        instructions=instructions,
        on_list_tools=proxy.list_tools,
        on_call_tool=proxy.call_tool,
    )


class _Proxy:
    """The two request handlers: list the remote's tools, and forward a call and bring its image here."""

    def __init__(self, remote: RemoteImageforge, tools: list[Tool], image_folder: Path) -> None:
        self._remote = remote
        #: The last listing the remote gave, served while it is down.
        self._tools = tools
        self._image_folder = image_folder

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        try:
            self._tools = await self._remote.list_tools()
        except ImageforgeError as exc:
            if not self._tools:
                raise MCPError(INTERNAL_ERROR, f"{exc.message} {exc.hint}") from exc
            log.warning("%s Listing the tools it listed last.", exc.message)
        return ListToolsResult(tools=self._tools)

    async def call_tool(self, ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        relay = ProgressRelay(ctx)
        # The remote reports progress only when asked, and is asked only when the local client asked.
        wants_progress = progress_token_from_params(ctx.params) is not None
        try:
            result = await self._remote.call_tool(params.name, params.arguments, relay if wants_progress else None)
        except ImageforgeError as exc:
            log.warning("%s (tool %s)", exc.message, params.name)
            return error_result(exc)
        if result.is_error:
            return result
        return await self._with_local_image(result)

    async def _with_local_image(self, result: CallToolResult) -> CallToolResult:
        """`result` with each full image copied into the image folder and `output_path` naming the copy (in
        `images` too, for a result of several)."""
        metadata = result.structured_content
        if not isinstance(metadata, dict) or "output_path" not in metadata:
            return result
        urls = _image_urls(result)
        if not urls:
            return result
        local_paths: dict[str, Path] = {}
        try:
            for url in urls:
                png = await self._remote.fetch(url)
                local_paths[url] = await to_thread.run_sync(_save_image, self._image_folder, _local_name(url), png)
                log.info("Saved %s as %s", url, local_paths[url])
        except (ServerUnavailable, httpx2.HTTPStatusError, OSError) as exc:
            # The image exists and the preview shows it: a result that says where it is beats an error.
            log.warning("Could not copy %s here: %s", url, exc)
            notice = f"The full image could not be copied to this machine ({exc}); it is on the server at output_path."
            return _with_metadata(result, {**metadata, "notice": _joined(metadata.get("notice"), notice)}, {})
        copies = list(local_paths.values())
        localized = {**metadata, "output_path": str(copies[0]), "remote_output_path": metadata["output_path"]}
        images = metadata.get("images")
        if isinstance(images, list) and len(images) == len(copies):
            localized["images"] = [
                {**image, "output_path": str(copy), "remote_output_path": image.get("output_path")}
                for image, copy in zip(images, copies, strict=True)
            ]
        return _with_metadata(result, localized, local_paths)


async def _all_tools(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


def _network_failure(exc: BaseException) -> BaseException | None:
    """The failure to reach the remote inside `exc`, or None when `exc` is something else (a bug, a refusal)."""
    if isinstance(exc, httpx2.TransportError | OSError):
        return exc
    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (failure := _network_failure(inner)) is not None:
                return failure
    return None


def _image_urls(result: CallToolResult) -> list[str]:
    """Where the full images are: the result's links to them, else the `url` of its metadata."""
    links = [
        block.uri
        for block in result.content
        if isinstance(block, ResourceLink) and (block.mime_type or "").startswith("image/")
    ]
    if links:
        return links
    url = result.structured_content.get("url") if isinstance(result.structured_content, dict) else None
    return [url] if isinstance(url, str) and url else []


def _local_name(url: str) -> str:
    """A file name for the copy: the server's own name, kept to characters every file system accepts."""
    name = _UNSAFE_NAME_CHARACTERS.sub("_", PurePosixPath(urlsplit(url).path).name).lstrip(".")
    return LOCAL_IMAGE_PREFIX + (name or "image.png")


def _save_image(folder: Path, name: str, png: bytes) -> Path:
    """Write the image into `folder`; returns its absolute path."""
    path = folder.resolve() / name
    path.write_bytes(png)
    return path


def _with_metadata(result: CallToolResult, metadata: dict[str, Any], local_paths: dict[str, Path]) -> CallToolResult:
    """`result` with new structured content, the same in its metadata text, and each link on its local copy."""
    original = result.structured_content
    content: list[ContentBlock] = []
    for block in result.content:
        if isinstance(block, TextContent) and _parses_to(block.text, original):
            content.append(metadata_content(metadata))
        elif isinstance(block, ResourceLink) and block.uri in local_paths:
            content.append(
                block.model_copy(
                    update={
                        "uri": local_paths[block.uri].as_uri(),
                        "description": "The full-resolution image, on this machine.",
                    }
                )
            )
        else:
            content.append(block)
    return result.model_copy(update={"content": content, "structured_content": metadata})


def _parses_to(text: str, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False


def _joined(first: Any, second: str) -> str:
    return f"{first} {second}" if first else second


def _log_to_stderr() -> None:
    """Send logs to stderr (stdout is the protocol), unless the caller set logging up already."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
