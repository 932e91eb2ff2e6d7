"""The twin's lock, on which the bus goes first.

Physics batches, renders and scene resets share the MuJoCo state with the bus thread under one
re-entrant lock. A plain ``RLock`` is not fair: the physics thread releases it between batches
and, still holding the GIL, takes it again before the woken bus thread runs, so on a loaded
machine a ping can wait past lerobot's reply timeout (measured: 50 ms behind a towel scene's
physics on 2 busy cores) and ``connect()`` reports missing motors. Real servos answer within a
millisecond whatever the rest of the world does; the bus therefore announces that it waits, and
every other thread lets it through before taking the lock anew.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TwinLock:
    """A re-entrant lock (use ``with lock:``) with a priority entrance, :meth:`bus_first`.

    A thread that already holds the lock re-enters without waiting, so nested use (a physics
    step's callback, a reset inside a held section) cannot deadlock against a waiting bus.
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._bus_idle = threading.Event()
        self._bus_idle.set()
        self._held = threading.local()

    def _depth(self) -> int:
        return getattr(self._held, "depth", 0)

    def acquire(self) -> None:
        if self._depth() == 0:
            self._bus_idle.wait()  # a waiting bus goes first
        self._lock.acquire()
        self._held.depth = self._depth() + 1

    def release(self) -> None:
        self._held.depth = self._depth() - 1
        self._lock.release()

    def __enter__(self) -> TwinLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @contextmanager
    def bus_first(self) -> Iterator[None]:
        """Holds the lock for the bus thread (one at a time); new holders wait until it is done."""
        self._bus_idle.clear()
        try:
            self._lock.acquire()
            self._held.depth = self._depth() + 1
            try:
                yield
            finally:
                self.release()
        finally:
            self._bus_idle.set()
