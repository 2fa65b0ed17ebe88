"""`imageforge assist`: a prompt expanded through the local LLM, here or on a server."""

from __future__ import annotations

from typing import Annotated

import typer

from imageforge.cli.remote import connect
from imageforge.cli.settings import load_settings


def assist(
    prompt: Annotated[str, typer.Argument(help="The image request to expand.")],
    style: Annotated[str | None, typer.Option(help="A style to write it in, e.g. 'pencil sketch'.")] = None,
    server: Annotated[
        str | None, typer.Option(help="Ask the imageforge server at this URL (and its Ollama) instead.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every field as one JSON object instead.")] = False,
) -> None:
    """Expand a prompt through the local LLM (Ollama: OLLAMA_URL, OLLAMA_MODEL); prints the prompt to use.

    Without Ollama the prompt comes back unchanged and stderr says why: assist never fails a request.
    """
    import json

    if server is None:
        from imageforge.bootstrap import build_service

        result = build_service(load_settings()).assist(prompt, style)
    else:
        with connect(server) as client:
            result = client.assist(prompt, style)
    if as_json:
        typer.echo(json.dumps(result.model_dump()))
        return
    if result.assisted:
        typer.echo(f"source: {result.source}", err=True)
        typer.echo(f"tags: {', '.join(result.tags)}", err=True)
    else:
        typer.echo(f"source: {result.source} ({result.reason})", err=True)
    typer.echo(result.prompt)
