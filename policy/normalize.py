"""Per-source normalization of state and action, stored with every checkpoint.

Sim and real demos differ in their distributions (a scripted expert vs a teleoperator), so
statistics are kept per data source (``sim``, ``real``) and each sample is normalized with the
statistics of its own source. They are computed once from the training data, saved as
``stats.json`` next to the weights and never recomputed at inference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from data.keys import ACTION, OBS_STATE

NORMALIZED_KEYS = (OBS_STATE, ACTION)
MIN_STD = 1e-2  # a joint that never moved in the data must not blow up its normalized value
# Top-level stats entry (not a data source): per-dimension mean/std of the sentence embeddings
# of the training instructions. Sentence encoders place similar commands close together
# ("pick up the red cube" vs "... green cube" have cosine 0.83), so standardizing over the
# training instructions brings out exactly the words that differ.
INSTRUCTION = "instruction"
INSTRUCTION_VAR_EPS = 1e-4


def instruction_stats(embeddings: np.ndarray) -> dict:
    """[K, E] embeddings of the K distinct training instructions -> {"mean", "std", "count"}."""
    emb = np.asarray(embeddings, dtype=np.float64)
    return {
        "mean": emb.mean(0).tolist(),
        "std": np.sqrt(emb.var(0) + INSTRUCTION_VAR_EPS).tolist(),
        "count": int(emb.shape[0]),
    }


def compute_stats(arrays: dict[str, dict[str, np.ndarray]]) -> dict:
    """{source: {key: [N, D] array}} -> {source: {key: {"mean", "std", "min", "max", "count"}}}."""
    stats: dict = {}
    for source, per_key in arrays.items():
        stats[source] = {}
        for key, values in per_key.items():
            values = np.asarray(values, dtype=np.float64)
            stats[source][key] = {
                "mean": values.mean(0).tolist(),
                "std": values.std(0).tolist(),
                "min": values.min(0).tolist(),
                "max": values.max(0).tolist(),
                "count": int(values.shape[0]),
            }
    return stats


class Normalizer(torch.nn.Module):
    """Normalizes ``observation.state`` and ``action`` with the statistics of each sample's source."""

    def __init__(self, stats: dict):
        super().__init__()
        validate_stats(stats)
        self.stats = stats
        self.sources = sorted(k for k in stats if k != INSTRUCTION)
        instr = stats.get(INSTRUCTION)
        self.has_instruction_stats = instr is not None
        if instr is not None:
            self.register_buffer("instr_mean", torch.tensor(instr["mean"]), persistent=False)
            self.register_buffer("instr_std", torch.tensor(instr["std"]), persistent=False)
        for key in NORMALIZED_KEYS:
            mean = torch.tensor([stats[s][key]["mean"] for s in self.sources], dtype=torch.float32)
            std = torch.tensor([stats[s][key]["std"] for s in self.sources], dtype=torch.float32)
            # Buffers move with .to(device) but are not weights: they live in stats.json.
            self.register_buffer(f"{_attr(key)}_mean", mean, persistent=False)
            self.register_buffer(f"{_attr(key)}_std", std.clamp(min=MIN_STD), persistent=False)

    def source_index(self, sources: list[str] | None, batch_size: int) -> torch.Tensor:
        if sources is None:
            if len(self.sources) != 1:
                raise ValueError(
                    f"the policy was trained on sources {self.sources}; the batch must say which "
                    f"one each sample comes from (key 'source')"
                )
            sources = [self.sources[0]] * batch_size
        if isinstance(sources, str):
            sources = [sources] * batch_size
        try:
            idx = [self.sources.index(s) for s in sources]
        except ValueError:
            raise ValueError(
                f"unknown data source in {sorted(set(sources))}; this policy has statistics for "
                f"{self.sources}"
            ) from None
        return torch.tensor(idx, device=self._buffers[f"{_attr(ACTION)}_mean"].device)

    def normalize_instruction(self, emb: torch.Tensor) -> torch.Tensor:
        """Standardizes sentence embeddings [B, E] over the training instructions (if known)."""
        if not self.has_instruction_stats:
            return emb
        return (emb - self.instr_mean) / self.instr_std

    def _mean_std(self, key: str, idx: torch.Tensor, ndim: int):
        mean = getattr(self, f"{_attr(key)}_mean")[idx]
        std = getattr(self, f"{_attr(key)}_std")[idx]
        while mean.ndim < ndim:  # [B, D] -> [B, 1, D] for chunks
            mean, std = mean.unsqueeze(1), std.unsqueeze(1)
        return mean, std

    def normalize(self, key: str, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        mean, std = self._mean_std(key, idx, x.ndim)
        return (x - mean) / std

    def unnormalize(self, key: str, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        mean, std = self._mean_std(key, idx, x.ndim)
        return x * std + mean


def _attr(key: str) -> str:
    return key.replace(".", "_")


def validate_stats(stats: dict) -> None:
    if not isinstance(stats, dict) or not stats:
        raise ValueError("normalization stats are missing or empty; the checkpoint is incomplete")
    for source, per_key in stats.items():
        if source == INSTRUCTION:
            if not np.all(np.isfinite(per_key.get("mean", [np.nan]))) or not np.all(
                np.isfinite(per_key.get("std", [np.nan]))
            ):
                raise ValueError("instruction embedding stats are missing or not finite")
            continue
        for key in NORMALIZED_KEYS:
            entry = per_key.get(key) if isinstance(per_key, dict) else None
            if not entry or "mean" not in entry or "std" not in entry:
                raise ValueError(f"normalization stats of source {source!r} lack {key!r} mean/std")
            if not np.all(np.isfinite(entry["mean"])) or not np.all(np.isfinite(entry["std"])):
                raise ValueError(f"normalization stats of {source!r}/{key!r} are not finite")


def save_stats(stats: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(stats, indent=1))


def load_stats(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: a checkpoint needs its normalization stats next to the weights"
        )
    stats = json.loads(path.read_text())
    validate_stats(stats)
    return stats
