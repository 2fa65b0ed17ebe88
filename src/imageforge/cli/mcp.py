"""`imageforge mcp`: the MCP tools over stdio for an agent to launch, run here or relayed to a server elsewhere,
and `--selftest` to check them through an MCP client."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from imageforge.cli.ctrl_c import INTERRUPTED
from imageforge.cli.settings import load_settings


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
        _relay(remote, api_key, ca_cert, insecure_tls)
        return
    settings = load_settings()
    if selftest:
        from imageforge.cli.mcp_selftest import run_mcp_selftest

        raise typer.Exit(run_mcp_selftest(settings, generate=gen))

    from imageforge.bootstrap import build_service
    from imageforge.transports.mcp.server import McpOptions
    from imageforge.transports.mcp.stdio import serve_stdio

    try:
        serve_stdio(build_service(settings), McpOptions(preview_px=settings.mcp_preview_px))
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM; the service is closed by now. The SDK reads stdin in a worker thread that only a
        # line or EOF wakes, and a normal exit waits for that thread (for ever on a terminal): leave at once.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(INTERRUPTED)


def _relay(remote: str, api_key: str | None, ca_cert: Path | None, insecure_tls: bool) -> None:
    """Relay the MCP tools over stdio to the server at `remote`, trusting `ca_cert`, or any certificate."""
    # Imported here: the proxy needs none of the engine, and the CLI imports what a command needs only.
    import ssl

    from imageforge.transports.mcp.proxy import run_proxy

    verify: bool | ssl.SSLContext = not insecure_tls
    if ca_cert is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_cert))
        except ssl.SSLError as exc:
            raise typer.BadParameter(f"{ca_cert} holds no PEM certificate ({exc}).", param_hint="--ca-cert") from None
    try:
        run_proxy(remote, api_key=api_key, verify_tls=verify)
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None
