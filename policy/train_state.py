"""Optimizer and sampler state for ``armvla train --resume``, without pickles.

AdamW's per-parameter tensors go to ``training_state.safetensors`` (flattened keys), the scalar
bookkeeping (step, elapsed time, param-group hyper-parameters, RNG state) to
``training_state.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


def save_training_state(folder: Path, optimizer, sampler, step: int, elapsed: float) -> None:
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{name}"] = value
    tensors["sampler.rng"] = sampler.generator.get_state()
    save_file(tensors, str(Path(folder) / STATE_TENSORS))
    meta = {
        "step": step,
        "elapsed_s": elapsed,
        "param_groups": opt["param_groups"],
        "scalars": scalars,
        "torch_rng": torch.get_rng_state().tolist(),
    }
    (Path(folder) / STATE_JSON).write_text(json.dumps(meta))


def load_training_state(folder: Path, policy, optimizer, sampler) -> tuple[int, float]:
    """Restores weights, optimizer and sampler from a checkpoint folder; returns (step, elapsed)."""
    from policy.checkpoint import WEIGHTS_FILE, load_config

    folder = Path(folder)
    for name in (STATE_TENSORS, STATE_JSON, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"cannot resume: {folder / name} is missing")
    saved_cfg, _ = load_config(folder)
    if saved_cfg != policy.config:
        raise ValueError(
            f"cannot resume: the checkpoint in {folder} was trained with a different policy "
            f"config; use the same --preset/--policy options or start over with --overwrite=true"
        )
    policy.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    tensors = load_file(str(folder / STATE_TENSORS))
    meta = json.loads((folder / STATE_JSON).read_text())
    state: dict = {}
    for key, value in tensors.items():
        if key == "sampler.rng":
            continue
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sampler.generator.set_state(tensors["sampler.rng"])
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return int(meta["step"]), float(meta["elapsed_s"])
