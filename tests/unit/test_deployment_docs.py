"""The deployment page shows the files in deploy/ as they are, and those files hold together: the compose file
parses, keeps Redis' data, and every imageforge setting it and the page's environment file name exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, installed with huggingface-hub; no stubs

from imageforge.config import Settings

REPOSITORY = Path(__file__).resolve().parents[2]
DEPLOY = REPOSITORY / "deploy"
PAGE = REPOSITORY / "docs" / "deployment.md"
DEPLOY_FILES = [
    "compose.yaml",
    "docker/Dockerfile",
    "systemd/imageforge-api.service",
    "systemd/imageforge-worker@.service",
]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def setting_names() -> set[str]:
    """Every IMAGEFORGE_ name `Settings` reads."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias])
        names.update(str(choice).upper() for choice in choices if str(choice).upper().startswith("IMAGEFORGE_"))
    return names


@pytest.mark.parametrize("name", DEPLOY_FILES)
def test_the_deployment_page_shows_each_deploy_file_as_it_is(name: str) -> None:
    text = (DEPLOY / name).read_text(encoding="utf-8").rstrip("\n")

    assert text in PAGE.read_text(encoding="utf-8"), f"docs/deployment.md no longer shows deploy/{name} as it is"


def test_the_compose_file_runs_redis_with_its_append_only_file_an_api_node_and_workers() -> None:
    services = compose()["services"]

    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert "redis:/data" in services["redis"]["volumes"]
    assert services["api"]["command"][:2] == ["imageforge", "serve"]
    workers = [name for name in services if name.startswith("worker")]
    assert len(workers) >= 2
    assert all(services[name]["command"][:2] == ["imageforge", "worker"] for name in workers)


def test_every_setting_the_deployment_names_is_a_real_setting() -> None:
    named = set(re.findall(r"\bIMAGEFORGE_[A-Z_]+\b", PAGE.read_text(encoding="utf-8")))
    named -= {"IMAGEFORGE_TORCH_SPEC"}  # start.sh's, not the service's

    assert named - setting_names() == set()
