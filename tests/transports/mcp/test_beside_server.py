"""`imageforge mcp` over stdio beside an `imageforge serve` on the same data folder, as in Claude Code with a server
running: real subprocesses of both, driven by the official MCP client and by HTTP.

Started beside a server, the stdio process finds it in the data folder's lock and relays to it (one queue, one
loaded model); started first, it runs the engine itself, and a server started meanwhile is refused with what to do.
"""

from __future__ import annotations

import subprocess
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest
from anyio import to_thread
from mcp_types import CallToolResult

from imageforge.jobs.owner import Owner, OwnerLock
from tests.contract.conftest import IMAGEFORGE, free_port, private_data, stop, user_environment
from tests.events import wait_for_end
from tests.transports.mcp.answers import error_of
from tests.transports.mcp.test_proxy import LONG, SMALL, served
from tests.transports.mcp.test_stdio import CONSOLE_SCRIPT, StdioServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: A key of 16+ characters, as IMAGEFORGE_API_KEYS takes them.
KEY = "agent-key-0123456789abcdef"


@pytest.fixture
def data(tmp_path: Path, data_dir: Path) -> Path:
    """The one data folder the server and the agent's MCP server share."""
    return private_data(tmp_path, data_dir)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Where the relay saves full images (by default /tmp; a test keeps its own)."""
    folder = tmp_path / "images"
    folder.mkdir()
    return folder


@pytest.fixture
def agent(tmp_path: Path, data: Path) -> StdioServer:
    """How the agent launches `imageforge mcp`: in a folder of its own, on the server's data folder."""
    root = tmp_path / "agent"
    root.mkdir()
    return StdioServer(root=root, data_dir=data, stderr=root / "stderr.log")


async def test_mcp_started_beside_a_server_relays_to_it_on_one_queue_with_progress_cancel_and_local_images(
    tmp_path: Path, data: Path, images: Path, agent: StdioServer
) -> None:
    reported: list[tuple[float, float | None]] = []
    first_step = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("step "):  # the queue and the model load report without a total
            reported.append((progress, total))
            first_step.set()

    async with (
        served(tmp_path / "server", data, free_port()) as server,
        agent.connect([*CONSOLE_SCRIPT, "--image-dir", str(images)]) as mcp,
    ):
        result = await mcp.call_tool("generate_image", SMALL, progress_callback=on_progress)
        progress, first_step = reported.copy(), anyio.Event()
        async with anyio.create_task_group() as calls:
            calls.start_soon(lambda: mcp.call_tool("generate_image", LONG, progress_callback=on_progress))
            await first_step.wait()
            calls.cancel_scope.cancel()
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            jobs = http.get("/jobs").json()["jobs"]  # newest first
            cancelled = await to_thread.run_sync(wait_for_end, http, jobs[0])

    assert not result.is_error, result.content
    metadata = result.structured_content
    assert isinstance(metadata, dict)
    assert metadata["job_id"] == jobs[1]["job_id"], "the server's queue ran the agent's job"
    assert progress == [(1, 3), (2, 3), (3, 3)]
    local = Path(metadata["output_path"])
    assert local.parent == images.resolve()
    assert local.read_bytes() == (server.cwd / "outputs" / Path(metadata["remote_output_path"]).name).read_bytes()
    assert cancelled == "cancelled"
    assert f"relaying to the imageforge server at {server.url}" in agent.log()
    assert "imageforge MCP server on stdio" not in agent.log(), "no engine of its own"
    assert agent.stray == []


async def test_a_server_started_while_an_agents_mcp_runs_here_is_refused_and_the_next_mcp_relays_to_it(
    tmp_path: Path, data: Path, images: Path, agent: StdioServer
) -> None:
    port = free_port()
    (tmp_path / "refused").mkdir()
    async with agent.connect(CONSOLE_SCRIPT) as mcp:
        await mcp.list_tools()  # answered: the process runs the jobs of the data folder
        refused = await to_thread.run_sync(
            partial(
                subprocess.run,
                [str(IMAGEFORGE), "serve", "--port", str(port)],
                cwd=tmp_path / "refused",
                env=user_environment(data),
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
    async with (
        served(tmp_path / "server", data, port) as server,
        agent.connect([*CONSOLE_SCRIPT, "--image-dir", str(images)]) as mcp,
    ):
        result = await mcp.call_tool("generate_image", SMALL)

    assert refused.returncode == 1
    assert "error [data_dir_in_use]" in refused.stderr
    assert "imageforge mcp over stdio" in refused.stderr
    assert "start the agent's MCP server again" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    assert Path(result.structured_content["remote_output_path"]).parent == server.cwd / "outputs"
    assert f"relaying to the imageforge server at {server.url}" in agent.log()


async def test_the_relay_answers_server_unavailable_while_its_server_is_down_and_works_again_when_it_is_back(
    tmp_path: Path, data: Path, images: Path, agent: StdioServer
) -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(served(tmp_path / "first", data, port))
        mcp = await stack.enter_async_context(agent.connect([*CONSOLE_SCRIPT, "--image-dir", str(images)]))
        before = await mcp.call_tool("list_models", {})
        await to_thread.run_sync(stop, first.process)
        down = await mcp.call_tool("generate_image", SMALL)
        async with served(tmp_path / "second", data, port) as second:
            again = await mcp.call_tool("generate_image", SMALL)

    assert not before.is_error, before.content
    error = error_of(down)
    assert error["code"] == "server_unavailable"
    assert f"http://127.0.0.1:{port}" in error["message"]
    assert not again.is_error, again.content
    assert isinstance(again.structured_content, dict)
    assert Path(again.structured_content["remote_output_path"]).parent == second.cwd / "outputs"


async def test_beside_a_server_with_keys_the_relay_needs_imageforge_api_key_and_says_so_without_it(
    tmp_path: Path, data: Path, images: Path, agent: StdioServer
) -> None:
    keys = {"IMAGEFORGE_API_KEYS": f"agent:{KEY}"}
    async with served(tmp_path / "server", data, free_port(), settings=keys):
        refused = await to_thread.run_sync(
            partial(
                subprocess.run,
                [str(IMAGEFORGE), "mcp"],
                cwd=agent.root,
                env=user_environment(data),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
        async with agent.connect([*CONSOLE_SCRIPT, "--image-dir", str(images)], env={"IMAGEFORGE_API_KEY": KEY}) as mcp:
            result: CallToolResult = await mcp.call_tool("generate_image", SMALL)

    assert refused.returncode == 1, refused.stderr
    assert "error [unauthorized]" in refused.stderr
    assert "needs an API key" in refused.stderr
    assert "IMAGEFORGE_API_KEY" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    assert Path(result.structured_content["output_path"]).parent == images.resolve(), "fetched with the key"


def test_a_server_whose_certificate_cannot_be_read_here_is_named_rather_than_a_traceback(
    data: Path, agent: StdioServer
) -> None:
    # The lock held here on behalf of an https server whose certificate file is gone.
    server = Owner("imageforge serve", url="https://127.0.0.1:1", ca_cert=str(data / "gone.pem"))
    lock = OwnerLock.of_database(data / "jobs.sqlite", server)
    lock.acquire()
    try:
        done = subprocess.run(
            [str(IMAGEFORGE), "mcp"],
            cwd=agent.root,
            env=user_environment(data),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        lock.release()

    assert done.returncode == 1
    assert "error [server_unavailable]" in done.stderr
    assert "gone.pem, which cannot be read here" in done.stderr
    assert "Traceback" not in done.stderr
