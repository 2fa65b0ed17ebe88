"""The client-only install (`pip install imageforge`, without the `server` extra): real `imageforge` subprocesses that
cannot import torch, diffusers or fastapi (tests/client_only/sitecustomize.py takes them away), beside a real
`imageforge serve` that has everything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from anyio import fail_after
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.contract.conftest import IMAGEFORGE, free_port, private_data, serving, user_environment
from tests.loopback import serving_app

pytestmark = pytest.mark.slow

CLIENT_ONLY = Path(__file__).parents[2] / "client_only"
WAIT_S = 120.0


def client_only(env: dict[str, str]) -> dict[str, str]:
    """`env` with the server side taken away: the blocking `sitecustomize` first on PYTHONPATH."""
    return {**env, "PYTHONPATH": os.pathsep.join([str(CLIENT_ONLY), os.environ.get("PYTHONPATH", "")])}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IMAGEFORGE), *args],
        env=client_only(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "doing"),
    [
        (["mcp"], "With no imageforge server running on this data folder, `imageforge mcp`"),
        (["serve", "--port", str(free_port())], "`imageforge serve`"),
        (["generate", "a fox", "--local"], "With no server to use, `imageforge generate`"),
    ],
    ids=["mcp", "serve", "generate"],
)
def test_a_command_that_would_run_the_engine_here_says_to_install_the_server_side(
    tmp_path: Path, args: list[str], doing: str
) -> None:
    done = _run(args, user_environment(tmp_path / "data"), tmp_path)

    assert done.returncode == 1, done.stderr
    assert f"error [server_side_missing]: {doing} needs imageforge's server side" in done.stderr
    assert "pip install 'imageforge[server]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "doing"),
    [
        (["worker", "--queue", "redis://127.0.0.1:1/0"], "`imageforge worker`"),
        (["serve", "--port", str(free_port()), "--queue", "redis://127.0.0.1:1/0"], "`imageforge serve --queue`"),
    ],
    ids=["worker", "serve"],
)
def test_a_command_on_the_shared_queue_without_celery_installed_says_to_install_the_distributed_extra(
    tmp_path: Path, args: list[str], doing: str
) -> None:
    env = {**user_environment(tmp_path / "data"), "IMAGEFORGE_TEST_ABSENT": "celery,kombu,redis"}
    done = _run(args, env, tmp_path)

    assert done.returncode == 1, done.stderr
    assert f"error [server_side_missing]: {doing} on the shared queue needs Celery and redis" in done.stderr
    assert "pip install 'imageforge[server,distributed]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.anyio
async def test_the_client_only_mcp_relays_to_the_server_beside_it(tmp_path: Path, data_dir: Path) -> None:
    data = private_data(tmp_path, data_dir)
    (tmp_path / "server").mkdir()
    with serving(tmp_path / "server", data, port=free_port()) as server:
        parameters = StdioServerParameters(
            command=str(IMAGEFORGE),
            args=["mcp", "--image-dir", str(tmp_path)],
            env=client_only(user_environment(data)),
            cwd=tmp_path,
        )
        with (tmp_path / "mcp.log").open("w") as errlog, fail_after(WAIT_S):
            async with Client(stdio_client(parameters, errlog=errlog)) as mcp:
                result = await mcp.call_tool("generate_image", {"prompt": "a fox", "width": 64, "height": 64})

    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    assert Path(result.structured_content["output_path"]).parent == tmp_path.resolve()
    assert Path(result.structured_content["remote_output_path"]).parent == server.cwd / "outputs"


def test_any_command_that_needs_the_engine_here_says_so_instead_of_a_traceback(tmp_path: Path) -> None:
    done = _run(["models"], user_environment(tmp_path / "data"), tmp_path)

    assert done.returncode == 1, done.stderr
    assert "error [server_side_missing]: This command needs imageforge's server side" in done.stderr
    assert "Traceback" not in done.stderr


#: A program that uses both Python clients and reports which server-side packages got imported.
BOTH_CLIENTS = """
import asyncio, sys
from imageforge.client import AsyncClient, Client

async def main():
    async with AsyncClient(sys.argv[1]) as client:
        job = await client.submit("an owl", seed=8, steps=2, width=64, height=64)
        steps = []
        owl = await client.wait(job.job_id, on_progress=steps.append)
        foxes = await asyncio.gather(*(client.generate("a fox", seed=s, steps=1, width=64, height=64) for s in (1, 2)))
    print("async", owl.seed, len(steps), [fox.seed for fox in foxes])

asyncio.run(main())
with Client(sys.argv[1]) as client:
    print("sync", client.generate("a fox", seed=3, steps=1, width=64, height=64).seed)
print("loaded", sorted(name for name in ("torch", "diffusers", "fastapi", "uvicorn") if name in sys.modules))
"""


def test_both_python_clients_work_without_the_server_side(service: ImageService, tmp_path: Path) -> None:
    with serving_app(create_app(service)) as url:
        done = subprocess.run(
            [sys.executable, "-c", BOTH_CLIENTS, url],
            env=client_only(user_environment(tmp_path / "data")),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["async 8 2 [1, 2]", "sync 3", "loaded []"]
