"""`imageforge config`: the reference of every setting, the text of docs/configuration.md."""

from __future__ import annotations

import typer


def config() -> None:
    """Print every setting's names, default and meaning as Markdown: the text of docs/configuration.md."""
    from imageforge.config import settings_reference

    typer.echo(settings_reference(), nl=False)
