"""The `imageforge` command as a user runs it: help, generate, models, check, selftest and mcp.

Commands run in-process through typer's CliRunner where that is enough, and as real subprocesses where a
clean interpreter matters (the console script, `python -m`, what `--help` imports). Every command runs in a
temporary folder with no `.env`, the per-session data folder (so `tiny` is built once) and no network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from imageforge.cli.main import app
from imageforge.engine.catalog import BUILTIN_MODELS

COMMANDS = ("serve", "worker", "generate", "models", "check", "selftest", "mcp")
IMAGEFORGE = Path(sys.executable).parent / "imageforge"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def assert_refused(result: Result, code: str) -> None:
    """Exit status 1 with `error [code]` and a hint on stderr, nothing on stdout and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert f"error [{code}]: " in result.stderr
    assert "\nhint: " in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize("entry", ["console script", "python -m"])
def test_help_lists_every_command(entry: str, user_env: dict[str, str], tmp_path: Path) -> None:
    command = [str(IMAGEFORGE)] if entry == "console script" else [sys.executable, "-m", "imageforge"]

    done = run([*command, "--help"], user_env, tmp_path)

    assert done.returncode == 0, done.stderr
    listed = {line.strip("│ ").split(" ")[0] for line in done.stdout.splitlines()}
    assert set(COMMANDS) <= listed, done.stdout


def test_importing_the_cli_and_help_never_import_torch_or_diffusers(user_env: dict[str, str], tmp_path: Path) -> None:
    script = (
        "import json, sys\n"
        "from imageforge.cli.main import app\n"
        "for args in ([], ['generate'], ['serve'], ['models'], ['models', 'pull']):\n"
        "    try:\n"
        "        app([*args, '--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (args, exc.code)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'diffusers', 'transformers'})\n"
        "print(json.dumps(heavy), file=sys.stderr)\n"
    )

    done = run([sys.executable, "-c", script], user_env, tmp_path)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.splitlines()[-1]) == []


