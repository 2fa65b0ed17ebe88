"""serve_stdio(service): the MCP tools over this process's stdin and stdout, as an agent launches them.

On stdio, stdout is the protocol: a stray line there (a print, a library writing to stdout) is a message the
client cannot parse. Logs therefore go to stderr, which clients show or keep as the server's log, and while
the server runs the SDK points file descriptor 1 at stderr too, so that even output written below Python
(a C library, a child process) misses the wire.
"""

from __future__ import annotations

import logging
import signal
import threading

import anyio

from imageforge.logs import log_to_stderr
from imageforge.service import ImageService
from imageforge.transports.mcp.server import McpOptions, build_mcp_server


def serve_stdio(service: ImageService, options: McpOptions) -> None:
    """Serve the MCP tools on `service` over stdin and stdout until the client closes stdin.

    Starts the service, and closes it when the client goes or on SIGINT or SIGTERM (raised as
    KeyboardInterrupt), which cancels a job still running. Logs go to stderr, as text unless the caller set
    logging up first (`imageforge mcp` does, in `IMAGEFORGE_LOG_FORMAT`): the SDK's `logging.basicConfig` when the
    server is built then does nothing, which also keeps its per-request INFO lines out of the log.
    """
    log_to_stderr()
    server = build_mcp_server(service, options)
    log = logging.getLogger(__name__)
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        # A client that stops waiting for the exit sends SIGTERM; ending as on Ctrl-C (KeyboardInterrupt) still
        # closes the service, so a running job ends `cancelled` instead of `interrupted` at the next start.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    service.start()
    try:
        log.info("imageforge MCP server on stdio (default model %s)", service.default_model)
        anyio.run(server.run_stdio_async)
        log.info("the client closed the connection; stopping")
    finally:
        service.close()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
