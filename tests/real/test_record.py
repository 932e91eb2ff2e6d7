"""`armvla record` on the serial-bus twin through lerobot's SO-101 driver and zmq cameras:
episodes land in a LeRobotDataset that lerobot loads, every recorded action is the command
the gate sent, the recording keys work, a writer error stops the recording with the arm
holding, and SIGKILLs of the command lose at most the episode in flight."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from lerobot.robots.so_follower import SO101FollowerConfig

from data.dataset import SOURCE
from data.keys import ACTION, SOURCE_REAL, TASK
from real import recorder as recorder_module
from real.feetech_twin.process import TwinProcess
from real.record import RecordConfig, RecordDatasetConfig, RecordingControls, record
from real.recorder import BASE, read_journal
from real.teleop import DatasetReplayTeleopConfig
from safety import so101
from safety.check import recheck_audit_log

ROBOT_ID = "record_test"
SEED = 1_000_006  # the scene of conftest's replay_demos
TASK_TEXT = "pick up the red cube"
REPLAY_TICKS = 45  # conftest's


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    twin = TwinProcess(tmp_path_factory.mktemp("calib"), robot_id=ROBOT_ID, seed=SEED)
    yield twin
    twin.close()


@pytest.fixture(scope="module")
def demos(replay_demos):
    return replay_demos


def config(twin, demos, tmp_path, **dataset) -> RecordConfig:
    return RecordConfig(
        robot=SO101FollowerConfig(
            port=twin.port, id=ROBOT_ID, calibration_dir=twin.calibration_dir
        ),
        teleop=DatasetReplayTeleopConfig(root=demos),
        dataset=RecordDatasetConfig(
            **{
                "root": tmp_path / "rec",
                "single_task": TASK_TEXT,
                "num_episodes": 2,
                "episode_time_s": 10.0,
                "reset_time_s": 0.3,
                **dataset,
            }
        ),
        out=tmp_path / "log",
    )


def load(root):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("test/rec", root=root)


def audit_rows(tmp_path) -> tuple[list[dict], object]:
    log = next((tmp_path / "log").glob("*/audit.jsonl"))
    return [json.loads(line) for line in log.read_text().splitlines()], log


def test_record_config_names_the_missing_flags(tmp_path):
    with pytest.raises(ValueError, match="robot.type"):
        RecordConfig()
    with pytest.raises(ValueError, match="teleop.type"):
        RecordConfig(robot=SO101FollowerConfig(port="/dev/null"))
    with pytest.raises(ValueError, match="num_episodes"):
        RecordDatasetConfig(num_episodes=0)


def test_recording_controls_follow_lerobot_keys():
    pressed = []

    class Teleop:
        def press(self, key):
            pressed.append(key)

    controls = RecordingControls(Teleop())
    for key in ("n", "Left", "esc", "w"):
        controls.dispatch(key)
    assert controls.take("exit_early") and controls.take("rerecord_episode")
    assert controls.take("stop_recording") and not controls.take("stop_recording")
    assert pressed == ["w"]  # not a recording key: the teleoperator's


def test_recorded_action_keeps_the_operators_gripper_request_while_holding():
    from real.record import recorded_action

    sent = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 36.0])  # held just past the jaws
    asked = np.array([1.1, 2.1, 3.1, 4.1, 5.1, 0.0])  # the operator squeezes the leader shut
    held = recorded_action(sent, asked, holding=True)
    assert held.dtype == np.float32
    np.testing.assert_allclose(held, [1.0, 2.0, 3.0, 4.0, 5.0, 0.0])
    np.testing.assert_allclose(recorded_action(sent, asked, holding=False), sent)


def test_records_replayed_episodes_into_a_lerobot_dataset(twin, demos, tmp_path):
    summary = record(config(twin, demos, tmp_path))
    assert summary["episodes_saved"] == 2 and summary["end"] == "done"
    ds = load(tmp_path / "rec")
    assert ds.meta.total_episodes == 2
    assert list(ds.meta.episodes["length"]) == [REPLAY_TICKS, REPLAY_TICKS]
    table = ds.hf_dataset.with_format("numpy")
    assert set(np.asarray(table[SOURCE])) == {SOURCE_REAL}
    item = ds[0]
    assert item[TASK] == TASK_TEXT
    for cam in ("front", "wrist"):
        image = item[f"observation.images.{cam}"]
        assert image.shape[0] == 3 and float(image.std()) > 0.01  # decoded, not blank
    # The dataset's action is what the gate sent, tick for tick, and the log re-checks clean.
    rows, log = audit_rows(tmp_path)
    sent = np.array([r["sent"] for r in rows if r["recording"] and r["sent"] is not None])
    np.testing.assert_allclose(np.stack(table[ACTION]), sent, atol=2e-3)
    assert recheck_audit_log(log) == []
    # The replayed motion reached the arm: the recorded state follows the expert's path.
    state = np.stack(table["observation.state"])[:REPLAY_TICKS]
    assert np.abs(state[-1] - state[0]).max() > 10.0


def test_rerecord_then_stop_keys(twin, demos, tmp_path, monkeypatch):
    """r discards the episode and records it again; q saves the one in progress and stops."""

    def press_keys(self):
        def later():
            time.sleep(0.7)
            self.dispatch("r")
            time.sleep(1.5)
            self.dispatch("q")

        threading.Thread(target=later, daemon=True).start()

    monkeypatch.setattr(RecordingControls, "start", press_keys)
    summary = record(config(twin, demos, tmp_path, num_episodes=3))
    assert summary["episodes_rerecorded"] == 1 and summary["episodes_saved"] == 1
    assert summary["end"] == "stopped by the operator"
    assert load(tmp_path / "rec").meta.total_episodes == 1
    kinds = [e["kind"] for e in read_journal(tmp_path / "rec")["aborted"]]
    assert kinds == ["discarded"]


def test_disk_full_stops_recording_with_the_arm_holding(twin, demos, tmp_path, monkeypatch):
    original = recorder_module._StagedEpisode.add
    calls = {"n": 0}

    def add(self, frame):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, frame)

    monkeypatch.setattr(recorder_module._StagedEpisode, "add", add)
    summary = record(config(twin, demos, tmp_path))
    assert summary["episodes_saved"] == 0
    assert summary["end"].startswith("recording stopped") and "disk full" in summary["end"]
    # lerobot cannot load a dataset with no episodes: there is none at root, only its base.
    assert not (tmp_path / "rec" / "meta" / "info.json").exists()
    info = json.loads((tmp_path / "rec" / BASE / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 0
    assert [e["kind"] for e in read_journal(tmp_path / "rec")["aborted"]] == ["aborted"]
    # The loop went on after the error (ticks were recorded past frame 10, the writer being
    # behind the loop) and then the gate held the arm: the last command is the stop's hold.
    rows, _ = audit_rows(tmp_path)
    assert sum(r["recording"] for r in rows) > 10
    assert rows[-1].get("event") == "recorder" and "STOP" in rows[-1]["gate"]
    assert rows[-1]["sent"] == rows[-2]["sent"]  # held where the last command left it


def _record_cli(twin, demos, root, log) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "policy.cli",
        "record",
        "--robot.type=so101_follower",
        f"--robot.port={twin.port}",
        f"--robot.id={ROBOT_ID}",
        f"--robot.calibration_dir={twin.calibration_dir}",
        "--teleop.type=armvla_replay",
        f"--teleop.root={demos}",
        f"--dataset.root={root}",
        f"--dataset.single_task={TASK_TEXT}",
        "--dataset.num_episodes=100",
        "--dataset.episode_time_s=10",
        "--dataset.reset_time_s=0.2",
        f"--resume={str(root.exists()).lower()}",
        f"--out={log}",
    ]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )


@pytest.mark.slow
def test_sigkill_of_the_record_command_loses_at_most_one_episode(twin, demos, tmp_path):
    """bench/record_kill.py runs this 50 times; here a few rounds at random moments."""
    rng = random.Random(0)
    root = tmp_path / "rec"
    committed = 0
    for _ in range(3):
        proc = _record_cli(twin, demos, root, tmp_path / "log")
        time.sleep(rng.uniform(6.0, 14.0))
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0].decode(errors="replace")
        saved = out.count(": saved")
        if not (root / "meta/info.json").exists():  # killed while starting up (~8 s here)
            assert saved == 0 and committed == 0, out
            continue
        ds = load(root)  # lerobot opens it after every kill
        assert ds.meta.total_episodes >= committed + saved - 1, out
        committed = ds.meta.total_episodes
        assert len(ds) == sum(ds.meta.episodes["length"])


def _read_until(fd: int, text: str, timeout_s: float, seen: bytearray) -> None:
    """Reads the terminal's output into ``seen`` until ``text`` shows up (or fails)."""
    import select

    deadline = time.monotonic() + timeout_s
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"no {text!r} within {timeout_s} s; the terminal shows:\n"
                + seen.decode(errors="replace")
            )
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                raise AssertionError(seen.decode(errors="replace")) from None


