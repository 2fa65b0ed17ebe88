"""`python -m imageforge.mcp_server` serves the MCP tools over stdio: the same as `imageforge mcp`.

It takes the same options (`--selftest [--gen]`, `--remote URL`); it exists so that an agent's configuration
can name an interpreter and a module instead of the console script.
"""

from __future__ import annotations

import sys

import typer.core
import typer.main

from imageforge.cli.main import app


def main() -> None:
    """Run `imageforge mcp` with this process's arguments."""
    cli = typer.main.get_command(app)
    assert isinstance(cli, typer.core.TyperGroup)
    # The command itself rather than the whole CLI, so that usage and errors name this module alone.
    cli.commands["mcp"].main(sys.argv[1:], prog_name="python -m imageforge.mcp_server")


if __name__ == "__main__":
    main()
