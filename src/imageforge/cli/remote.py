"""Reaching an imageforge server from a command: a client that trusts this machine's certificate, and the
server answering on the configured HOST:PORT, if any."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imageforge.cli.settings import load_settings

if TYPE_CHECKING:
    from imageforge.client import Client
    from imageforge.config import Settings

#: How long `generate` waits to connect to a server on HOST:PORT before running in its own process: a port where
#: nothing listens refuses at once, so this only bounds a firewall that drops the packets.
PROBE_CONNECT_S = 0.5
#: How long a server that took the connection gets to answer: its first `/health` with a key imports torch, and a
#: busy machine is slow. Giving up sooner would run the job here, beside a server that holds the data folder.
PROBE_ANSWER_S = 30.0


def connect(url: str, **options: Any) -> Client:
    """A client of the server at `url`, with IMAGEFORGE_API_KEY as its key (the client reads it) and trusting this
    machine's own certificate (IMAGEFORGE_TLS_CERT) beside the system's CAs, so that a local HTTPS server needs
    nothing more; another server's self-signed certificate is trusted with SSL_CERT_FILE=cert.pem."""
    import ssl

    from imageforge.client import Client

    tls = load_settings().tls
    if tls is None:
        return Client(url, **options)
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=tls[0])
    return Client(url, verify=context, **options)


def running_server(settings: Settings) -> str | None:
    """The URL of an imageforge server answering on the configured HOST:PORT, if one is there."""
    import httpx

    from imageforge.errors import ImageforgeError

    url = settings.local_url
    try:
        with connect(url, timeout=httpx.Timeout(PROBE_ANSWER_S, connect=PROBE_CONNECT_S)) as client:
            health = client.health()
    except ImageforgeError:
        return None
    # Without a key, a server with keys answers liveness only: still imageforge, and still the one to use.
    return url if health.get("ok") is True and ("version" in health or health.get("auth") == "required") else None
