"""Where webhooks may go: the operator's allow-list (IMAGEFORGE_WEBHOOK_ALLOW) checked against a URL and against
the addresses its host resolves to, at submit and again before each attempt, so that a job cannot make the server
post to a place the operator did not name (no SSRF)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from imageforge.config import Address, Network, WebhookAllowEntry
from imageforge.errors import WebhookNotAllowed

#: Resolves a host name and port to its addresses (`socket.getaddrinfo` by default; tests pass their own).
Resolver = Callable[[str, int], list[Address]]

SETTING = "IMAGEFORGE_WEBHOOK_ALLOW"
#: Where a webhook never goes unless an address entry (an IP or a network) names it: the machine itself, its link,
#: the cloud metadata service; a host name entry or `*` never covers these, so a name rebound to one is refused.
GUARDED_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.100.100.200/32",  # Alibaba Cloud's metadata service
        "::/128",
        "::1/128",
        "fe80::/10",
        "fd00:ec2::254/128",  # AWS's IPv6 metadata service
    )
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def resolve(host: str, port: int) -> list[Address]:
    """The addresses `host` resolves to now; `OSError` when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: its host and port, and the allowed addresses to connect to (the checked ones, never
    resolved again: a name that changes between the check and the connection cannot move the post)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[Address, ...]


def _admits(entry: WebhookAllowEntry, host: str, port: int, address: Address) -> bool:
    """Whether `entry` lets a webhook to `host`:`port` go to `address`: an address entry by the address alone, a
    name entry or `*` never to a guarded address."""
    if entry.port is not None and entry.port != port:
        return False
    if entry.network is not None:
        return address in entry.network
    if _guarded(address):
        return False
    if entry.anywhere:
        return address.is_global
    return host == entry.name


class WebhookTargets:
    """The allow-list: which URLs a job's webhook may name. Empty (the default): webhooks are refused."""

    def __init__(self, entries: Sequence[str], *, resolver: Resolver = resolve) -> None:
        """`ValueError` naming the setting and the first entry that is not one (`Settings` refuses those first)."""
        try:
            self._entries = [WebhookAllowEntry.parse(entry) for entry in entries]
        except ValueError as exc:
            raise ValueError(f"{SETTING}: {exc}") from None
        self._resolve = resolver

    @property
    def enabled(self) -> bool:
        """Whether any webhook may be sent (the allow-list names something)."""
        return bool(self._entries)

    def check(self, url: str) -> Target:
        """`url` as a `Target` with its addresses, resolved now; `WebhookNotAllowed` for a URL that is not http(s),
        carries credentials, does not resolve, or whose host or any address it resolves to the allow-list does not
        admit."""
        try:
            return self.target(url)
        except OSError as exc:
            raise WebhookNotAllowed(
                f"The webhook's host does not resolve ({exc.strerror or exc}).", hint="Check the URL's host name."
            ) from None

    def target(self, url: str) -> Target:
        """`check`, except that a host that does not resolve now is an `OSError` (it may resolve later)."""
        if not self._entries:
            raise WebhookNotAllowed(
                "This server sends no webhooks: its allow-list is empty.",
                hint=f"The server's admin lists the hosts webhooks may go to in {SETTING} (host, host:port, an "
                "address or a network); until then, poll GET /jobs/{id} or follow its events.",
            )
        scheme, host, port = _parse(url)
        try:
            resolved = self._resolve(host, port)
        except ValueError:  # a name the resolver cannot encode (an over-long label, a NUL): no host at all
            raise WebhookNotAllowed(
                f"The webhook's host {host!r} is not a valid host name.", hint="Check the URL's host name."
            ) from None
        addresses = list(dict.fromkeys(_plain(address) for address in resolved))
        refused = [address for address in addresses if not self._admitted(host, port, address)]
        if refused or not addresses:
            raise WebhookNotAllowed(
                f"Webhooks may not go to {host}:{port}"
                + (f" ({', '.join(str(address) for address in refused)})." if refused else "."),
                hint=f"Use a host the server's {SETTING} lists. Loopback, link-local and metadata addresses "
                "need an entry naming the address itself (127.0.0.1:8080, ::1).",
            )
        return Target(url=url, scheme=scheme, host=host, port=port, addresses=tuple(addresses))

    def _admitted(self, host: str, port: int, address: Address) -> bool:
        return any(_admits(entry, host, port, address) for entry in self._entries)


def _parse(url: str) -> tuple[str, str, int]:
    """The scheme, lowercase host and port of an http(s) URL; `WebhookNotAllowed` for anything else."""
    hint = "Give an http:// or https:// URL with a host, such as https://hooks.example.com/imageforge."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookNotAllowed(f"The webhook is not a valid URL ({exc}).", hint=hint) from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise WebhookNotAllowed("A webhook must be an http:// or https:// URL with a host.", hint=hint)
    if parts.username is not None or parts.password is not None:
        # The URL is stored with the job and shown by GET /jobs/{id}: credentials would show there.
        raise WebhookNotAllowed(
            "A webhook URL may not carry a user name or password.",
            hint="Verify deliveries by their webhook-signature header instead (docs/webhooks.md).",
        )
    return parts.scheme, parts.hostname.rstrip(".").lower(), port or _DEFAULT_PORTS[parts.scheme]


def _guarded(address: Address) -> bool:
    return any(address in network for network in GUARDED_NETWORKS if network.version == address.version)


def _plain(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
