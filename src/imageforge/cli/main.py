"""The `imageforge` command: serve | generate | models | check | selftest | mcp.

Importing this module, and `imageforge --help`, never import torch: every command imports what it needs
when it runs.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Never

import typer

if TYPE_CHECKING:
    from imageforge.config import Settings
    from imageforge.service import ImageService

app = typer.Typer(
    name="imageforge",
    help="Local-first image generation: one engine for HTTP, MCP, web UI and CLI clients.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List the model catalog, or pull a model's weights ahead of time.")
app.add_typer(models_app, name="models")


def _settings(**overrides: Any) -> Settings:
    """The settings from the environment and `.env`; an invalid value is reported, not a traceback."""
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
            typer.secho(
                f"error [invalid_settings]: {names.get(name, name)} = {error.get('input')!r}: {error['msg']}",
                err=True,
                fg="red",
            )
        typer.echo(f"hint: fix it in the environment or in {Path.cwd() / '.env'}", err=True)
        raise typer.Exit(1) from None


def _service(settings: Settings) -> ImageService:
    from imageforge.bootstrap import build_service

    return build_service(settings)


def _fail(exc: Exception) -> typer.Exit:
    """Print an imageforge error as `error [code]: message` plus its hint; exit status 1."""
    code = getattr(exc, "code", "error")
    typer.secho(f"error [{code}]: {getattr(exc, 'message', str(exc))}", err=True, fg="red")
    hint = getattr(exc, "hint", "")
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    return typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (PORT).")] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes (development).")] = False,
) -> None:
    """Run the HTTP API (and, as they land, MCP over HTTP and the web UI) on one port."""
    import uvicorn

    import imageforge

    settings = _settings(host=host, port=port)
    typer.echo(f"imageforge on http://{settings.host}:{settings.port}  (docs: /docs)", err=True)
    # The factory reads Settings() from the environment again in the server process (and in each reloaded one).
    uvicorn.run(
        "imageforge.bootstrap:http_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=_server_logging(),
        reload=reload,
        # Watch imageforge's own code only: the default, the working folder, may hold a virtual environment
        # and the outputs, which are no reason to restart.
        reload_dirs=[str(Path(imageforge.__file__).parent)] if reload else None,
    )


def _server_logging() -> dict[str, Any]:
    """uvicorn's logging, with every log (access lines and imageforge's own) on stderr.

    uvicorn writes access lines to stdout by default; a server's stdout stays free for what a caller may
    capture, and one stream keeps the log in order.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["imageforge"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Also copy the PNG here.")] = None,
    model: Annotated[str | None, typer.Option(help="Catalog key (default: IMAGEFORGE_MODEL).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; random when absent.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale.")] = None,
    width: Annotated[int | None, typer.Option(help="Width, a multiple of 8.")] = None,
    height: Annotated[int | None, typer.Option(help="Height, a multiple of 8.")] = None,
    negative: Annotated[str, typer.Option(help="Negative prompt.")] = "",
    assist: Annotated[bool, typer.Option(help="Expand the prompt through the local LLM first.")] = False,
) -> None:
    """Generate one image in this process, with a progress bar; prints the saved path."""
    from tqdm import tqdm

    from imageforge.domain import GenerationParams, Progress, Task
    from imageforge.errors import ImageforgeError

    params = GenerationParams(
        task=Task.TEXT2IMG,
        prompt=prompt,
        negative_prompt=negative,
        model=model,
        steps=steps,
        guidance=guidance,
        width=width,
        height=height,
        seed=seed,
        assist_prompt=assist,
    )
    service = _service(_settings())
    service.start()
    bar: tqdm[Never] | None = None

    def on_progress(progress: Progress) -> None:
        nonlocal bar
        # Opened on the first step, so that a refused request prints its error alone.
        current = bar
        if current is None:
            current = bar = tqdm(
                desc="generating", total=progress.total, unit="step", file=sys.stderr, dynamic_ncols=True
            )
        current.total = progress.total
        current.update(progress.step - current.n)

    failure: ImageforgeError | None = None
    try:
        result = service.generate(params, on_progress=on_progress)
    except ImageforgeError as exc:
        failure = exc
    finally:
        # Also on Ctrl-C: closing the service cancels the running job at its next step.
        if bar is not None:
            bar.close()
        service.close()
    if failure is not None:
        raise _fail(failure)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(result.png)
    typer.echo(
        f"{result.model} seed={result.seed} steps={result.steps} {result.width}x{result.height} "
        f"{result.elapsed_s:.2f}s{' (cached)' if result.cached else ''}",
        err=True,
    )
    typer.echo(str(output or result.output_path))


@models_app.callback(invoke_without_command=True)
def models_list(ctx: typer.Context) -> None:
    """List the catalog: key, tasks, defaults, whether the weights are on disk."""
    if ctx.invoked_subcommand is not None:
        return
    service = _service(_settings())
    rows = service.list_models()
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
    typer.echo("* default model (IMAGEFORGE_MODEL)")


@models_app.command("pull")
def models_pull(key: Annotated[str, typer.Argument(help="Catalog key, e.g. sd-turbo.")]) -> None:
    """Download a model's weights now, so that a first request never stalls on a download."""
    from imageforge.errors import ImageforgeError

    service = _service(_settings())
    try:
        where = service.pull(key)
    except ImageforgeError as exc:
        raise _fail(exc) from None
    typer.echo(f"{key}: weights ready at {where}")


@app.command()
def check() -> None:
    """Print the effective settings and what is installed, then exit."""
    from imageforge.cli.diagnostics import print_check

    raise typer.Exit(print_check(_settings()))


@app.command()
def selftest() -> None:
    """Generate, edit, inpaint and hit the cache with the offline `tiny` model, in a temporary folder."""
    from imageforge.cli.diagnostics import run_selftest

    raise typer.Exit(run_selftest(_settings()))


@app.command()
def mcp() -> None:
    """Serve MCP over stdio (not yet available)."""
    typer.echo("imageforge mcp: the MCP server is not yet available in this version.", err=True)
    raise typer.Exit(2)


def main() -> None:
    app()
