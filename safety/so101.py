"""The SO-101 as the safety layer knows it: joint order, official ranges, lerobot units <-> radians.

lerobot drives the SO-101 follower with ``use_degrees=True``: the five arm joints in degrees,
zero at the middle of the calibrated range (the pose of the official "new calibration"
description, which is the MJCF's zero), and the gripper as 0-100 % of its calibrated travel
(0 = closed, 100 = open). The gate and the twin speak radians internally; only this module
converts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

# The SO-101 follower's motors in lerobot's order; state and action vectors use this order.
SO101_JOINTS = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)
# lerobot names each state/action component "<motor>.pos".
SO101_MOTOR_FEATURES = tuple(f"{name}.pos" for name in SO101_JOINTS)

# The arm's MJCF ships with the twin (sim/assets/so101.xml); the gate's kinematics read the same
# file. find_spec of a top-level package locates it without executing it: importing sim would
# run sim/__init__ (env registration) and make safety depend on the package above it.
_SIM_DIR = Path(importlib.util.find_spec("sim").submodule_search_locations[0])
ARM_XML = _SIM_DIR / "assets" / "so101.xml"

# Gripper joint travel in radians (official limits): 0 % maps to the closed end, 100 % to open.
GRIPPER_CLOSED_RAD = -0.174533
GRIPPER_OPEN_RAD = 1.7453292

# Official joint limits (radians), in SO101_JOINTS order.
JOINT_LIMITS_RAD = np.array(
    [
        [-1.91986, 1.91986],
        [-1.7453293, 1.7453293],
        [-1.69, 1.69],
        [-1.658063, 1.658063],
        [-2.74385, 2.84121],  # asymmetric in the official URDF (zero is off-centre)
        [GRIPPER_CLOSED_RAD, GRIPPER_OPEN_RAD],
    ]
)
N_JOINTS = len(SO101_JOINTS)


def to_radians(lerobot_pos: np.ndarray) -> np.ndarray:
    """lerobot positions [..., 6] (degrees, gripper %) -> joint radians [..., 6]."""
    pos = np.asarray(lerobot_pos, dtype=np.float64)
    if pos.shape[-1:] != (N_JOINTS,):  # also rejects scalars instead of an IndexError
        raise ValueError(
            f"SO-101 positions need {N_JOINTS} values {SO101_JOINTS}, got shape {pos.shape}"
        )
    out = np.deg2rad(pos)
    out[..., 5] = GRIPPER_CLOSED_RAD + pos[..., 5] / 100.0 * (GRIPPER_OPEN_RAD - GRIPPER_CLOSED_RAD)
    return out


def from_radians(qpos: np.ndarray) -> np.ndarray:
    """Joint radians [..., 6] -> lerobot positions [..., 6] (degrees, gripper %)."""
    q = np.asarray(qpos, dtype=np.float64)
    if q.shape[-1:] != (N_JOINTS,):
        raise ValueError(
            f"SO-101 joint radians need {N_JOINTS} values {SO101_JOINTS}, got shape {q.shape}"
        )
    out = np.rad2deg(q)
    out[..., 5] = (q[..., 5] - GRIPPER_CLOSED_RAD) / (GRIPPER_OPEN_RAD - GRIPPER_CLOSED_RAD) * 100.0
    return out


# The same limits in lerobot units: what an action may ask for.
ACTION_LOW = from_radians(JOINT_LIMITS_RAD[:, 0])
ACTION_HIGH = from_radians(JOINT_LIMITS_RAD[:, 1])
