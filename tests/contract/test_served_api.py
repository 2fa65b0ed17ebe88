"""The served API as a user meets it: `imageforge serve` in a subprocess and the documentation's own examples.

docs/http-api.md promises that the bash examples of its "Examples" section run as they are against a server on
the `tiny` model; these tests run them, in order, in the server's folder, against a server on a free port. The
README's curl example is one of them.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imageforge.engine.catalog import BUILTIN_MODELS
from tests.contract.conftest import IMAGEFORGE, Server, free_port, private_data, serving, stop

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
HTTP_API_PAGE = REPOSITORY / "docs" / "http-api.md"
README = REPOSITORY / "README.md"
DOCS_ADDRESS = "127.0.0.1:8765"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
only_linux = pytest.mark.skipif(
    sys.platform != "linux", reason="only Linux answers on all of 127.0.0.0/8 without configuration"
)


@dataclass(frozen=True)
class Example:
    """One fenced bash block of the documentation and what running it printed."""

    script: str
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"$ {self.script}\n-> exit {self.returncode}\nstdout: {self.stdout[:2000]}\nstderr: {self.stderr[:2000]}"


def bash_blocks(page: Path, heading: str) -> list[str]:
    """The ```bash blocks of `page`'s section under `heading`, up to the next heading of that level or above."""
    level = heading.split(" ")[0]
    text = page.read_text(encoding="utf-8")
    pattern = rf"^{re.escape(heading)}\n(.*?)(?=^#{{1,{len(level)}}} |\Z)"
    section = re.search(pattern, text, flags=re.MULTILINE | re.DOTALL)
    assert section is not None, f"{page.name} has no {heading!r} section"
    return re.findall(r"^```bash\n(.*?)^```", section.group(1), flags=re.MULTILINE | re.DOTALL)


def http_api_examples() -> list[str]:
    """The examples of docs/http-api.md, in order."""
    return bash_blocks(HTTP_API_PAGE, "## Examples")


def json_documents(text: str) -> list[Any]:
    """Every JSON document in `text`; curl prints them back to back without a separator."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while (position := _skip_space(text, position)) < len(text):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


@pytest.fixture(scope="module")
def examples(server: Server) -> list[Example]:
    """Run every example once, in the page's order, in the server's folder (so that fox.png lands there)."""
    scripts = http_api_examples()
    assert len(scripts) >= 5, f"expected the health, generate, cache, edit and inpaint examples, found {scripts}"
    address = f"{server.host}:{server.port}"
    results = []
    for script in scripts:
        script = script.replace(DOCS_ADDRESS, address)
        assert ":8765" not in script, f"an example calls a server other than {DOCS_ADDRESS}:\n{script}"
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=server.cwd,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        results.append(Example(script, run.returncode, run.stdout, run.stderr))
    return results


def example(examples: list[Example], marker: str, index: int = 0) -> Example:
    """The `index`-th example whose script contains `marker` (an endpoint path), which must have succeeded."""
    matching = [run for run in examples if marker in run.script]
    assert len(matching) > index, f"no example number {index} calls {marker}"
    run = matching[index]
    assert run.returncode == 0, str(run)
    return run


def test_health_example_reports_ok_with_tiny_as_default_model(examples: list[Example]) -> None:
    run = example(examples, "/health")
    health = json_documents(run.stdout)[0]

    assert health["ok"] is True, str(run)
    assert health["status"] == "ok"
    assert health["default_model"] == "tiny"


def test_models_example_lists_every_catalog_key(examples: list[Example]) -> None:
    run = example(examples, "/models")
    catalog = json_documents(run.stdout)[-1]

    assert catalog["ok"] is True, str(run)
    assert [model["key"] for model in catalog["models"]] == [spec.key for spec in BUILTIN_MODELS]
    assert catalog["default"] == "tiny"


def test_generate_example_prints_seed_and_not_cached_and_writes_fox_png(
    examples: list[Example], server: Server
) -> None:
    run = example(examples, "/generate")
    seed, cached, output_path = run.stdout.split()

    assert (seed, cached) == ("42", "False"), str(run)
    assert Path(output_path).parent == server.cwd / "outputs"
    fox = server.cwd / "fox.png"
    assert fox.read_bytes().startswith(PNG_SIGNATURE)
    assert fox.read_bytes() == Path(output_path).read_bytes()
    with Image.open(fox) as image:
        assert (image.format, image.size) == ("PNG", (256, 256))


def test_repeated_seeded_generate_example_is_answered_from_the_cache(examples: list[Example]) -> None:
    first_path = example(examples, "/generate", 0).stdout.split()[2]
    run = example(examples, "/generate", 1)
    body = json.loads(run.stdout)

    assert body["ok"] is True, str(run)
    assert (body["seed"], body["cached"]) == (42, True)
    assert body["output_path"] == first_path


def test_the_readme_curl_example_is_one_of_the_examples_that_run() -> None:
    readme_examples = bash_blocks(README, "### With curl")

    assert readme_examples, "README.md has no bash example under '### With curl'"
    for script in readme_examples:
        assert script in http_api_examples(), (
            f"README.md's curl example is not among docs/http-api.md's examples, so no test runs it:\n{script}"
        )


def test_edit_example_returns_ok_with_an_output_path_that_exists(examples: list[Example]) -> None:
    run = example(examples, "/edit")
    body = json.loads(run.stdout)

    assert body["ok"] is True, str(run)
    assert body["task"] == "img2img"
    assert Path(body["output_path"]).is_file()


def test_inpaint_example_returns_ok_with_an_output_path_that_exists(examples: list[Example], server: Server) -> None:
    run = example(examples, "/inpaint")
    body = json.loads(run.stdout)

    assert body["ok"] is True, str(run)
    assert body["task"] == "inpaint"
    assert Path(body["output_path"]).is_file()
    assert (server.cwd / "mask.png").is_file()


def test_serve_binds_loopback_only_by_default(server: Server) -> None:
    assert server.host == "127.0.0.1"
    assert httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5.0).json()["ok"] is True
    assert f"Uvicorn running on http://127.0.0.1:{server.port}" in server.logs()[1]


@only_linux
def test_serve_by_default_is_not_reachable_on_other_addresses(server: Server) -> None:
    # Bound to 127.0.0.1 itself, not to every interface: another loopback address finds nothing listening.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.2", server.port), timeout=5.0):
        pass


@only_linux
def test_serve_host_and_port_options_reach_the_server(tmp_path: Path, data_dir: Path) -> None:
    with serving(tmp_path, private_data(tmp_path, data_dir), "--host", "127.0.0.2") as server:
        assert httpx.get(f"http://127.0.0.2:{server.port}/health", timeout=5.0).json()["ok"] is True
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", server.port), 5.0):
            pass
        assert f"Uvicorn running on http://127.0.0.2:{server.port}" in server.logs()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server_cleanly_with_every_log_on_stderr(
    sig: signal.Signals, tmp_path: Path, data_dir: Path
) -> None:
    with serving(tmp_path, private_data(tmp_path, data_dir)) as server:
        assert httpx.get(f"{server.url}/models", timeout=5.0).status_code == 200
        returncode = stop(server.process, sig)
        stdout, stderr = server.logs()

    assert returncode in (0, -sig), stderr
    assert "Application shutdown complete" in stderr
    assert '"GET /models HTTP/1.1" 200' in stderr  # access lines too: stdout stays free
    assert stdout == ""
    assert "Traceback" not in stderr


def test_a_second_server_on_the_same_data_folder_is_refused_in_one_line(server: Server) -> None:
    second = subprocess.run(
        [str(IMAGEFORGE), "serve", "--port", str(free_port())],
        cwd=server.cwd,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert second.returncode == 1
    assert "error [data_dir_in_use]" in second.stderr
    assert "IMAGEFORGE_DATA_DIR" in second.stderr
    assert "Traceback" not in second.stderr
    assert httpx.get(f"{server.url}/health", timeout=5.0).status_code == 200, "the first one keeps serving"
