"""The `imageforge` command: serve | generate | assist | templates | models | check | selftest | mcp | keys | tls.

Importing this module, and `imageforge --help`, never import torch: every command imports what it needs
when it runs.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Never

import typer

if TYPE_CHECKING:
    from tqdm import tqdm

    from imageforge.client import Client, GenerationOptions
    from imageforge.config import Settings
    from imageforge.domain import ImageResult, Progress
    from imageforge.service import ImageService

app = typer.Typer(
    name="imageforge",
    help="Local-first image generation: one engine for HTTP, MCP, web UI and CLI clients.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED = 130
#: How long `generate` waits for a server on HOST:PORT before running in its own process.
PROBE_TIMEOUT_S = 0.5
#: How often the main thread looks whether Ctrl-C was pressed while a job is followed on a server.
CTRL_C_POLL_S = 0.1

models_app = typer.Typer(help="List the model catalog, or pull a model's weights ahead of time.")
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="API keys stored hashed in the data folder: add (prints the key once), list, remove.")
app.add_typer(keys_app, name="keys")
tls_app = typer.Typer(help="Certificates for serving HTTPS (IMAGEFORGE_TLS_CERT, IMAGEFORGE_TLS_KEY).")
app.add_typer(tls_app, name="tls")


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
            shown = "<hidden>" if "key" in name.lower() else repr(error.get("input"))  # never print a secret
            typer.secho(
                f"error [invalid_settings]: {names.get(name, name)} = {shown}: {error['msg']}",
                err=True,
                fg="red",
            )
        typer.echo(f"hint: fix it in the environment or in {Path.cwd() / '.env'}", err=True)
        raise typer.Exit(1) from None


def _client(url: str, **options: Any) -> Client:
    """A client of the server at `url`, with IMAGEFORGE_API_KEY as its key (the client reads it) and trusting this
    machine's own certificate (IMAGEFORGE_TLS_CERT) beside the system's CAs, so that a local HTTPS server needs
    nothing more; another server's self-signed certificate is trusted with SSL_CERT_FILE=cert.pem."""
    import ssl

    from imageforge.client import Client

    tls = _settings().tls
    if tls is None:
        return Client(url, **options)
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=tls[0])
    return Client(url, verify=context, **options)


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
    """Run the HTTP API and MCP over Streamable HTTP (/mcp) on one port."""
    import uvicorn

    import imageforge
    from imageforge.bootstrap import check_folders
    from imageforge.domain import is_loopback
    from imageforge.errors import ImageforgeError
    from imageforge.jobs.owner import OwnerLock
    from imageforge.transports.http.keyfile import KeyFile

    settings = _settings(host=host, port=port)
    try:
        # Said here in one line; the server would otherwise fail its start-up with a traceback.
        check_folders(settings)
        OwnerLock.of_database(settings.jobs_path).check_free()
    except ImageforgeError as exc:
        raise _fail(exc) from None
    try:
        has_keys = bool(settings.api_keys) or bool(KeyFile(settings.keys_path).read())
    except ImageforgeError as exc:
        raise _fail(exc) from None
    if not is_loopback(settings.host) and not has_keys:
        if not settings.insecure_no_auth:
            typer.secho(
                f"error [insecure_bind]: {settings.host} is reachable from other machines and no API key is set.",
                err=True,
                fg="red",
            )
            typer.echo(
                "hint: add one with `imageforge keys add NAME` or set IMAGEFORGE_API_KEYS=name:key (16+ characters), "
                "or bind 127.0.0.1; to serve without authentication anyway, set IMAGEFORGE_INSECURE_NO_AUTH=1.",
                err=True,
            )
            raise typer.Exit(1)
        typer.secho(
            f"WARNING: serving on {settings.host} WITHOUT AUTHENTICATION (IMAGEFORGE_INSECURE_NO_AUTH): anyone who "
            "can reach this port can generate images and read every result.",
            err=True,
            fg="yellow",
            bold=True,
        )
    tls = settings.tls
    if tls is None and not is_loopback(settings.host):
        typer.secho(
            f"WARNING: serving plain HTTP on {settings.host}: API keys and images travel in clear text. Set "
            "IMAGEFORGE_TLS_CERT and IMAGEFORGE_TLS_KEY (`imageforge tls selfsigned` makes a pair), or put a TLS "
            "proxy in front.",
            err=True,
            fg="yellow",
        )
    scheme, state = ("http", "off") if tls is None else ("https", "on")
    typer.echo(f"imageforge on {scheme}://{settings.host}:{settings.port}  (docs: /docs, TLS {state})", err=True)
    # The factory reads Settings() from the environment again in the server process (and in each reloaded one):
    # --host and --port go there too, since the Host allow-list and the auth mode depend on the bound address.
    os.environ["IMAGEFORGE_HOST"], os.environ["IMAGEFORGE_PORT"] = settings.host, str(settings.port)
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
        # uvicorn trusts X-Forwarded-For and -Proto from loopback by default: any local client could then pose
        # as any address to the rate limit and the audit log. Only the proxies the admin names are believed.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies,
        ssl_certfile=None if tls is None else str(tls[0]),
        ssl_keyfile=None if tls is None else str(tls[1]),
        # Open requests get this long after SIGTERM; then the running job gets as long to stop at a step.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )


