"""`imageforge templates`: the style templates that `generate --style KEY` starts from, here or on a server."""

from __future__ import annotations

from typing import Annotated

import typer

from imageforge.cli.remote import connect
from imageforge.cli.settings import load_settings


def templates(
    server: Annotated[str | None, typer.Option(help="List the templates of the server at this URL instead.")] = None,
) -> None:
    """List the style templates for `generate --style KEY`: key, size, title, description and body."""
    if server is None:
        from imageforge.bootstrap import build_service

        rows = [template.model_dump() for template in build_service(load_settings()).list_templates()]
    else:
        with connect(server) as client:
            rows = client.templates()
    # Keys from a templates file may be longer than the built-in ones; the column fits the longest.
    width = max([len("template"), *(len(row["key"]) for row in rows)])
    typer.echo(f"{'template':<{width}} {'size':<9} title")
    for row in rows:
        typer.echo(f"{row['key']:<{width}} {str(row['width']) + 'x' + str(row['height']):<9} {row['title']}")
        if row["description"]:
            typer.echo(f"    {row['description']}")
        typer.echo(f"    body: {row['body']}")
