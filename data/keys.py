"""Feature keys and joint names shared by sim, real, data and policy.

They follow lerobot's conventions so that datasets written here open unchanged in lerobot
(``observation.images.<camera>``, ``observation.state``, ``action``, ``task``).
"""

from safety.so101 import SO101_JOINTS, SO101_MOTOR_FEATURES

__all__ = [
    "ACTION",
    "ACTION_IS_PAD",
    "OBS_IMAGES",
    "OBS_STATE",
    "SO101_JOINTS",
    "SO101_MOTOR_FEATURES",
    "SOURCE_REAL",
    "SOURCE_SIM",
    "TASK",
    "image_key",
]

# lerobot's own keys (lerobot.utils.constants; tests/data/test_keys.py checks they are equal).
# Spelled out, not imported: lerobot.utils imports torch (2 s, 250 MB per process), and the sim
# path, which uses these keys, stays torch-free (bench/sim_speed.py reports it).
OBS_STATE = "observation.state"
OBS_IMAGES = "observation.images"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
TASK = "task"

# SO101_JOINTS (the follower's motors in lerobot's order; state and action vectors use it) and
# SO101_MOTOR_FEATURES ("<motor>.pos") are defined with the arm in safety.so101.

# Where an episode came from; stored per frame so mixtures can weight and normalize by source.
SOURCE_SIM = "sim"
SOURCE_REAL = "real"


def image_key(camera: str) -> str:
    """Feature key of a camera, e.g. ``observation.images.front``."""
    return f"{OBS_IMAGES}.{camera}"
