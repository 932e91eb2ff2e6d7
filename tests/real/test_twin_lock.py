"""The twin's lock lets a waiting bus through before anyone takes it anew, and a holder that
re-enters while the bus waits does not deadlock."""

from __future__ import annotations

import threading
import time

from real.feetech_twin.lock import TwinLock


def _wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_waiting_bus_goes_before_a_new_holder():
    lock = TwinLock()
    order: list[str] = []
    lock.acquire()  # the physics, mid-batch

    def bus():
        with lock.bus_first():
            order.append("bus")

    def physics_next_batch():
        with lock:
            order.append("physics")

    b = threading.Thread(target=bus)
    b.start()
    _wait_until(lambda: not lock._bus_idle.is_set())  # the bus is waiting
    p = threading.Thread(target=physics_next_batch)
    p.start()
    time.sleep(0.05)
    assert order == []  # both wait while the batch holds the lock
    lock.release()
    b.join(5.0)
    p.join(5.0)
    assert order == ["bus", "physics"]


def test_a_holder_re_enters_while_the_bus_waits():
    lock = TwinLock()
    holding, done = threading.Event(), threading.Event()

    def physics_step_with_callback():
        with lock:
            holding.set()
            _wait_until(lambda: not lock._bus_idle.is_set())  # the bus waits now
            with lock:  # e.g. the step's callback reads the servos
                pass
        done.set()

    def bus():
        with lock.bus_first():
            pass

    p = threading.Thread(target=physics_step_with_callback, daemon=True)
    p.start()
    assert holding.wait(5.0)
    b = threading.Thread(target=bus, daemon=True)
    b.start()
    assert done.wait(5.0), "the holder deadlocked against the waiting bus"
    b.join(5.0)
    assert not b.is_alive()
    assert lock._bus_idle.is_set()  # the bus is done: ordinary holders pass again
