"""The environment every CLI test runs in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.contract.conftest import free_port


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path) -> dict[str, str]:
    """The environment of a user in an empty folder with `tiny` as the default model and no Ollama.

    PORT names a port nothing listens on, so that `generate` never finds a server the machine happens to run
    on the default port; a test that wants one sets PORT to it.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGEFORGE_MODEL", "tiny")
    monkeypatch.setenv("IMAGEFORGE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PORT", str(free_port()))
    monkeypatch.setenv("OLLAMA_URL", "http://127.0.0.1:9")  # the discard port: nothing answers
    return dict(os.environ)
