"""The settings a command runs with, read from the environment and `.env`; an invalid value is reported, not a
traceback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from imageforge.config import Settings


def load_settings(**overrides: Any) -> Settings:
    """The settings, with the options a command was given (those not None) over the environment's values.

    Each invalid value is printed as `error [invalid_settings]: NAME = value: reason`, then one hint; exit status 1.
    """
    from pydantic import AliasChoices, ValidationError

    from imageforge.config import Settings

    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        # pydantic names a setting by its first alias; a user may have set the bare one (PORT), so name both.
        names = {
            str(field.validation_alias.choices[0]): " or ".join(map(str, field.validation_alias.choices))
            for field in Settings.model_fields.values()
            if isinstance(field.validation_alias, AliasChoices)
        }
        for error in exc.errors(include_url=False):
            name = ".".join(str(part) for part in error["loc"])
            secret = any(word in name.lower() for word in ("key", "secret"))
            shown = "<hidden>" if secret else repr(error.get("input"))  # never print a secret
            typer.secho(
                f"error [invalid_settings]: {names.get(name, name)} = {shown}: {error['msg']}",
                err=True,
                fg="red",
            )
        typer.echo(f"hint: fix it in the environment or in {Path.cwd() / '.env'}", err=True)
        raise typer.Exit(1) from None
