"""Finding `sd-server`: the setting, then the PATH, then the build cache; a cached build is never made again."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from imageforge.engine.backends.sdcpp.binary import build, build_dir, find_server


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_setting_then_the_path_then_the_cache_name_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cached = _executable(build_dir("cpu", cache) / "bin" / "sd-server")
    on_path = _executable(tmp_path / "path" / "sd-server")
    configured = _executable(tmp_path / "mine" / "sd-server")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    assert find_server(root=cache) == cached
    assert find_server(root=cache, flavour="cuda") is None, "each flavour has its own build"
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_server(root=cache) == on_path
    assert find_server(configured, root=cache) == configured
    assert find_server(tmp_path / "missing", root=cache) is None, "a configured binary that is not there is none"


def test_a_cached_build_is_returned_without_building_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = _executable(build_dir("vulkan", tmp_path) / "bin" / "sd-server")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no pip download, compiler or cmake would be found

    assert build("vulkan", root=tmp_path) == cached


def test_imageforge_check_says_where_sd_server_is_or_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from imageforge.cli.main import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGEFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IMAGEFORGE_SDCPP_SERVER", str(tmp_path / "nowhere" / "sd-server"))
    missing = CliRunner().invoke(app, ["check"])
    monkeypatch.setenv("IMAGEFORGE_SDCPP_SERVER", str(_executable(tmp_path / "bin" / "sd-server")))
    found = CliRunner().invoke(app, ["check"])

    assert f"NOT FOUND: IMAGEFORGE_SDCPP_SERVER names {tmp_path / 'nowhere' / 'sd-server'}" in missing.stdout
    assert f"stable-diffusion.cpp engine: {tmp_path / 'bin' / 'sd-server'}" in found.stdout
