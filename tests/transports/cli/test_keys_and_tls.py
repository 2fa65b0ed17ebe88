"""`imageforge keys` and `imageforge tls selfsigned`, and what `serve` says about keys and TLS at start."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.transports.cli.test_cli import assert_refused, invoke


@pytest.fixture
def own_data(user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A data folder of this test's own: the keys file and the certificates must not reach other tests."""
    folder = tmp_path / "own-data"
    monkeypatch.setenv("IMAGEFORGE_DATA_DIR", str(folder))
    return folder


def test_keys_add_prints_the_key_once_and_stores_only_its_hash(own_data: Path) -> None:
    added = invoke("keys", "add", "laptop")

    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    assert len(key) >= 40
    assert "shown only now" in added.stderr
    stored = (own_data / "keys.toml").read_text()
    assert key not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    assert (own_data / "keys.toml").stat().st_mode & 0o777 == 0o600


def test_keys_list_shows_names_and_sources_but_never_a_key_or_hash(
    own_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = invoke("keys", "add", "laptop").stdout.strip()
    monkeypatch.setenv("IMAGEFORGE_API_KEYS", "ci:ci-key-0123456789abc")

    listed = invoke("keys", "list")

    assert listed.exit_code == 0
    assert "laptop" in listed.stdout
    assert "keys file" in listed.stdout
    assert "ci " in listed.stdout
    assert "IMAGEFORGE_API_KEYS" in listed.stdout
    for secret in (key, hashlib.sha256(key.encode()).hexdigest(), "ci-key-0123456789abc"):
        assert secret not in listed.output


def test_keys_add_admin_makes_an_admin_key_and_keys_list_shows_each_role(
    own_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("keys", "add", "laptop")
    admin = invoke("keys", "add", "ops", "--admin")
    monkeypatch.setenv("IMAGEFORGE_API_KEYS", "ci:ci-key-0123456789abc,root:root-key-0123456789ab:admin")

    listed = invoke("keys", "list").stdout.splitlines()

    assert admin.exit_code == 0, admin.output
    assert "admin key 'ops'" in admin.stderr
    roles = {line.split()[0]: line.split()[1] for line in listed[1:]}
    assert roles == {"laptop": "user", "ops": "admin", "ci": "user", "root": "admin"}


def test_a_keys_file_from_before_roles_still_works_and_an_unknown_role_is_refused(own_data: Path) -> None:
    own_data.mkdir()
    digest = hashlib.sha256(b"k" * 43).hexdigest()
    old = f'[keys.laptop]\nsha256 = "{digest}"\ncreated = "2026-01-01T00:00:00+00:00"\n'
    (own_data / "keys.toml").write_text(old)

    listed = invoke("keys", "list")
    (own_data / "keys.toml").write_text(old + 'role = "root"\n')

    assert listed.stdout.splitlines()[1].split()[:2] == ["laptop", "user"]
    assert_refused(invoke("keys", "list"), "invalid_keys_file")


def test_a_duplicate_name_is_refused_from_the_file_and_from_the_environment(
    own_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("keys", "add", "laptop")
    monkeypatch.setenv("IMAGEFORGE_API_KEYS", "ci:ci-key-0123456789abc")

    assert_refused(invoke("keys", "add", "laptop"), "key_exists")
    assert_refused(invoke("keys", "add", "ci"), "key_exists")
    assert_refused(invoke("keys", "add", "no spaces"), "invalid_keys_file")


def test_keys_remove_forgets_the_key_and_an_unknown_name_is_an_error(own_data: Path) -> None:
    invoke("keys", "add", "laptop")

    removed = invoke("keys", "remove", "laptop")

    assert removed.exit_code == 0
    assert "laptop" not in invoke("keys", "list").stdout
    assert_refused(invoke("keys", "remove", "laptop"), "key_not_found")


def test_imageforge_keys_file_moves_the_file(own_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGEFORGE_KEYS_FILE", str(tmp_path / "elsewhere" / "api-keys.toml"))

    invoke("keys", "add", "laptop")

    assert (tmp_path / "elsewhere" / "api-keys.toml").exists()
    assert not (own_data / "keys.toml").exists()


def test_tls_selfsigned_writes_a_pair_for_every_name_and_prints_how_to_use_it(own_data: Path) -> None:
    made = invoke("tls", "selfsigned", "--host", "gpu-box.tail1234.ts.net", "--host", "100.64.0.7")

    assert made.exit_code == 0, made.output
    cert_path, key_path = own_data / "tls" / "cert.pem", own_data / "tls" / "key.pem"
    assert made.stdout.splitlines() == [f"IMAGEFORGE_TLS_CERT={cert_path}", f"IMAGEFORGE_TLS_KEY={key_path}"]
    assert key_path.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = names.get_values_for_type(x509.DNSName)
    addresses = {str(address) for address in names.get_values_for_type(x509.IPAddress)}
    assert {"localhost", "gpu-box.tail1234.ts.net"} <= set(dns)
    assert {"127.0.0.1", "::1", "100.64.0.7"} <= addresses
    assert cert.fingerprint(hashes.SHA256()).hex(":").upper() in made.stderr


def test_tls_selfsigned_refuses_to_overwrite_without_force(own_data: Path) -> None:
    invoke("tls", "selfsigned")
    first = (own_data / "tls" / "cert.pem").read_bytes()

    again = invoke("tls", "selfsigned")
    forced = invoke("tls", "selfsigned", "--force")

    assert again.exit_code == 1
    assert "error [tls_exists]" in again.stderr
    assert "--force" in again.stderr
    assert forced.exit_code == 0
    assert (own_data / "tls" / "cert.pem").read_bytes() != first


def test_tls_selfsigned_refuses_a_host_that_is_no_name(own_data: Path) -> None:
    result = invoke("tls", "selfsigned", "--host", "not a host")

    assert result.exit_code == 2
    assert "'not a host' is neither" in result.stderr
    assert not (own_data / "tls").exists()


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"IMAGEFORGE_TLS_CERT": "cert.pem"}, "set both IMAGEFORGE_TLS_CERT and IMAGEFORGE_TLS_KEY"),
        ({"IMAGEFORGE_TLS_CERT": "missing.pem", "IMAGEFORGE_TLS_KEY": "missing.key"}, "cannot read"),
    ],
)
def test_a_half_or_unreadable_tls_pair_is_a_settings_error_at_start(
    own_data: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], problem: str
) -> None:
    Path("cert.pem").write_text("not used")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    result = invoke("serve")

    assert_refused(result, "invalid_settings")
    assert problem in result.stderr


