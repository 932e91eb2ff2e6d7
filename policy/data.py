"""Training data: LeRobotDatasets decoded once into memory, sampled as a weighted mixture.

Each dataset's videos are decoded once (sequentially, file by file, far faster than seeking
frame by frame) and resized to the policy's image size; the uint8 frames stay in memory.
Augmentation (random shift) happens afterwards, on every sampled batch, so caching decoded frames
never freezes an augmented view. Batches carry lerobot's keys with action chunks
``action`` [B, T, D] and ``action_is_pad`` [B, T] (past an episode's end the last action repeats,
masked out of the loss).

Mixtures: each dataset has a weight; a frame is drawn with probability weight / frames of its
dataset, so a small real-world set is not drowned by a large simulated one. Normalization
statistics are computed per data source (the frames' ``source`` tag).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.dataset import SOURCE
from data.keys import ACTION, ACTION_IS_PAD, OBS_STATE, TASK, image_key
from policy.normalize import compute_stats


@dataclass
class LoadedDataset:
    root: Path
    weight: float
    images: dict[str, torch.Tensor]  # camera -> uint8 [N, 3, S, S]
    state: torch.Tensor  # [N, Ds]
    action: torch.Tensor  # [N, Da]
    episode_end: torch.Tensor  # [N] index one past the frame's episode's last frame
    task: list[str]  # [N]
    source: list[str]  # [N]


def _open_meta(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata

    root = Path(root)
    info = root / "meta" / "info.json"
    if not info.is_file():
        raise FileNotFoundError(
            f"no LeRobotDataset at {root} ({info} is missing); make one with `armvla generate`"
        )
    repo_id = json.loads(info.read_text()).get("repo_id") or f"local/{root.name}"
    return LeRobotDatasetMetadata(repo_id, root=root)


def _check_cameras(root: Path, meta, cameras: tuple[str, ...]) -> None:
    missing = [c for c in cameras if image_key(c) not in meta.features]
    if missing:
        raise ValueError(
            f"dataset {root} has no camera(s) {missing}; it has "
            f"{[k.split('.')[-1] for k in meta.video_keys]} (set --policy.cameras accordingly)"
        )


def check_mixture(roots: list[Path], cameras: tuple[str, ...]) -> None:
    """Fails before any video is decoded if the datasets of a mixture cannot train together:
    each must exist, have the policy's cameras, and agree with the first dataset on the frame
    rate, the robot type and the shape and joint names of ``observation.state`` and ``action``. The error
    names the dataset and the feature."""
    first, first_meta = None, None
    for root in roots:
        meta = _open_meta(root)
        _check_cameras(root, meta, cameras)
        if first_meta is None:
            first, first_meta = root, meta
            continue
        if meta.fps != first_meta.fps:
            raise ValueError(
                f"dataset {root} is recorded at {meta.fps} fps but {first} at "
                f"{first_meta.fps} fps; a mixture needs one frame rate (re-record it, or drop it "
                "from --data.roots)"
            )
        if meta.robot_type != first_meta.robot_type:
            raise ValueError(
                f"dataset {root} was recorded on robot type {meta.robot_type!r} but {first} on "
                f"{first_meta.robot_type!r}; a mixture needs one robot (drop it from --data.roots)"
            )
        for key in (OBS_STATE, ACTION):
            if key not in meta.features:
                raise ValueError(f"dataset {root} has no feature {key!r}; it cannot be trained on")
            want, got = first_meta.features[key], meta.features[key]
            if tuple(got["shape"]) != tuple(want["shape"]) or got.get("names") != want.get("names"):
                raise ValueError(
                    f"dataset {root}: feature {key!r} has shape {tuple(got['shape'])} and names "
                    f"{got.get('names')}, but {first} has {tuple(want['shape'])} and "
                    f"{want.get('names')}; every dataset of a mixture needs the same joints in "
                    "the same order (drop it from --data.roots, or convert it)"
                )


def _decode_video(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def _resize(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, 3, size, size] (antialiased), in slices to bound memory."""
    out = []
    for start in range(0, len(frames), 1024):
        x = torch.from_numpy(frames[start : start + 1024]).permute(0, 3, 1, 2)
        if x.shape[-2:] != (size, size):
            x = torch.nn.functional.interpolate(
                x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            x = x.round().clamp(0, 255).to(torch.uint8)
        out.append(x.contiguous())
    return torch.cat(out)


def load_dataset(
    root: Path, cameras: tuple[str, ...], image_size: int, weight: float = 1.0
) -> LoadedDataset:
    """Decodes a LeRobotDataset v3 into memory at ``image_size``."""
    meta = _open_meta(root)
    _check_cameras(root, meta, cameras)
    import datasets as hf_datasets

    table = hf_datasets.load_dataset(
        "parquet",
        data_files=sorted(str(p) for p in (Path(root) / "data").rglob("*.parquet")),
        split="train",
    ).with_format("numpy")
    state = torch.from_numpy(np.stack(table[OBS_STATE])).float()
    action = torch.from_numpy(np.stack(table[ACTION])).float()
    index = np.asarray(table["index"])
    if not np.array_equal(index, np.arange(len(index))):
        raise ValueError(f"dataset {root} has non-contiguous frame indices; re-generate it")
    task_index = np.asarray(table["task_index"])
    tasks_by_index = {
        int(i): t for t, i in zip(meta.tasks.index, meta.tasks["task_index"], strict=True)
    }
    task = [tasks_by_index[int(i)] for i in task_index]
    source = (
        [str(s) for s in table[SOURCE]] if SOURCE in table.column_names else ["sim"] * len(task)
    )
    if not (torch.isfinite(state).all() and torch.isfinite(action).all()):
        raise ValueError(f"dataset {root} contains NaN or inf in its state or action columns")

    episode_end = torch.empty(len(index), dtype=torch.long)
    episodes = meta.episodes
    for ep in episodes:
        episode_end[ep["dataset_from_index"] : ep["dataset_to_index"]] = ep["dataset_to_index"]

    images = {}
    for cam in cameras:
        key = image_key(cam)
        frames = np.empty((len(index), *meta.features[key]["shape"]), dtype=np.uint8)
        decoded: dict[tuple[int, int], np.ndarray] = {}
        for ep in tqdm(episodes, desc=f"decode {Path(root).name}/{cam}", unit="ep", leave=False):
            file_key = (ep[f"videos/{key}/chunk_index"], ep[f"videos/{key}/file_index"])
            if file_key not in decoded:
                decoded.clear()  # files are visited in order; keep one in memory
                path = Path(root) / meta.video_path.format(
                    video_key=key, chunk_index=file_key[0], file_index=file_key[1]
                )
                decoded[file_key] = _decode_video(path)
            start = int(round(ep[f"videos/{key}/from_timestamp"] * meta.fps))
            n = ep["dataset_to_index"] - ep["dataset_from_index"]
            clip = decoded[file_key][start : start + n]
            if len(clip) != n:
                raise ValueError(
                    f"dataset {root}: episode {ep['episode_index']} of {key} has {len(clip)} "
                    f"video frames for {n} data frames; the video file is damaged"
                )
            frames[ep["dataset_from_index"] : ep["dataset_to_index"]] = clip
        images[cam] = _resize(frames, image_size)
    return LoadedDataset(Path(root), weight, images, state, action, episode_end, task, source)


class MixtureSampler:
    """Samples training batches from several loaded datasets by weight (one generator per rank)."""

    def __init__(self, datasets: list[LoadedDataset], chunk_size: int, seed: int):
        if not datasets:
            raise ValueError("no training datasets given")
        self.chunk_size = chunk_size
        self.cameras = list(datasets[0].images)
        cat = torch.cat
        sizes = [len(d.task) for d in datasets]
        offsets = np.cumsum([0, *sizes[:-1]])
        self.images = {c: cat([d.images[c] for d in datasets]) for c in self.cameras}
        self.state = cat([d.state for d in datasets])
        self.action = cat([d.action for d in datasets])
        self.episode_end = cat(
            [d.episode_end + int(o) for d, o in zip(datasets, offsets, strict=True)]
        )
        self.task = [t for d in datasets for t in d.task]
        self.source = [s for d in datasets for s in d.source]
        probs = np.concatenate(
            [np.full(n, d.weight / n) for d, n in zip(datasets, sizes, strict=True)]
        )
        self.probs = torch.from_numpy(probs / probs.sum())
        self.generator = torch.Generator().manual_seed(seed)
        self.num_frames = len(self.task)

    def stats(self, shared: bool = False) -> dict:
        """Normalization statistics of state and action for each source: its own frames', or
        (``shared``) every source the same, over all frames."""
        by_source: dict[str, dict[str, list]] = {}
        src = np.asarray(self.source)
        for name in sorted(set(self.source)):
            mask = (
                torch.ones(len(src), dtype=torch.bool) if shared else torch.from_numpy(src == name)
            )
            by_source[name] = {
                OBS_STATE: self.state[mask].numpy(),
                ACTION: self.action[mask].numpy(),
            }
        return compute_stats(by_source)

    def sample(self, batch_size: int) -> dict:
        idx = torch.multinomial(self.probs, batch_size, replacement=True, generator=self.generator)
        return self.batch(idx)

    def batch(self, idx: torch.Tensor) -> dict:
        steps = idx[:, None] + torch.arange(self.chunk_size)[None]
        last = self.episode_end[idx][:, None] - 1
        pad = steps > last
        steps = torch.minimum(steps, last)
        batch = {image_key(c): self.images[c][idx].float() / 255.0 for c in self.cameras}
        batch[OBS_STATE] = self.state[idx]
        batch[ACTION] = self.action[steps]
        batch[ACTION_IS_PAD] = pad
        batch[TASK] = [self.task[i] for i in idx.tolist()]
        batch[SOURCE] = [self.source[i] for i in idx.tolist()]
        return batch
