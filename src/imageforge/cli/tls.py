"""`imageforge tls selfsigned`: a self-signed certificate and key for serving HTTPS on a LAN or a tailnet.

The certificate names every address a client may use (localhost, 127.0.0.1, ::1, this machine's hostname and
each --host), so that a client that trusts the file verifies the name too, instead of turning checks off.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imageforge.cli.settings import load_settings

if TYPE_CHECKING:
    from cryptography import x509

#: A DNS name (a wildcard first label allowed) or, checked apart, an IP address.
_DNS_NAME = re.compile(
    r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
#: Long enough not to expire under a home server; 825 days is the longest some clients accept.
VALID_DAYS = 825


def selfsigned(
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
    from imageforge.errors import TlsExists

    for host in hosts or []:
        if not is_host_name(host):
            raise typer.BadParameter(f"{host!r} is neither a DNS name nor an IP address.", param_hint="--host")
    folder = load_settings().data_path / "tls"
    existing = [path for path in (folder / "cert.pem", folder / "key.pem") if path.exists()]
    if existing and not force:
        raise TlsExists(
            f"{existing[0]} already exists.",
            hint="pass --force to replace the pair (clients that trust the old certificate stop).",
        )
    pair = make_selfsigned(folder, hosts or [])
    typer.echo(f"certificate for {', '.join(pair.names)}", err=True)
    typer.echo(f"SHA-256 fingerprint: {pair.fingerprint}", err=True)
    typer.echo("set these (in .env or the environment) and restart `imageforge serve`:", err=True)
    typer.echo(f"IMAGEFORGE_TLS_CERT={pair.cert}")
    typer.echo(f"IMAGEFORGE_TLS_KEY={pair.key}")


@dataclass(frozen=True)
class CertificatePair:
    cert: Path
    key: Path
    #: SHA-256 of the certificate, colon-separated hex, as browsers show it
    fingerprint: str
    names: list[str]


def alt_names(hosts: list[str]) -> list[str]:
    """The names the certificate covers: the loopback ones, this machine's hostname and `hosts`, each once."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *hosts]
    return list(dict.fromkeys(name.strip().lower() for name in names if name.strip()))


def is_host_name(name: str) -> bool:
    """Whether `name` can go into the certificate: an IP address or a DNS name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return _DNS_NAME.fullmatch(name) is not None
    return True


def make_selfsigned(folder: Path, hosts: list[str]) -> CertificatePair:
    """Write `cert.pem` and `key.pem` (0600) into `folder` for the names of `alt_names(hosts)`."""
    # Imported here: `imageforge --help` loads this module to list the command, and needs no cryptography.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = alt_names(hosts)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"imageforge on {socket.gethostname()}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.unlink(missing_ok=True)
    # Created 0600 from the start: the private key is never readable by others, not even for a moment.
    with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return CertificatePair(cert=cert_path, key=key_path, fingerprint=fingerprint, names=names)


def _general_name(name: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
