"""`imageforge serve` whose generations hold at every denoising step until a line on stdin releases them.

Run as `python -m tests.contract.held_server PORT` with the repository on PYTHONPATH and the settings in the
environment, as `imageforge serve` reads them. Each stdin line is a number of steps to release. The restart
test kills this process while a job holds, which a stock `imageforge serve` cannot be made to do.
"""

from __future__ import annotations

import sys
import threading

import uvicorn

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.transports.http.app import create_app
from tests.gated import GatedBackend


def release_per_line(backend: GatedBackend) -> None:
    for line in sys.stdin:
        backend.release(int(line))


def main() -> None:
    settings = Settings()
    backend = GatedBackend(DiffusersBackend(device=settings.device, models_path=settings.models_path))
    threading.Thread(target=release_per_line, args=(backend,), name="stdin-release", daemon=True).start()
    uvicorn.run(create_app(build_service(settings, backend=backend)), host="127.0.0.1", port=int(sys.argv[1]))


if __name__ == "__main__":
    main()