def _server_logging() -> dict[str, Any]:
    """uvicorn's logging, with every log (access lines and imageforge's own) on stderr.

    uvicorn writes access lines to stdout by default; a server's stdout stays free for what a caller may
    capture, and one stream keeps the log in order. Access lines show image links without their signatures.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config.setdefault("filters", {})["redact_signatures"] = {
        "()": "imageforge.transports.http.signed_urls.RedactSignatures"
    }
    config["handlers"]["access"]["filters"] = ["redact_signatures"]
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
    fast: Annotated[
        bool, typer.Option("--fast", help="Decode with the tiny autoencoder: much faster on a CPU (decoder: fast).")
    ] = False,
    style: Annotated[
        str | None,
        typer.Option(help="Start from this style template (imageforge templates); the prompt is its subject."),
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="Run the job on the imageforge server at this URL (http://HOST:PORT).")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Run in this process even when a server answers on HOST:PORT.")
    ] = False,
) -> None:
    """Generate one image, with a progress bar; prints the saved path.

    With --style KEY the prompt is the template's body with PROMPT as its subject, at the template's size and
    with its suggested negative prompt unless --width, --height or --negative say otherwise; the prompt used is
    printed on stderr.

    The job runs on the server given by --server, else on the one answering on HOST:PORT, else (or with
    --local) in this process.
    """
    from imageforge.client import GenerationOptions
    from imageforge.errors import ImageforgeError

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
    )
    settings = _settings()
    if server is None and not local:
        server = _running_server(settings)
        if server is not None:
            typer.echo(f"using the server at {server}", err=True)
    if style is not None:
        try:
            start = _style_start(style, prompt, settings, server)
        except ImageforgeError as exc:
            raise _fail(exc) from None
        prompt = start["prompt"]
        options["width"] = start["width"] if width is None else width
        options["height"] = start["height"] if height is None else height
        options["negative_prompt"] = negative or start["negative_prompt"]
        # A template is a starting point, never applied unseen: say what is sent.
        typer.echo(f"style {style}, {options['width']}x{options['height']}: {prompt}", err=True)
        if not negative and start["negative_prompt"]:
            typer.echo(f"negative prompt (the style's): {start['negative_prompt']}", err=True)
    bar = _StepBar()
    try:
        if server is not None:
            result = _generate_on_server(server, prompt, options, bar)
        else:
            result = _generate_here(settings, prompt, options, bar)
    except ImageforgeError as exc:
        raise _fail(exc) from None
    finally:
        bar.close()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(result.png)
    typer.echo(
        f"{result.model} seed={result.seed} steps={result.steps} {result.width}x{result.height} "
        f"{result.elapsed_s:.2f}s{' (cached)' if result.cached else ''}",
        err=True,
    )
    if assist:
        _report_assist(result)
    typer.echo(str(output or result.output_path))


def _report_assist(result: ImageResult) -> None:
    """Say on stderr which prompt was drawn: the local LLM's expansion, or the original and why."""
    if result.assisted:
        typer.echo(f"prompt (assisted by ollama): {result.prompt}", err=True)
    else:
        reason = (result.extra.get("assist") or {}).get("reason", "")
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


def _style_start(style: str, subject: str, settings: Settings, server: str | None) -> dict[str, Any]:
    """The style template filled with `subject`, from the server that will run the job when there is one (its
    templates file and MAX_RES are the ones that count), else from this process's settings."""
    if server is not None:
        with _client(server) as client:
            return client.template(style, subject)
    return _service(settings).render_template(style, subject).describe()