@pytest.mark.slow
def test_keyboard_teleop_from_a_real_terminal(twin, tmp_path):
    """`armvla record --teleop.type=armvla_keyboard_ee` in a pseudo-terminal, with no display
    (lerobot's terminal key reader, as over SSH): typed keys raise the tool and open the
    gripper on the twin, n saves the episode, and the terminal gets its echo back."""
    import pty
    import termios

    root = tmp_path / "rec"
    cmd = [
        sys.executable, "-m", "policy.cli", "record",
        "--robot.type=so101_follower", f"--robot.port={twin.port}", f"--robot.id={ROBOT_ID}",
        f"--robot.calibration_dir={twin.calibration_dir}",
        "--teleop.type=armvla_keyboard_ee",
        f"--dataset.root={root}", f"--dataset.single_task={TASK_TEXT}",
        "--dataset.num_episodes=1", "--dataset.episode_time_s=60", f"--out={tmp_path / 'log'}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MUJOCO_GL"] = os.environ.get("MUJOCO_GL", "egl")
    master, slave = pty.openpty()
    echo_before = termios.tcgetattr(slave)[3] & termios.ECHO
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    seen = bytearray()
    try:
        _read_until(master, "episode 0: recording", 120, seen)
        time.sleep(1.0)  # a second of the arm standing still
        for key in "uuuu" + "oo":  # 4 cm up, gripper +40 %
            os.write(master, key.encode())
            time.sleep(0.4)
        time.sleep(1.5)  # let the gate's step limits bring the arm there
        os.write(master, b"n")
        _read_until(master, "episode 0: saved", 60, seen)
        assert proc.wait(timeout=60) == 0, seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert termios.tcgetattr(slave)[3] & termios.ECHO == echo_before, "terminal left in cbreak"
    os.close(master)
    os.close(slave)
    table = load(root).hf_dataset.with_format("numpy")
    state = np.stack(table["observation.state"])
    action = np.stack(table[ACTION])
    assert action[-1, 5] - action[0, 5] > 35.0  # two presses of o: +40 % gripper command
    assert state[-1, 5] - state[0, 5] > 25.0  # and the jaws opened on the twin
    # The tool went up by about the four steps of u (forward kinematics of the recorded state).
    from sim.ik import TopDownIK

    ik = TopDownIK()
    z = [ik.grasp_position(so101.to_radians(s))[2] for s in (state[0], state[-1])]
    assert 0.03 < z[1] - z[0] < 0.05, z


