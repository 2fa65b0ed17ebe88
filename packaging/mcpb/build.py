#!/usr/bin/env python3
"""Build imageforge's Claude Desktop extension, `dist/imageforge-<version>.mcpb`, from this checkout.

    python3 packaging/mcpb/build.py [--output PATH]

Open the file in Claude Desktop (or drag it onto Settings > Extensions) and give it the URL of a running
`imageforge serve`. The bundle is a zip in the MCPB format (manifest 0.4) that holds the MCP relay only: the
imageforge source and, in its pyproject.toml, the client-side dependencies (httpx, mcp, pydantic, ...), which
Desktop installs with uv (server type "uv", so one bundle serves macOS, Windows and Linux): no torch, no engine.

The extension's settings: the server URL, the API key (Desktop keeps it as a secret) and whether to trust a
self-signed certificate. They reach the relay as environment variables (src/imageforge/cli/desktop.py).

Needs Python 3.11 or newer and nothing else: no network, no imageforge installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: Where the relay's entry point goes in the bundle.
ENTRY_POINT = "server/main.py"
#: One timestamp for every entry, so that the same checkout builds the same bytes.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)

LONG_DESCRIPTION = """\
Generate and edit images with your own imageforge server (a GPU box, or this machine) from Claude Desktop.

The extension relays imageforge's tools (generate_image, edit_image, inpaint_image, the async job tools, ...)
to the server at the URL you set, with progress and cancellation. Each full-resolution image is saved on this
machine, in /tmp on macOS and Linux and in %TEMP% on Windows, and the result names that file: Desktop shows the
inline preview only in the tool result, so ask Claude where the image was saved. A server that restarts needs
no restart of Claude Desktop: calls made while it is down say so, and the next call after it is back works.
"""


def manifest(version: str, python: str) -> dict[str, Any]:
    """The extension's manifest.json."""
    return {
        "manifest_version": "0.4",
        "name": "imageforge",
        "display_name": "imageforge",
        "version": version,
        "description": "Local-first image generation: the tools of your imageforge server in Claude Desktop.",
        "long_description": LONG_DESCRIPTION,
        "author": {"name": "imageforge"},
        "license": "Apache-2.0",
        "keywords": ["image generation", "stable diffusion", "diffusers", "local"],
        "server": {
            "type": "uv",
            "entry_point": ENTRY_POINT,
            "mcp_config": {
                "command": "uv",
                "args": ["run", "--directory", "${__dirname}", ENTRY_POINT],
                "env": {
                    "IMAGEFORGE_REMOTE_URL": "${user_config.server_url}",
                    "IMAGEFORGE_API_KEY": "${user_config.api_key}",
                    "IMAGEFORGE_TRUST_SELF_SIGNED": "${user_config.trust_self_signed}",
                },
            },
        },
        "tools_generated": True,
        "user_config": {
            "server_url": {
                "type": "string",
                "title": "Server URL",
                "description": "The address of imageforge serve, e.g. http://gpu-box:8765 or https://gpu-box:8765.",
                "default": "http://127.0.0.1:8765",
                "required": True,
            },
            "api_key": {
                "type": "string",
                "title": "API key",
                "description": "A key of the server (`imageforge keys add NAME` prints one); empty for a server "
                "on this machine without keys.",
                "sensitive": True,
                "required": False,
            },
            "trust_self_signed": {
                "type": "boolean",
                "title": "Trust a self-signed certificate",
                "description": "Accept the https server's certificate without checking who signed it (one made "
                "by `imageforge tls selfsigned`). The traffic stays encrypted, but the server's identity is "
                "not checked: use it on a network you trust.",
                "default": False,
                "required": False,
            },
        },
        "compatibility": {"platforms": ["darwin", "win32", "linux"], "runtimes": {"python": python}},
    }


def bundle_pyproject(version: str, python: str, dependencies: list[str]) -> str:
    """The bundle's pyproject.toml: the client side's dependencies, for uv to install; no build system, so uv
    installs them and nothing else (the source runs from the bundle's src/)."""
    lines = [
        "[project]",
        'name = "imageforge-desktop-extension"',
        f'version = "{version}"',
        'description = "The MCP relay of imageforge for Claude Desktop"',
        f'requires-python = "{python}"',
        "dependencies = [",
        *(f"    {json.dumps(requirement)}," for requirement in dependencies),
        "]",
        "",
    ]
    return "\n".join(lines)


def source_files() -> list[Path]:
    """The imageforge package's Python files (the web page's files are the server's, and stay out)."""
    package = ROOT / "src" / "imageforge"
    files = [path for path in package.rglob("*.py") if "__pycache__" not in path.parts]
    return sorted([*files, package / "py.typed"])


def build(output: Path) -> Path:
    """Write the bundle to `output`; returns it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    version, python = project["version"], project["requires-python"]
    entries: dict[str, bytes] = {
        "manifest.json": (json.dumps(manifest(version, python), indent=2) + "\n").encode(),
        "pyproject.toml": bundle_pyproject(version, python, project["dependencies"]).encode(),
        ENTRY_POINT: (HERE / "main.py").read_bytes(),
    }
    for path in source_files():
        entries[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.external_attr = 0o644 << 16  # rw-r--r--: unpackers that apply Unix modes get readable files
            archive.writestr(info, entries[name], compress_type=zipfile.ZIP_DEFLATED)
    return output


def main() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    parser = argparse.ArgumentParser(description="Build imageforge's Claude Desktop extension (.mcpb).")
    parser.add_argument("--output", type=Path, default=ROOT / "dist" / f"imageforge-{version}.mcpb")
    written = build(parser.parse_args().output)
    print(f"{written} ({written.stat().st_size // 1024} KiB): open it in Claude Desktop to install", file=sys.stderr)
    print(written)


if __name__ == "__main__":
    main()
