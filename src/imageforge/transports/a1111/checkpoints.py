"""Which model each client's requests use when they name none: A1111's `sd_model_checkpoint` option.

A1111 holds one checkpoint for everyone, so a client that switches it switches it for all. Here the choice
belongs to the client that made it (the caller as the job queue counts it: an API key's name, or a peer
address without keys): another client keeps its own, and the server's default stays as configured. Choices live
in memory, so a restart forgets them; the oldest are forgotten first past `max_clients`, so that a stream of
new peer addresses cannot grow the table without bound.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

#: How many clients' choices are kept: far more than the clients of one server.
MAX_CLIENTS = 1024


class CheckpointChoices:
    """The model each client chose with POST /sdapi/v1/options, by client name."""

    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self._chosen: OrderedDict[str, str] = OrderedDict()
        self._max = max_clients
        self._lock = threading.Lock()

    def get(self, client: str, default: str) -> str:
        """The model `client` chose, else `default` (the server's)."""
        with self._lock:
            return self._chosen.get(client, default)

    def choose(self, client: str, model: str) -> None:
        """Make `model` the model of `client`'s requests that name none."""
        with self._lock:
            self._chosen[client] = model
            self._chosen.move_to_end(client)
            while len(self._chosen) > self._max:
                self._chosen.popitem(last=False)