@pytest.mark.parametrize("broken", ["key", "pair"])
def test_a_readable_but_unusable_tls_key_is_a_settings_error_at_start(
    own_data: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    invoke("tls", "selfsigned")
    cert, key = own_data / "tls" / "cert.pem", own_data / "tls" / "key.pem"
    if broken == "key":
        key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    else:  # the certificate of one pair with the key of another
        first_key = key.read_bytes()
        invoke("tls", "selfsigned", "--force")
        key.write_bytes(first_key)
    monkeypatch.setenv("IMAGEFORGE_TLS_CERT", str(cert))
    monkeypatch.setenv("IMAGEFORGE_TLS_KEY", str(key))

    result = invoke("serve")

    assert_refused(result, "invalid_settings")
    assert "not a PEM certificate and its private key" in result.stderr
    assert "Traceback" not in result.stderr


def _recorded_serve(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Any, dict[str, Any]]:
    """Run `imageforge serve *args` up to the point where it would start uvicorn, and what it passed."""
    import uvicorn

    passed: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *_, **kwargs: passed.update(kwargs))
    return invoke("serve", *args), passed


def test_serve_with_a_pair_serves_https_and_says_so(own_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = invoke("tls", "selfsigned").stdout.splitlines()
    for line in lines:
        name, _, value = line.partition("=")
        monkeypatch.setenv(name, value)

    result, passed = _recorded_serve(monkeypatch)

    assert result.exit_code == 0, result.output
    assert "imageforge on https://127.0.0.1:" in result.stderr
    assert "TLS on" in result.stderr
    assert (passed["ssl_certfile"], passed["ssl_keyfile"]) == (
        str(own_data / "tls" / "cert.pem"),
        str(own_data / "tls" / "key.pem"),
    )


def test_serve_on_a_network_address_counts_file_keys_and_warns_of_clear_text(
    own_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("keys", "add", "laptop")

    result, passed = _recorded_serve(monkeypatch, "--host", "0.0.0.0")

    assert result.exit_code == 0, result.output
    assert "insecure_bind" not in result.stderr
    assert "travel in clear text" in result.stderr
    assert passed["ssl_certfile"] is None


def test_check_shows_key_names_but_never_a_key(own_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_API_KEYS", "ci:ci-key-0123456789abc")

    result = invoke("check")

    assert "['ci']" in result.stdout
    assert "ci-key-0123456789abc" not in result.output
