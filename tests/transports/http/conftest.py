"""Reports the fuzz run's case count in the terminal summary, so that CI's log shows how much was fuzzed."""

from __future__ import annotations

import pytest

#: One line about the fuzz run (test_fuzz.py), set when the run finished.
FUZZ_SUMMARY = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if FUZZ_SUMMARY in config.stash:
        terminalreporter.write_line(config.stash[FUZZ_SUMMARY])
