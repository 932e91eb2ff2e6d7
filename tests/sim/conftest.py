"""Fixtures of the sim tests."""

from __future__ import annotations

import pytest

import sim
from data.keys import OBS_STATE


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


def _hold_still(env, ticks: int) -> dict:
    """Steps ``ticks`` times commanding the arm where it is; returns the last info."""
    obs = env.unwrapped._observe()
    info: dict = {}
    for _ in range(ticks):
        obs, _, terminated, _, info = env.step(obs[OBS_STATE])
        if terminated:
            break
    return info


@pytest.fixture
def hold_still():
    """``hold_still(env, ticks)``: the arm held where it is for ``ticks`` steps; the last info."""
    return _hold_still
