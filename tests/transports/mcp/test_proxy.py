"""The remote proxy: `imageforge mcp --remote URL` as a real stdio subprocess, driven by the official MCP client,
in front of a real imageforge server on loopback (an `imageforge serve` subprocess, which a test can stop and
start again on the same port)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from anyio import to_thread
from mcp.client.client import Client
from mcp.client.session import IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult, ImageContent, ResourceLink, TextContent
from PIL import Image
from starlette.types import ASGIApp, Receive, Scope, Send

from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.contract.conftest import IMAGEFORGE, Server, free_port, private_data, serving
from tests.events import wait_for_end
from tests.loopback import serving_app
from tests.transports.mcp.answers import error_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: A cold start imports the proxy and the server, and the first generation loads `tiny`.
WAIT_S = 120.0
SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 3}
#: Enough work for a job to be still running when the test cancels it after its first step.
LONG = {"prompt": "a fox", "width": 512, "height": 512, "steps": 100}


@dataclass
class Proxy:
    """How one test launches `imageforge mcp --remote`: its temp folder, its log, what reached stdout."""

    root: Path
    temp: Path = field(init=False)
    stderr: Path = field(init=False)
    stray: list[Exception] = field(default_factory=list)
    #: images the proxy saved outside the test's folder, removed when the test ends
    saved: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.temp = self.root / "temp"
        self.temp.mkdir()
        self.stderr = self.root / "proxy.stderr.log"

    @asynccontextmanager
    async def connect(
        self, remote_url: str, *args: str, legacy: bool = False, own_image_dir: bool = True
    ) -> AsyncIterator[Client]:
        """Launch the proxy for `remote_url` and connect; on exit the client closes stdin and the proxy stops.

        The proxy saves images in the test's temp folder, or with `own_image_dir=False` where it does by default.
        """

        async def keep_transport_faults(message: IncomingMessage) -> None:
            # A line on stdout that is not JSON-RPC reaches the client as an exception here.
            if isinstance(message, Exception):
                self.stray.append(message)

        # $TMPDIR (and Windows' names for it) is the test's folder too: the default folder must not follow it.
        temp = str(self.temp)
        parameters = StdioServerParameters(
            command=str(IMAGEFORGE),
            args=["mcp", "--remote", remote_url, *args, *(["--image-dir", temp] if own_image_dir else [])],
            # PYTHONPATH too: the proxy runs the code under test (a worktree's src) as the tests do.
            env={"TMPDIR": temp, "TEMP": temp, "TMP": temp, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
            cwd=self.root,
        )
        with self.stderr.open("a") as errlog:
            transport = stdio_client(parameters, errlog=errlog)
            client = Client(transport, message_handler=keep_transport_faults, mode="legacy" if legacy else "auto")
            with anyio.fail_after(WAIT_S):
                async with client:
                    yield client

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Server]:
    """One `imageforge serve` for the module's tests that need not stop it."""
    root = tmp_path_factory.mktemp("server")
    with serving(root, private_data(root, data_dir)) as running:
        yield running


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    proxy = Proxy(root=tmp_path)
    yield proxy
    for path in proxy.saved:
        path.unlink(missing_ok=True)


@asynccontextmanager
async def served(
    root: Path, data_dir: Path, port: int, *, settings: Mapping[str, str] | None = None
) -> AsyncIterator[Server]:
    """`serving()` on `port` (with `settings` added to the environment), entered and left in a worker thread: it
    waits for /health and for the exit, which would otherwise hold up the event loop and with it the proxy's stdio."""
    root.mkdir()
    running = serving(root, data_dir, port=port, settings=settings)
    server = await to_thread.run_sync(running.__enter__)
    try:
        yield server
    finally:
        await to_thread.run_sync(running.__exit__, None, None, None)


async def test_the_proxy_lists_the_servers_tools_and_instructions_as_they_are(server: Server, proxy: Proxy) -> None:
    async with Client(f"{server.url}/mcp") as direct:
        expected = (await direct.list_tools()).tools
        instructions = direct.instructions
    async with proxy.connect(server.url) as mcp:
        listed = (await mcp.list_tools()).tools
        relayed_instructions = mcp.instructions

    assert [tool.model_dump() for tool in listed] == [tool.model_dump() for tool in expected]
    assert relayed_instructions == instructions


