"""armvla train: 2-step smoke run, resume, 1-episode eval, mixtures and bad input (debug preset)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from data.dataset import SOURCE, so101_features
from data.keys import ACTION, OBS_STATE, TASK
from policy.checkpoint import load_policy
from policy.cli import main as cli_main
from policy.data import MixtureSampler, check_mixture, load_dataset
from policy.eval import EvalConfig, evaluate
from policy.normalize import INSTRUCTION
from policy.train import DataConfig, TrainConfig, train
from policy.train_state import STATE_JSON
from sim.generate import GenerateConfig, TaskConfig, generate


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "sim"
    generate(GenerateConfig(task=TaskConfig(image_size=48), episodes=2, out=out, workers=2))
    return out


def _real_dataset(
    root: Path, frames: int = 12, fps: int = 30, joints: int = 6, robot_type="so101_follower"
) -> Path:
    """A tiny teleop-like dataset tagged source=real (synthetic frames); ``joints`` other than 6
    gives an action feature of another arm."""
    features = so101_features(("front", "wrist"), 48, 48)
    if joints != 6:
        names = [f"joint_{i}.pos" for i in range(joints)]
        features[ACTION] = {"dtype": "float32", "shape": (joints,), "names": names}
    ds = LeRobotDataset.create(
        "test/real", fps=fps, features=features, root=root, robot_type=robot_type
    )
    rng = np.random.default_rng(0)
    for i in range(frames):
        ds.add_frame(
            {
                "observation.images.front": rng.integers(0, 255, (48, 48, 3), dtype=np.uint8),
                "observation.images.wrist": rng.integers(0, 255, (48, 48, 3), dtype=np.uint8),
                OBS_STATE: np.full(6, 10.0 + i, dtype=np.float32),
                ACTION: np.full(joints, 11.0 + i, dtype=np.float32),
                TASK: "fold the cloth",
                SOURCE: "real",
            }
        )
    ds.save_episode()
    ds.finalize()
    return root


def _cfg(roots, out, steps, **kw) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(roots=list(roots), weights=kw.pop("weights", None)),
        preset="debug",
        out=out,
        steps=steps,
        batch_size=4,
        warmup_steps=1,
        save_every=2,
        log_every=1,
        **kw,
    )


def test_train_resume_and_evaluate(sim_dataset, tmp_path):
    out = tmp_path / "run"
    first = train(_cfg([sim_dataset], out, steps=2))
    assert first.name == "000002"
    policy = load_policy(out / "checkpoints" / "last")
    assert policy.config.chunk_size == 8  # the debug preset
    assert INSTRUCTION in policy.normalizer.stats and policy.normalizer.sources == ["sim"]

    with pytest.raises(FileExistsError, match="--resume=true"):
        train(_cfg([sim_dataset], out, steps=4))
    resumed = train(_cfg([sim_dataset], out, steps=4, resume=True))
    assert resumed.name == "000004"
    state = json.loads((resumed / STATE_JSON).read_text())
    assert state["step"] == 4
    before = load_policy(first)
    after = load_policy(resumed)
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True)
    )
    assert changed, "resuming trained further"

    report = evaluate(
        EvalConfig(
            policy=str(resumed),
            task=TaskConfig(image_size=48),
            episodes=1,
            workers=1,
            out=tmp_path / "eval",
            max_steps=15,
            record_first=1,
            dataset=sim_dataset,
        )
    )
    assert report["episodes"] == 1 and 0.0 <= report["success_rate"] <= 1.0


def test_resume_with_other_config_is_refused(sim_dataset, tmp_path):
    out = tmp_path / "run"
    train(_cfg([sim_dataset], out, steps=2))
    cfg = _cfg([sim_dataset], out, steps=4, resume=True)
    cfg.policy.d_model = 64
    with pytest.raises(ValueError, match="different policy config"):
        train(cfg)


def test_mixture_weights_and_per_source_stats(sim_dataset, tmp_path):
    real = _real_dataset(tmp_path / "real")
    datasets = [
        load_dataset(sim_dataset, ("front", "wrist"), 32, 1.0),
        load_dataset(real, ("front", "wrist"), 32, 3.0),
    ]
    sampler = MixtureSampler(datasets, chunk_size=8, seed=0)
    stats = sampler.stats()
    assert sorted(stats) == ["real", "sim"]
    assert stats["real"][OBS_STATE]["mean"][0] == pytest.approx(15.5)
    assert stats["sim"][OBS_STATE]["mean"][0] != pytest.approx(15.5)
    # Shared: both sources get the statistics of every frame pooled.
    shared = sampler.stats(shared=True)
    assert sorted(shared) == ["real", "sim"] and shared["real"] == shared["sim"]
    pooled = torch.cat([d.state for d in datasets])[:, 0].double()
    assert shared["sim"][OBS_STATE]["mean"][0] == pytest.approx(float(pooled.mean()))
    assert shared["sim"][OBS_STATE]["count"] == sampler.num_frames
    batch = sampler.sample(4000)
    share_real = np.mean([s == "real" for s in batch[SOURCE]])
    assert share_real == pytest.approx(0.75, abs=0.03)  # weight 3 vs 1, whatever the sizes
    # Chunks never cross an episode's end: past it the last action repeats and is masked.
    idx = torch.tensor([sampler.num_frames - 1])
    last = sampler.batch(idx)
    assert last["action_is_pad"][0, 1:].all() and not last["action_is_pad"][0, 0]
    assert torch.equal(last[ACTION][0, -1], last[ACTION][0, 0])

    out = train(_cfg([sim_dataset, real], tmp_path / "mix", steps=2, weights=[1.0, 3.0]))
    assert load_policy(out).normalizer.sources == ["real", "sim"]


def test_dataset_errors(sim_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="armvla generate"):
        load_dataset(tmp_path / "missing", ("front",), 32)
    with pytest.raises(ValueError, match="no camera"):
        load_dataset(sim_dataset, ("top",), 32)
    with pytest.raises(ValueError, match="--data.weights has 2 values for 1 roots"):
        DataConfig(roots=[sim_dataset], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="--data.normalization must be one of"):
        DataConfig(roots=[sim_dataset], normalization="pooled")
    broken = tmp_path / "broken"
    shutil.copytree(sim_dataset, broken)
    video = next((broken / "videos" / "observation.images.front").rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    with pytest.raises(Exception, match="(?i)damaged|invalid|error|frames"):
        load_dataset(broken, ("front",), 32)


def test_a_mixture_with_mismatched_features_fails_before_training(sim_dataset, tmp_path):
    seven = _real_dataset(tmp_path / "seven", frames=3, joints=7)
    with pytest.raises(ValueError, match=r"dataset .*seven: feature 'action' has shape \(7,\)"):
        check_mixture([sim_dataset, seven], ("front", "wrist"))
    slow = _real_dataset(tmp_path / "slow", frames=3, fps=15)
    with pytest.raises(ValueError, match=r"dataset .*slow is recorded at 15 fps"):
        check_mixture([sim_dataset, slow], ("front",))
    koch = _real_dataset(tmp_path / "koch", frames=3, robot_type="koch_follower")
    with pytest.raises(ValueError, match=r"dataset .*koch was recorded on robot type 'koch_f"):
        check_mixture([sim_dataset, koch], ("front",))
    with pytest.raises(ValueError, match=r"dataset .*seven.*no camera\(s\) \['top'\]"):
        check_mixture([seven], ("top",))
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="feature 'action'"):
        train(_cfg([sim_dataset, seven], out, steps=2))
    assert not out.exists(), "it failed before writing anything"
    check_mixture([sim_dataset, _real_dataset(tmp_path / "ok", frames=3)], ("front", "wrist"))


def test_cli_train_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data.roots", "--preset", "--policy.d_model", "--steps", "--resume"):
        assert option in text
    assert cli_main(["train", f"--data.roots=[{tmp_path / 'none'}]", f"--out={tmp_path}/o"]) == 2
    assert "no LeRobotDataset" in capsys.readouterr().err
    assert cli_main(["train", "--preset=huge", f"--out={tmp_path}/o"]) == 2
    assert "unknown policy preset" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--cpu", "--multi_gpu"])
def test_accelerate_launch_two_cpu_processes(sim_dataset, tmp_path, mode):
    """`accelerate launch --cpu --num_processes 2` (accelerate's launcher starts one process
    without MPI; policy.train then starts the two) and `--multi_gpu --num_processes 2` on a
    GPU-less machine both train in two CPU processes (DDP over gloo) and write a loadable
    checkpoint."""
    out = tmp_path / "ddp"
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [
        str(launcher),
        "launch",
        mode,
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "policy.train",
        f"--data.roots=[{sim_dataset}]",
        "--preset=debug",
        f"--out={out}",
        "--steps=3",
        "--batch_size=4",
        "--warmup_steps=1",
    ]
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout + proc.stderr
    load_policy(out / "checkpoints" / "last")
