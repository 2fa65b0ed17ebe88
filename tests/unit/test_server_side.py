"""Whether an extra is installed is answered the same after its modules were imported: kombu swaps its module for
a lazy one without `__spec__`, which `importlib.util.find_spec` refuses."""

from __future__ import annotations

import subprocess
import sys


def test_the_distributed_extra_counts_as_installed_after_the_queue_was_imported() -> None:
    script = (
        "import imageforge.jobs.distributed.queue\n"
        "from imageforge.cli.server_side import require_distributed\n"
        "require_distributed('imageforge worker')\n"
        "print('installed')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "installed"
