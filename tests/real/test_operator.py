"""The twin's scripted operator (--teleop.type=armvla_twin_operator): its first targets are the
task expert's for the twin's scene, its hand noise is small and smooth, and `armvla record`
with it writes a deformable family's episodes, each with its scene's instruction, tagged real."""

from __future__ import annotations

import time

import numpy as np
import pytest
from lerobot.robots.so_follower import SO101FollowerConfig

import sim
from data.dataset import SOURCE
from data.keys import SO101_MOTOR_FEATURES, SOURCE_REAL, TASK
from real.feetech_twin import SO101Twin, TwinConfig
from real.feetech_twin.process import TwinProcess
from real.feetech_twin.scene_channel import SceneChannel
from real.operator import TwinOperator, TwinOperatorConfig
from real.record import RecordConfig, RecordDatasetConfig, record
from sim.flex_expert import RopeExpert
from sim.generate import expert_motion_limits

TICKS = 40


@pytest.fixture
def channel():
    """A twin with its physics stopped (the scene stands still) and its scene channel."""
    twin = SO101Twin(TwinConfig(task="RopeToMark-v1", seed=3))
    channel = SceneChannel(twin).start()
    yield twin, f"tcp://127.0.0.1:{channel.port}"
    channel.stop()
    twin.close()


def _targets(operator: TwinOperator, ticks: int) -> np.ndarray:
    rows = []
    for _ in range(ticks):
        action = operator.get_action()
        rows.append([action[k] for k in SO101_MOTOR_FEATURES])
    return np.array(rows)


def test_the_operators_first_targets_are_the_experts_for_the_twins_scene(channel):
    twin, address = channel
    operator = TwinOperator(TwinOperatorConfig(scene_address=address, seed=11, noise_deg=0.0))
    operator.connect()
    try:
        operator.start_episode()
        # connect() laid out the first episode's scene: seed 11.
        assert twin.scene_seed == 11
        assert operator.episode_task == twin.env.instruction
        assert operator.episode_task.startswith("drag the ")
        got = _targets(operator, TICKS)
    finally:
        operator.disconnect()
    # The same expert, seeded as the operator seeds it, on a sim env put in the twin's scene.
    env = sim.make_env("RopeToMark-v1", image_size=16)
    env.reset(seed=0)
    env.unwrapped.set_scene_state(twin.env.scene_state())
    expert = RopeExpert(env.unwrapped, seed=11, limits=expert_motion_limits())
    want = np.array([expert.act() for _ in range(TICKS)])
    env.close()
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert np.abs(got[-1] - got[0]).max() > 1.0  # it is moving the arm, not holding


def test_the_hand_noise_is_small_and_smooth(channel):
    _, address = channel
    quiet = TwinOperator(TwinOperatorConfig(scene_address=address, seed=11, noise_deg=0.0))
    noisy = TwinOperator(TwinOperatorConfig(scene_address=address, seed=11, noise_deg=0.5))
    for op in (quiet, noisy):
        op.connect()
        op.start_episode()
    try:
        diff = _targets(noisy, 90) - _targets(quiet, 90)
    finally:
        quiet.disconnect()
        noisy.disconnect()
    assert np.all(diff[:, 5] == 0.0)  # the gripper's command is the expert's
    assert 0.02 < np.abs(diff[:, :5]).max() < 2.5  # degrees: there, and a hand's size
    assert np.abs(np.diff(diff[:, :5], axis=0)).max() < 0.1  # it wanders, it does not jump


def test_a_tick_does_not_wait_for_the_scene_channel(channel, monkeypatch):
    """The operator looks at the scene in its own thread: a slow channel delays what it sees,
    not its ticks (a person at a leader arm does not stop moving to look); a channel that
    stops answering ends its actions with a clear error within timeout_s."""
    twin, address = channel
    operator = TwinOperator(
        TwinOperatorConfig(scene_address=address, seed=11, noise_deg=0.0, timeout_s=0.5)
    )
    operator.connect()
    try:
        operator.start_episode()
        slow = twin.env.scene_state

        def scene_state():
            time.sleep(0.08)  # more than two 30 Hz ticks
            return slow()

        monkeypatch.setattr(twin.env, "scene_state", scene_state)
        ticks = []
        for _ in range(15):
            t0 = time.perf_counter()
            operator.get_action()
            ticks.append(time.perf_counter() - t0)
            time.sleep(1 / 30)
        assert np.median(ticks) < 0.02, ticks

        def silent():
            time.sleep(10.0)  # the channel hangs
            return slow()

        monkeypatch.setattr(twin.env, "scene_state", silent)
        deadline = time.monotonic() + 5.0
        with pytest.raises(ConnectionError, match="sent no state for 0.5 s"):
            while time.monotonic() < deadline:
                operator.get_action()
                time.sleep(1 / 30)
    finally:
        monkeypatch.undo()
        operator.disconnect()


def test_the_operator_needs_a_twin_to_read():
    with pytest.raises(ValueError, match="--teleop.port"):
        TwinOperatorConfig()
    operator = TwinOperator(TwinOperatorConfig(port="/dev/pts/no-such-twin"))
    with pytest.raises(ConnectionError, match="no running armvla twin"):
        operator.connect()


def test_record_with_the_operator_writes_towel_episodes_tagged_real(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    twin = TwinProcess(
        tmp_path / "calib", robot_id="operator_test", extra_args=["--task=TowelLiftCorner-v1"]
    )
    try:
        summary = record(
            RecordConfig(
                robot=SO101FollowerConfig(
                    port=twin.port, id="operator_test", calibration_dir=twin.calibration_dir
                ),
                teleop=TwinOperatorConfig(port=twin.port, seed=4),
                dataset=RecordDatasetConfig(
                    root=tmp_path / "towel", num_episodes=2, episode_time_s=15.0, reset_time_s=3.0
                ),
                out=tmp_path / "log",
            )
        )
        lifted = twin.max_lift_cm()
    finally:
        twin.close()
    assert summary["episodes_saved"] == 2 and summary["end"] == "done"
    # Each episode ended when its corner was up (not at the 15 s limit).
    ds = LeRobotDataset("test/towel", root=tmp_path / "towel")
    assert ds.meta.total_episodes == 2
    assert all(n < 15 * 30 for n in ds.meta.episodes["length"])
    assert max(lifted.values()) >= 3.0, lifted
    tasks = {ds[int(i)][TASK] for i in ds.meta.episodes["dataset_from_index"]}
    assert tasks <= {"lift the towel by its left corner", "lift the towel by its right corner"}
    assert set(summary["tasks"]) == tasks
    assert set(np.asarray(ds.hf_dataset.with_format("numpy")[SOURCE])) == {SOURCE_REAL}
