"""MCP over stdio: a real `python -m imageforge.mcp_server` (or `imageforge mcp`) subprocess, as an agent
launches it, driven by the official MCP client on its stdin and stdout."""

from __future__ import annotations

import base64
import io
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from mcp.client.client import Client
from mcp.client.session import IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import BlobResourceContents, CallToolResult, ImageContent, ResourceLink, TextContent
from PIL import Image

from imageforge import __version__
from imageforge.domain import JobStatus
from imageforge.jobs.store import JobStore
from tests.contract.conftest import IMAGEFORGE, user_environment

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOOLS = {
    "generate_image",
    "edit_image",
    "inpaint_image",
    "replay_image",
    "assist_prompt",
    "list_models",
    "list_loras",
    "list_styles",
    "list_images",
    "submit_async_job",
    "get_job_status",
    "get_job_result",
    "cancel_job",
}
IMAGE_TOOLS = {"generate_image", "edit_image", "inpaint_image", "replay_image", "get_job_result"}
#: A cold start imports the server, and the first generation imports torch and loads `tiny`.
WAIT_S = 120.0
MODULE = [sys.executable, "-m", "imageforge.mcp_server"]
CONSOLE_SCRIPT = [str(IMAGEFORGE), "mcp"]
#: Steps enough for a job to be still running when the client goes, on any machine.
LONG_STEPS = 1000


@dataclass
class StdioServer:
    """How to launch one server subprocess, where its stderr goes, and what reached the client as not protocol."""

    root: Path
    data_dir: Path
    stderr: Path
    stray: list[Exception] = field(default_factory=list)

    def parameters(self, command: list[str], env: dict[str, str]) -> StdioServerParameters:
        """A user's shell in an empty folder, with `tiny` as the default model and a data folder of its own."""
        cwd = self.root / "cwd"
        cwd.mkdir(exist_ok=True)
        env = user_environment(self.data_dir) | env
        return StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=cwd)

    @asynccontextmanager
    async def connect(
        self, command: list[str] = MODULE, *, legacy: bool = False, env: dict[str, str] | None = None
    ) -> AsyncIterator[Client]:
        """Launch the server and connect; on exit the client closes stdin and the server stops."""

        async def keep_transport_faults(message: IncomingMessage) -> None:
            # A line on stdout that is not JSON-RPC reaches the client as an exception here.
            if isinstance(message, Exception):
                self.stray.append(message)

        with self.stderr.open("a") as errlog:
            transport = stdio_client(self.parameters(command, env or {}), errlog=errlog)
            client = Client(transport, message_handler=keep_transport_faults, mode="legacy" if legacy else "auto")
            with anyio.fail_after(WAIT_S):
                async with client:
                    yield client

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@pytest.fixture
def stdio(tmp_path: Path, data_dir: Path) -> StdioServer:
    own_data = tmp_path / "data"
    own_data.mkdir()
    # The session's built `tiny` is shared; the job database is this test's own.
    (data_dir / "models").mkdir(exist_ok=True)
    (own_data / "models").symlink_to(data_dir / "models", target_is_directory=True)
    return StdioServer(root=tmp_path, data_dir=own_data, stderr=tmp_path / "stderr.log")


def _text(result: CallToolResult, index: int = 0) -> str:
    block = result.content[index]
    assert isinstance(block, TextContent)
    return block.text


async def test_the_initialize_handshake_names_the_server_and_gives_instructions(stdio: StdioServer) -> None:
    # Desktop clients still open with the initialize handshake; the console script is what they launch.
    async with stdio.connect(CONSOLE_SCRIPT, legacy=True) as mcp:
        info = mcp.server_info
        instructions = mcp.instructions

    assert info is not None
    assert (info.name, info.version) == ("imageforge", __version__)
    assert instructions is not None
    assert "output_path" in instructions


