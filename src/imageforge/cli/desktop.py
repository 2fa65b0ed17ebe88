"""The relay of the Claude Desktop extension (packaging/mcpb/): its settings onto `imageforge mcp --remote`.

Desktop starts the extension with the settings the user gave it in the environment (manifest.json's
`mcp_config`): the server's URL, its API key, and whether to trust a self-signed certificate. A setting left
empty may arrive empty or as its unreplaced `${user_config.…}` placeholder; both mean unset. Full images are
saved in /tmp (%TEMP% on Windows), where the user's other programs can open them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import typer
import typer.core
import typer.main

#: The environment names manifest.json gives the extension's settings.
URL_VARIABLE = "IMAGEFORGE_REMOTE_URL"
KEY_VARIABLE = "IMAGEFORGE_API_KEY"
TRUST_VARIABLE = "IMAGEFORGE_TRUST_SELF_SIGNED"


class MissingSetting(ValueError):
    """The extension was started without its server URL."""


def relay_arguments(environ: Mapping[str, str]) -> list[str]:
    """The `imageforge mcp` arguments for the extension's settings in `environ`; `MissingSetting` without a URL.

    The API key stays in the environment (IMAGEFORGE_API_KEY), out of the process list.
    """
    url = _setting(environ, URL_VARIABLE)
    if url is None:
        raise MissingSetting(
            "The imageforge extension has no server URL: set it in Claude Desktop's Settings > Extensions > "
            "imageforge (e.g. http://gpu-box:8765)."
        )
    trust = (_setting(environ, TRUST_VARIABLE) or "").lower() in ("true", "1", "yes")
    return ["--remote", url, *(["--insecure-tls"] if trust else [])]


def main() -> None:
    """The extension's entry point: relay over stdio to the configured server until Desktop closes stdin."""
    import imageforge
    from imageforge.cli.main import app

    try:
        arguments = relay_arguments(os.environ)
    except MissingSetting as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise SystemExit(2) from None
    if _setting(os.environ, KEY_VARIABLE) is None:
        os.environ.pop(KEY_VARIABLE, None)  # an unset key, not a key made of a placeholder
    typer.echo(f"imageforge {imageforge.__version__} from {Path(imageforge.__file__).parent}", err=True)
    cli = typer.main.get_command(app)
    assert isinstance(cli, typer.core.TyperGroup)
    cli.commands["mcp"].main(arguments, prog_name="imageforge (Claude Desktop extension)")


def _setting(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return None if not value or value.startswith("${") else value
