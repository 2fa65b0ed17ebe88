"""Building the MCP server (its tools' schemas name the models it can run) reads the catalog without touching the
device: torch is not imported, so the handshake stays fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.mcp.server import build_mcp_server

root = sys.argv[1]
build_mcp_server(build_service(Settings(_env_file=None, root_dir=root, data_dir=root + "/data")))
print(sorted(name for name in ("torch", "diffusers", "transformers") if name in sys.modules))
"""


def test_building_the_mcp_server_imports_no_torch(tmp_path: Path) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, check=True, timeout=120
    )

    assert loaded.stdout.strip().splitlines()[-1] == "[]"