def _generate_here(settings: Settings, prompt: str, options: GenerationOptions, bar: _StepBar) -> ImageResult:
    """Run the job in this process, through the same job path as the server."""
    from imageforge.domain import GenerationParams, Task

    params = GenerationParams(task=Task.TEXT2IMG, prompt=prompt, **options)
    service = _service(settings)
    service.start()
    try:
        try:
            return service.generate(params, on_progress=bar)
        finally:
            # Also on Ctrl-C: closing the service cancels the running job at its next step.
            service.close()
    except KeyboardInterrupt:
        bar.close()
        typer.echo("interrupted: the job was cancelled", err=True)
        raise typer.Exit(INTERRUPTED) from None


def _generate_on_server(url: str, prompt: str, options: GenerationOptions, bar: _StepBar) -> ImageResult:
    """Submit the job to the server at `url` and follow its events; Ctrl-C cancels it there."""
    from imageforge.errors import ImageforgeError

    with _client(url) as client:
        try:
            job = client.submit(prompt, **options)
        except KeyboardInterrupt:
            typer.echo(f"interrupted before {url} answered: the job may still run there", err=True)
            raise typer.Exit(INTERRUPTED) from None
        try:
            return _follow_until_ctrl_c(lambda: client.wait(job.job_id, on_progress=bar))
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


def _follow_until_ctrl_c(follow: Callable[[], ImageResult]) -> ImageResult:
    """`follow()` in a thread of its own, while this (the main) thread watches for Ctrl-C: KeyboardInterrupt once
    Ctrl-C is pressed, whatever `follow` is doing.

    Python raises a KeyboardInterrupt wherever the main thread is, and one raised inside a finalizer that the
    garbage collector runs (a `__del__`) is printed and dropped: the command would go on following a job that
    the user meant to cancel. This handler only sets a flag, which cannot get lost.
    """
    if threading.current_thread() is not threading.main_thread():
        return follow()  # signal handlers belong to the main thread
    outcome: list[ImageResult | BaseException] = []
    pressed = threading.Event()

    def run() -> None:
        try:
            outcome.append(follow())
        except BaseException as exc:  # handed to the main thread as it is
            outcome.append(exc)

    # A daemon: a follower stuck reading the server must not keep the process alive after Ctrl-C.
    follower = threading.Thread(target=run, name="imageforge-follow", daemon=True)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.set())
    try:
        follower.start()
        while follower.is_alive() and not pressed.is_set():
            follower.join(CTRL_C_POLL_S)
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed.is_set():
        raise KeyboardInterrupt
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _running_server(settings: Settings) -> str | None:
    """The URL of an imageforge server answering on the configured HOST:PORT, if one answers at once."""
    from imageforge.errors import ImageforgeError

    # A server bound to every interface is reached on loopback; one with TLS by its own certificate.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    scheme = "http" if settings.tls is None else "https"
    url = f"{scheme}://[{host}]:{settings.port}" if ":" in host else f"{scheme}://{host}:{settings.port}"
    try:
        with _client(url, timeout=PROBE_TIMEOUT_S) as client:
            health = client.health()
    except ImageforgeError:
        return None
    # Without a key, a server with keys answers liveness only: still imageforge, and still the one to use.
    return url if health.get("ok") is True and ("version" in health or health.get("auth") == "required") else None


@app.command()
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
    import dataclasses
    import json

    from imageforge.errors import ImageforgeError

    try:
        if server is None:
            result = _service(_settings()).assist(prompt, style)
        else:
            with _client(server) as client:
                result = client.assist(prompt, style)
    except ImageforgeError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps({**dataclasses.asdict(result), "assisted": result.assisted}))
        return
    if result.assisted:
        typer.echo(f"source: {result.source}", err=True)
        typer.echo(f"tags: {', '.join(result.tags)}", err=True)
    else:
        typer.echo(f"source: {result.source} ({result.reason})", err=True)
    typer.echo(result.prompt)


@models_app.callback(invoke_without_command=True)
def models_list(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option(help="List the catalog of the server at this URL instead.")] = None,
) -> None:
    """List the catalog: key, tasks, defaults, whether the weights are on disk."""
    if ctx.invoked_subcommand is not None:
        if server is not None:
            raise typer.BadParameter("only the listing reads a server; `models pull` runs here.", param_hint="--server")
        return
    if server is None:
        rows = _service(_settings()).list_models().model_dump()["models"]
    else:
        from imageforge.errors import ImageforgeError

        try:
            with _client(server) as client:
                rows = client.models()["models"]
        except ImageforgeError as exc:
            raise _fail(exc) from None
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


