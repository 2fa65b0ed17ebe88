"""What Ctrl-C does to a command: it ends with the exit status a shell reports for it, and a command that follows
a job on a server sees the key press whatever it is doing."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TypeVar

#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED = 130
#: How often the main thread looks whether Ctrl-C was pressed while a job is followed on a server.
CTRL_C_POLL_S = 0.1

T = TypeVar("T")


def follow_until_ctrl_c(follow: Callable[[], T]) -> T:
    """`follow()` in a thread of its own, while this (the main) thread watches for Ctrl-C: KeyboardInterrupt once
    Ctrl-C is pressed, whatever `follow` is doing.

    Python raises a KeyboardInterrupt wherever the main thread is, and one raised inside a finalizer that the
    garbage collector runs (a `__del__`) is printed and dropped: the command would go on following a job that
    the user meant to cancel. This handler only sets a flag, which cannot get lost.
    """
    if threading.current_thread() is not threading.main_thread():
        return follow()  # signal handlers belong to the main thread
    outcome: list[T | BaseException] = []
    pressed = threading.Event()

    def run() -> None:
        try:
            outcome.append(follow())
        except BaseException as exc:  # handed to the main thread as it is
            outcome.append(exc)

    # A daemon: a follower stuck reading the server must not keep the process alive after Ctrl-C.
    follower = threading.Thread(target=run, name="imageforge-follow", daemon=True)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.set())
    try:
        follower.start()
        while follower.is_alive() and not pressed.is_set():
            follower.join(CTRL_C_POLL_S)
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed.is_set():
        raise KeyboardInterrupt
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]