def test_generate_writes_the_png_and_prints_its_path_with_a_progress_bar_on_stderr(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    result = invoke(
        "generate", "a fox", "-o", "out.png", "--model", "tiny", "--seed", "3", "--width", "64", "--height", "64"
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == "out.png\n"
    with Image.open(tmp_path / "out.png") as image:
        assert (image.format, image.size) == ("PNG", (64, 64))
    assert "generating: 100%" in result.stderr
    assert "2/2" in result.stderr
    assert "tiny seed=3 steps=2 64x64" in result.stderr


def test_generate_with_a_bad_size_exits_1_with_the_error_and_a_hint(user_env: dict[str, str]) -> None:
    result = invoke("generate", "a fox", "--width", "100")

    assert_refused(result, "invalid_request")
    assert "width 100 is not a multiple of 8" in result.stderr
    assert "generating" not in result.stderr  # no progress bar for a request that never ran


def test_worker_without_a_queue_exits_1_saying_it_needs_the_shared_redis(user_env: dict[str, str]) -> None:
    result = invoke("worker")

    assert_refused(result, "invalid_request")
    assert "--queue redis://" in result.stderr


def test_worker_with_an_unknown_model_exits_1_with_model_not_found(user_env: dict[str, str]) -> None:
    result = invoke("worker", "--queue", "redis://127.0.0.1:9/0", "--models", "no-such-model")

    assert_refused(result, "model_not_found")


def test_generate_with_an_unknown_model_exits_1_with_model_not_found(user_env: dict[str, str]) -> None:
    result = invoke("generate", "a fox", "--model", "no-such-model")

    assert_refused(result, "model_not_found")
    assert "tiny" in result.stderr  # the hint names the keys that exist


def test_models_lists_every_catalog_key_with_tiny_on_disk_and_marked_default(user_env: dict[str, str]) -> None:
    result = invoke("models")

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert list(rows) == [spec.key + ("*" if spec.key == "tiny" else "") for spec in BUILTIN_MODELS]
    assert "on disk" in rows["tiny*"]
    assert result.stdout.splitlines()[-1].startswith("* default model")


def test_models_pull_tiny_builds_it_and_prints_where(user_env: dict[str, str], data_dir: Path) -> None:
    result = invoke("models", "pull", "tiny")

    assert result.exit_code == 0, result.output
    where = data_dir / "models" / "tiny"
    assert result.stdout == f"tiny: weights ready at {where}\n"
    assert (where / "model_index.json").is_file()


def test_models_pull_offline_exits_1_with_weights_unavailable_and_a_hint(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    # A subprocess, so that HF_HUB_OFFLINE is certainly read before huggingface_hub is imported: never download.
    done = run([str(IMAGEFORGE), "models", "pull", "sd-turbo"], {**user_env, "HF_HUB_OFFLINE": "1"}, tmp_path)

    assert done.returncode == 1, done.stderr
    assert "error [weights_unavailable]: " in done.stderr
    assert "stabilityai/sd-turbo" in done.stderr
    assert "\nhint: " in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_generating_with_a_model_whose_weights_cannot_be_had_says_why_in_its_own_words(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    done = run([str(IMAGEFORGE), "generate", "a fox", "--model", "sd-turbo", "--local"], user_env, tmp_path)

    assert done.returncode == 1, done.stderr
    error = done.stderr.splitlines()[-2]
    assert error.startswith("error [weights_unavailable]: "), done.stderr
    assert "not in the Hugging Face cache, and the Hub could not be reached" in error
    assert "stacktrace" not in error
    assert "local_files_only" not in error
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "command",
    [["models"], ["models", "pull", "tiny"], ["templates"], ["assist", "a fox"], ["generate", "a fox", "--local"]],
    ids=" ".join,
)
def test_every_command_that_starts_the_engine_names_a_folder_it_cannot_write_without_a_traceback(
    command: list[str], user_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    monkeypatch.setenv("OUTPUT_DIR", str(in_the_way))

    result = invoke(*command)

    assert_refused(result, "folder_unwritable")
    assert f"OUTPUT_DIR ({in_the_way}) is not a folder" in result.stderr
    assert result.stderr.count("error [") == 1


def test_check_prints_settings_and_package_versions(user_env: dict[str, str], data_dir: Path) -> None:
    result = invoke("check")

    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["default_model", "tiny"] in lines
    assert ["data_dir", str(data_dir)] in lines
    versions = {line[0]: line[1] for line in lines if len(line) == 2}
    for package in ("torch", "diffusers", "transformers", "fastapi", "uvicorn"):
        assert versions[package][0].isdigit(), result.stdout
    assert "heavy stack: importable; device " in result.stdout


@pytest.mark.slow
def test_selftest_passes_on_the_tiny_model(user_env: dict[str, str]) -> None:
    result = invoke("selftest")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "[selftest] ALL PASS"


def test_an_invalid_setting_is_reported_by_name_without_a_traceback(
    user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "eighty")

    result = invoke("check")

    assert_refused(result, "invalid_settings")
    assert "IMAGEFORGE_PORT or PORT = 'eighty'" in result.stderr


def test_serve_on_a_network_address_without_api_keys_refuses_to_start(user_env: dict[str, str]) -> None:
    result = invoke("serve", "--host", "0.0.0.0")

    assert result.exit_code == 1
    assert "error [insecure_bind]" in result.stderr
    assert "IMAGEFORGE_API_KEYS" in result.stderr
    assert "IMAGEFORGE_INSECURE_NO_AUTH" in result.stderr


def test_a_malformed_api_key_setting_is_reported_without_printing_the_key(
    user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFORGE_API_KEYS", "alice:tooshort-secret")

    result = invoke("check")

    assert result.exit_code == 1
    assert "IMAGEFORGE_API_KEYS" in result.stderr
    assert "16 or more characters" in result.stderr
    assert "tooshort-secret" not in result.stderr
