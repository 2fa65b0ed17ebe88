"""The webhook allow-list: which URLs a job may name, checked on the addresses the host resolves to."""

from __future__ import annotations

import ipaddress

import pytest

from imageforge.config import Address
from imageforge.errors import WebhookNotAllowed
from imageforge.jobs.webhook_targets import WebhookTargets

PUBLIC = "93.184.216.34"
#: What each test host resolves to.
DNS = {
    "hooks.example.net": [PUBLIC],
    "rebound.example.net": ["169.254.169.254"],
    "lan.example.net": ["10.1.2.3"],
    "mixed.example.net": [PUBLIC, "127.0.0.1"],
    "mapped.example.net": ["::ffff:127.0.0.1"],
}


def resolver(host: str, port: int) -> list[Address]:
    if host in DNS:
        return [ipaddress.ip_address(address) for address in DNS[host]]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        raise OSError(-2, "Name or service not known") from None


def targets(*entries: str) -> WebhookTargets:
    return WebhookTargets(entries, resolver=resolver)


@pytest.mark.parametrize(
    ("entries", "url"),
    [
        (["hooks.example.net"], "https://hooks.example.net/imageforge"),
        (["hooks.example.net:8443"], "https://hooks.example.net:8443/x"),
        (["HOOKS.example.net."], "http://hooks.example.net/x"),
        (["10.0.0.0/8"], "http://lan.example.net/x"),
        (["lan.example.net"], "http://lan.example.net/x"),
        (["*"], "https://hooks.example.net/x"),
        (["127.0.0.1:9000"], "http://127.0.0.1:9000/x"),
        (["[::1]:9000"], "http://[::1]:9000/x"),
        (["169.254.169.254"], "http://rebound.example.net/x"),
    ],
)
def test_an_allowed_url_is_admitted(entries: list[str], url: str) -> None:
    assert targets(*entries).check(url).url == url


@pytest.mark.parametrize(
    ("entries", "url"),
    [
        (["hooks.example.net"], "https://other.example.net/x"),
        (["hooks.example.net:8443"], "https://hooks.example.net/x"),
        (["hooks.example.net"], "https://hooks.example.net.evil.test/x"),
        (["rebound.example.net"], "http://rebound.example.net/x"),
        (["mixed.example.net"], "http://mixed.example.net/x"),
        (["mapped.example.net"], "http://mapped.example.net/x"),
        (["*"], "http://lan.example.net/x"),
        (["*"], "http://127.0.0.1/x"),
        (["*"], "http://[fe80::1]/x"),
        (["*"], "http://169.254.169.254/latest/meta-data/"),
        (["*"], "http://0.0.0.0:8765/x"),
        (["127.0.0.1:9000"], "http://127.0.0.1:9001/x"),
        (["hooks.example.net"], "file:///etc/passwd"),
        (["hooks.example.net"], "gopher://hooks.example.net/x"),
        (["hooks.example.net"], "https://user:pw@hooks.example.net/x"),
        (["hooks.example.net"], "https:///no-host"),
        (["hooks.example.net"], "http://hooks.example.net:99999/x"),
        (["*"], "http://nowhere.invalid/x"),
    ],
)
def test_a_url_outside_the_allow_list_is_refused(entries: list[str], url: str) -> None:
    with pytest.raises(WebhookNotAllowed):
        targets(*entries).check(url)


@pytest.mark.parametrize("host", ["a" * 64 + ".example.net", "hooks\x00.example.net"])
def test_a_host_name_the_resolver_cannot_take_is_refused_not_a_crash(host: str) -> None:
    with pytest.raises(WebhookNotAllowed):
        WebhookTargets(["*"]).check(f"http://{host}/x")


def test_an_empty_allow_list_refuses_every_webhook_and_names_the_setting() -> None:
    with pytest.raises(WebhookNotAllowed) as refused:
        targets().check("https://hooks.example.net/x")

    assert "IMAGEFORGE_WEBHOOK_ALLOW" in refused.value.hint


@pytest.mark.parametrize("entry", ["http://hooks.example.net", "hooks.example.net:0", "hooks.example.net:http", ""])
def test_a_malformed_entry_is_refused_naming_the_setting(entry: str) -> None:
    with pytest.raises(ValueError, match="IMAGEFORGE_WEBHOOK_ALLOW"):
        targets(entry)
