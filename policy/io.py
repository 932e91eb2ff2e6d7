"""Boundary transforms between environments (sim or arm) and policy batches.

Environments speak numpy (uint8 HWC images, float state, an instruction string); policies take
torch batches with lerobot's keys. These two small functions are the only place that converts.
"""

from __future__ import annotations

import numpy as np
import torch

from data.dataset import SOURCE
from data.keys import OBS_IMAGES, OBS_STATE, TASK


def obs_to_batch(obs: dict, source: str = "sim", device: str | torch.device = "cpu") -> dict:
    """One env observation -> a batch of size 1 (images stay uint8 [1, H, W, 3])."""
    batch: dict = {}
    for key, value in obs.items():
        if key.startswith(OBS_IMAGES + "."):
            batch[key] = torch.from_numpy(np.ascontiguousarray(value)).unsqueeze(0).to(device)
        elif key == OBS_STATE:
            batch[key] = torch.as_tensor(value, dtype=torch.float32).unsqueeze(0).to(device)
    batch[TASK] = [obs[TASK]]
    batch[SOURCE] = [source]
    return batch


def action_to_env(action: torch.Tensor) -> np.ndarray:
    """A policy action [1, D] (or [D]) -> the env's float32 [D]."""
    return action.detach().reshape(-1).cpu().numpy().astype(np.float32)
