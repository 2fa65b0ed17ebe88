"""An API node of the distributed queue is ready while its Redis answers (it loads no model, so a default model
whose weights are elsewhere does not hold it back), not ready while Redis is down, and ready again once it is
back; its /metrics still answers while Redis is down."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.loopback import LOCAL_URL
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


def test_an_api_node_is_ready_while_its_redis_answers_and_not_while_it_is_down(
    settings: Settings, redis_server: RedisServer
) -> None:
    # sd-turbo's weights are not on this machine: an API node never loads it, its workers do.
    node = settings.model_copy(update={"queue_url": redis_server.url, "default_model": "sd-turbo"})
    with TestClient(create_app(build_service(node)), base_url=LOCAL_URL) as client:
        assert client.get("/health/ready").status_code == 200

        redis_server.stop()
        down = client.get("/health/ready")
        assert down.status_code == 503
        checks = down.json()["checks"]
        assert checks["queue"]["code"] == "queue_unavailable"
        assert checks["model"] == {"ok": True}
        assert client.get("/health/live").status_code == 200
        assert client.get("/metrics").status_code == 200

        redis_server.start()
        assert client.get("/health/ready").status_code == 200
