"""The checkpoint shipped in the repository: loads, fits the size budget, acts on the sim task."""

from __future__ import annotations

import json

import numpy as np
import torch

import sim
from policy.checkpoint import DEFAULT_CHECKPOINT, load_policy
from policy.io import action_to_env, obs_to_batch

MAX_BYTES = 25 * 1024 * 1024


def test_shipped_checkpoint_is_small_and_documented():
    files = {p.name: p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "stats.json", "eval_report.json"} <= set(files)
    assert sum(files.values()) <= MAX_BYTES, files
    report = json.loads((DEFAULT_CHECKPOINT / "eval_report.json").read_text())
    assert report["episodes"] >= 50
    assert 0.0 <= report["ci_low"] <= report["success_rate"] <= report["ci_high"] <= 1.0
    assert min(report["seeds"]) >= 1_000_000  # held out from `armvla generate`'s seeds


def test_shipped_checkpoint_acts_in_the_sim():
    policy = load_policy("default")
    env = sim.make_env("PickColorCube-v1")
    try:
        obs, _ = env.reset(seed=1_000_000)
        policy.reset()
        for _ in range(3):
            action = action_to_env(policy.select_action(obs_to_batch(obs)))
            assert action.shape == (6,) and np.isfinite(action).all()
            obs, *_ = env.step(action)
        chunk = policy.predict_action_chunk(obs_to_batch(obs))
        assert chunk.shape == (1, policy.config.chunk_size, 6) and torch.isfinite(chunk).all()
    finally:
        env.close()
