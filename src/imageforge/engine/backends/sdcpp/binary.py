"""Finding, or building once, the `sd-server` binary of stable-diffusion.cpp.

A binary named by IMAGEFORGE_SDCPP_SERVER, or `sd-server` on the PATH, is used as it is. Otherwise the build
cached under `~/.cache/imageforge/sdcpp/<version>-<flavour>/bin/` is, and `build()` makes that cache: it downloads
the source distribution of `stable-diffusion-cpp-python` (pinned below; it vendors the whole stable-diffusion.cpp
tree, `examples/server` included) with pip, and builds `sd-server` and `sd-cli` with CMake and Ninja, without the
server's web frontend (which needs pnpm). A second build of the same version and flavour finds the cache and
returns at once.

    python -m imageforge.engine.backends.sdcpp [--flavour cpu|cuda|metal|vulkan] [--root FOLDER]

Flavours and their CMake switches (the build needs a C++17 compiler, plus the flavour's SDK):
    cpu     (none)              everywhere; uses the CPU's own vector instructions (GGML_NATIVE)
    cuda    -DSD_CUDA=ON        NVIDIA GPUs; needs the CUDA toolkit (nvcc)
    metal   -DSD_METAL=ON       Apple silicon
    vulkan  -DSD_VULKAN=ON      AMD, Intel and NVIDIA GPUs; needs the Vulkan SDK (glslc)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

#: The `stable-diffusion-cpp-python` release whose vendored stable-diffusion.cpp is built; its server API
#: (`/sdcpp/v1/...`) is what `child.py` speaks.
SDCPP_PYTHON_VERSION = "0.4.7"
FLAVOURS: dict[str, tuple[str, ...]] = {
    "cpu": (),
    "cuda": ("-DSD_CUDA=ON",),
    "metal": ("-DSD_METAL=ON",),
    "vulkan": ("-DSD_VULKAN=ON",),
}
SERVER = "sd-server"
CLI = "sd-cli"


class BuildFailed(RuntimeError):
    """The build could not be made here; the message says which step and why."""


def cache_root() -> Path:
    """Where builds are kept: `$XDG_CACHE_HOME/imageforge/sdcpp`, by default under `~/.cache`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imageforge" / "sdcpp"


def build_dir(flavour: str, root: Path | None = None) -> Path:
    """The folder of one version and flavour's build; its `bin/` holds the binaries."""
    return (root or cache_root()) / f"{SDCPP_PYTHON_VERSION}-{flavour}"


def find_server(configured: Path | None = None, *, flavour: str = "cpu", root: Path | None = None) -> Path | None:
    """The `sd-server` to run: the configured one, else the one on the PATH, else the cached build; None when
    there is none (`build()` makes one)."""
    if configured is not None:
        return configured if configured.is_file() and os.access(configured, os.X_OK) else None
    on_path = shutil.which(SERVER)
    if on_path:
        return Path(on_path)
    cached = build_dir(flavour, root) / "bin" / SERVER
    return cached if cached.is_file() else None


def missing_tools() -> list[str]:
    """What the build needs and this machine lacks (CMake and Ninja come from pip when missing)."""
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return ["a C++ compiler (c++, g++ or clang++)"]
    return []


