"""armvla generate: dataset round trip through lerobot, resume, interruption and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from data.dataset import SOURCE
from data.keys import ACTION, OBS_STATE, SO101_MOTOR_FEATURES, TASK
from policy.cli import main as cli_main
from policy.takeover import generate  # sim.generate.generate, with the takeover driver
from safety import so101
from safety.config import SafetyConfig
from sim.generate import GENERATE_META, GenerateConfig, TaskConfig

COLORS = ("red", "green", "blue")


def _generate(out: Path, episodes: int, **kw) -> dict:
    cfg = GenerateConfig(
        task=TaskConfig(image_size=48), episodes=episodes, out=out, workers=2, **kw
    )
    return generate(cfg)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen") / "pick"
    return out, _generate(out, episodes=3, safety_gate=True)


def test_round_trip_through_lerobot(small_dataset):
    out, summary = small_dataset
    assert summary["attempts"] == 3
    assert summary["successes"] == summary["total_episodes"] >= 2
    ds = LeRobotDataset(summary["repo_id"], root=out)
    assert ds.num_episodes == summary["successes"]
    assert ds.fps == 30
    assert ds.meta.robot_type == "so101_follower"
    for key in (OBS_STATE, ACTION, "observation.images.front", "observation.images.wrist"):
        assert key in ds.meta.features
    assert ds.meta.features[ACTION]["names"] == list(SO101_MOTOR_FEATURES)
    assert ds.meta.video_keys == ["observation.images.front", "observation.images.wrist"]

    first = ds[0]
    assert first["observation.images.front"].shape == (3, 48, 48)  # lerobot returns CHW floats
    assert first[OBS_STATE].shape == (6,)
    assert first[SOURCE] == "sim"
    # Every episode's task names one of the cube colors, and frames agree with the meta.
    tasks = list(ds.meta.tasks.index)
    assert tasks and all(t.startswith("pick up the ") and t.split()[3] in COLORS for t in tasks)
    last = ds[len(ds) - 1]
    assert last[TASK] in tasks
    assert int(last["episode_index"]) == ds.num_episodes - 1
    assert len(ds) == ds.meta.total_frames

    meta = json.loads((out / "meta" / GENERATE_META).read_text())
    assert len(meta["episode_seeds"]) == summary["successes"]
    assert meta["next_seed"] == 3


def test_actions_follow_the_state(small_dataset):
    """The recorded action leads the recorded state: the arm tracks what was commanded."""
    out, summary = small_dataset
    ds = LeRobotDataset(summary["repo_id"], root=out)
    ep = ds.meta.episodes[0]
    start, end = ep["dataset_from_index"], ep["dataset_to_index"]
    states = np.stack([ds.hf_dataset[i][OBS_STATE].numpy() for i in range(start, end)])
    actions = np.stack([ds.hf_dataset[i][ACTION].numpy() for i in range(start, end)])
    assert np.isfinite(states).all() and np.isfinite(actions).all()
    err = np.abs(actions[:-5, :5] - states[5:, :5]).mean()
    assert err < 5.0, f"arm does not follow the expert's commands (mean error {err:.1f} deg)"


def test_demos_ran_through_the_safety_gate(small_dataset):
    """The expert drove the arm through the gate: the recorded states move within its limits
    (the recorded actions are the expert's requests, which the gate filtered), and the gate's
    config hash and intervention count sit next to the data."""
    out, summary = small_dataset
    ds = LeRobotDataset(summary["repo_id"], root=out)
    config = SafetyConfig()
    for ep in ds.meta.episodes:
        rows = range(ep["dataset_from_index"], ep["dataset_to_index"])
        states = np.stack([ds.hf_dataset[i][OBS_STATE].numpy() for i in rows]).astype(np.float64)
        speed = np.abs(np.diff(so101.to_radians(states), axis=0)).max(0)
        # Measured joints track the gated commands with some overshoot, never twice the limit.
        assert np.all(speed <= 2 * config.step_limit()), np.rad2deg(speed)
    meta = json.loads((out / "meta" / GENERATE_META).read_text())
    assert meta["safety_config_hash"] == config.hash() and meta["safety_gate"] is True
    assert 0 < meta["safety_interventions"] <= meta["safety_ticks"] == ds.meta.total_frames


def test_resume_appends_after_last_seed(tmp_path):
    out = tmp_path / "ds"
    _generate(out, episodes=2)
    with pytest.raises(FileExistsError, match="--overwrite=true .* --resume=true"):
        _generate(out, episodes=1)
    summary = _generate(out, episodes=2, resume=True)
    meta = json.loads((out / "meta" / GENERATE_META).read_text())
    assert meta["next_seed"] == 4
    assert sorted(meta["episode_seeds"] + meta["failed_seeds"]) == [0, 1, 2, 3]
    ds = LeRobotDataset(summary["repo_id"], root=out)
    assert ds.num_episodes == len(meta["episode_seeds"])
    assert len(ds) == ds.meta.total_frames


def test_overwrite_refuses_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a LeRobotDataset"):
        GenerateConfig(out=out, overwrite=True) and _generate(out, 1, overwrite=True)
    assert (out / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task.name=StackCubes-v9"], "unknown task 'StackCubes-v9'"),
        (["--episodes=0"], "--episodes must be >= 1"),
        (["--overwrite=true", "--resume=true"], "exclude each other"),
        (["--recovery_prob=1.5"], "--recovery_prob must be in [0, 1]"),
        (["--landing_prob=-0.1"], "--landing_prob must be in [0, 1]"),
        (["--takeover_ticks=[50,20]"], "--takeover_ticks must be [first, last]"),
    ],
)
def test_cli_bad_input(tmp_path, capsys, args, message):
    code = cli_main(["generate", f"--out={tmp_path / 'x'}", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli_main(["generate", f"--out={blocker / 'ds'}", "--episodes=1"]) == 2
    assert "is a file" in capsys.readouterr().err
    # /proc refuses new folders even to root, so this holds whoever runs the tests.
    assert cli_main(["generate", "--out=/proc/armvla-test/ds", "--episodes=1"]) == 2
    assert "cannot write the dataset" in capsys.readouterr().err


def test_cli_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["generate", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--task.name", "--episodes", "--out", "--overwrite", "--resume", "--workers"):
        assert option in text
    assert cli_main(["--help"]) == 0
    assert "generate" in capsys.readouterr().out


def test_interrupt_keeps_finished_episodes(tmp_path):
    """Ctrl-C mid-run: the dataset is finalized and every saved episode loads."""
    out = tmp_path / "ds"
    env = {**os.environ, "MUJOCO_GL": "egl"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "policy.cli",
            "generate",
            f"--out={out}",
            "--episodes=200",
            "--task.image_size=48",
            "--workers=1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    meta_path = out / "meta" / GENERATE_META
    deadline = time.time() + 120
    while time.time() < deadline:
        if meta_path.is_file() and len(json.loads(meta_path.read_text())["episode_seeds"]) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted after" in output
    meta = json.loads(meta_path.read_text())
    ds = LeRobotDataset("armvla/ds", root=out)
    assert ds.num_episodes == len(meta["episode_seeds"]) >= 2
    assert len(ds) == ds.meta.total_frames
    ds[len(ds) - 1]  # the last episode's video decodes


def test_slow_video_encoder_drops_no_frames(tmp_path, monkeypatch, caplog):
    """A whole episode reaches lerobot's streaming encoder in one burst. With its default queue
    (30 frames) an encoder that stalls for 0.1 s made it drop frames, leaving videos shorter than
    the episode's data (seen once under CPU load); the writer's queue now holds any episode."""
    from lerobot.datasets import video_utils

    run = video_utils._CameraEncoderThread.run

    def stalling_run(self):
        time.sleep(0.5)  # an encoder that falls behind, as on a loaded machine
        run(self)

    monkeypatch.setattr(video_utils._CameraEncoderThread, "run", stalling_run)
    out = tmp_path / "pick"
    with caplog.at_level("WARNING"):
        summary = _generate(out, episodes=1)
    assert summary["successes"] == 1
    assert "dropped" not in caplog.text
    ds = LeRobotDataset(summary["repo_id"], root=out)
    last = ds[len(ds) - 1]  # decoding the last frame fails if the video is short
    assert last["observation.images.wrist"].shape == (3, 48, 48)


def test_takeover_demos_start_where_the_policy_left_the_arm(tmp_path, small_dataset):
    """DAgger-style demos: the shipped policy drives 40 ticks, then the expert; only the
    expert's frames are written, and the run's settings go with the dataset."""
    take = _generate(
        tmp_path / "take", episodes=2, takeover_policy="default", takeover_ticks=[40, 40]
    )
    meta = json.loads((tmp_path / "take" / "meta" / GENERATE_META).read_text())
    assert meta["takeover"]["ticks"] == [40, 40]
    assert Path(meta["takeover"]["policy"]).name == "pick_color_cube"
    assert take["successes"] >= 1
    first, seeds = [], []  # first state of each episode, and its seed
    for root, summary in ((small_dataset[0], small_dataset[1]), (tmp_path / "take", take)):
        ds = LeRobotDataset(summary["repo_id"], root=root)
        first.append(
            [ds[int(i)][OBS_STATE].numpy() for i in ds.meta.episodes["dataset_from_index"]]
        )
        seeds.append(json.loads((root / "meta" / GENERATE_META).read_text())["episode_seeds"])
    # Same scenes (seeds 0, 1): a plain demo starts at the reset pose, a takeover one 40 ticks in.
    for state, seed in zip(first[1], seeds[1], strict=True):
        if seed in seeds[0]:
            assert np.abs(state - first[0][seeds[0].index(seed)])[:5].max() > 5.0
    with pytest.raises(ValueError, match="--takeover_ticks"):
        _generate(
            tmp_path / "take", 1, resume=True, takeover_policy="default", takeover_ticks=[10, 20]
        )
    with pytest.raises(ValueError, match="takeover"):
        _generate(tmp_path / "take", 1, resume=True)


def test_takeover_policy_that_is_not_a_checkpoint_is_refused(tmp_path, capsys):
    code = cli_main(
        ["generate", f"--out={tmp_path / 'x'}", f"--takeover_policy={tmp_path}", "--episodes=1"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"--takeover_policy={tmp_path}: no checkpoint there" in err
    assert not (tmp_path / "x").exists()


def test_takeover_without_a_driver_is_refused(tmp_path):
    """sim cannot load a policy: sim.generate.generate needs the driver `armvla generate` builds."""
    from sim.generate import generate as generate_in_sim

    cfg = GenerateConfig(out=tmp_path / "x", episodes=1, takeover_policy="default")
    with pytest.raises(ValueError, match="run `armvla generate`"):
        generate_in_sim(cfg)
    assert not (tmp_path / "x").exists()
