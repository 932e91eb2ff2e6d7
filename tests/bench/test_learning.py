"""bench/learning.py: the ACT adapter (fast) and an end-to-end smoke run of the script (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.keys import ACTION, OBS_STATE, TASK, image_key
from policy.io import obs_to_batch

BENCH = Path(__file__).resolve().parents[2] / "bench"
CAMERAS = ("front", "wrist")


def _bench_module(name: str):
    """Imports bench/<name>.py (bench/ is a folder of scripts, not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _obs(size: int, seed: int = 0) -> dict:
    """An env observation as PickColorCube returns it: uint8 HWC images, float state, task."""
    rng = np.random.default_rng(seed)
    obs = {image_key(c): rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in CAMERAS}
    obs[OBS_STATE] = (rng.standard_normal(6) * 20).astype(np.float32)
    obs[TASK] = "pick up the red cube"
    return obs


def test_act_adapter_acts_on_obs_to_batch_batches(tmp_path):
    act = _bench_module("_act")
    size = 32  # the backbone is still a full ResNet-18: keep images small
    config = act.act_config(
        CAMERAS,
        size,
        6,
        6,
        dim_model=32,
        n_heads=2,
        dim_feedforward=64,
        n_encoder_layers=1,
        n_decoder_layers=1,
        n_vae_encoder_layers=1,
        latent_dim=4,
        chunk_size=4,
        n_action_steps=4,
        vision_backbone="resnet18",
    )
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(40, 6, generator=gen) * 20
    stats = {OBS_STATE: act.data_stats(frames, 1e-2), ACTION: act.data_stats(frames + 1, 1e-2)}
    torch.manual_seed(0)
    policy, pre, post = act.build_act(
        config, act.act_stats(stats[OBS_STATE], stats[ACTION], CAMERAS)
    )
    adapter = act.ACTAdapter(policy, pre, post)
    batch = obs_to_batch(_obs(size))
    assert batch[image_key("front")].dtype == torch.uint8  # the rollout's format, unconverted

    adapter.reset()
    actions = [adapter.select_action(batch) for _ in range(5)]  # 5 > n_action_steps: refills
    for action in actions:
        assert action.shape == (1, 6)
        assert torch.isfinite(action).all()
    assert not torch.equal(actions[0], actions[1])  # steps of a chunk, not one action repeated

    # Saved and rebuilt (as each eval worker does), the policy acts the same.
    path = act.save_act(policy, tmp_path / "act")
    assert path.is_file() and (tmp_path / "act" / "config.json").is_file()
    torch.manual_seed(1)  # different random init, overwritten by the weights
    policy2, pre2, post2 = act.build_act(
        config, act.act_stats(stats[OBS_STATE], stats[ACTION], CAMERAS)
    )
    again = act.ACTAdapter(act.load_act_weights(policy2, path), pre2, post2)
    again.reset()
    torch.testing.assert_close(again.select_action(batch), actions[0])

    with pytest.raises(ValueError, match="image size"):
        adapter.reset()
        adapter.select_action(obs_to_batch(_obs(size + 8)))


def test_data_stats_floor_constant_dimensions():
    act = _bench_module("_act")
    stats = act.data_stats(torch.tensor([[1.0, 5.0], [3.0, 5.0]]), min_std=0.01)
    assert stats == {
        "mean": [2.0, 5.0],
        "std": [1.0, 0.01],
        "min": [1.0, 5.0],
        "max": [3.0, 5.0],
    }


@pytest.mark.slow
def test_learning_bench_runs_and_prints_json(tmp_path):
    from sim.generate import GenerateConfig, TaskConfig, generate

    dataset = tmp_path / "sim"
    generate(GenerateConfig(task=TaskConfig(image_size=48), episodes=2, out=dataset, workers=2))
    out = tmp_path / "bench"
    # A fresh process, as users run it; tiny budget and one episode: plumbing, not learning.
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "learning.py"),
            f"--dataset={dataset}",
            "--budget-s=3",
            "--episodes=1",
            "--workers=1",
            "--threads=1",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("armvla", "act"):
        rate, (low, high) = result[f"{name}_success"], result[f"{name}_ci"]
        assert 0.0 <= low <= rate <= high <= 1.0, name
        assert result[f"{name}_successes"] in (0, 1)
        assert result[f"{name}_steps"] >= 1
    assert result["difference_points"] == round(
        100 * (result["armvla_success"] - result["act_success"]), 1
    )
    assert result["budget_s"] == 3
    assert result["episodes"] == 1
    assert result["dataset"] == str(dataset)
    assert result["image_size"] == 48
    assert result["act_batch_size"] == 8
    weights = Path(result["act_weights"])
    assert weights.is_file() and (weights.parent / "config.json").is_file()
    for report in (result["armvla_report"], result["act_report"]):
        assert json.loads(Path(report).read_text())["episodes"] == 1
    assert "difference:" in proc.stdout
