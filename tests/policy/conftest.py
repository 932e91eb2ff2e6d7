"""Shared fixtures for policy tests: normalization stats and synthetic batches."""

from __future__ import annotations

import pytest
import torch

from data.dataset import SOURCE
from data.keys import ACTION, ACTION_IS_PAD, OBS_STATE, TASK, image_key


@pytest.fixture
def sim_stats() -> dict:
    return {
        "sim": {
            OBS_STATE: {"mean": [0.0, -40.0, 40.0, 60.0, 0.0, 30.0], "std": [20.0] * 5 + [30.0]},
            ACTION: {"mean": [0.0, -40.0, 40.0, 60.0, 0.0, 30.0], "std": [20.0] * 5 + [30.0]},
        }
    }


def make_batch(cfg, batch_size: int = 3, seed: int = 0, with_actions: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {image_key(c): torch.rand(batch_size, 3, 96, 96, generator=g) for c in cfg.cameras}
    batch[OBS_STATE] = torch.randn(batch_size, cfg.state_dim, generator=g) * 20
    batch[TASK] = ["pick up the red cube"] * batch_size
    batch[SOURCE] = ["sim"] * batch_size
    if with_actions:
        batch[ACTION] = torch.randn(batch_size, cfg.chunk_size, cfg.action_dim, generator=g) * 20
        pad = torch.zeros(batch_size, cfg.chunk_size, dtype=torch.bool)
        pad[0, cfg.chunk_size // 2 :] = True
        batch[ACTION_IS_PAD] = pad
    return batch
