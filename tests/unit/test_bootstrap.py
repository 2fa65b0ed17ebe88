"""The composition root builds a service without the web stack: the command line and MCP over stdio need none."""

from __future__ import annotations

import subprocess
import sys


def test_building_a_service_imports_no_web_framework() -> None:
    probe = (
        "import sys, imageforge.bootstrap; "
        "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)

    assert loaded.stdout.strip() == "[]"
