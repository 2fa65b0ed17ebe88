"""The Claude Desktop extension: `python3 packaging/mcpb/build.py` builds a `.mcpb` bundle (a zip) whose manifest
Desktop reads, and whose relay, launched as Desktop launches it, serves a real `imageforge serve`'s tools.

Desktop would run the manifest's command (`uv run` in the unpacked bundle, which installs the bundle's
pyproject dependencies); here the test suite's interpreter, which has them, runs the same entry point, with
the server side (torch, diffusers, fastapi) taken away and no imageforge on the path but the bundle's own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import to_thread
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from imageforge.cli.desktop import MissingSetting, relay_arguments
from tests.contract.conftest import free_port, private_data, stop
from tests.transports.cli.test_client_only import CLIENT_ONLY
from tests.transports.mcp.answers import error_of
from tests.transports.mcp.test_proxy import SMALL, served

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packaging" / "mcpb" / "build.py"
#: What only `imageforge[server]` brings: none of it may be a dependency of the bundle.
SERVER_SIDE = {"torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "fastapi", "huggingface-hub"}
#: The top-level keys MCPB manifest 0.4 allows (its schema refuses any other).
MANIFEST_KEYS = {
    "$schema", "dxt_version", "manifest_version", "name", "display_name", "version", "description",
    "long_description", "author", "repository", "homepage", "documentation", "support", "icon", "icons",
    "screenshots", "localization", "server", "tools", "tools_generated", "prompts", "prompts_generated",
    "keywords", "license", "privacy_policies", "compatibility", "user_config", "_meta",
}  # fmt: skip
KEY = "desktop-key-0123456789abcdef"
WAIT_S = 120.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle, built by the documented command with a plain interpreter (no imageforge imported)."""
    output = tmp_path_factory.mktemp("bundle") / "imageforge.mcpb"
    done = subprocess.run(
        [sys.executable, "-I", str(BUILD), "--output", str(output)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(output)
    return output


@pytest.fixture(scope="module")
def manifest(bundle: Path) -> dict[str, Any]:
    with zipfile.ZipFile(bundle) as archive:
        loaded: dict[str, Any] = json.loads(archive.read("manifest.json"))
    return loaded


@pytest.fixture
def extension(bundle: Path, tmp_path: Path) -> Path:
    """The bundle unpacked, as Desktop installs it."""
    folder = tmp_path / "extension"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(folder)
    return folder


def test_the_bundle_is_a_zip_of_the_manifest_the_relays_entry_point_and_imageforges_source(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())

    assert {"manifest.json", "pyproject.toml", "server/main.py", "src/imageforge/py.typed"} <= names
    assert "src/imageforge/transports/mcp/proxy.py" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert not [name for name in names if name.startswith("src/imageforge/transports/web/static")]


def test_the_manifest_is_mcpb_0_4_with_a_uv_server_and_its_required_fields(
    manifest: dict[str, Any], bundle: Path
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert set(manifest) <= MANIFEST_KEYS
    assert manifest["manifest_version"] == "0.4"
    assert (manifest["name"], manifest["version"]) == ("imageforge", project["version"])
    assert manifest["description"]
    assert manifest["author"]["name"]
    server = manifest["server"]
    assert (server["type"], server["entry_point"]) == ("uv", "server/main.py")
    assert server["mcp_config"]["command"] == "uv"
    assert server["mcp_config"]["args"] == ["run", "--directory", "${__dirname}", "server/main.py"]
    assert manifest["compatibility"]["runtimes"]["python"] == project["requires-python"]


def test_the_manifests_user_settings_are_the_url_a_secret_key_and_trusting_a_self_signed_certificate(
    manifest: dict[str, Any],
) -> None:
    settings = manifest["user_config"]

    assert set(settings) == {"server_url", "api_key", "trust_self_signed"}
    for setting in settings.values():
        assert {"type", "title", "description"} <= set(setting)
    assert (settings["server_url"]["type"], settings["server_url"]["required"]) == ("string", True)
    assert (settings["api_key"]["type"], settings["api_key"]["sensitive"]) == ("string", True)
    assert (settings["trust_self_signed"]["type"], settings["trust_self_signed"]["default"]) == ("boolean", False)
    # Each setting reaches the relay, the key in the environment rather than the process list.
    assert manifest["server"]["mcp_config"]["env"] == {
        "IMAGEFORGE_REMOTE_URL": "${user_config.server_url}",
        "IMAGEFORGE_API_KEY": "${user_config.api_key}",
        "IMAGEFORGE_TRUST_SELF_SIGNED": "${user_config.trust_self_signed}",
    }
    assert "${user_config" not in json.dumps(manifest["server"]["mcp_config"]["args"])


def test_the_bundles_dependencies_are_the_client_side_only(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        bundled = tomllib.loads(archive.read("pyproject.toml").decode())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert "build-system" not in bundled, "uv installs the dependencies only; the source runs from src/"
    assert bundled["project"]["dependencies"] == project["dependencies"]
    names = {re.split(r"[<>=\[; ]", requirement)[0].lower() for requirement in bundled["project"]["dependencies"]}
    assert names.isdisjoint(SERVER_SIDE)


def test_the_same_checkout_builds_the_same_bundle(bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.mcpb"
    subprocess.run([sys.executable, "-I", str(BUILD), "--output", str(again)], capture_output=True, check=True)

    assert again.read_bytes() == bundle.read_bytes()


@pytest.mark.parametrize(
    ("environ", "arguments"),
    [
        ({"IMAGEFORGE_REMOTE_URL": "http://gpu:8765", "IMAGEFORGE_TRUST_SELF_SIGNED": "false"}, []),
        ({"IMAGEFORGE_REMOTE_URL": "https://gpu:8765", "IMAGEFORGE_TRUST_SELF_SIGNED": "true"}, ["--insecure-tls"]),
        # An optional setting Desktop left unreplaced means unset.
        ({"IMAGEFORGE_REMOTE_URL": "http://gpu:8765", "IMAGEFORGE_TRUST_SELF_SIGNED": "${user_config.x}"}, []),
    ],
    ids=["plain", "trusting", "placeholder"],
)
def test_the_extensions_settings_become_the_relays_arguments(environ: dict[str, str], arguments: list[str]) -> None:
    assert relay_arguments(environ) == ["--remote", environ["IMAGEFORGE_REMOTE_URL"], *arguments]


@pytest.mark.parametrize("url", ["", "${user_config.server_url}"])
def test_an_extension_without_a_server_url_says_where_to_set_it(url: str) -> None:
    with pytest.raises(MissingSetting, match="Settings > Extensions > imageforge"):
        relay_arguments({"IMAGEFORGE_REMOTE_URL": url})


@pytest.fixture
def saved_in_tmp() -> Iterator[list[Path]]:
    """Images the relay saved in /tmp, removed when the test ends."""
    saved: list[Path] = []
    yield saved
    for path in saved:
        path.unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_bundles_relay_launched_as_desktop_does_serves_a_real_server_and_outlives_its_restart(
    manifest: dict[str, Any], extension: Path, tmp_path: Path, data_dir: Path, saved_in_tmp: list[Path]
) -> None:
    port = free_port()
    user_config = {"server_url": f"http://127.0.0.1:{port}", "api_key": KEY, "trust_self_signed": False}
    config = _substituted(manifest["server"]["mcp_config"], extension, user_config)
    assert config["args"][:3] == ["run", "--directory", str(extension)]
    sandbox = tmp_path / "sandbox"  # $TMPDIR under the macOS App Sandbox: out of the user's sight
    sandbox.mkdir()
    parameters = StdioServerParameters(
        command=sys.executable,
        args=[config["args"][-1]],  # what `uv run --directory <extension>` runs, in that folder
        env={
            **config["env"],
            "PATH": os.environ["PATH"],
            "TMPDIR": str(sandbox),
            # No imageforge but the bundle's, and no server side: the relay stands on the bundle alone.
            "PYTHONPATH": str(CLIENT_ONLY),
        },
        cwd=extension,
    )
    data = private_data(tmp_path, data_dir)
    keys = {"IMAGEFORGE_API_KEYS": f"desktop:{KEY}"}
    log = tmp_path / "extension.log"
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(served(tmp_path / "first", data, port, settings=keys))
        errlog = stack.enter_context(log.open("w"))
        stack.enter_context(anyio.fail_after(WAIT_S * 3))
        mcp = await stack.enter_async_context(Client(stdio_client(parameters, errlog=errlog)))
        tools = {tool.name for tool in (await mcp.list_tools()).tools}
        result = await mcp.call_tool("generate_image", SMALL)
        await to_thread.run_sync(stop, first.process)
        down = await mcp.call_tool("generate_image", SMALL)
        async with served(tmp_path / "second", data, port, settings=keys):
            again = await mcp.call_tool("generate_image", SMALL)

    assert "generate_image" in tools
    for answer in (result, again):
        assert not answer.is_error, answer.content
        assert isinstance(answer.structured_content, dict)
        local = Path(answer.structured_content["output_path"])
        saved_in_tmp.append(local)
        assert local.parent == Path("/tmp").resolve()
        assert local.read_bytes().startswith(b"\x89PNG")
    assert error_of(down)["code"] == "server_unavailable"
    assert f"from {extension / 'src' / 'imageforge'}" in log.read_text()


def _substituted(mcp_config: dict[str, Any], extension: Path, user_config: dict[str, Any]) -> dict[str, Any]:
    """`mcp_config` with `${__dirname}` and `${user_config.KEY}` replaced, as Desktop does (booleans as
    "true"/"false")."""

    def value(text: str) -> str:
        text = text.replace("${__dirname}", str(extension))

        def setting(match: re.Match[str]) -> str:
            chosen = user_config[match.group(1)]
            return str(chosen).lower() if isinstance(chosen, bool) else str(chosen)

        return re.sub(r"\$\{user_config\.(\w+)\}", setting, text)

    return {
        "command": value(mcp_config["command"]),
        "args": [value(argument) for argument in mcp_config["args"]],
        "env": {name: value(text) for name, text in mcp_config["env"].items()},
    }
