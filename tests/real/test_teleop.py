"""armvla's teleoperators: keyboard end-effector teleop (IK on the twin's MJCF) and dataset
playback, both through lerobot's Teleoperator interface."""

from __future__ import annotations

import numpy as np
import pytest

from data.keys import SO101_MOTOR_FEATURES
from real.teleop import (
    DatasetReplayTeleop,
    DatasetReplayTeleopConfig,
    KeyboardEETeleop,
    KeyboardEETeleopConfig,
    make_teleoperator,
)
from safety import so101
from sim.ik import TopDownIK

# A reachable jaws-down pose (lerobot units), gripper half open.
START = np.array([0.0, -20.0, 30.0, 75.0, 0.0, 50.0])


def _vec(action: dict) -> np.ndarray:
    return np.array([action[k] for k in SO101_MOTOR_FEATURES])


def test_keyboard_ee_moves_the_tool_by_the_key_steps():
    teleop = make_teleoperator(KeyboardEETeleopConfig(step_m=0.01))
    assert isinstance(teleop, KeyboardEETeleop)
    teleop.connect()
    with pytest.raises(RuntimeError, match="send_feedback"):
        teleop.get_action()
    teleop.send_feedback(dict(zip(SO101_MOTOR_FEATURES, START, strict=True)))
    ik = TopDownIK()
    hold = _vec(teleop.get_action())
    start_tool = ik.grasp_position(so101.to_radians(hold))
    np.testing.assert_allclose(hold, START, atol=1e-6)  # no key: the arm stays where it is
    for key in "uuu":
        assert teleop.press(key)
    assert not teleop.press("n")  # a recording control, not the teleop's
    moved = _vec(teleop.get_action())
    tool = ik.grasp_position(so101.to_radians(moved))
    np.testing.assert_allclose(tool - start_tool, [0.0, 0.0, 0.03], atol=0.002)
    assert teleop.press("c")
    closed = _vec(teleop.get_action())
    assert closed[5] == pytest.approx(moved[5] - 20.0)
    assert teleop.press("w") and teleop.press("a")
    tool2 = ik.grasp_position(so101.to_radians(_vec(teleop.get_action())))
    np.testing.assert_allclose(tool2 - tool, [0.01, 0.01, 0.0], atol=0.002)


def test_keyboard_ee_keeps_its_target_in_the_box():
    cfg = KeyboardEETeleopConfig(step_m=0.05, target_high=(0.40, 0.30, 0.10))
    teleop = KeyboardEETeleop(cfg)
    teleop.connect()
    teleop.send_feedback(dict(zip(SO101_MOTOR_FEATURES, START, strict=True)))
    for _ in range(10):
        teleop.press("u")
    tool = TopDownIK().grasp_position(so101.to_radians(_vec(teleop.get_action())))
    assert tool[2] <= 0.10 + 0.003


def test_keyboard_ee_config_is_validated():
    with pytest.raises(ValueError, match="step_m"):
        KeyboardEETeleopConfig(step_m=0.0)
    with pytest.raises(ValueError, match="target_low"):
        KeyboardEETeleopConfig(target_low=(0.5, 0.0, 0.0))


def test_replay_plays_each_episode_then_holds(tmp_path, action_dataset):
    a = np.cumsum(np.ones((5, 6)), axis=0)
    b = -np.cumsum(np.ones((3, 6)), axis=0)
    action_dataset(tmp_path / "ds", [a, b])
    teleop = make_teleoperator(DatasetReplayTeleopConfig(root=tmp_path / "ds", episodes=[1, 0]))
    assert isinstance(teleop, DatasetReplayTeleop)
    teleop.connect()
    # Cued: holds the first row of episode 1 until started (the arm goes to the start pose).
    np.testing.assert_allclose(_vec(teleop.get_action()), b[0])
    np.testing.assert_allclose(_vec(teleop.get_action()), b[0])
    teleop.start_episode()
    played = [_vec(teleop.get_action()) for _ in range(3)]
    np.testing.assert_allclose(played, b)
    assert teleop.finished
    np.testing.assert_allclose(_vec(teleop.get_action()), b[-1])  # holds the end
    assert teleop.cue_next_episode() == 0
    assert not teleop.finished
    teleop.start_episode()
    np.testing.assert_allclose([_vec(teleop.get_action()) for _ in range(5)], a)
    assert teleop.cue_next_episode() == 1  # wraps around


def test_replay_errors_name_the_problem(tmp_path, action_dataset):
    with pytest.raises(ValueError, match="teleop.root"):
        DatasetReplayTeleopConfig()
    with pytest.raises(FileNotFoundError, match="LeRobotDataset"):
        DatasetReplayTeleop(DatasetReplayTeleopConfig(root=tmp_path)).connect()
    action_dataset(tmp_path / "ds", [np.zeros((2, 6))])
    with pytest.raises(ValueError, match=r"not \[4\]"):
        DatasetReplayTeleop(DatasetReplayTeleopConfig(root=tmp_path / "ds", episodes=[4])).connect()
