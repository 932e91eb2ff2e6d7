"""The checkpoints shipped in the repository: each loads, fits the size budget, carries its held-
out report, and acts in its tasks' envs (the co-trained one also in the real domain)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sim
from data.keys import SOURCE_REAL, SOURCE_SIM
from policy.checkpoint import SHIPPED, load_policy
from policy.io import action_to_env, obs_to_batch
from policy.rollout import inference_source

MAX_BYTES = 25 * 1024 * 1024
# (task, domain, the data source whose normalization the policy uses there) each acts in.
ACTS_IN = {
    "default": [("PickColorCube-v1", "sim", SOURCE_SIM)],
    "cotrain": [
        ("PickColorCube-v1", "sim", SOURCE_SIM),
        ("PickColorCube-v1", "real", SOURCE_REAL),
        ("RopeToMark-v1", "real", SOURCE_REAL),
        ("TowelToMark-v1", "real", SOURCE_REAL),
    ],
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_checkpoint_is_small_and_documented(name):
    folder = SHIPPED[name]
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "stats.json",
        "eval_report.json",
        "README.md",
    } <= set(files)
    assert not [n for n in files if n.startswith("training_state")]  # resume state stays out
    assert sum(files.values()) <= MAX_BYTES, files
    report = json.loads((folder / "eval_report.json").read_text())
    assert report["episodes"] >= 50
    assert 0.0 <= report["ci_low"] <= report["success_rate"] <= report["ci_high"] <= 1.0
    assert min(report["seeds"]) >= 1_000_000  # held out from `armvla generate`'s seeds


@pytest.mark.parametrize(
    "name,task,domain,source", [(n, *case) for n, cases in ACTS_IN.items() for case in cases]
)
def test_shipped_checkpoint_acts(name, task, domain, source):
    policy = load_policy(name)
    assert inference_source(policy, domain) == source  # what `armvla eval` normalizes with
    env = sim.make_env(task, domain=domain)
    try:
        obs, _ = env.reset(seed=1_000_000)
        policy.reset()
        for _ in range(3):
            action = action_to_env(policy.select_action(obs_to_batch(obs, source=source)))
            assert action.shape == (6,) and np.isfinite(action).all()
            obs, *_ = env.step(action)
        chunk = policy.predict_action_chunk(obs_to_batch(obs, source=source))
        assert chunk.shape == (1, policy.config.chunk_size, 6) and torch.isfinite(chunk).all()
    finally:
        env.close()


def test_every_shipped_checkpoint_is_covered():
    assert set(ACTS_IN) == set(SHIPPED)
