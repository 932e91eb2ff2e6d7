"""``armvla replay``: send one episode of a LeRobotDataset v3 to Rerun.

Examples::

    armvla replay --root=outputs/demos --episode=3                 # spawns a viewer
    armvla replay --root=outputs/demos --episode=3 --save=ep3.rrd  # writes a file: rerun ep3.rrd
    armvla replay --root=outputs/demos --connect=rerun+http://127.0.0.1:9876/proxy

The layout and entities come from :mod:`data.rerun_log`, shared with live evaluation recordings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data import rerun_log
from data.dataset import SOURCE
from data.keys import ACTION, OBS_IMAGES, OBS_STATE, TASK


@dataclass
class ReplayConfig:
    # Folder of a LeRobotDataset v3 (the one holding meta/info.json), e.g. outputs/demos.
    root: Path | None = None
    # Dataset name; only used for display and lerobot's bookkeeping. Default: "<parent>/<folder>"
    # of --root, which is the hub repo id for datasets in lerobot's cache.
    repo_id: str | None = None
    # Index of the episode to replay, from 0.
    episode: int = 0
    # Write the recording to this .rrd file (open it later with `rerun FILE.rrd`) instead of
    # showing it in a viewer.
    save: Path | None = None
    # Stream to an already running viewer at this gRPC URL instead of spawning one,
    # e.g. rerun+http://127.0.0.1:9876/proxy (what `rerun` prints when it starts).
    connect: str | None = None
    # JPEG quality (1-100) of the logged camera images; lower gives smaller recordings.
    jpeg_quality: int = rerun_log.DEFAULT_JPEG_QUALITY

    def __post_init__(self):
        if self.root is None:
            raise ValueError(
                "--root is required: the folder of a LeRobotDataset v3 (holding meta/info.json)"
            )
        self.root = Path(self.root).expanduser()
        if self.save is not None:
            self.save = Path(self.save).expanduser()
            if self.save.suffix != ".rrd":
                raise ValueError(
                    f"--save={self.save} must name an .rrd file, e.g. --save=episode.rrd"
                )
        if self.save is not None and self.connect is not None:
            raise ValueError("--save and --connect exclude each other; pick one")
        if self.episode < 0:
            raise ValueError(f"--episode={self.episode} must be 0 or more")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg_quality={self.jpeg_quality} must be between 1 and 100")


def replay(cfg: ReplayConfig) -> Path | None:
    """Logs episode ``cfg.episode`` of the dataset at ``cfg.root`` to Rerun.

    All inputs are checked before anything is written or a viewer is started.

    Args:
        cfg: what to replay and where to send it.

    Returns:
        The ``.rrd`` path when ``cfg.save`` is set, else ``None``.

    Raises:
        FileNotFoundError: ``cfg.root`` is missing or holds no LeRobotDataset.
        ValueError: the episode index is out of range.
        PermissionError: the ``.rrd`` file cannot be written.
        rerun_log.ViewerUnavailableError: no viewer to send to (a ValueError).
    """
    from lerobot.datasets import LeRobotDataset, LeRobotDatasetMetadata
    from tqdm import tqdm

    root = check_dataset_root(cfg.root)
    repo_id = cfg.repo_id or default_repo_id(root)
    meta = LeRobotDatasetMetadata(repo_id, root=root)
    n_episodes = meta.total_episodes
    if cfg.episode >= n_episodes:
        last = f"0..{n_episodes - 1}" if n_episodes else "none"
        raise ValueError(
            f"--episode={cfg.episode} is out of range: {root} has {n_episodes} episode(s) "
            f"(valid: {last})"
        )
    if cfg.save is not None:
        check_writable(cfg.save)
    else:
        rerun_log.check_viewer(cfg.connect)

    # uint8 frames straight from the decoder: no float round trip before JPEG compression.
    dataset = LeRobotDataset(repo_id, root=root, episodes=[cfg.episode], return_uint8=True)
    cameras = {key: key.removeprefix(f"{OBS_IMAGES}.") for key in dataset.meta.camera_keys}
    joints = joint_names(dataset.features[OBS_STATE])
    has_action = ACTION in dataset.features

    rec = rerun_log.open_recording(
        f"{repo_id} episode {cfg.episode}",
        list(cameras.values()),
        joints,
        save=cfg.save,
        connect=cfg.connect,
    )
    task = None
    try:
        for i in tqdm(range(len(dataset)), desc=f"episode {cfg.episode}", unit="frame"):
            frame = dataset[i]
            rerun_log.log_frame(
                rec,
                int(frame["frame_index"]),
                float(frame["timestamp"]),
                images={cam: hwc_uint8(frame[key]) for key, cam in cameras.items()},
                state=frame[OBS_STATE].numpy(),
                action=frame[ACTION].numpy() if has_action else None,
                joints=joints,
                jpeg_quality=cfg.jpeg_quality,
            )
            # Logged when it changes (at the time log_frame just set), not once per frame.
            if frame.get(TASK) != task:
                task = frame.get(TASK)
                details = {
                    "dataset": repo_id,
                    "episode": f"{cfg.episode} ({n_episodes} in the dataset)",
                    "frames": f"{len(dataset)} at {meta.fps} fps",
                }
                if SOURCE in frame:
                    details["source"] = frame[SOURCE]
                rerun_log.log_task(rec, str(task), details)
    finally:
        rerun_log.close_recording(rec)

    if cfg.save is not None:
        print(f"wrote {cfg.save} ({len(dataset)} frames); open it with: rerun {cfg.save}")
    return cfg.save


def check_dataset_root(root: Path) -> Path:
    """Returns ``root`` if it holds a LeRobotDataset, else raises FileNotFoundError saying why.

    Checked before lerobot sees the path: lerobot would create a missing folder, and with a
    folder lacking metadata it would try to download the dataset from the hub.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(
            f"--root={root} does not exist; pass the folder of a LeRobotDataset v3"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"--root={root} is a file; pass the folder of a LeRobotDataset v3")
    info = root / "meta" / "info.json"
    if not info.is_file():
        raise FileNotFoundError(
            f"--root={root} is not a LeRobotDataset: {info} is missing; pass the dataset's top folder "
            f"(the one holding meta/, data/ and videos/)"
        )
    return root