async def test_the_tools_are_listed_with_descriptions_and_image_output_schemas(stdio: StdioServer) -> None:
    async with stdio.connect() as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}

    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description, f"{tool.name} has no description"
    for name in IMAGE_TOOLS:
        schema = tools[name].output_schema
        assert schema is not None
        assert {"output_path", "seed", "model"} <= set(schema["properties"])


async def test_generate_image_reports_progress_and_returns_preview_metadata_and_a_link_to_the_images_resource(
    stdio: StdioServer,
) -> None:
    reported: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append((progress, total, message))

    async with stdio.connect() as mcp:
        arguments = {"prompt": "a fox", "seed": 3, "width": 64, "height": 64, "steps": 3}
        result = await mcp.call_tool("generate_image", arguments, progress_callback=on_progress)
        assert result.structured_content is not None
        read = await mcp.read_resource(result.structured_content["uri"])

    assert not result.is_error, result.content
    # A new server process loads the model first, and says so (again every 10 s while it lasts: "… (10 s)").
    said = [report for report in reported if not (report[2] or "").endswith(" s)")]
    assert said == [(0.5, None, "loading tiny"), (1, 3, "step 1/3"), (2, 3, "step 2/3"), (3, 3, "step 3/3")]
    metadata = result.structured_content
    assert metadata is not None
    assert (metadata["model"], metadata["seed"], metadata["width"]) == ("tiny", 3, 64)
    assert json.loads(_text(result, index=1)) == metadata
    assert Path(metadata["output_path"]).is_file()
    assert metadata["url"] is None, "no HTTP origin over stdio"
    [preview] = [block for block in result.content if isinstance(block, ImageContent)]
    assert Image.open(io.BytesIO(base64.b64decode(preview.data))).size == (64, 64)
    [link] = [block for block in result.content if isinstance(block, ResourceLink)]
    assert link.uri == metadata["uri"] == f"imageforge://images/{Path(metadata['output_path']).name}"
    [contents] = read.contents
    assert isinstance(contents, BlobResourceContents)
    assert base64.b64decode(contents.blob) == Path(metadata["output_path"]).read_bytes()


async def test_a_bad_request_is_a_tool_error_with_the_http_apis_code(stdio: StdioServer) -> None:
    async with stdio.connect() as mcp:
        result = await mcp.call_tool("generate_image", {"prompt": "a fox", "width": 100})

    assert result.is_error
    error = json.loads(_text(result))["error"]
    assert error["code"] == "invalid_request"
    assert error["hint"]


async def test_stdout_carries_only_the_protocol_and_the_log_goes_to_stderr(stdio: StdioServer) -> None:
    async with stdio.connect() as mcp:
        # A generation loads a model: the part where libraries are most likely to print.
        result = await mcp.call_tool("generate_image", {"prompt": "a fox", "width": 64, "height": 64, "steps": 2})
        assert not result.is_error

    assert stdio.stray == [], "a line on stdout was not JSON-RPC"
    log = stdio.log()
    assert "imageforge MCP server on stdio" in log
    assert "loaded tiny" in log
    # Written after stdin closed and before the client's grace period ran out: the server stopped by itself.
    assert "the client closed the connection; stopping" in log


async def test_a_client_that_goes_mid_generation_leaves_the_job_cancelled_and_the_server_stopped(
    stdio: StdioServer,
) -> None:
    first_step = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if (message or "").startswith("step"):
            first_step.set()

    arguments = {"prompt": "a fox", "width": 256, "height": 256, "steps": LONG_STEPS}
    async with stdio.connect(env={"IMAGEFORGE_MAX_STEPS": str(LONG_STEPS)}) as mcp, anyio.create_task_group() as calls:
        calls.start_soon(lambda: mcp.call_tool("generate_image", arguments, progress_callback=on_progress))
        await first_step.wait()
        calls.cancel_scope.cancel()

    store = JobStore(stdio.data_dir / "jobs.sqlite")
    try:
        [job] = store.recent(now=time.time())
    finally:
        store.close()
    assert job.status is JobStatus.CANCELLED
    assert "unloaded tiny at shutdown" in stdio.log()
