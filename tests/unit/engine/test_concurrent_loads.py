"""Two backends in one process (two services, as in a test run or an application that embeds two) loading at the
same moment: diffusers and transformers build models under process-wide state, so their loads take turns."""

from __future__ import annotations

import threading
from pathlib import Path

from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.engine.catalog import BUILTIN_MODELS

TINY = next(spec for spec in BUILTIN_MODELS if spec.key == "tiny")
ROUNDS = 3
#: Generous for a cold load on a busy machine.
LOAD_TIMEOUT_S = 120.0


def test_two_backends_loading_at_once_both_load_and_the_process_keeps_loading_afterwards(data_dir: Path) -> None:
    models_path = data_dir / "models"
    models_path.mkdir(exist_ok=True)
    DiffusersBackend(device="cpu", models_path=models_path).load(TINY)  # builds `tiny` once, outside the race
    failures: list[BaseException] = []
    start = threading.Barrier(2, timeout=LOAD_TIMEOUT_S)

    def load() -> None:
        try:
            start.wait()
            DiffusersBackend(device="cpu", models_path=models_path).load(TINY)
        except BaseException as exc:
            failures.append(exc)

    for _ in range(ROUNDS):
        loaders = [threading.Thread(target=load, name=f"loader-{n}") for n in range(2)]
        for loader in loaders:
            loader.start()
        for loader in loaders:
            loader.join(timeout=LOAD_TIMEOUT_S)
        assert not any(loader.is_alive() for loader in loaders), "a load did not finish"

    assert failures == []
    assert DiffusersBackend(device="cpu", models_path=models_path).load(TINY).spec.key == "tiny"
