"""`imageforge generate`: images with a progress bar, on a server when one is given or answers on HOST:PORT,
else in this process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Never

import typer
from pydantic import ValidationError

from imageforge.cli.ctrl_c import INTERRUPTED, follow_until_ctrl_c
from imageforge.cli.remote import connect, running_server
from imageforge.cli.server_side import require_server_side
from imageforge.cli.settings import load_settings
from imageforge.domain import REQUEST_FIELDS, LoraWeight, Sampler, Schedule, accepted

if TYPE_CHECKING:
    from tqdm import tqdm

    from imageforge.client import GenerationOptions
    from imageforge.config import Settings
    from imageforge.domain import ImageResult, Progress


def _declared(name: str, *flags: str) -> Any:
    """The option of the request field `name` as the domain declares it: its description as help, its static
    bounds as the accepted range (`imageforge.domain.REQUEST_FIELDS`)."""
    declared = REQUEST_FIELDS[name]
    bounds = {
        option: getattr(rule, bound)
        for rule in declared.metadata
        for option, bound in (("min", "ge"), ("max", "le"))
        if hasattr(rule, bound)
    }
    return typer.Option(*flags, help=declared.description, **bounds)


def generate(
    prompt: Annotated[str, typer.Argument(help=REQUEST_FIELDS["prompt"].description)],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Also copy the PNG here.")] = None,
    model: Annotated[str | None, _declared("model")] = None,
    seed: Annotated[int | None, _declared("seed")] = None,
    steps: Annotated[int | None, _declared("steps")] = None,
    guidance: Annotated[float | None, _declared("guidance")] = None,
    width: Annotated[int | None, _declared("width")] = None,
    height: Annotated[int | None, _declared("height")] = None,
    negative: Annotated[str, _declared("negative_prompt", "--negative")] = "",
    assist: Annotated[bool, _declared("assist_prompt", "--assist/--no-assist")] = False,
    count: Annotated[int, _declared("count")] = 1,
    fast: Annotated[
        bool, typer.Option("--fast", help="Decode with the tiny autoencoder: much faster on a CPU (decoder: fast).")
    ] = False,
    style: Annotated[str | None, _declared("style")] = None,
    sampler: Annotated[Sampler | None, _declared("sampler")] = None,
    schedule: Annotated[Schedule, _declared("schedule")] = Schedule.DEFAULT,
    lora: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME[:WEIGHT]",
            help="Apply a LoRA of the server's LoRA folder (imageforge loras), weight 1 unless given; repeat the "
            "option for more (loras).",
        ),
    ] = None,
    allow_downsize: Annotated[bool, _declared("allow_downsize", "--allow-downsize/--no-allow-downsize")] = False,
    server: Annotated[
        str | None, typer.Option(help="Run the job on the imageforge server at this URL (http://HOST:PORT).")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Run in this process even when a server answers on HOST:PORT.")
    ] = False,
) -> None:
    """Generate an image (or --count images), with a progress bar; prints each saved path on its own line.

    With --count N and -o FILE, the images are written to FILE-1, FILE-2, … (before its suffix).

    With --style KEY (imageforge templates) the prompt is the template's body with PROMPT as its subject, at the
    template's size and with its suggested negative prompt unless --width, --height or --negative say otherwise;
    the prompt drawn is printed on stderr.

    The job runs on the server given by --server, else on the one answering on HOST:PORT, else (or with
    --local) in this process.
    """
    from imageforge.client import GenerationOptions

    if server is not None and local:
        raise typer.BadParameter("--server and --local exclude each other.", param_hint="--local")
    options = GenerationOptions(
        negative_prompt=negative,
        model=model,
        steps=steps,
        guidance=guidance,
        width=width,
        height=height,
        seed=seed,
        assist_prompt=assist,
        decoder="fast" if fast else "full",
        count=count,
        style=style,
        sampler=None if sampler is None else sampler.value,
        schedule=schedule.value,
        loras=[lora.model_dump() for lora in _loras(lora or [])],
        allow_downsize=allow_downsize,
    )
    settings = load_settings()
    if server is None and not local:
        server = running_server(settings)
        if server is not None:
            typer.echo(f"using the server at {server}", err=True)
    bar = _StepBar()
    try:
        if server is not None:
            result = _generate_on_server(server, prompt, options, bar)
        else:
            require_server_side("With no server to use, `imageforge generate`")
            result = _generate_here(settings, prompt, options, bar)
    finally:
        bar.close()
    if style is not None:
        # The style changed what was drawn: say what.
        typer.echo(f"style {style}, {result.width}x{result.height}: {result.prompt}", err=True)
        if not negative and result.negative_prompt:
            typer.echo(f"negative prompt (the style's): {result.negative_prompt}", err=True)
    paths = []
    for number, image in enumerate(result.images, start=1):
        path = Path(image.output_path)
        if output is not None:
            path = output if count == 1 else output.with_name(f"{output.stem}-{number}{output.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image.png)
        paths.append(path)
        typer.echo(
            f"{image.model} seed={image.seed} steps={image.steps} {image.width}x{image.height} "
            f"{image.elapsed_s:.2f}s{' (cached)' if image.cached else ''}",
            err=True,
        )
    if assist:
        _report_assist(result)
    for path in paths:
        typer.echo(str(path))


def _report_assist(result: ImageResult) -> None:
    """Say on stderr which prompt was drawn: the local LLM's expansion, or the original and why."""
    if result.assisted:
        typer.echo(f"prompt (assisted by ollama): {result.prompt}", err=True)
    else:
        reason = (result.assist or {}).get("reason", "")
        typer.echo(f"prompt (passthrough: {reason}): {result.prompt}", err=True)


