"""`imageforge keys add | list | remove`: the API keys a server accepts, stored hashed in the data folder."""

from __future__ import annotations

from typing import Annotated

import typer

from imageforge.cli.settings import load_settings


def add(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. laptop or claude-desktop.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key: it sees and cancels every client's jobs, not only its own.")
    ] = False,
) -> None:
    """Make a new API key, print it once, and store only its hash (with NAME, its role and the time) in the keys file.

    A running server accepts it at once. The key goes to stdout alone, so `KEY=$(imageforge keys add NAME)` works.
    """
    from imageforge.transports.http.keyfile import KeyFile

    settings = load_settings()
    key = KeyFile(settings.keys_path).add(name, taken=frozenset(entry[0] for entry in settings.api_keys), admin=admin)
    role = "admin key" if admin else "key"
    typer.echo(f"{role} '{name}' added to {settings.keys_path}; it is shown only now, so store it:", err=True)
    typer.echo(key)
    typer.echo("send it as 'Authorization: Bearer <key>' (the web page asks for it once)", err=True)


def list_keys() -> None:
    """List the keys by name, role and creation time, with where each comes from; never a key or a hash."""
    from imageforge.transports.http.keyfile import KeyFile

    settings = load_settings()
    rows = [(key.name, key.role, key.created, "keys file") for key in KeyFile(settings.keys_path).read()]
    rows += [(name, "admin" if admin else "user", "", "IMAGEFORGE_API_KEYS") for name, _, admin in settings.api_keys]
    if not rows:
        typer.echo(f"no API keys (keys file: {settings.keys_path}); add one with `imageforge keys add NAME`", err=True)
        return
    width = max(len("name"), *(len(row[0]) for row in rows))
    typer.echo(f"{'name':<{width}} {'role':<6} {'created':<25} source")
    for name, role, created, source in rows:
        typer.echo(f"{name:<{width}} {role:<6} {created:<25} {source}")


def remove(name: Annotated[str, typer.Argument(help="The name given to `keys add`.")]) -> None:
    """Remove a key from the keys file; a running server refuses it from its next request on."""
    from imageforge.transports.http.keyfile import KeyFile

    settings = load_settings()
    KeyFile(settings.keys_path).remove(name)
    typer.echo(f"key '{name}' removed from {settings.keys_path}", err=True)
