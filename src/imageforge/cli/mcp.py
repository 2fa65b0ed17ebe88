"""`imageforge mcp`: the MCP tools over stdio for an agent to launch, and `--selftest` to check them through an MCP
client.

Where the jobs run: with --remote, on the imageforge server at that URL; else, when an `imageforge serve` holds
this data folder (its lock records where it listens), on that server, so that an agent beside it shares its
queue, its loaded model and its outputs; else here, in this process.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imageforge.cli.ctrl_c import INTERRUPTED
from imageforge.cli.settings import load_settings

if TYPE_CHECKING:
    from imageforge.config import Settings


def mcp(
    remote: Annotated[
        str | None,
        typer.Option(help="Relay to the imageforge server at this URL (http://HOST:PORT) instead of running here."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="IMAGEFORGE_API_KEY",
            help="The API key of the server relayed to: --remote, or a local server with keys (or IMAGEFORGE_API_KEY).",
        ),
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
    image_dir: Annotated[
        Path | None,
        typer.Option(
            "--image-dir",
            file_okay=False,
            help="When relaying, save the full images here (default: /tmp, or %TEMP% on Windows).",
        ),
    ] = None,
    selftest: Annotated[
        bool, typer.Option("--selftest", help="Check the MCP server through an MCP client, print the result, exit.")
    ] = False,
    gen: Annotated[bool, typer.Option("--gen", help="With --selftest: also generate an image.")] = False,
) -> None:
    """Serve the MCP tools over stdio, for an agent to launch (stdout carries only the protocol; logs go to stderr).

    Beside a running `imageforge serve` on the same data folder, relay to it (one queue, one loaded model); with
    --remote, relay to an imageforge server elsewhere (a GPU box); otherwise generate in this process.
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
        _relay(remote, api_key, _trusting(ca_cert, insecure_tls), image_dir)
        return
    settings = load_settings()
    if selftest:
        from imageforge.cli.mcp_selftest import run_mcp_selftest

        raise typer.Exit(run_mcp_selftest(settings, generate=gen))
    if _relay_to_local_server(settings, api_key, image_dir):
        return
    _serve_here(settings)


def _relay_to_local_server(settings: Settings, api_key: str | None, image_dir: Path | None) -> bool:
    """Relay to the server that holds this data folder, when one does; False when none does."""
    from imageforge.errors import ServerUnavailable
    from imageforge.jobs.owner import OwnerLock

    server = OwnerLock.of_database(settings.jobs_path).holder()
    if server is None or server.url is None:
        # Free: run here. Held by a process that takes no requests (another agent's `imageforge mcp`): starting
        # the service here says which one, and what to do.
        return False
    verify: bool | ssl.SSLContext = True
    if server.ca_cert is not None:
        # The server's own certificate, beside the system's CAs: a self-signed one verifies, name included.
        verify = ssl.create_default_context()
        try:
            verify.load_verify_locations(cafile=server.ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise ServerUnavailable(
                f"The imageforge server at {server.url} serves the certificate {server.ca_cert}, which cannot be "
                f"read here ({exc}).",
                hint="Let this user read the server's IMAGEFORGE_TLS_CERT, or run `imageforge mcp` as the user "
                "that runs the server.",
            ) from None
    typer.echo(
        f"relaying to the imageforge server at {server.url} (pid {server.pid}), which runs the jobs of "
        f"{settings.data_path}",
        err=True,
    )
    _relay(server.url, api_key, verify, image_dir)
    return True


def _serve_here(settings: Settings) -> None:
    """Run the engine in this process and serve its tools over stdio."""
    from imageforge.cli.server_side import require_server_side

    require_server_side("With no imageforge server running on this data folder, `imageforge mcp`")
    from imageforge import tracing
    from imageforge.bootstrap import build_service
    from imageforge.jobs.owner import Owner
    from imageforge.logs import log_to_stderr
    from imageforge.transports.mcp.server import McpOptions
    from imageforge.transports.mcp.stdio import serve_stdio

    log_to_stderr(settings.log_format)
    tracing.configure(settings.tracing_endpoint)

    # What a server started meanwhile reads in the lock when it is refused: an agent's process, reached by no URL.
    owner = Owner("imageforge mcp over stdio, started by an agent")
    try:
        serve_stdio(build_service(settings, owner=owner), McpOptions(preview_px=settings.mcp_preview_px))
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM; the service is closed by now. The SDK reads stdin in a worker thread that only a
        # line or EOF wakes, and a normal exit waits for that thread (for ever on a terminal): leave at once.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(INTERRUPTED)


def _trusting(ca_cert: Path | None, insecure_tls: bool) -> bool | ssl.SSLContext:
    """How to check the --remote server's certificate: against `ca_cert` (beside nothing else), any, or the system's
    CAs."""
    if insecure_tls:
        return False
    if ca_cert is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_cert))
    except ssl.SSLError as exc:
        raise typer.BadParameter(f"{ca_cert} holds no PEM certificate ({exc}).", param_hint="--ca-cert") from None


def _relay(url: str, api_key: str | None, verify: bool | ssl.SSLContext, image_dir: Path | None) -> None:
    """Relay the MCP tools over stdio to the server at `url`, checking its certificate as `verify` says."""
    # Imported here: the proxy needs none of the engine, and the CLI imports what a command needs only.
    from imageforge.transports.mcp.proxy import remote_base_url, run_proxy

    try:
        remote_base_url(url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--remote") from None
    try:
        run_proxy(url, api_key=api_key or None, verify_tls=verify, image_folder=image_dir)
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None