def default_repo_id(root: Path) -> str:
    """``"<parent>/<folder>"`` of a dataset root, or ``"local/<folder>"`` at the top level."""
    root = Path(root).resolve()
    parent = root.parent.name or "local"
    return f"{parent}/{root.name}"


def check_writable(path: Path) -> None:
    """Creates the parent folders of ``path`` and checks the file can be written.

    Rerun writes files from a background thread and only logs a failure, so without this
    check an unwritable path would end in a missing recording and no error.

    Raises:
        ValueError: ``path`` is an existing folder.
        PermissionError: the file or its folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"--save={path} is a folder; name a file, e.g. --save={path / 'episode.rrd'}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(
            f"--save={path} is not writable: cannot create folder {path.parent} "
            f"({err.strerror or err}); pick a writable location"
        ) from err
    if not os.access(path.parent, os.W_OK | os.X_OK) or (
        path.exists() and not os.access(path, os.W_OK)
    ):
        raise PermissionError(
            f"--save={path} is not writable (permission denied); pick a writable location"
        )


def joint_names(feature: dict) -> list[str]:
    """Joint names of a state/action feature: ``"shoulder_pan.pos"`` -> ``"shoulder_pan"``.

    Falls back to ``joint_<i>`` when the dataset does not name its dimensions.
    """
    dim = feature["shape"][-1]
    names = feature.get("names")
    if isinstance(names, list) and len(names) == dim:
        return [str(n).removesuffix(".pos") for n in names]
    return [f"joint_{i}" for i in range(dim)]


def hwc_uint8(image) -> np.ndarray:
    """A dataset image (torch or numpy, CHW or HWC, uint8 or float in [0, 1]) as ``[H, W, 3]`` uint8."""
    array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)
