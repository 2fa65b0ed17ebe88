"""A service's health report needs torch only: diffusers and transformers wait for the first model load, so that
a server is ready, and its first /health answers, without the seconds their imports take."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_the_health_report_names_every_library_version_without_importing_diffusers_or_transformers(
    tmp_path: Path,
) -> None:
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from imageforge.bootstrap import build_service\n"
        "from imageforge.config import Settings\n"
        "root = Path(sys.argv[1])\n"
        "service = build_service(Settings(_env_file=None, root_dir=root, data_dir=root / 'data', device='cpu'))\n"
        "versions = service.health().versions\n"
        "heavy = sorted(m for m in ('diffusers', 'transformers') if m in sys.modules)\n"
        "print(json.dumps({'versions': versions, 'imported': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["imported"] == []
    assert set(report["versions"]) == {"torch", "diffusers", "transformers"}
    assert all(version[0].isdigit() for version in report["versions"].values()), report
