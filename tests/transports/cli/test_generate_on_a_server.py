"""`imageforge generate` and `imageforge models` against a real server on loopback: --server, finding a server on
HOST:PORT, --local, the server's errors, and Ctrl-C cancelling the job on the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from imageforge.bootstrap import build_service
from imageforge.cli.main import app
from imageforge.client import Client
from imageforge.config import Settings
from imageforge.domain import ImageResult
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.contract.conftest import free_port
from tests.gated import WAIT_S, GatedBackend
from tests.loopback import serving_app

IMAGEFORGE = Path(sys.executable).parent / "imageforge"
SMALL = ("--width", "64", "--height", "64")


@pytest.fixture
def server_url(service: ImageService) -> Iterator[str]:
    """A real server on loopback, on the `service` the test can inspect."""
    with serving_app(create_app(service)) as url:
        yield url


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_refused(result: Result, code: str) -> None:
    """Exit status 1 with `error [code]` and a hint on stderr, nothing on stdout and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"error [{code}]: " in result.stderr
    assert "\nhint: " in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_generate_with_server_runs_the_job_there_and_writes_the_png(
    user_env: dict[str, str], server_url: str, service: ImageService, tmp_path: Path
) -> None:
    result = invoke("generate", "a fox", "--server", server_url, "-o", "out.png", "--seed", "3", *SMALL)

    assert result.exit_code == 0, result.output
    assert result.stdout == "out.png\n"
    with Image.open(tmp_path / "out.png") as image:
        assert (image.format, image.size) == ("PNG", (64, 64))
    assert "generating: 100%" in result.stderr
    assert "2/2" in result.stderr
    assert "tiny seed=3 steps=2 64x64" in result.stderr
    assert "using the server" not in result.stderr
    [job] = service.list_jobs()
    assert (job.status, job.payload["seed"]) == ("succeeded", 3)


def test_generate_fast_asks_the_server_for_the_tiny_autoencoder(
    user_env: dict[str, str], server_url: str, service: ImageService
) -> None:
    result = invoke("generate", "a fox", "--server", server_url, "--fast", "--seed", "3", *SMALL)

    assert result.exit_code == 0, result.output
    [job] = service.list_jobs()
    assert job.result is not None
    assert (job.payload["decoder"], job.result["decoder"]) == ("fast", "fast")


def test_generate_with_server_and_no_output_prints_the_path_the_server_saved(
    user_env: dict[str, str], server_url: str, service: ImageService
) -> None:
    result = invoke("generate", "a fox", "--server", server_url, *SMALL)

    assert result.exit_code == 0, result.output
    [job] = service.list_jobs()
    assert job.result is not None
    assert result.stdout == f"{job.result['output_path']}\n"


def test_generate_uses_a_server_answering_on_the_configured_port(
    user_env: dict[str, str], server_url: str, service: ImageService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFORGE_PORT", server_url.rsplit(":", 1)[1])

    result = invoke("generate", "a fox", *SMALL)

    assert result.exit_code == 0, result.output
    assert f"using the server at {server_url}\n" in result.stderr
    assert len(service.list_jobs()) == 1


def test_generate_local_runs_in_its_own_process_even_when_a_server_answers(
    user_env: dict[str, str], server_url: str, service: ImageService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFORGE_PORT", server_url.rsplit(":", 1)[1])

    result = invoke("generate", "a fox", "--local", *SMALL)

    assert result.exit_code == 0, result.output
    assert "using the server" not in result.stderr
    assert service.list_jobs() == []


def test_generate_without_a_server_on_the_port_runs_locally(user_env: dict[str, str]) -> None:
    result = invoke("generate", "a fox", "-o", "out.png", *SMALL)

    assert result.exit_code == 0, result.output
    assert "using the server" not in result.stderr
    assert result.stdout == "out.png\n"


def test_generate_with_server_prints_the_servers_error_like_a_local_one(
    user_env: dict[str, str], server_url: str
) -> None:
    result = invoke("generate", "a fox", "--server", server_url, "--width", "100")

    assert_refused(result, "invalid_request")
    assert "width 100 is not a multiple of 8" in result.stderr
    assert "generating" not in result.stderr


def test_generate_with_a_server_that_refuses_the_connection_exits_1_with_server_unavailable(
    user_env: dict[str, str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = invoke("generate", "a fox", "--server", url)

    assert_refused(result, "server_unavailable")
    assert url in result.stderr


def test_generate_with_server_and_local_together_is_a_usage_error(user_env: dict[str, str]) -> None:
    result = invoke("generate", "a fox", "--server", "http://127.0.0.1:1", "--local")

    assert result.exit_code == 2
    assert "exclude each other" in result.stderr


def test_models_with_server_lists_the_servers_catalog(user_env: dict[str, str], server_url: str) -> None:
    result = invoke("models", "--server", server_url)

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert "on disk" in rows["tiny*"]
    assert result.stdout.splitlines()[-1] == f"* default model of {server_url}"


class StderrWatch:
    """Collects a process's stderr in a thread and tells when a text has appeared in it."""

    def __init__(self, stream: IO[bytes], text: bytes) -> None:
        self.data = b""
        self.seen = threading.Event()
        self._text = text
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        # tqdm redraws without newlines: read whatever has arrived, not lines.
        for chunk in iter(lambda: os.read(stream.fileno(), 4096), b""):
            self.data += chunk
            if self._text in self.data:
                self.seen.set()

    def text(self) -> str:
        self._thread.join(timeout=WAIT_S)
        return self.data.decode(errors="replace")


@pytest.mark.slow
def test_ctrl_c_cancels_the_job_on_the_server_and_exits_130(
    user_env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings, backend=backend)
    command = [str(IMAGEFORGE), "generate", "long", "--steps", "20", *SMALL]
    with serving_app(create_app(service)) as url, Client(url) as client:
        with subprocess.Popen(
            [*command, "--server", url], env=user_env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ) as process:
            assert process.stderr is not None
            watch = StderrWatch(process.stderr, b"generating")
            try:
                backend.wait_for_step()
                # The bar opens when the CLI reads the first progress event: from then on it follows the job.
                assert watch.seen.wait(WAIT_S), watch.data

                process.send_signal(signal.SIGINT)
                code = process.wait(timeout=WAIT_S)
            finally:
                backend.release(1000)
                if process.poll() is None:
                    process.kill()
            stderr = watch.text()
        [job] = client.jobs()
        events = list(client.events(job.job_id))

    assert code == 130, stderr
    assert f"interrupted: job {job.job_id} cancelled on {url}" in stderr
    assert "Traceback" not in stderr
    assert (events[-1].data["status"], events[-1].data["error"]["code"]) == ("cancelled", "cancelled")
    assert events[-1].data["step"] < 20, "the job stopped computing"


def test_ctrl_c_stops_following_whatever_the_follower_is_doing() -> None:
    from imageforge.cli.ctrl_c import follow_until_ctrl_c

    following, release = threading.Event(), threading.Event()

    def follow() -> ImageResult:
        # Stands for a read that swallows interrupts: it ends only when the test lets it.
        following.set()
        release.wait(WAIT_S)
        raise AssertionError("not reached before Ctrl-C is seen")

    def press_ctrl_c() -> None:
        assert following.wait(WAIT_S)
        os.kill(os.getpid(), signal.SIGINT)

    # Whatever this process had: Python's handler, or SIG_IGN when the tests run as a shell's background job.
    before = signal.getsignal(signal.SIGINT)
    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            follow_until_ctrl_c(follow)
    finally:
        release.set()
        presser.join()

    assert signal.getsignal(signal.SIGINT) is before
