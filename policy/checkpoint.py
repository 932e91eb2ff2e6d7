"""Checkpoint I/O: ``config.json`` + ``model.safetensors`` + ``stats.json`` in one folder.

Nothing is pickled: weights are safetensors, config and normalization stats are JSON. The config
carries the policy ``type`` (which class to build) and the checkpoint ``format``; a checkpoint of
another format is refused with a clear error instead of loading into the wrong layout. The
frozen instruction encoder is not stored (it comes from its package or a configured path), nor is
a frozen hub VLM backbone (it is loaded again from ``backbone.model_path``).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from policy.config import CHECKPOINT_FORMAT, POLICY_TYPES, PolicyConfig
from policy.normalize import load_stats, save_stats

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "stats.json"
SHIPPED_DIR = Path(__file__).parent / "checkpoints"
# The checkpoints shipped in the repository, by the name `--policy=<name>` takes.
SHIPPED = {
    # PickColorCube-v1 in the sim (policy/checkpoints/pick_color_cube/README.md).
    "default": SHIPPED_DIR / "pick_color_cube",
    # Sim + real co-trained: PickColorCube-v1 and the deformable families, in the real domain
    # (policy/checkpoints/cotrain/README.md, bench/cotrain.py).
    "cotrain": SHIPPED_DIR / "cotrain",
}
DEFAULT_CHECKPOINT = SHIPPED["default"]


def build_policy(config: PolicyConfig, stats: dict) -> torch.nn.Module:
    module, cls = POLICY_TYPES[config.type].split(":")
    return getattr(importlib.import_module(module), cls)(config, stats)


def trainable_state_dict(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in policy.state_dict().items()}


def save_policy(policy: torch.nn.Module, path: Path, extra: dict | None = None) -> Path:
    """Writes the checkpoint folder atomically enough: weights first, config last."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state_dict(policy), str(path / WEIGHTS_FILE))
    save_stats(policy.normalizer.stats, path / STATS_FILE)
    meta = {
        "format": CHECKPOINT_FORMAT,
        **policy.config.to_dict(),
        **({"_extra": extra} if extra else {}),
    }
    tmp = path / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path / CONFIG_FILE)
    return path


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped checkpoint's name (`SHIPPED`) or a folder, as a folder."""
    if str(name_or_path) in SHIPPED:
        return SHIPPED[str(name_or_path)]
    return Path(name_or_path)


def load_config(path: Path) -> tuple[PolicyConfig, dict]:
    cfg_path = Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"no policy checkpoint at {path}: {CONFIG_FILE} is missing (train one with "
            f"`armvla train`, or use --policy=default)"
        )
    data = json.loads(cfg_path.read_text())
    fmt = data.pop("format", None)
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {path} has format {fmt!r}, this armvla reads format {CHECKPOINT_FORMAT}; "
            f"retrain it or use the armvla version that wrote it"
        )
    extra = data.pop("_extra", {})
    return PolicyConfig.from_dict(data), extra


def load_policy(name_or_path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Loads a checkpoint folder (or ``default``) into an eval-mode policy on ``device``."""
    path = resolve_checkpoint(name_or_path)
    config, _ = load_config(path)
    stats = load_stats(path / STATS_FILE)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {path} lacks {WEIGHTS_FILE}")
    policy = build_policy(config, stats)
    state = load_file(str(weights))
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return policy.to(device).eval()
