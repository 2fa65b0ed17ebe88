"""`imageforge webhooks secret`: the secret this server signs webhooks with, for receivers to verify them."""

from __future__ import annotations

import typer

from imageforge.cli.settings import load_settings


def secret() -> None:
    """Print the secret webhooks are signed with (`whsec_` and base64, as Standard Webhooks libraries take it):
    IMAGEFORGE_WEBHOOK_SECRET, or the one kept in the data folder, made now if there is none yet."""
    from imageforge.bootstrap import webhook_secret

    settings = load_settings()
    if not settings.webhook_secret:
        typer.echo(f"kept in {settings.webhook_secret_path} (set IMAGEFORGE_WEBHOOK_SECRET to choose one)", err=True)
    typer.echo(webhook_secret(settings))
