"""GraspHold (SAFETY.md 15): a closed-on-object gripper keeps a set squeeze, not a stall."""

from __future__ import annotations

import numpy as np
import pytest

from safety.grasp_hold import GRIPPER, GraspHold

ARM = np.array([10.0, -20.0, 30.0, 40.0, 5.0])


def _request(gripper: float) -> np.ndarray:
    return np.r_[ARM, gripper]


def _run(hold: GraspHold, wants, measured) -> np.ndarray:
    pairs = zip(wants, measured, strict=True)
    return np.array([hold.apply(_request(w), m)[GRIPPER] for w, m in pairs])


def test_jaws_stopped_by_an_object_are_held_a_squeeze_past_it():
    hold = GraspHold(detect_gap_pct=6.0, detect_ticks=4, squeeze_pct=4.0)
    # Closing from 50 %: the jaws follow, then a cube stops them at 31 %.
    measured = [50, 44, 38, 32, 31, 31, 31, 31, 31, 31, 31]
    out = _run(hold, [0.0] * len(measured), measured)
    assert np.all(out[:4] == 0.0), "while the jaws still move, the request passes unchanged"
    first = int(np.flatnonzero(out)[0])
    assert 4 <= first <= 8  # a few still ticks after the jaws stop
    assert np.all(out[first:] == pytest.approx(31.0 - 4.0))
    assert hold.holding and hold.grasps == 1
    assert np.array_equal(hold.apply(_request(0.0), 31.0)[:GRIPPER], ARM)  # the arm untouched


def test_the_held_command_follows_the_jaws_as_the_object_gives():
    hold = GraspHold()
    _run(hold, [0.0] * 8, [30.0] * 8)
    assert hold.holding
    assert hold.apply(_request(0.0), 28.0)[GRIPPER] == pytest.approx(28.0 - hold.squeeze_pct)


def test_asking_to_open_releases_at_once():
    hold = GraspHold()
    _run(hold, [0.0] * 8, [30.0] * 8)
    assert hold.holding
    assert hold.apply(_request(45.0), 30.0)[GRIPPER] == 45.0
    assert not hold.holding
    # and a new grasp needs the full detection again
    assert hold.apply(_request(0.0), 30.0)[GRIPPER] == 0.0


def test_jaws_that_lag_while_still_closing_are_not_a_grasp():
    hold = GraspHold()
    measured = np.linspace(60.0, 5.0, 30)  # closing freely, 1.9 % per tick behind the command
    out = _run(hold, [0.0] * 30, measured)
    assert np.all(out == 0.0) and not hold.holding


def test_no_reading_or_no_request_passes_through():
    hold = GraspHold()
    _run(hold, [0.0] * 8, [30.0] * 8)
    assert hold.apply(None, 30.0) is None
    nan = _request(float("nan"))
    assert hold.apply(nan, 30.0) is nan and not hold.holding  # the gate refuses it, not us
    assert hold.apply(_request(0.0), None)[GRIPPER] == 0.0
    assert hold.apply(_request(0.0), float("nan"))[GRIPPER] == 0.0


def test_reset_forgets_the_grasp_but_counts_it():
    hold = GraspHold()
    _run(hold, [0.0] * 8, [30.0] * 8)
    hold.reset()
    assert not hold.holding and hold.grasps == 1
    assert hold.apply(_request(0.0), 30.0)[GRIPPER] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"squeeze_pct": 0.0}, "squeeze_pct"),
        ({"squeeze_pct": 7.0, "detect_gap_pct": 6.0}, "never ends"),
        ({"detect_ticks": 0}, "detect_ticks"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GraspHold(**kwargs)


def test_requests_become_joint_arrays_or_are_left_for_the_gate_to_refuse():
    from data.keys import SO101_JOINTS
    from safety.grasp_hold import joint_array

    as_dict = {f"{j}.pos": float(i) for i, j in enumerate(SO101_JOINTS)}
    np.testing.assert_array_equal(joint_array(as_dict), np.arange(6.0))
    np.testing.assert_array_equal(joint_array(list(range(6))), np.arange(6.0))
    assert joint_array({"shoulder_pan.pos": 1.0}) is None  # missing joints
    assert joint_array(np.zeros(5)) is None and joint_array(None) is None
    assert joint_array({**as_dict, "gripper.pos": "x"}) is None