async def test_generate_image_returns_the_preview_and_the_full_image_saved_in_tmp_not_in_tmpdir(
    server: Server, proxy: Proxy
) -> None:
    # $TMPDIR is the proxy's own folder, as under the macOS App Sandbox: a copy there is out of the user's sight.
    async with proxy.connect(server.url, own_image_dir=False) as mcp:
        result = await mcp.call_tool("generate_image", {**SMALL, "seed": 3})

    assert not result.is_error, result.content
    metadata = result.structured_content
    assert isinstance(metadata, dict)
    local = Path(metadata["output_path"])
    proxy.saved.append(local)
    assert local.parent == Path("/tmp").resolve()
    assert local.name.startswith("imageforge-")
    remote = Path(metadata["remote_output_path"])
    assert remote.parent == server.cwd / "outputs"
    async with httpx.AsyncClient() as http:
        full = await http.get(f"{server.url}/images/{remote.name}")
    assert full.status_code == 200
    assert local.read_bytes() == full.content
    # The metadata text says the same as the structured content, local path included.
    assert [json.loads(block.text) for block in result.content if isinstance(block, TextContent)] == [metadata]
    [preview] = [block for block in result.content if isinstance(block, ImageContent)]
    assert Image.open(io.BytesIO(base64.b64decode(preview.data))).size == (64, 64)
    [link] = [block for block in result.content if isinstance(block, ResourceLink)]
    assert link.uri == local.as_uri()
    # The image travels once, as the bounded preview: the structured copy is the metadata alone.
    assert len(json.dumps(metadata)) < 8 * 1024
    assert len(result.model_dump_json()) < 1024 * 1024, "over the 1 MiB that Claude's clients accept"
    assert proxy.stray == [], "a line on stdout was not JSON-RPC"


async def test_with_count_every_image_is_copied_here_and_linked_to_its_copy(server: Server, proxy: Proxy) -> None:
    async with proxy.connect(server.url) as mcp:
        result = await mcp.call_tool("generate_image", {**SMALL, "seed": 4, "count": 2})

    assert not result.is_error, result.content
    metadata = result.structured_content
    assert isinstance(metadata, dict)
    images = metadata["images"]
    copies = [Path(image["output_path"]) for image in images]
    assert [copy.parent for copy in copies] == [proxy.temp.resolve()] * 2
    assert copies[0] == Path(metadata["output_path"])
    for image, copy in zip(images, copies, strict=True):
        remote = Path(image["remote_output_path"])
        assert remote.parent == server.cwd / "outputs"
        assert copy.read_bytes() == remote.read_bytes()
    links = [block.uri for block in result.content if isinstance(block, ResourceLink)]
    assert links == [copy.as_uri() for copy in copies]


@pytest.mark.parametrize("legacy", [False, True], ids=["discover", "initialize-handshake"])
async def test_the_servers_progress_notifications_reach_the_local_client(
    server: Server, proxy: Proxy, legacy: bool
) -> None:
    reported: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append((progress, total, message))

    # Desktop clients open with the initialize handshake; the official client discovers by default.
    async with proxy.connect(server.url, legacy=legacy) as mcp:
        result = await mcp.call_tool("generate_image", SMALL, progress_callback=on_progress)

    assert not result.is_error, result.content
    steps = [report for report in reported if (report[2] or "").startswith("step")]
    assert steps == [(1, 3, "step 1/3"), (2, 3, "step 2/3"), (3, 3, "step 3/3")]


async def test_a_servers_tool_error_reaches_the_local_client_with_its_code(server: Server, proxy: Proxy) -> None:
    async with proxy.connect(server.url) as mcp:
        result = await mcp.call_tool("generate_image", {"prompt": "a fox", "width": 100})

    error = error_of(result)
    assert error["code"] == "invalid_request"
    assert error["hint"]


