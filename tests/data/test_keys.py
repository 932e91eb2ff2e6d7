"""Feature keys: spelled out in data.keys (the sim path stays torch-free) and equal to lerobot's."""

from __future__ import annotations

import inspect

from lerobot.utils import constants

from data import keys
from safety import gated_env, so101


def test_keys_are_lerobots():
    assert keys.OBS_STATE == constants.OBS_STATE == "observation.state"
    assert keys.OBS_IMAGES == constants.OBS_IMAGES == "observation.images"
    assert keys.ACTION == constants.ACTION == "action"
    # The gate's env wrapper engages on the state under lerobot's own key.
    default = inspect.signature(gated_env.SafetyGateWrapper).parameters["state_key"].default
    assert default == keys.OBS_STATE


def test_joint_names_are_the_safety_layers():
    assert keys.SO101_JOINTS is so101.SO101_JOINTS
    assert keys.SO101_MOTOR_FEATURES is so101.SO101_MOTOR_FEATURES
