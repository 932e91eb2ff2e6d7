"""Feature keys and joint names shared by sim, real, data and policy.

They follow lerobot's conventions so that datasets written here open unchanged in lerobot
(``observation.images.<camera>``, ``observation.state``, ``action``, ``task``).
"""

OBS_STATE = "observation.state"
OBS_IMAGES = "observation.images"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
TASK = "task"

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

# Where an episode came from; stored per frame so mixtures can weight and normalize by source.
SOURCE_SIM = "sim"
SOURCE_REAL = "real"


def image_key(camera: str) -> str:
    """Feature key of a camera, e.g. ``observation.images.front``."""
    return f"{OBS_IMAGES}.{camera}"
