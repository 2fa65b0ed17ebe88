"""The `imageforge` command: serve | worker | generate | assist | templates | models | check | selftest | mcp | keys
| tls.

Each command lives in the module of its name (check and selftest in diagnostics); this one registers them and
holds the one place where an imageforge error becomes what the user reads. Importing it, and `imageforge --help`,
never import torch: every command imports what it needs when it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

import typer

from imageforge.cli import keys, models, tls, webhooks
from imageforge.cli.assist import assist
from imageforge.cli.config import config
from imageforge.cli.diagnostics import check, selftest
from imageforge.cli.generate import generate
from imageforge.cli.mcp import mcp
from imageforge.cli.serve import serve
from imageforge.cli.server_side import SERVER_SIDE_MODULES, server_side_missing
from imageforge.cli.templates import templates
from imageforge.cli.worker import worker
from imageforge.errors import ImageforgeError

P = ParamSpec("P")


def _reporting_errors(command: Callable[P, None]) -> Callable[P, None]:
    """`command`, with an ImageforgeError out of it printed once as `error [code]: message` and its hint, exit
    status 1. Applied where each command is registered, so that a command run on its own
    (`python -m imageforge.mcp_server`) reports its errors too."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            try:
                command(*args, **kwargs)
            except ModuleNotFoundError as exc:
                # A command that builds the engine here, on the client-only install.
                if (exc.name or "").partition(".")[0] not in SERVER_SIDE_MODULES:
                    raise
                raise server_side_missing("This command", [str(exc.name)]) from None
        except ImageforgeError as exc:
            typer.secho(f"error [{exc.code}]: {exc.message}", err=True, fg="red")
            if exc.hint:
                typer.echo(f"hint: {exc.hint}", err=True)
            raise typer.Exit(1) from None

    return run


app = typer.Typer(
    name="imageforge",
    help="Local-first image generation: one engine for HTTP, MCP, web UI and CLI clients.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for command in (serve, worker, generate, assist, templates, check, config, selftest, mcp):
    app.command()(_reporting_errors(command))

models_app = typer.Typer(help="List the model catalog, or pull a model's weights ahead of time.")
models_app.callback(invoke_without_command=True)(_reporting_errors(models.list_models))
models_app.command("pull")(_reporting_errors(models.pull))
app.add_typer(models_app, name="models")
app.command("loras")(_reporting_errors(models.list_loras))

keys_app = typer.Typer(help="API keys stored hashed in the data folder: add (prints the key once), list, remove.")
keys_app.command("add")(_reporting_errors(keys.add))
keys_app.command("list")(_reporting_errors(keys.list_keys))
keys_app.command("remove")(_reporting_errors(keys.remove))
app.add_typer(keys_app, name="keys")

tls_app = typer.Typer(help="Certificates for serving HTTPS (IMAGEFORGE_TLS_CERT, IMAGEFORGE_TLS_KEY).")
tls_app.command("selfsigned")(_reporting_errors(tls.selfsigned))
app.add_typer(tls_app, name="tls")

webhooks_app = typer.Typer(help="Job webhooks: the secret their signatures use (docs/webhooks.md).")
webhooks_app.command("secret")(_reporting_errors(webhooks.secret))
app.add_typer(webhooks_app, name="webhooks")


def main() -> None:
    """The console script `imageforge`."""
    app()
