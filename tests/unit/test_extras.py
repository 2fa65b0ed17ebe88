"""The extras a feature names when its packages are missing are the extras pyproject.toml declares."""

from __future__ import annotations

import tomllib
from pathlib import Path

from imageforge.extras import EXTRA_MODULES, install_line, missing

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_extra_a_feature_names_is_declared_in_pyproject() -> None:
    declared = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]

    assert set(EXTRA_MODULES) <= set(declared)
    assert {"server", "distributed", "gguf", "tracing"} <= set(EXTRA_MODULES)


def test_the_install_line_is_a_command_to_paste() -> None:
    assert install_line("gguf") == "pip install 'imageforge[gguf]'"
    assert install_line("server", "distributed") == "pip install 'imageforge[server,distributed]'"


def test_an_installed_extra_lacks_nothing_and_a_missing_module_is_named() -> None:
    assert missing("server") == []
    assert missing("gguf") == []  # a dev dependency: the tests write a tiny GGUF file