class _StepBar:
    """The progress bar of one generation on stderr, opened on its first step so that a refused request
    prints its error alone."""

    def __init__(self) -> None:
        self._bar: tqdm[Never] | None = None

    def __call__(self, progress: Progress) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(desc="generating", total=progress.total, unit="step", file=sys.stderr, dynamic_ncols=True)
        self._bar.total = progress.total
        self._bar.update(progress.step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _loras(options: list[str]) -> list[LoraWeight]:
    """The `--lora NAME[:WEIGHT]` options as the request's `loras`."""
    loras = []
    for option in options:
        name, colon, weight = option.rpartition(":")
        try:
            loras.append(LoraWeight(name=name, weight=float(weight)) if colon else LoraWeight(name=option))
        except (ValueError, ValidationError):
            raise typer.BadParameter(f"{option!r}: {accepted('loras')}", param_hint="--lora") from None
    return loras


def _generate_here(settings: Settings, prompt: str, options: GenerationOptions, bar: _StepBar) -> ImageResult:
    """Run the job in this process, through the same job path as the server."""
    from imageforge.bootstrap import build_service
    from imageforge.domain import GenerationParams, Task

    # The client's options carry plain JSON; the service's request carries the declared types.
    loras = tuple(LoraWeight.model_validate(lora) for lora in options.get("loras", []))
    fields: dict[str, Any] = {**options, "loras": loras}
    params = GenerationParams(task=Task.TEXT2IMG, prompt=prompt, **fields)
    service = build_service(settings)
    service.start()
    try:
        try:
            return service.generate(params, on_progress=bar)
        finally:
            # Also on Ctrl-C: closing the service stops the running job at its next step (it ends `interrupted`).
            service.close()
    except KeyboardInterrupt:
        bar.close()
        typer.echo("interrupted: the job was stopped", err=True)
        raise typer.Exit(INTERRUPTED) from None


def _generate_on_server(url: str, prompt: str, options: GenerationOptions, bar: _StepBar) -> ImageResult:
    """Submit the job to the server at `url` and follow its events; Ctrl-C cancels it there."""
    from imageforge.errors import ImageforgeError

    with connect(url) as client:
        try:
            job = client.submit(prompt, **options)
        except KeyboardInterrupt:
            typer.echo(f"interrupted before {url} answered: the job may still run there", err=True)
            raise typer.Exit(INTERRUPTED) from None
        try:
            return follow_until_ctrl_c(lambda: client.wait(job.job_id, on_progress=bar))
        except KeyboardInterrupt:
            bar.close()
            try:
                client.cancel(job.job_id)
            except ImageforgeError as exc:
                # The job may have ended meanwhile (job_finished), or the server gone; either way nothing runs.
                typer.echo(f"interrupted: could not cancel job {job.job_id}: {exc.message}", err=True)
            else:
                typer.echo(f"interrupted: job {job.job_id} cancelled on {url}", err=True)
            raise typer.Exit(INTERRUPTED) from None
