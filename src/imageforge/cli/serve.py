"""`imageforge serve`: the HTTP API and MCP over Streamable HTTP on one port, and the policy of where it may bind
(a network address needs an API key, or an explicit IMAGEFORGE_INSECURE_NO_AUTH=1)."""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from imageforge.cli.settings import load_settings
from imageforge.logs import JsonLines, LogFormat, formatter_class


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (PORT).")] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the code changes (development).")] = False,
    queue: Annotated[
        str | None,
        typer.Option(
            help="Serve as an API node of the queue across machines on this Redis, redis://HOST:PORT/DB "
            "(IMAGEFORGE_QUEUE_URL): it loads no model and runs no job; `imageforge worker` processes do."
        ),
    ] = None,
) -> None:
    """Run the HTTP API and MCP over Streamable HTTP (/mcp) on one port."""
    from imageforge.cli.server_side import require_distributed, require_server_side

    require_server_side("`imageforge serve`")
    import uvicorn

    import imageforge
    from imageforge.bootstrap import check_folders
    from imageforge.domain import is_loopback
    from imageforge.errors import DataFolderInUse, InsecureBind
    from imageforge.jobs.owner import OwnerLock
    from imageforge.transports.http.keyfile import KeyFile

    settings = load_settings(host=host, port=port, queue_url=queue)
    if settings.queue_url:
        require_distributed("`imageforge serve --queue`")
    # Said here in one line; the server would otherwise fail its start-up with a traceback.
    check_folders(settings)
    lock = OwnerLock.of_database(settings.jobs_path)
    try:
        # API nodes and workers of the distributed queue share the data folder by design: no lock to hold.
        if not settings.queue_url:
            lock.check_free()
    except DataFolderInUse as exc:
        holder = lock.holder()
        if holder is None or holder.url is not None:
            raise
        # An agent's `imageforge mcp` running the engine itself: once it stops, this server can start, and the
        # next `imageforge mcp` relays to it.
        raise DataFolderInUse(
            exc.message,
            hint=f"Stop it (pid {holder.pid}: end that agent's session or disable its imageforge MCP server), start "
            "this server, then start the agent's MCP server again: it relays here, so the agent and this server "
            "share one queue. Or give this server its own IMAGEFORGE_DATA_DIR.",
        ) from None
    has_keys = bool(settings.api_keys) or bool(KeyFile(settings.keys_path).read())
    if not is_loopback(settings.host) and not has_keys:
        if not settings.insecure_no_auth:
            raise InsecureBind(
                f"{settings.host} is reachable from other machines and no API key is set.",
                hint="add one with `imageforge keys add NAME` or set IMAGEFORGE_API_KEYS=name:key (16+ characters), "
                "or bind 127.0.0.1; to serve without authentication anyway, set IMAGEFORGE_INSECURE_NO_AUTH=1.",
            )
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
    if settings.queue_url:
        os.environ["IMAGEFORGE_QUEUE_URL"] = settings.queue_url
        typer.echo("an API node of the job queue on Redis: jobs run on `imageforge worker` processes", err=True)
    # Python's warnings (a library's deprecation) become log lines in the same format.
    logging.captureWarnings(True)
    uvicorn.run(
        "imageforge.bootstrap:http_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=_server_logging(settings.log_format),
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


def _server_logging(log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's logging, with every log (access lines and imageforge's own) on stderr in `log_format`.

    uvicorn writes access lines to stdout by default; a server's stdout stays free for what a caller may
    capture, and one stream keeps the log in order. No line shows a secret: image links lose their signatures.
    imageforge's own lines carry the job and client they are about; in JSON, uvicorn's lines are JSON too.
    """
    from uvicorn.config import LOGGING_CONFIG

    lines = formatter_class(log_format)
    formatter = {"()": f"imageforge.logs.{lines.__name__}"}
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["imageforge"] = formatter
    if lines is JsonLines:
        config["formatters"]["default"] = config["formatters"]["access"] = formatter
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["handlers"]["imageforge"] = {
        "class": "logging.StreamHandler",
        "formatter": "imageforge",
        "stream": "ext://sys.stderr",
    }
    config.setdefault("filters", {})["redact_secrets"] = {"()": "imageforge.logs.RedactSecrets"}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_secrets"]
    config["loggers"]["imageforge"] = {"handlers": ["imageforge"], "level": "INFO", "propagate": False}
    # The libraries' warnings (diffusers', transformers') in the same format, rather than Python's bare last resort.
    config["root"] = {"handlers": ["imageforge"], "level": "WARNING"}
    return config
