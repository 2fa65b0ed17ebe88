"""`imageforge models`: the model catalog, here or on a server, and `models pull` to fetch weights ahead of time;
`imageforge loras`: the LoRAs requests may apply."""

from __future__ import annotations

from typing import Annotated

import typer

from imageforge.cli.remote import connect
from imageforge.cli.settings import load_settings


def list_models(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option(help="List the catalog of the server at this URL instead.")] = None,
) -> None:
    """List the catalog: key, tasks, defaults, whether the weights are on disk."""
    if ctx.invoked_subcommand is not None:
        if server is not None:
            raise typer.BadParameter("only the listing reads a server; `models pull` runs here.", param_hint="--server")
        return
    if server is None:
        from imageforge.bootstrap import build_service

        rows = build_service(load_settings()).list_models(memory=False).model_dump()["models"]
    else:
        with connect(server) as client:
            rows = client.models()["models"]
    # Keys from a models file may be longer than the built-in ones; the column fits the longest.
    width = max([len("model"), *(len(row["key"]) + 1 for row in rows)])
    typer.echo(f"{'model':<{width}} {'tasks':<24} {'steps':>5} {'size':>5}  {'weights':<8} note")
    for row in rows:
        mark = "*" if row["default"] else " "
        weights = "on disk" if row["weights_present"] else "missing"
        note = row["notice"] or (
            "needs " + row["guard"]["setting"] + "=1" if row["guard"] and not row["available"] else ""
        )
        note = note or row["quality_note"]
        typer.echo(
            f"{row['key'] + mark:<{width}} {','.join(row['tasks']):<24} {row['defaults']['steps']:>5} "
            f"{row['defaults']['width']:>5}  {weights:<8} {note}"
        )
    typer.echo("* default model (IMAGEFORGE_MODEL)" if server is None else f"* default model of {server}")


def list_loras(
    server: Annotated[str | None, typer.Option(help="List the LoRAs of the server at this URL instead.")] = None,
) -> None:
    """List the LoRAs a request may apply (generate --lora NAME[:WEIGHT]): the .safetensors files of the LoRA
    folder (IMAGEFORGE_LORA_DIR)."""
    if server is None:
        from imageforge.bootstrap import build_service

        rows = build_service(load_settings()).list_loras().model_dump()["loras"]
    else:
        with connect(server) as client:
            rows = client.loras()["loras"]
    if not rows:
        typer.echo("no LoRAs: put .safetensors files in the LoRA folder (IMAGEFORGE_LORA_DIR)")
        return
    width = max(len("lora"), *(len(row["name"]) for row in rows))
    typer.echo(f"{'lora':<{width}} {'MB':>8}")
    for row in rows:
        typer.echo(f"{row['name']:<{width}} {row['size_mb']:>8.1f}")


def pull(key: Annotated[str, typer.Argument(help="Catalog key, e.g. sd-turbo.")]) -> None:
    """Download a model's weights now, so that a first request never stalls on a download."""
    from imageforge.bootstrap import build_service

    where = build_service(load_settings()).pull(key)
    typer.echo(f"{key}: weights ready at {where}")
