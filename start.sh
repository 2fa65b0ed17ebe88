#!/usr/bin/env bash
# imageforge bootstrap + launcher.
#
#   ./start.sh                 set up (first run) and serve the HTTP API on HOST:PORT (default 127.0.0.1:8765)
#   ./start.sh api [--reload]  the same, explicitly; --reload restarts on code changes
#   ./start.sh mcp             the MCP server on stdio
#   ./start.sh selftest        end-to-end check on the offline `tiny` model
#   ./start.sh check           set up, print settings and the dependency report, exit
#   ./start.sh test            install the dev tools and run everything CI runs
#
# IMAGEFORGE_VENV (default .venv) picks the virtual environment; IMAGEFORGE_TORCH_SPEC (default
# torch==2.13.0) the torch build, e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
set -euo pipefail

cd "$(dirname "$0")"
VENV="${IMAGEFORGE_VENV:-.venv}"
TORCH_SPEC="${IMAGEFORGE_TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
mode="${1:-api}"
[ $# -gt 0 ] && shift

say() { printf '[start] %s\n' "$*" >&2; }

bootstrap() {
  local extras="$1"
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V 2>&1)); set PYTHON=/path/to/python3.11"
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  # torch first, from the spec, so that the project's own "torch>=..." never pulls a different build.
  if [ "$(cat "$VENV/.imageforge-torch" 2>/dev/null)" != "$TORCH_SPEC" ]; then
    say "installing $TORCH_SPEC"
    # shellcheck disable=SC2086 # the spec may carry pip options such as --index-url
    "${pip[@]}" $TORCH_SPEC
    echo "$TORCH_SPEC" > "$VENV/.imageforge-torch"
  fi
  local stamp
  stamp="$(cat pyproject.toml | sha256sum | cut -c1-16)-$extras"
  if [ "$(cat "$VENV/.imageforge-project" 2>/dev/null)" != "$stamp" ]; then
    say "installing imageforge${extras:+[$extras]}"
    "${pip[@]}" -e ".${extras:+[$extras]}"
    echo "$stamp" > "$VENV/.imageforge-project"
  fi
  if [ ! -f .env ] && [ -f .env.example ]; then
    cp .env.example .env
    say "created .env from .env.example (edit it to configure imageforge)"
  fi
  if "$VENV/bin/python" -c 'import torch, diffusers' 2>/dev/null; then
    say "heavy stack: $("$VENV/bin/python" -c 'import torch, diffusers; print(f"torch {torch.__version__} (cuda={torch.cuda.is_available()}, mps={torch.backends.mps.is_available()}), diffusers {diffusers.__version__}")' 2>/dev/null)"
  else
    say "heavy stack: torch/diffusers NOT importable; generation will fail until it is fixed (./start.sh check)"
  fi
}

case "$mode" in
  api|serve)
    bootstrap ""
    exec "$VENV/bin/imageforge" serve "$@"
    ;;
  mcp)
    bootstrap ""
    exec "$VENV/bin/imageforge" mcp "$@"
    ;;
  selftest)
    bootstrap ""
    exec "$VENV/bin/imageforge" selftest "$@"
    ;;
  check)
    bootstrap ""
    exec "$VENV/bin/imageforge" check "$@"
    ;;
  test)
    bootstrap "dev"
    bin="$VENV/bin"
    say "ruff check";        "$bin/ruff" check .
    say "ruff format";       "$bin/ruff" format --check .
    say "mypy (strict)";     "$bin/mypy"
    say "import-linter";     "$bin/lint-imports"
    say "pytest";            "$bin/python" -m pytest "$@"
    ;;
  *)
    say "unknown mode '$mode': use api [--reload] | mcp | selftest | check | test"
    exit 2
    ;;
esac
