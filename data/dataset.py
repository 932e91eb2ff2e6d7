"""LeRobotDataset v3 schema and writer helpers for armvla's demos.

Datasets are written and read only through lerobot's own classes so that lerobot's tools
(``lerobot-train``, ``lerobot-dataset-viz``, the hub) accept them unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from data.keys import ACTION, OBS_STATE, SO101_MOTOR_FEATURES, image_key

# Per-frame provenance: "sim" for scripted demos, "real" for teleoperated ones. Mixtures weight
# and normalize by it.
SOURCE = "source"
ROBOT_TYPE = "so101_follower"


def so101_features(
    cameras: tuple[str, ...], height: int, width: int, use_videos: bool = True
) -> dict:
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
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--out {root} is a file; give a folder for the dataset")
    exists = root.exists() and any(root.iterdir())
    is_dataset = (root / "meta" / "info.json").is_file()
    if exists and resume:
        if not is_dataset:
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
        if not is_dataset:
            # --overwrite deletes; never delete a folder that is not one of our datasets.
            raise FileExistsError(
                f"{root} is not empty and is not a LeRobotDataset; refusing to delete it with "
                f"--overwrite. Remove it yourself or choose another --out"
            )
        shutil.rmtree(root)
    # Find the deepest existing ancestor: it must be a writable folder.
    ancestor = root.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(
            f"cannot write the dataset to {root}: {ancestor} is a file, not a folder; "
            f"choose another --out"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the dataset to {root}: {ancestor} is not writable")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        probe = root.parent / f".armvla-write-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"cannot write the dataset to {root}: {err.strerror or err}; choose another --out"
        ) from err
    return False


def quiet_encoders() -> None:
    """Silences per-episode chatter of the video encoder, libav and HF datasets.

    SVT-AV1 prints a ~20-line banner for every video it encodes and HF datasets draws a "Map"
    bar per episode; on a terminal they bury the one progress bar that matters.
    """
    import os

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
    import av
    import datasets

    av.logging.set_level(av.logging.ERROR)
    av.logging.set_libav_level(av.logging.ERROR)  # libav's own default logger (mp4 muxer notes)
    datasets.disable_progress_bars()
