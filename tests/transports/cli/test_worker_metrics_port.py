"""`imageforge worker --metrics-port` on a port it cannot listen on: exit 1 with a clean error naming the address and
the option to change, before it takes any job."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from imageforge.cli.main import app


def test_worker_on_a_metrics_port_in_use_exits_1_saying_which_option_to_change(user_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app, ["worker", "--queue", "redis://127.0.0.1:9/0", "--models", "tiny", "--metrics-port", str(port)]
        )

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"error [invalid_request]: The metrics port cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "hint: Pick a free port with --metrics-port (IMAGEFORGE_WORKER_METRICS_PORT)" in result.stderr
    assert "Traceback" not in result.output
