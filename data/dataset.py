"""LeRobotDataset v3 schema and writer helpers for armvla's demos.

Datasets are written and read only through lerobot's own classes so that lerobot's tools
(``lerobot-train``, ``lerobot-dataset-viz``, the hub) accept them unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from data.keys import ACTION, OBS_STATE, SO101_MOTOR_FEATURES, image_key

# Per-frame provenance: "sim" for scripted demos, "real" for teleoperated ones. Mixtures weight
# and normalize by it.
SOURCE = "source"
ROBOT_TYPE = "so101_follower"


def so101_features(cameras: tuple[str, ...], height: int, width: int, use_videos: bool = True) -> dict:
    """lerobot feature spec for SO-101 episodes with the given cameras."""
    motors = list(SO101_MOTOR_FEATURES)
    feats = {
        OBS_STATE: {"dtype": "float32", "shape": (len(motors),), "names": motors},
        ACTION: {"dtype": "float32", "shape": (len(motors),), "names": motors},
        SOURCE: {"dtype": "string", "shape": (1,), "names": None},
    }
    for cam in cameras:
        feats[image_key(cam)] = {
            "dtype": "video" if use_videos else "image",
            "shape": (height, width, 3),
            "names": ["height", "width", "channels"],
        }
    return feats


class DatasetExistsError(FileExistsError):
    pass


def prepare_output(root: Path, overwrite: bool, resume: bool) -> bool:
    """Checks the output folder; returns True when an existing dataset is to be resumed.

    Raises a clear error when the folder holds data and neither ``overwrite`` nor ``resume``
    is set, or when it cannot be written.
    """
    if overwrite and resume:
        raise ValueError("--overwrite and --resume exclude each other; pick one")
    root = Path(root)
    exists = root.exists() and any(root.iterdir())
    if exists and resume:
        if not (root / "meta" / "info.json").is_file():
            raise FileNotFoundError(
                f"--resume needs a LeRobotDataset at {root}, but {root / 'meta/info.json'} is missing"
            )
        return True
    if exists and not overwrite:
        raise DatasetExistsError(
            f"{root} already exists and is not empty; pass --overwrite=true to replace it or "
            f"--resume=true to append episodes"
        )
    if exists and overwrite:
        shutil.rmtree(root)
    parent = root.parent
    parent_existing = parent
    while not parent_existing.exists():
        parent_existing = parent_existing.parent
    import os

    if not os.access(parent_existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the dataset to {root}: {parent_existing} is not writable")
    parent.mkdir(parents=True, exist_ok=True)
    return False
