"""Fixtures of the sim tests."""

from __future__ import annotations

import pytest

import sim


@pytest.fixture(scope="module")
def make_task_env():
    """``make(task, **kwargs)``: a task env (32-pixel images unless told), closed after the
    module's tests."""
    made = []

    def make(task: str, **kwargs):
        env = sim.make_env(task, **{"image_size": 32, **kwargs})
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()
