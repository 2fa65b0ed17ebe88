"""A1111's clients know only HTTP Basic auth (its --api-auth): under /sdapi/ the API key may be Basic's password;
everywhere else only `Authorization: Bearer` counts."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.loopback import LOCAL_URL

ALICE = "alice-key-0123456789"


@pytest.fixture
def keyed(service: ImageService) -> Iterator[TestClient]:
    with TestClient(create_app(service, api_keys=ApiKeys([("alice", ALICE)])), base_url=LOCAL_URL) as client:
        yield client


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_under_sdapi_the_key_is_accepted_as_a_basic_password_with_any_user_name(keyed: TestClient) -> None:
    assert keyed.get("/sdapi/v1/options", headers=basic("whoever", ALICE)).status_code == 200
    assert keyed.get("/sdapi/v1/options", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [basic("alice", "not-the-key-000000000"), basic(ALICE, ""), {"Authorization": "Basic %%%"}, {}],
)
def test_under_sdapi_a_wrong_missing_or_malformed_basic_password_is_refused(
    keyed: TestClient, header: dict[str, str]
) -> None:
    answer = keyed.get("/sdapi/v1/sd-models", headers=header)

    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"


def test_outside_sdapi_a_basic_password_is_not_a_key(keyed: TestClient) -> None:
    assert keyed.get("/models", headers=basic("alice", ALICE)).status_code == 401
    assert keyed.get("/jobs", headers=basic("alice", ALICE)).status_code == 401