@app.command()
def templates(
    server: Annotated[str | None, typer.Option(help="List the templates of the server at this URL instead.")] = None,
) -> None:
    """List the style templates for `generate --style KEY`: key, size, title, description and body."""
    if server is None:
        rows = [template.describe() for template in _service(_settings()).list_templates()]
    else:
        from imageforge.errors import ImageforgeError

        try:
            with _client(server) as client:
                rows = client.templates()
        except ImageforgeError as exc:
            raise _fail(exc) from None
    # Keys from a templates file may be longer than the built-in ones; the column fits the longest.
    width = max([len("template"), *(len(row["key"]) for row in rows)])
    typer.echo(f"{'template':<{width}} {'size':<9} title")
    for row in rows:
        typer.echo(f"{row['key']:<{width}} {str(row['width']) + 'x' + str(row['height']):<9} {row['title']}")
        if row["description"]:
            typer.echo(f"    {row['description']}")
        typer.echo(f"    body: {row['body']}")


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
def config() -> None:
    """Print every setting's names, default and meaning as Markdown: the text of docs/configuration.md."""
    from imageforge.config import settings_reference

    typer.echo(settings_reference(), nl=False)


@app.command()
def selftest() -> None:
    """Generate, edit, inpaint and hit the cache with the offline `tiny` model, in a temporary folder."""
    from imageforge.cli.diagnostics import run_selftest

    raise typer.Exit(run_selftest(_settings()))


