"""The test Redis keeps what it was told across a restart, as the distributed queue's fault tests rely on."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.redis_server import running_redis


def test_the_test_redis_keeps_its_data_across_a_restart_and_a_kill(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("job", "queued")
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("job") == b"queued"
        server.kill()
        server.start()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("job") == b"queued"
