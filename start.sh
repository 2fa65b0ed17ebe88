#!/usr/bin/env bash
# imageforge bootstrap + launcher.
#
#   ./start.sh                 set up (first run) and serve the HTTP API on HOST:PORT (default 127.0.0.1:8765)
#   ./start.sh api [--reload]  the same, explicitly; --reload restarts on code changes
#   ./start.sh mcp             the MCP server on stdio (--selftest [--gen] checks it through an MCP client)
#   ./start.sh selftest        end-to-end check on the offline `tiny` model
#   ./start.sh check           set up, print settings and the dependency report, exit
#   ./start.sh test            install the dev tools and run everything CI runs
#   ./start.sh sdcpp-build     build stable-diffusion.cpp's sd-server once, into ~/.cache/imageforge/sdcpp
#                              (IMAGEFORGE_SDCPP_BUILD: cpu, cuda, metal or vulkan; minutes, then cached)
#
# IMAGEFORGE_VENV (default .venv) picks the virtual environment; IMAGEFORGE_TORCH_SPEC (default
# torch==2.13.0) the torch build, e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
set -euo pipefail

# A relative IMAGEFORGE_VENV is relative to the caller's folder, resolved before moving into the repository.
case "${IMAGEFORGE_VENV:-}" in
  "") VENV="$(cd "$(dirname "$0")" && pwd)/.venv" ;;
  /*) VENV="$IMAGEFORGE_VENV" ;;
  *) VENV="$PWD/$IMAGEFORGE_VENV" ;;
esac
cd "$(dirname "$0")"
TORCH_SPEC="${IMAGEFORGE_TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
mode="${1:-api}"
[ $# -gt 0 ] && shift

say() { printf '[start] %s\n' "$*" >&2; }

# Succeeds when the interpreter $1 exists and is Python 3.11 or newer (the check itself runs on Python 2 too).
recent_python() {
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

bootstrap() {
  local extras="$1"
  if [ -x "$VENV/bin/python" ] && ! recent_python "$VENV/bin/python"; then
    say "$VENV was made with $("$VENV/bin/python" -V 2>&1), but imageforge needs Python 3.11 or newer;"
    say "remove $VENV (or set IMAGEFORGE_VENV to another folder) and run ./start.sh again"
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
      say "no '$PYTHON' on PATH: install Python 3.11 or newer, or set PYTHON=/path/to/python3.11"
      exit 1
    fi
    if ! recent_python "$PYTHON"; then
      say "Python 3.11 or newer is needed, but $PYTHON is $("$PYTHON" -V 2>&1); set PYTHON=/path/to/python3.11"
      exit 1
    fi
    say "creating virtual environment in $VENV with $("$PYTHON" -V 2>&1)"
    if ! "$PYTHON" -m venv "$VENV"; then
      # A failed `venv` leaves a folder with a python but no pip, which the next run would take as ready.
      rm -rf "$VENV"
      say "could not create $VENV; on Debian or Ubuntu install the python3-venv package first"
      exit 1
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip || say "could not upgrade pip; going on with $("$VENV/bin/python" -m pip -V)"
  fi
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  # torch first, from the spec, so that the project's own "torch>=..." never pulls a different build.
  if [ "$(cat "$VENV/.imageforge-torch" 2>/dev/null)" != "$TORCH_SPEC" ]; then
    say "installing $TORCH_SPEC"
    # shellcheck disable=SC2086 # the spec may carry pip options such as --index-url
    "${pip[@]}" $TORCH_SPEC
    echo "$TORCH_SPEC" > "$VENV/.imageforge-torch"
  fi
  # Reinstall when pyproject.toml changes, or when extras are asked for that are not installed yet
  # (`test` installs server,distributed,openvino,dev, which serve `api` just as well, so going back and forth installs nothing).
  local project installed have="" wanted extra
  project="$(sha256sum < pyproject.toml | cut -c1-16)"
  installed="$(cat "$VENV/.imageforge-project" 2>/dev/null || true)"
  [ "${installed%%-*}" = "$project" ] && have="${installed#*-}"
  wanted="$have"
  for extra in ${extras//,/ }; do
    case ",$have," in *",$extra,"*) ;; *) wanted="${wanted:+$wanted,}$extra" ;; esac
  done
  if [ -z "$installed" ] || [ "$wanted" != "$have" ] || [ "${installed%%-*}" != "$project" ]; then
    say "installing imageforge${wanted:+[$wanted]}"
    "${pip[@]}" -e ".${wanted:+[$wanted]}"
    echo "$project-$wanted" > "$VENV/.imageforge-project"
  fi
  local stack
  if stack="$("$VENV/bin/python" -c 'import torch, diffusers; print(f"torch {torch.__version__} (cuda={torch.cuda.is_available()}, mps={torch.backends.mps.is_available()}), diffusers {diffusers.__version__}")' 2>/dev/null)"; then
    say "heavy stack: $stack"
  else
    say "heavy stack: torch/diffusers NOT importable; generation will fail until it is fixed (./start.sh check)"
  fi
}

# The settings file of the server this script starts, which runs in this folder.
seed_env() {
  if [ ! -f .env ] && [ -f .env.example ]; then
    cp .env.example .env
    say "created $PWD/.env from .env.example (edit it to configure imageforge)"
  fi
}

# Test tools from the system's packages: Chromium for the web UI tests (driven by Playwright, whose own browser
# download is not used) and redis-server for the distributed queue's tests. Without them those tests are skipped.
ensure_system_package() {  # package, the file it installs, what needs it
  local package="$1" file="$2" purpose="$3"
  [ -x "$file" ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      say "no $file: the $purpose will be skipped; install it with: sudo apt-get install -y $package"
      return 0
    fi
  fi
  if command -v apt-get >/dev/null 2>&1; then
    say "installing $package for the $purpose"
    { [ -n "${APT_UPDATED:-}" ] || $sudo apt-get update -qq >/dev/null; } && APT_UPDATED=1 \
      && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package" >/dev/null \
      || say "could not install $package; the $purpose will be skipped (apt-get install -y $package)"
  else
    say "no $file and no apt-get: install $package to run the $purpose"
  fi
}

case "$mode" in
  api|serve)
    # An API node of the queue across machines (--queue, or IMAGEFORGE_QUEUE_URL) needs the distributed extra.
    extras=server
    case " $* " in *" --queue"*) extras=server,distributed ;; esac
    [ -n "${IMAGEFORGE_QUEUE_URL:-}" ] && extras=server,distributed
    bootstrap "$extras" >&2
    seed_env
    exec "$VENV/bin/imageforge" serve "$@"
    ;;
  worker)
    bootstrap server,distributed >&2
    seed_env
    exec "$VENV/bin/imageforge" worker "$@"
    ;;
  mcp)
    bootstrap server >&2  # stdout stays clean (the MCP server speaks on it)
    seed_env
    exec "$VENV/bin/imageforge" mcp "$@"
    ;;
  selftest)
    bootstrap server >&2
    seed_env
    exec "$VENV/bin/imageforge" selftest "$@"
    ;;
  check)
    bootstrap server >&2
    seed_env
    exec "$VENV/bin/imageforge" check "$@"
    ;;
  test)
    bootstrap server,distributed,openvino,dev >&2
    ensure_system_package chromium /usr/bin/chromium "web UI tests"
    ensure_system_package redis-server /usr/bin/redis-server "distributed queue tests"
    bin="$VENV/bin"
    say "ruff check";        "$bin/ruff" check .
    say "ruff format";       "$bin/ruff" format --check .
    say "mypy (strict)";     "$bin/mypy"
    say "import-linter";     "$bin/lint-imports"
    # On every core, one data folder per worker; the slowest tests are listed so that the suite stays fast.
    # Arguments go to pytest after these: `./start.sh test -n 0 -k fuzz` runs one test in this process.
    # The sd.cpp engine's tests run a real sd-server: built here once (about 4 minutes on 2 cores), then cached.
    say "sd-server"
    # In CI a failed build fails the run, rather than leaving the engine's tests skipped.
    if ! "$bin/python" -m imageforge.engine.backends.sdcpp >/dev/null; then
      say "could not build sd-server: the stable-diffusion.cpp tests will be skipped"
      [ -z "${CI:-}" ] || exit 1
    fi
    say "pytest";            "$bin/python" -m pytest -n auto --durations=15 "$@"
    ;;
  sdcpp-build)
    bootstrap server >&2
    seed_env
    exec "$VENV/bin/python" -m imageforge.engine.backends.sdcpp "$@"
    ;;
  *)
    say "unknown mode '$mode': use api [--reload] | worker | mcp | selftest | check | test | sdcpp-build"
    exit 2
    ;;
esac
