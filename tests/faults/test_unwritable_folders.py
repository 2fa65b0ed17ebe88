"""A folder the service writes that is a file, read-only or gone: `imageforge serve` refuses to start and says
which setting to fix; a folder that breaks while serving fails the job with `storage_unavailable`, naming the
setting and never the server's path, and new jobs wait until it works again."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imageforge.bootstrap import build_service
from imageforge.cli.main import app
from imageforge.config import Settings
from imageforge.errors import FolderUnwritable
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.contract.conftest import IMAGEFORGE, READY_TIMEOUT_S, free_port, private_data, user_environment
from tests.faults.conftest import SMALL, mounted, remount, serving
from tests.loopback import LOCAL_URL


def serve_refusal(tmp_path: Path, data_dir: Path, settings: dict[str, str]) -> str:
    """Run `imageforge serve` with `settings` added to a user's environment; it must exit 1 at once (a server
    that starts instead runs into the timeout). Returns what it wrote on stderr."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**user_environment(private_data(tmp_path, data_dir)), **settings}
    done = subprocess.run(
        [str(IMAGEFORGE), "serve", "--port", str(free_port())],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


@pytest.mark.parametrize("setting", ["IMAGEFORGE_DATA_DIR", "OUTPUT_DIR", "CACHE_DIR"])
def test_serve_refuses_to_start_when_a_folder_it_writes_is_a_file(tmp_path: Path, data_dir: Path, setting: str) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    stderr = serve_refusal(tmp_path, data_dir, {setting: str(in_the_way)})
    assert f"error [folder_unwritable]: {setting} ({in_the_way}) is not a folder" in stderr
    assert f"hint: Set {setting} to a folder this user can write" in stderr


def test_serve_refuses_to_start_on_a_read_only_output_folder(tmp_path: Path, data_dir: Path) -> None:
    if os.geteuid() == 0:  # root writes through permission bits: only a read-only filesystem stops it
        with mounted(tmp_path / "read-only", "ro,size=1m") as folder:
            stderr = serve_refusal(tmp_path, data_dir, {"OUTPUT_DIR": str(folder)})
        assert f"error [folder_unwritable]: OUTPUT_DIR ({folder}) is on a read-only file system" in stderr
    else:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
        stderr = serve_refusal(tmp_path, data_dir, {"OUTPUT_DIR": str(folder)})
        assert f"error [folder_unwritable]: OUTPUT_DIR ({folder}) is not writable by this user" in stderr


def test_every_entry_point_refuses_a_folder_below_a_file(settings: Settings, tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    # build_service is what `imageforge mcp`, `generate --local` and the server process all start from.
    with pytest.raises(FolderUnwritable) as refused:
        build_service(settings.model_copy(update={"cache_dir": in_the_way / "cache"}))
    assert refused.value.message.startswith("CACHE_DIR (")
    assert "is not a folder" in refused.value.message


def test_an_output_folder_that_turns_into_a_file_fails_jobs_with_storage_unavailable_until_it_is_a_folder_again(
    settings: Settings,
) -> None:
    with serving(settings) as (client, _, _):
        shutil.rmtree(settings.output_path)
        settings.output_path.write_text("in the way")

        response = client.post("/generate", json={"prompt": "nowhere to go", **SMALL})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "storage_unavailable"
        assert (
            error["message"]
            == "The output folder cannot be written: OUTPUT_DIR is not a folder (a file is in the way)."
        )
        assert str(settings.root_dir) not in response.text
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert health["reason"]["code"] == "storage_unavailable"
        assert client.post("/jobs", json={"prompt": "refused", **SMALL}).status_code == 503

        settings.output_path.unlink()
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/generate", json={"prompt": "a folder again", **SMALL}).status_code == 200


def test_an_output_filesystem_turned_read_only_fails_jobs_and_serves_again_once_writable(
    settings: Settings, tmp_path: Path
) -> None:
    with (
        mounted(tmp_path / "outputs-disk", "size=4m") as disk,
        serving(settings.model_copy(update={"output_dir": disk})) as (client, _, _),
    ):
        remount(disk, "ro")
        response = client.post("/generate", json={"prompt": "read-only", **SMALL})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["message"] == (
            "The output folder cannot be written: OUTPUT_DIR is on a read-only file system."
        )
        assert client.get("/health").json()["status"] == "degraded"

        remount(disk, "rw")
        assert client.get("/health").json()["status"] == "ok"
        assert client.post("/generate", json={"prompt": "writable", **SMALL}).status_code == 200
        assert len(list(disk.glob("*.png"))) == 1, "only the second job's image"


def test_an_audit_log_that_cannot_be_written_leaves_answers_whole(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    with serving(settings.model_copy(update={"audit_log": in_the_way / "audit.jsonl"})) as (client, _, _):
        response = client.post("/jobs", json={"prompt": "audited", **SMALL})
        assert response.status_code == 202, response.text
    assert "the record:" in caplog.text, "the record went to the server's log"


def test_check_names_a_folder_it_cannot_write_rather_than_blaming_the_heavy_stack(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGEFORGE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OUTPUT_DIR", str(in_the_way))

    result = CliRunner().invoke(app, ["check"])

    assert result.exit_code == 1
    assert f"error [folder_unwritable]: OUTPUT_DIR ({in_the_way}) is not a folder" in result.stdout
    assert "NOT importable" not in result.stdout


def test_health_without_a_key_says_degraded_but_not_why(settings: Settings, service: ImageService) -> None:
    key = "k" * 32
    app = create_app(service, api_keys=ApiKeys((("alice", key),)))
    with TestClient(app, base_url=LOCAL_URL) as client:
        shutil.rmtree(settings.output_path)
        settings.output_path.write_text("in the way")
        failed = client.post("/generate", json={"prompt": "x", **SMALL}, headers={"Authorization": f"Bearer {key}"})
        assert failed.status_code == 503, failed.text

        assert client.get("/health").json() == {"ok": True, "status": "degraded", "auth": "required"}