async def test_cancelling_the_local_call_cancels_the_job_on_the_server(server: Server, proxy: Proxy) -> None:
    first_step = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        first_step.set()

    async with proxy.connect(server.url) as mcp, anyio.create_task_group() as calls:
        calls.start_soon(lambda: mcp.call_tool("generate_image", LONG, progress_callback=on_progress))
        await first_step.wait()
        calls.cancel_scope.cancel()

    with httpx.Client(base_url=server.url) as http:
        [job, *_] = http.get("/jobs").json()["jobs"]  # newest first: the one just cancelled
        status = await to_thread.run_sync(wait_for_end, http, job)
    assert status == "cancelled"


async def test_the_proxy_answers_server_unavailable_while_the_server_is_down_and_reconnects_when_it_is_back(
    tmp_path: Path, data_dir: Path, proxy: Proxy
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Both servers run on one data folder, as a restarted server does.
    data = private_data(tmp_path, data_dir)
    # Started before any server: a desktop client may launch the proxy before the GPU box is up.
    async with proxy.connect(url) as mcp:
        async with served(tmp_path / "first", data, port):
            tools = (await mcp.list_tools()).tools
            assert not (await mcp.call_tool("list_models", {})).is_error

        down = await mcp.call_tool("generate_image", SMALL)
        # The tools stay listed while the server is down: the last listing it gave.
        assert (await mcp.list_tools(cache_mode="refresh")).tools == tools

        async with served(tmp_path / "second", data, port) as second:
            again = await mcp.call_tool("generate_image", SMALL)

    error = error_of(down)
    assert error["code"] == "server_unavailable"
    assert url in error["message"]
    assert "reconnects by itself" in error["hint"]
    assert not again.is_error, again.content
    assert isinstance(again.structured_content, dict)
    assert Path(again.structured_content["remote_output_path"]).parent == second.cwd / "outputs"
    assert Path(again.structured_content["output_path"]).parent == proxy.temp.resolve()
    assert "cannot be reached" in proxy.log()
    assert proxy.stray == []


async def test_a_server_that_dies_mid_call_answers_server_unavailable(
    tmp_path: Path, data_dir: Path, proxy: Proxy
) -> None:
    first_step = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        first_step.set()

    port = free_port()
    results: list[CallToolResult] = []
    async with proxy.connect(f"http://127.0.0.1:{port}") as mcp:

        async def call() -> None:
            results.append(await mcp.call_tool("generate_image", LONG, progress_callback=on_progress))

        data = private_data(tmp_path, data_dir)
        async with served(tmp_path / "server", data, port) as server, anyio.create_task_group() as calls:
            calls.start_soon(call)
            await first_step.wait()
            server.process.send_signal(signal.SIGKILL)
        afterwards = await mcp.call_tool("list_models", {})

    [result] = results
    error = error_of(result)
    assert error["code"] == "server_unavailable"
    assert "closed before it answered" in error["message"]
    assert error_of(afterwards)["code"] == "server_unavailable", "the proxy went on serving"


class AuthorizationLog:
    """ASGI middleware that records the path and the Authorization header of every HTTP request."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str | None]]) -> None:
        self._app = app
        self._seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            authorization = headers.get(b"authorization")
            self._seen.append((scope["path"], authorization.decode() if authorization else None))
        await self._app(scope, receive, send)


async def test_the_api_key_goes_out_as_a_bearer_token_on_every_request(service: ImageService, proxy: Proxy) -> None:
    seen: list[tuple[str, str | None]] = []
    app = create_app(service)
    app.add_middleware(AuthorizationLog, seen=seen)
    with serving_app(app) as url:
        async with proxy.connect(url, "--api-key", "s3cret") as mcp:
            result = await mcp.call_tool("generate_image", SMALL)

    assert not result.is_error, result.content
    paths = {path for path, _ in seen}
    assert "/mcp" in paths
    assert any(path.startswith("/images/") for path in paths), "the full image was fetched"
    assert {authorization for _, authorization in seen} == {"Bearer s3cret"}