def test_an_overheating_servo_stops_the_recording(demos, tmp_path):
    """Servo health is polled during recording (SAFETY.md 13): a servo heating past the park
    threshold ends the session with a safety stop; the episode in flight is aborted."""
    twin = TwinProcess(
        tmp_path / "calib",
        robot_id=ROBOT_ID,
        seed=SEED,
        extra_args=["--faults.heat_c_per_s={elbow_flex: 4.0}"],
    )
    try:
        summary = record(config(twin, demos, tmp_path, num_episodes=20, episode_time_s=60.0))
    finally:
        twin.close()
    assert summary["end"].startswith("safety stop") and "°C" in summary["end"], summary["end"]
    rows, _ = audit_rows(tmp_path)
    assert rows[-1]["directive"] == "PARK"
    assert load(tmp_path / "rec").meta.total_episodes == summary["episodes_saved"]


def test_dataset_flags_are_checked_before_the_arm_moves(tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "something").write_text("x")
    robot = SO101FollowerConfig(port="/dev/null/not-a-port", id=ROBOT_ID)
    teleop = DatasetReplayTeleopConfig(root=tmp_path)
    with pytest.raises(FileExistsError, match="--resume=true"):
        record(
            RecordConfig(
                robot=robot, teleop=teleop, dataset=RecordDatasetConfig(root=tmp_path / "rec")
            )
        )
    with pytest.raises(FileNotFoundError, match="drop --resume"):
        record(
            RecordConfig(
                robot=robot,
                teleop=teleop,
                dataset=RecordDatasetConfig(root=tmp_path / "new"),
                resume=True,
            )
        )
