"""The takeover driver `armvla generate` hands to sim.generate's worker processes (loading and
acting run in those workers: tests/sim/test_generate.py's takeover demos)."""

from __future__ import annotations

import pickle

import pytest

from policy.checkpoint import DEFAULT_CHECKPOINT
from policy.takeover import PolicyDriver


def test_driver_resolves_the_flag_and_pickles_as_a_path():
    driver = PolicyDriver.from_flag("default")
    assert driver.checkpoint == DEFAULT_CHECKPOINT.resolve()
    copy = pickle.loads(pickle.dumps(driver))
    assert copy.checkpoint == driver.checkpoint and copy._policy is None


def test_driver_refuses_a_folder_without_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"--takeover_policy={tmp_path}: no checkpoint"):
        PolicyDriver.from_flag(str(tmp_path))
