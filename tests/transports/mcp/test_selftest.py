"""`python -m imageforge.mcp_server --selftest [--gen]` and `imageforge mcp --selftest`, run as a user runs them:
a subprocess in an empty folder with no GPU, no Ollama and no network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageforge.cli.main import app
from tests.contract.conftest import IMAGEFORGE, user_environment

MODULE = [sys.executable, "-m", "imageforge.mcp_server"]
#: A cold interpreter, plus building `tiny` for --gen (the self-test uses a temporary data folder).
TIMEOUT_S = 240.0


def run_selftest(command: list[str], tmp_path: Path, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return subprocess.run(
        command,
        cwd=cwd,
        env=user_environment(data_dir) | env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def checks(stdout: str) -> dict[str, str]:
    """`[selftest] PASS name: detail` lines as {name: "PASS detail"}."""
    found = {}
    for line in stdout.splitlines():
        verdict, _, rest = line.removeprefix("[selftest] ").partition(" ")
        name, _, detail = rest.partition(": ")
        if verdict in ("PASS", "FAIL"):
            found[name] = f"{verdict} {detail}"
    return found


@pytest.mark.slow
def test_selftest_passes_every_check_without_a_gpu_or_ollama(tmp_path: Path, data_dir: Path) -> None:
    result = run_selftest([*MODULE, "--selftest"], tmp_path, data_dir)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "[selftest] ALL PASS"
    found = checks(result.stdout)
    assert list(found) == ["handshake", "tool list", "list_models", "assist_prompt", "error"]
    assert all(verdict.startswith("PASS") for verdict in found.values())
    # No Ollama is a pass: the prompt comes back unchanged, with the reason shown.
    assert "passthrough" in found["assist_prompt"]
    assert "127.0.0.1:9" in found["assist_prompt"]


@pytest.mark.slow
def test_selftest_gen_draws_with_tiny_when_the_default_models_weights_are_absent(
    tmp_path: Path, data_dir: Path
) -> None:
    empty_hub = tmp_path / "hf"  # no downloaded weights on this machine, whatever the developer's cache holds
    result = run_selftest(
        [str(IMAGEFORGE), "mcp", "--selftest", "--gen"],
        tmp_path,
        data_dir,
        IMAGEFORGE_MODEL="sd-turbo",
        HF_HOME=str(empty_hub),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "[selftest] ALL PASS"
    found = checks(result.stdout)
    assert "default sd-turbo (weights not downloaded yet)" in found["list_models"]
    assert found["generate_image"].startswith("PASS tiny 256x256")
    assert "progress notifications" in found["generate_image"]


@pytest.mark.slow
def test_selftest_reports_what_failed_and_exits_1(tmp_path: Path, data_dir: Path) -> None:
    result = run_selftest([*MODULE, "--selftest"], tmp_path, data_dir, IMAGEFORGE_MODEL="no-such-model")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL list_models: the default model 'no-such-model' is not in the catalog" in result.stdout
    assert result.stdout.splitlines()[-1] == "[selftest] FAILED: 1 check(s): list_models"
    assert "Traceback" not in result.stderr


def test_gen_without_selftest_is_refused() -> None:
    result = CliRunner().invoke(app, ["mcp", "--gen"])

    assert result.exit_code == 2
    assert "--gen" in result.stderr


def test_the_module_takes_the_options_of_imageforge_mcp(tmp_path: Path, data_dir: Path) -> None:
    result = run_selftest([*MODULE, "--help"], tmp_path, data_dir)

    assert result.returncode == 0, result.stderr
    for option in ("--selftest", "--gen", "--remote", "--api-key", "--insecure-tls"):
        assert option in result.stdout