def build(flavour: str = "cpu", *, root: Path | None = None, jobs: int | None = None) -> Path:
    """Build `sd-server` (and `sd-cli`) for `flavour` into the cache, or find it built; its path.
    `BuildFailed` naming the step that failed. Two builds at once (parallel test workers) wait on one lock."""
    if flavour not in FLAVOURS:
        raise BuildFailed(f"unknown flavour {flavour!r}: use one of {', '.join(FLAVOURS)}")
    target = build_dir(flavour, root)
    server = target / "bin" / SERVER
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{target.name}.lock"):
        if server.is_file():
            return server
        missing = missing_tools()
        if missing:
            raise BuildFailed(f"cannot build stable-diffusion.cpp here: missing {', '.join(missing)}")
        with tempfile.TemporaryDirectory(prefix="sdcpp-build-", dir=target.parent) as work:
            _build_in(Path(work), flavour, target, jobs)
    return server


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_in(work: Path, flavour: str, target: Path, jobs: int | None) -> None:
    package = f"stable-diffusion-cpp-python=={SDCPP_PYTHON_VERSION}"
    log.info("downloading the source of %s", package)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "download", "--no-binary", ":all:", "--no-deps", package, "-d", str(work)], "pip download")
    [archive] = work.glob("stable_diffusion_cpp_python-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    source = work / f"stable_diffusion_cpp_python-{SDCPP_PYTHON_VERSION}" / "vendor" / "stable-diffusion.cpp"
    if not (source / "examples" / "server").is_dir():
        raise BuildFailed(f"{archive.name} carries no stable-diffusion.cpp server source at {source}")
    cmake, ninja = _tool("cmake", work, pip), _tool("ninja", work, pip)
    build = work / "build"
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DSD_BUILD_EXAMPLES=ON",
        "-DSD_SERVER_BUILD_FRONTEND=OFF",
        *FLAVOURS[flavour],
    ]
    configure = [
        cmake,
        "-S",
        str(source),
        "-B",
        str(build),
        "-G",
        "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={ninja}",
        *flags,
    ]
    log.info("configuring: %s", " ".join(configure))
    _run(configure, "cmake configure")
    compile_ = [cmake, "--build", str(build), "--target", SERVER, CLI, "-j", str(jobs or os.cpu_count() or 2)]
    log.info("building %s and %s (minutes)", SERVER, CLI)
    _run(compile_, "cmake build")
    staged = target.with_name(target.name + ".partial")
    shutil.rmtree(staged, ignore_errors=True)
    (staged / "bin").mkdir(parents=True)
    for name in (SERVER, CLI):
        shutil.copy2(build / "bin" / name, staged / "bin" / name)
    (staged / "build.json").write_text(
        json.dumps({"package": package, "flavour": flavour, "cmake_flags": flags}, indent=2) + "\n"
    )
    shutil.rmtree(target, ignore_errors=True)
    # Renamed into place last: an interrupted build never leaves a `bin/sd-server` that `find_server` would take.
    staged.rename(target)


def _tool(name: str, work: Path, pip: list[str]) -> str:
    """A build tool from the PATH, else installed by pip into the build's own folder."""
    found = shutil.which(name)
    if found:
        return found
    tools = work / "tools"
    _run([*pip, "install", "--quiet", "--target", str(tools), name], f"pip install {name}")
    # The wheels keep the real executable in the package's data (cmake) or as its script (ninja); a script
    # elsewhere would be a Python launcher that cannot import its package from a --target folder.
    for binary in (tools / name / "data" / "bin" / name, tools / "bin" / name):
        if binary.is_file():
            return str(binary)
    raise BuildFailed(f"pip installed {name}, but no {name} executable is in {tools}")


def _run(command: list[str], step: str) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        tail = (completed.stdout + completed.stderr).strip().splitlines()[-20:]
        raise BuildFailed(f"{step} failed (exit {completed.returncode}):\n" + "\n".join(tail))


def main(argv: list[str] | None = None) -> int:
    """Build (or find) the cached `sd-server`; print its path."""
    from imageforge.config import Settings

    parser = argparse.ArgumentParser(description="Build stable-diffusion.cpp's sd-server once, into a cache.")
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), help="default: IMAGEFORGE_SDCPP_BUILD (cpu)")
    parser.add_argument("--root", type=Path, default=None, help="the cache folder (default: %(default)s)")
    args = parser.parse_args(argv)
    settings = Settings()
    if settings.sdcpp_server is not None:
        print(settings.resolve(settings.sdcpp_server))
        return 0
    logging.basicConfig(level=logging.INFO, format="[sdcpp] %(message)s", stream=sys.stderr)
    try:
        server = build(args.flavour or settings.sdcpp_build, root=args.root)
    except BuildFailed as exc:
        print(f"[sdcpp] {exc}", file=sys.stderr)
        return 1
    print(server)
    return 0
