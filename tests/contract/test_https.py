"""HTTPS end to end: one real `imageforge serve` with a pair from `imageforge tls selfsigned` and a key from
`imageforge keys add`, reached by httpx, the Python client and the remote MCP proxy, each trusting the file."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.client.client import Client as McpClient
from mcp.client.stdio import StdioServerParameters, stdio_client

from imageforge.client import Client
from tests.contract.conftest import IMAGEFORGE, READY_TIMEOUT_S, free_port, private_data, stop, user_environment
from tests.transports.mcp.test_proxy import Proxy

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class HttpsServer:
    url: str
    port: int
    key: str
    cert: Path
    stderr: Path
    #: the server's environment (its data folder, the TLS pair): a CLI run with it is a user on the same machine
    env: dict[str, str]
    root: Path


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run([str(IMAGEFORGE), *args], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[HttpsServer]:
    root = tmp_path_factory.mktemp("https")
    env = user_environment(private_data(root, data_dir))
    for line in _run(["tls", "selfsigned"], env, root).splitlines():
        name, _, value = line.partition("=")
        env[name] = value
    key = _run(["keys", "add", "remote"], env, root).strip()
    port = free_port()
    stderr = root / "stderr.log"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(IMAGEFORGE), "serve", "--port", str(port)], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    server = HttpsServer(
        f"https://127.0.0.1:{port}", port, key, Path(env["IMAGEFORGE_TLS_CERT"]), stderr, {**env}, root
    )
    try:
        _wait_until_healthy(server, process)
        yield server
    finally:
        stop(process)


def _wait_until_healthy(server: HttpsServer, process: subprocess.Popen[bytes]) -> None:
    trusted = ssl.create_default_context(cafile=str(server.cert))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/health", verify=trusted, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        try:
            process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"imageforge serve exited with {process.returncode}:\n{server.stderr.read_text()}")
    pytest.fail(f"imageforge serve was not healthy over HTTPS in time:\n{server.stderr.read_text()}")


def test_an_authenticated_request_trusting_the_certificate_succeeds(https_server: HttpsServer) -> None:
    trusted = ssl.create_default_context(cafile=str(https_server.cert))

    health = httpx.get(
        f"{https_server.url}/health",
        verify=trusted,
        headers={"Authorization": f"Bearer {https_server.key}"},
        timeout=READY_TIMEOUT_S,  # the full health detects the device, which imports torch on a cold server
    )

    assert health.status_code == 200
    assert (health.json()["auth"], health.json()["tls"]) == ("api_key", True)
    assert "imageforge on https://127.0.0.1:" in https_server.stderr.read_text()


def test_plain_http_to_the_tls_port_and_an_untrusted_certificate_fail(https_server: HttpsServer) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{https_server.port}/health", timeout=5.0)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_server.url}/health", timeout=5.0)


def test_the_python_client_generates_over_https_with_its_key(https_server: HttpsServer) -> None:
    with Client(https_server.url, api_key=https_server.key, verify=https_server.cert) as client:
        image = client.generate("a fox", width=64, height=64, steps=1, seed=3)
        job = client.submit("a fox", width=64, height=64, steps=1, seed=4)
        followed = client.wait(job.job_id)
        link = client.job(job.job_id).image_url

    assert image.png.startswith(b"\x89PNG")
    assert (followed.width, followed.seed) == (64, 4)
    assert link is not None
    assert link.startswith(f"{https_server.url}/images/")
    assert "sig=" in link


@pytest.mark.anyio
@pytest.mark.parametrize("trust", ["--ca-cert", "--insecure-tls"])
async def test_the_remote_mcp_proxy_lists_the_tools_over_https(
    https_server: HttpsServer, tmp_path: Path, trust: str
) -> None:
    args = [trust, str(https_server.cert)] if trust == "--ca-cert" else [trust]

    async with Proxy(tmp_path).connect(https_server.url, "--api-key", https_server.key, *args) as mcp:
        tools = await mcp.list_tools()

    assert "generate_image" in {tool.name for tool in tools.tools}


def test_the_cli_finds_the_local_https_server_and_sends_the_key_from_the_environment(
    https_server: HttpsServer,
) -> None:
    env = {**https_server.env, "IMAGEFORGE_PORT": str(https_server.port)}
    args = [str(IMAGEFORGE), "generate", "a fox", "--width", "64", "--height", "64", "--steps", "1", "--seed", "5"]

    def generate(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, env={**env, **extra}, cwd=https_server.root, capture_output=True, text=True, check=False
        )

    without_key = generate({})
    with_key = generate({"IMAGEFORGE_API_KEY": https_server.key})

    # The server holds the data folder, so the CLI must go through it: without a key it is refused there.
    assert without_key.returncode == 1
    assert "error [unauthorized]" in without_key.stderr
    assert with_key.returncode == 0, with_key.stderr
    assert f"using the server at {https_server.url}" in with_key.stderr
    assert Path(with_key.stdout.strip()).name.endswith(".png")


@pytest.mark.anyio
async def test_imageforge_mcp_beside_the_https_server_relays_to_it_trusting_the_certificate_its_lock_names(
    https_server: HttpsServer, tmp_path: Path
) -> None:
    # The agent's environment names the data folder and the key, not the TLS pair: the lock says which certificate.
    env = {name: value for name, value in https_server.env.items() if not name.startswith("IMAGEFORGE_TLS_")}
    env["IMAGEFORGE_API_KEY"] = https_server.key
    parameters = StdioServerParameters(
        command=str(IMAGEFORGE), args=["mcp", "--image-dir", str(tmp_path)], env=env, cwd=tmp_path
    )
    with (tmp_path / "stderr.log").open("w") as errlog, anyio.fail_after(READY_TIMEOUT_S * 2):
        async with McpClient(stdio_client(parameters, errlog=errlog)) as mcp:
            result = await mcp.call_tool("generate_image", {"prompt": "a fox", "width": 64, "height": 64, "steps": 1})

    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    assert Path(result.structured_content["output_path"]).parent == tmp_path.resolve()
    assert f"relaying to the imageforge server at {https_server.url}" in (tmp_path / "stderr.log").read_text()


def test_the_remote_mcp_proxy_stops_with_unauthorized_when_the_server_refuses_its_key(
    https_server: HttpsServer, tmp_path: Path
) -> None:
    refused = subprocess.run(
        [str(IMAGEFORGE), "mcp", "--remote", https_server.url, "--ca-cert", str(https_server.cert)],
        env={**https_server.env, "IMAGEFORGE_API_KEY": "not-a-key-of-this-server"},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_S,
        check=False,
    )

    assert refused.returncode == 1
    assert "error [unauthorized]" in refused.stderr
    assert "The API key is not valid here." in refused.stderr
    assert "hint: Set IMAGEFORGE_API_KEY" in refused.stderr
    assert "Traceback" not in refused.stderr
