"""Pool workers whose setup fails report why instead of being respawned forever."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from data import workers
from data.workers import WorkerSetupError, guarded_initializer, raise_if_setup_failed


@guarded_initializer
def _broken_setup(message: str) -> None:
    raise RuntimeError(message)


@guarded_initializer
def _fine_setup() -> None:
    pass


def _task(x: int) -> int:
    raise_if_setup_failed()
    return 2 * x


def test_failed_setup_is_raised_in_the_main_process_not_respawned():
    ctx = mp.get_context("spawn")
    with ctx.Pool(2, initializer=_broken_setup, initargs=("EGL initialization failed",)) as pool:
        result = pool.map_async(_task, range(4))
        with pytest.raises(WorkerSetupError) as err:
            result.get(timeout=120)  # without the guard this would hang, respawning workers
    text = str(err.value)
    assert "EGL initialization failed" in text and "RuntimeError" in text
    assert "make setup" in text  # the hint for a machine without EGL


def test_healthy_setup_runs_tasks():
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, initializer=_fine_setup) as pool:
        assert pool.map(_task, range(3)) == [0, 2, 4]


def test_guard_state_in_process():
    _broken_setup("no such checkpoint")
    with pytest.raises(WorkerSetupError, match="no such checkpoint"):
        raise_if_setup_failed()
    _fine_setup()
    raise_if_setup_failed()
    assert workers._setup_error is None