@app.command()
def mcp(
    remote: Annotated[
        str | None,
        typer.Option(help="Relay to the imageforge server at this URL (http://HOST:PORT) instead of running here."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="IMAGEFORGE_API_KEY", help="The API key of the --remote server (or IMAGEFORGE_API_KEY)."),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            "--ca-cert",
            exists=True,
            dir_okay=False,
            help="Trust this certificate (PEM) for an https --remote, e.g. the server's data/tls/cert.pem.",
        ),
    ] = None,
    insecure_tls: Annotated[
        bool, typer.Option("--insecure-tls", help="Accept any TLS certificate from the --remote server.")
    ] = False,
    selftest: Annotated[
        bool, typer.Option("--selftest", help="Check the MCP server through an MCP client, print the result, exit.")
    ] = False,
    gen: Annotated[bool, typer.Option("--gen", help="With --selftest: also generate an image.")] = False,
) -> None:
    """Serve the MCP tools over stdio, for an agent to launch (stdout carries only the protocol; logs go to stderr).

    With --remote, relay them to an imageforge server elsewhere (a GPU box) instead of generating here.
    """
    # An --api-key may come from IMAGEFORGE_API_KEY in the environment, so only the TLS options are refused alone.
    if remote is None and (insecure_tls or ca_cert is not None):
        raise typer.BadParameter("only --remote uses it.", param_hint="--ca-cert" if ca_cert else "--insecure-tls")
    if insecure_tls and ca_cert is not None:
        raise typer.BadParameter(
            "--ca-cert trusts one certificate, --insecure-tls any: pick one.", param_hint="--ca-cert"
        )
    if gen and not selftest:
        raise typer.BadParameter("it is an option of --selftest.", param_hint="--gen")
    if remote is not None:
        if selftest:
            raise typer.BadParameter("the self-test checks this machine's server.", param_hint="--remote")
        # Imported here: the proxy needs none of the engine, and the CLI imports what a command needs only.
        import ssl

        from imageforge.transports.mcp.proxy import run_proxy

        verify: bool | ssl.SSLContext = not insecure_tls
        if ca_cert is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_cert))
            except ssl.SSLError as exc:
                raise typer.BadParameter(
                    f"{ca_cert} holds no PEM certificate ({exc}).", param_hint="--ca-cert"
                ) from None
        try:
            run_proxy(remote, api_key=api_key, verify_tls=verify)
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED) from None
        return
    settings = _settings()
    if selftest:
        from imageforge.cli.mcp_selftest import run_mcp_selftest

        raise typer.Exit(run_mcp_selftest(settings, generate=gen))

    from imageforge.errors import ImageforgeError
    from imageforge.transports.mcp.server import McpOptions
    from imageforge.transports.mcp.stdio import serve_stdio

    try:
        serve_stdio(_service(settings), McpOptions(preview_px=settings.mcp_preview_px))
    except ImageforgeError as exc:  # the data folder is another process's, for one
        raise _fail(exc) from None
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM; the service is closed by now. The SDK reads stdin in a worker thread that only a
        # line or EOF wakes, and a normal exit waits for that thread (for ever on a terminal): leave at once.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(INTERRUPTED)


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. laptop or claude-desktop.")],
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key: it sees and cancels every client's jobs, not only its own.")
    ] = False,
) -> None:
    """Make a new API key, print it once, and store only its hash (with NAME, its role and the time) in the keys file.

    A running server accepts it at once. The key goes to stdout alone, so `KEY=$(imageforge keys add NAME)` works.
    """
    from imageforge.errors import ImageforgeError
    from imageforge.transports.http.keyfile import KeyFile

    settings = _settings()
    try:
        key = KeyFile(settings.keys_path).add(
            name, taken=frozenset(entry[0] for entry in settings.api_keys), admin=admin
        )
    except ImageforgeError as exc:
        raise _fail(exc) from None
    role = "admin key" if admin else "key"
    typer.echo(f"{role} '{name}' added to {settings.keys_path}; it is shown only now, so store it:", err=True)
    typer.echo(key)
    typer.echo("send it as 'Authorization: Bearer <key>' (the web page asks for it once)", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """List the keys by name, role and creation time, with where each comes from; never a key or a hash."""
    from imageforge.errors import ImageforgeError
    from imageforge.transports.http.keyfile import KeyFile

    settings = _settings()
    try:
        stored = KeyFile(settings.keys_path).read()
    except ImageforgeError as exc:
        raise _fail(exc) from None
    rows = [(key.name, key.role, key.created, "keys file") for key in stored]
    rows += [(name, "admin" if admin else "user", "", "IMAGEFORGE_API_KEYS") for name, _, admin in settings.api_keys]
    if not rows:
        typer.echo(f"no API keys (keys file: {settings.keys_path}); add one with `imageforge keys add NAME`", err=True)
        return
    width = max(len("name"), *(len(row[0]) for row in rows))
    typer.echo(f"{'name':<{width}} {'role':<6} {'created':<25} source")
    for name, role, created, source in rows:
        typer.echo(f"{name:<{width}} {role:<6} {created:<25} {source}")


@keys_app.command("remove")
def keys_remove(name: Annotated[str, typer.Argument(help="The name given to `keys add`.")]) -> None:
    """Remove a key from the keys file; a running server refuses it from its next request on."""
    from imageforge.errors import ImageforgeError
    from imageforge.transports.http.keyfile import KeyFile

    settings = _settings()
    try:
        KeyFile(settings.keys_path).remove(name)
    except ImageforgeError as exc:
        raise _fail(exc) from None
    typer.echo(f"key '{name}' removed from {settings.keys_path}", err=True)


@tls_app.command("selfsigned")
def tls_selfsigned(
    hosts: Annotated[
        list[str] | None,
        typer.Option("--host", help="Another name or IP clients use (a tailnet name, a LAN address); repeatable."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing pair.")] = False,
) -> None:
    """Make a self-signed certificate and key in DATA_DIR/tls/ and print the settings that serve HTTPS with them.

    The certificate covers localhost, 127.0.0.1, ::1, this machine's hostname and each --host. Clients trust it
    by its file (Client(verify=...), `imageforge mcp --ca-cert`) or by the printed SHA-256 fingerprint.
    """
    from imageforge.cli.tls import is_host_name, make_selfsigned

    for host in hosts or []:
        if not is_host_name(host):
            raise typer.BadParameter(f"{host!r} is neither a DNS name nor an IP address.", param_hint="--host")
    folder = _settings().data_path / "tls"
    existing = [path for path in (folder / "cert.pem", folder / "key.pem") if path.exists()]
    if existing and not force:
        typer.secho(f"error [tls_exists]: {existing[0]} already exists.", err=True, fg="red")
        typer.echo("hint: pass --force to replace the pair (clients that trust the old certificate stop).", err=True)
        raise typer.Exit(1)
    pair = make_selfsigned(folder, hosts or [])
    typer.echo(f"certificate for {', '.join(pair.names)}", err=True)
    typer.echo(f"SHA-256 fingerprint: {pair.fingerprint}", err=True)
    typer.echo("set these (in .env or the environment) and restart `imageforge serve`:", err=True)
    typer.echo(f"IMAGEFORGE_TLS_CERT={pair.cert}")
    typer.echo(f"IMAGEFORGE_TLS_KEY={pair.key}")


def main() -> None:
    app()
