"""The Claude Desktop extension's entry point (server/main.py in the bundle): imageforge's MCP relay, run from the
source bundled beside it (src/), with the dependencies Desktop installed from the bundle's pyproject.toml."""

import sys
from pathlib import Path

# The bundled source first: ahead of any imageforge installed elsewhere on the machine.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from imageforge.cli.desktop import main

if __name__ == "__main__":
    main()
