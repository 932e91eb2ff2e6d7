"""SafetyGate: unit behaviour, hypothesis property tests over generated action sequences, and
the mutation check (a gate with its NaN check removed or its step limit doubled must fail)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mujoco
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.keys import SO101_MOTOR_FEATURES
from safety import so101
from safety.check import (
    InvariantChecker,
    SelfCheck,
    random_sequence,
    random_start,
    run_sequence,
)
from safety.config import Box, SafetyConfig, joint_limits_rad
from safety.gate import Reason, SafetyGate, intervention_summary
from safety.kinematics import CHECK_POINTS, ArmKinematics
from sim.envs.pick_color_cube import HOME_RAD

HOME = so101.from_radians(HOME_RAD)
KIN = ArmKinematics()  # shared: building it parses the MJCF
CONFIG = SafetyConfig()
CHECKER = InvariantChecker(CONFIG)


def make_gate(config: SafetyConfig = CONFIG, **kwargs) -> SafetyGate:
    return SafetyGate(config, kinematics=KIN, **kwargs)


def settle(gate: SafetyGate, target, ticks: int = 200):
    decision = None
    for _ in range(ticks):
        decision = gate.filter(target)
    return decision


# ---------------------------------------------------------------------------- kinematics
def test_fk_matches_mujoco_on_random_configurations():
    model = mujoco.MjModel.from_xml_path(str(so101.ARM_XML))
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    q = rng.uniform(so101.JOINT_LIMITS_RAD[:, 0], so101.JOINT_LIMITS_RAD[:, 1], size=(50, 6))
    batch = KIN.points(q)
    for i in range(len(q)):
        data.qpos[:] = q[i]
        mujoco.mj_kinematics(model, data)
        for j, (_, body, offset) in enumerate(CHECK_POINTS):
            b = model.body(body).id
            ref = data.xpos[b] + data.xmat[b].reshape(3, 3) @ np.asarray(offset)
            np.testing.assert_allclose(batch[i, j], ref, atol=1e-12)


# ---------------------------------------------------------------------------- config
def test_config_rejects_unlimited_and_inconsistent_values():
    with pytest.raises(ValueError, match="no unlimited"):
        SafetyConfig(max_tool_speed_m_s=math.inf)
    with pytest.raises(ValueError, match="6 values"):
        SafetyConfig(max_joint_speed_rad_s=[1.0] * 5)
    with pytest.raises(ValueError, match="no unlimited"):
        SafetyConfig(max_joint_accel_rad_s2=[1.0] * 5 + [0.0])
    with pytest.raises(ValueError, match="derate"):
        SafetyConfig(temperature_derate_c=70.0)
    with pytest.raises(ValueError, match="low corner"):
        Box((0, 0, 0), (0.1, -0.1, 0.1))


def test_config_hash_is_stable_and_changes_with_any_limit():
    assert SafetyConfig().hash() == SafetyConfig().hash()
    assert SafetyConfig(max_tool_speed_m_s=0.2).hash() != SafetyConfig().hash()
    again = SafetyConfig.from_json(SafetyConfig().to_json())
    assert again == SafetyConfig() and again.hash() == SafetyConfig().hash()


def test_per_tick_limits_follow_the_spec_at_30_hz():
    np.testing.assert_allclose(np.rad2deg(CONFIG.step_limit()), [3, 3, 3, 5, 5, 6])
    assert np.rad2deg(CONFIG.accel_limit()[0]) == pytest.approx(0.7)


def test_calibration_narrows_the_joint_ranges():
    calib = {n: {"range_min": 1500, "range_max": 2600} for n in so101.SO101_JOINTS}
    limits = joint_limits_rad(calib)
    half = math.radians(1100 / 2 * 360 / 4095)
    np.testing.assert_allclose(limits[:5, 1], half)
    with pytest.raises(ValueError, match="no entry"):
        joint_limits_rad({"gripper": calib["gripper"]})


# ---------------------------------------------------------------------------- behaviour
def test_engage_commands_the_present_position_and_ramps_slowly_to_a_far_target():
    gate = make_gate()
    start = gate.engage(HOME)
    np.testing.assert_allclose(start.command, HOME, atol=1e-9)  # goal := present
    far = HOME + np.array([40.0, 0, 0, 0, 0, 0])
    first = [gate.filter(far) for _ in range(10)]
    steps = np.diff([HOME[0]] + [d.command[0] for d in first])
    assert np.all(steps <= 3.0 * CONFIG.ramp_speed_fraction + 1e-9)  # guarded ramp
    assert all(Reason.RAMP in d.reasons for d in first)


def moving_at_the_step_limit(gate: SafetyGate) -> np.ndarray:
    """Engages at HOME and runs the shoulder pan toward a far target until it moves at its
    step limit (3 deg/tick); returns the commands so far [T, 6] (rad)."""
    gate.engage(HOME)
    gate.filter(HOME)  # at the target: the guarded ramp ends
    far = HOME + np.array([60.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    cmds = [gate.filter(far).command_rad for _ in range(8)]
    assert np.rad2deg(cmds[-1][0] - cmds[-2][0]) == pytest.approx(3.0)
    return np.array(cmds)


def test_invalid_actions_brake_along_the_proven_path_and_three_in_a_row_latch():
    """SAFETY.md 2: an invalid action is refused whole and the arm brakes at the acceleration
    limit, as for a missing action (a joint at full speed never stops dead); three in a row
    latch a protective stop that brakes to rest, then holds until a deliberate reset."""
    gate = make_gate()
    before = moving_at_the_step_limit(gate)
    acc = CONFIG.accel_limit()
    bad = HOME.copy()
    bad[2] = np.nan
    decisions = []
    for i in range(3):
        decisions.append(gate.filter(bad))
        assert bool(gate.latched) == (i == 2)
    assert all(Reason.NON_FINITE in d.reasons for d in decisions)
    assert not any(Reason.HOLD in d.reasons for d in decisions)  # braking, not a dead stop
    assert Reason.LATCHED in decisions[2].reasons and gate.latched == Reason.LATCHED
    decisions += [gate.filter(HOME) for _ in range(10)]  # valid again, but latched
    cmds = np.concatenate([before, [d.command_rad for d in decisions]])
    steps = np.diff(cmds, axis=0)
    assert np.all(np.abs(np.diff(steps, axis=0)) <= acc + 1e-12)
    pan = np.rad2deg(steps[len(before) - 1 :, 0])
    np.testing.assert_allclose(pan[:5], [2.3, 1.6, 0.9, 0.2, 0.0], atol=1e-9)
    assert all(Reason.LATCHED in d.reasons for d in decisions[2:])
    assert all(Reason.HOLD in d.reasons for d in decisions[6:])  # at rest: holding
    gate.reset()
    d = gate.filter(HOME + 30.0)
    held = decisions[-1].command
    assert np.all(np.abs(d.command - held)[:5] <= 3.0 + 1e-9)  # step-limited from the hold


def test_a_nan_burst_at_the_step_limit_changes_the_step_by_at_most_the_acceleration_limit():
    """Bursts of one and two NaN ticks (no latch) while the pan runs at its step limit, then
    valid commands again: every change of step stays within the acceleration limit and every
    command inside the checked envelope."""
    gate = make_gate()
    decisions = [gate.engage(HOME), gate.filter(HOME)]
    far = HOME + np.array([60.0, -20.0, 20.0, 0.0, 0.0, 0.0])
    bad = far.copy()
    bad[0] = np.nan
    plan = [far] * 8 + [bad] + [far] * 3 + [bad, bad] + [far] * 6 + [bad] + [far] * 4
    decisions += [gate.filter(a) for a in plan]
    cmds = np.array([d.command_rad for d in decisions])
    holds = np.array([bool(d.reasons & Reason.HOLD) for d in decisions])
    assert not holds[2:].any() and not gate.latched
    steps = np.diff(cmds, axis=0)
    moved = np.abs(np.diff(steps[1:], axis=0)).max(0)[:3]  # the joints sent somewhere
    assert moved == pytest.approx(CONFIG.accel_limit()[:3])  # the limit binds
    assert np.all(np.abs(np.diff(steps[1:], axis=0)) <= CONFIG.accel_limit() + 1e-12)
    assert CHECKER.check(cmds, holds) == []


def test_a_requested_stop_still_holds_within_the_tick_while_the_protective_stop_brakes():
    gate = make_gate()
    moving_at_the_step_limit(gate)
    bad = np.full(6, np.nan)
    for _ in range(3):
        braking = gate.filter(bad)
    assert gate.latched == Reason.LATCHED and Reason.HOLD not in braking.reasons
    stop = gate.request_stop("voice")
    np.testing.assert_array_equal(stop.command, braking.command)  # held at once
    assert Reason.HOLD in stop.reasons
    np.testing.assert_array_equal(gate.filter(HOME).command, braking.command)


@pytest.mark.parametrize(
    "action",
    [
        np.zeros(5),
        np.zeros((2, 6)),
        {"shoulder_pan.pos": 0.0},
        {k: 0.0 for k in SO101_MOTOR_FEATURES} | {"extra.pos": 1.0},
        np.array([0, 0, 0, 0, 0, 1e6]),
        "not an action",
    ],
)
def test_wrong_shape_keys_or_units_are_refused(action):
    gate = make_gate()
    gate.engage(HOME)
    d = gate.filter(action)
    assert d.reasons & (Reason.BAD_SHAPE | Reason.BAD_UNITS) and Reason.HOLD in d.reasons
    np.testing.assert_allclose(d.command, HOME, atol=1e-9)


def test_lerobot_action_dicts_are_accepted_and_returned():
    gate = make_gate()
    gate.engage(HOME)
    d = gate.filter(dict(zip(SO101_MOTOR_FEATURES, HOME + 1.0, strict=True)))
    assert not d.reasons & (Reason.BAD_SHAPE | Reason.BAD_UNITS)
    assert set(d.as_action()) == set(SO101_MOTOR_FEATURES)


def test_future_timestamps_are_refused_late_ones_do_not_catch_up():
    gate = make_gate()
    gate.engage(HOME)
    d = gate.filter(HOME + 10.0, stamp=10.5, now=10.0)
    assert Reason.FUTURE_TIMESTAMP in d.reasons
    settle(gate, HOME, ticks=5)
    before = gate.filter(HOME + 20.0, now=11.0).command_rad
    after = gate.filter(HOME + 20.0, now=13.0).command_rad  # two seconds late
    assert np.all(np.abs(after - before) <= CONFIG.step_limit() + 1e-12)


def test_joint_targets_are_kept_inside_the_margin():
    gate = make_gate()
    gate.engage(HOME)
    d = settle(gate, np.array([300.0, 0.0, 0.0, 0.0, 0.0, 50.0]), ticks=300)
    pan_max = math.degrees(so101.JOINT_LIMITS_RAD[0, 1] - CONFIG.joint_margin_rad)
    assert d.command[0] == pytest.approx(pan_max, abs=1e-6)
    assert Reason.JOINT_LIMIT in d.reasons


def test_table_plane_stops_a_dive_through_the_table():
    gate = make_gate()
    gate.engage(HOME)
    down = HOME.copy()
    down[1], down[2], down[3] = 60.0, 20.0, 90.0  # shoulder forward, wrist down: into the table
    decisions = [gate.filter(down) for _ in range(200)]
    tips = KIN.points(np.array([d.command_rad for d in decisions]))
    assert tips[..., 2].min() >= -1e-6  # fingertips never below the table
    assert tips[:, :2, 2].min() >= CONFIG.table_clearance_m - 1e-6  # elbow and wrist keep 2 cm
    assert any(Reason.WORKSPACE in d.reasons for d in decisions)


def test_jaws_stopped_on_the_table_still_close_and_the_wrist_still_turns():
    # A grasp pose the policy asks for slightly too low: the gate stops the jaws on the table
    # plane. Closing swings the moving jaw's tip ~1 mm down, so a step scaled as one block
    # could never close them (seen in eval: the arm froze above the cube until time ran out).
    above = np.array([-14.0, 17.8, 9.0, 62.5, 120.0, 35.0])  # jaws open, tips ~1 cm up
    too_low = np.array([-14.0, 12.0, 17.0, 60.0, 135.0, 0.0])  # tips below the table, closed
    gate = make_gate()
    gate.engage(above)
    settle(gate, above, ticks=20)  # the guarded ramp ends
    decisions = [gate.filter(too_low) for _ in range(120)]
    cmds = np.array([d.command for d in decisions])
    points = KIN.points(np.array([d.command_rad for d in decisions]))
    assert points[..., 2].min() >= -1e-9  # the jaws never go through the table
    assert any(Reason.WORKSPACE in d.reasons for d in decisions)  # they did reach it
    soft_closed = so101.from_radians(so101.JOINT_LIMITS_RAD[:, 0] + CONFIG.joint_margin_rad)[5]
    assert cmds[-1, 5] == pytest.approx(soft_closed, abs=0.5)  # closed as far as allowed
    assert cmds[-1, 4] == pytest.approx(135.0, abs=0.5)  # the wrist roll got where it was sent
    # Every step still obeys the per-joint limits.
    steps = np.diff(np.array([d.command_rad for d in decisions]), axis=0)
    assert np.all(np.abs(steps) <= CONFIG.step_limit() + 1e-9)
    assert np.all(np.abs(np.diff(steps, axis=0)) <= CONFIG.accel_limit() + 1e-9)


# Sequence 2922 of bench/safety_gate.py's corpus (seed 0), rounded: the arm runs toward the
# workspace box's far wall (x = 0.45 m) at the tool speed cap. The braking path's tick ends
# passed, but a chord between two of them cut the wall by 3 um, so braking at the acceleration
# limit failed the next tick's check and the gate had to stop harder (ACCEL_OVERRIDE, an accel
# violation of 1.3 deg/tick^2 against 0.7).
WALL_START = np.array([5.114, 59.672, -75.41, 81.791, -96.144, 30.377])
WALL_TICKS = [
    ("smooth", [-108.768, 105.139, -40.57, -22.646, 154.958, 108.821], 0.0, 0.03333),
    ("smooth", [-110.693, 101.481, -39.503, -26.02, 152.37, 109.381], 0.0, 0.03333),
    ("smooth", [-112.243, 97.605, -38.134, -30.456, 150.206, 110.186], 0.0, 0.03333),
    ("smooth", [-114.262, 93.678, -36.904, -34.167, 147.996, 110.906], 0.0, 0.03333),
    ("smooth", [-116.049, 90.078, -35.506, -38.237, 146.152, 111.322], 0.0, 0.03333),
    ("smooth", [-117.977, 86.579, -34.325, -42.717, 143.922, 111.904], 0.0, 0.03333),
    ("smooth", [-119.834, 82.588, -33.294, -47.348, 141.575, 112.271], 0.0, 0.09961),
    ("smooth", [-121.531, 78.94, -32.013, -51.638, 138.846, 112.917], 0.0, 0.03333),
    ("jump", [154.854, 296.174, 143.027, -86.862, 207.419, 110.678], 0.0, 0.03333),
    ("smooth", [153.15, 293.071, 144.033, -91.132, 205.263, 111.146], 0.0, 0.03333),
    ("smooth", [151.265, 289.395, 145.157, -94.765, 203.244, 111.896], 0.0, 0.03333),
    ("jump", [-119.659, -70.287, 76.416, -266.373, 161.097, 12.214], 0.0, 0.07229),
    ("smooth", [-121.134, -73.706, 77.929, -270.223, 158.351, 12.878], 0.0, 0.03333),
    ("future", [-121.134, -73.706, 77.929, -270.223, 158.351, 12.878], 0.094, 0.03333),
    ("switch", [-112.171, -73.066, 78.327, -273.75, 160.73, 8.016], 0.0, 0.03333),
    ("smooth", [-102.887, -72.465, 78.155, -277.205, 163.372, 3.354], 0.0, 0.03333),
    ("smooth", [-94.17, -71.835, 78.58, -280.881, 165.958, -1.623], 0.0, 0.0948),
    ("smooth", [-85.099, -71.532, 79.226, -284.164, 168.237, -6.62], 0.0, 0.03333),
    ("smooth", [-75.962, -71.107, 79.603, -287.966, 170.258, -11.876], 0.0, 0.03333),
    ("smooth", [-66.938, -70.986, 80.513, -291.6, 172.517, -16.667], 0.0, 0.03333),
]


def test_braking_at_a_wall_never_needs_a_stop_harder_than_the_acceleration_limit():
    ticks = [
        {"kind": k, "action": None if a is None else np.array(a), "stamp_offset": o, "dt": dt}
        for k, a, o, dt in WALL_TICKS
    ]
    decisions: list = []
    cmds, holds = run_sequence(make_gate(), WALL_START, ticks, decisions)
    assert CHECKER.check(cmds, holds) == []
    assert not any(Reason.ACCEL_OVERRIDE in d.reasons for d in decisions)
    assert Reason.WORKSPACE in decisions[-1].reasons  # it did reach the wall
    assert KIN.points(cmds)[..., 0].max() == pytest.approx(CONFIG.workspace.high[0], abs=1e-3)


# Four sequences of an adversarial fuzz written outside the project (its own generator, MuJoCo's
# FK on the twin MJCF), copied from the case file it reported: each starts with the wrist or
# the jaws inside the base's keep-out margin, and the gate of the time needed a stop harder
# than the acceleration limit in all four; in sequence 0 the moving fingertip then went 9.4 mm
# past the box's x = -0.10 m wall, in sequence 3 the tool point 13.9 mm below the table.
GATE_ESCAPES = json.loads((Path(__file__).parent / "data" / "gate_escapes.json").read_text())


@pytest.mark.parametrize("index", range(len(GATE_ESCAPES["sequences"])))
def test_a_start_inside_forbidden_space_licenses_no_other_limit_and_braking_stays_valid(index):
    case = GATE_ESCAPES["sequences"][index]
    gate = make_gate()
    decisions = [gate.engage(np.array(case["start_deg"]))]
    assert gate.penetration(decisions[0].command_rad)[0] > 0.02  # inside the keep-out margin
    now = 100.0
    for tick in case["ticks"]:
        now += 1 / 30
        action = tick["action"]
        action = np.array(action, dtype=float) if isinstance(action, list) else action
        decisions.append(gate.filter(action, stamp=now + tick["stamp_ahead_s"], now=now))
    assert not any(Reason.ACCEL_OVERRIDE in d.reasons for d in decisions)
    cmds = np.array([d.command_rad for d in decisions])
    holds = np.array([bool(d.reasons & Reason.HOLD) for d in decisions])
    assert CHECKER.check(cmds, holds) == []  # no point deeper into any limit than at the start
    pts = KIN.points(cmds)
    assert pts[..., 0].min() >= CONFIG.workspace.low[0] - 1e-9  # the fingertip of sequence 0
    assert pts[:, 2, 2].min() >= CONFIG.table_z_m - 1e-9  # the tool point of sequence 3


def test_the_checker_flags_the_escape_the_old_rule_allowed():
    """The invariant the fix rests on can fail: the command the old gate sent at tick 53 of
    sequence 0 (moving fingertip 9.4 mm past the box's x wall) is a workspace violation from
    that start, though its worst depth (15 mm) is less than the start's (41 mm: the wrist in
    the keep-out margin), which is all the old rule compared."""
    start = np.array(GATE_ESCAPES["sequences"][0]["start_deg"])
    escaped = np.array([13.66, 92.84, 90.12, 34.89, -20.51, 60.55])  # the old gate's command
    cmds = so101.to_radians(np.array([start, escaped]))
    assert KIN.points(cmds[1])[4, 0] == pytest.approx(CONFIG.workspace.low[0] - 0.0094, abs=3e-4)
    gate = make_gate()
    assert gate.penetration(cmds[1])[0] < gate.penetration(cmds[0])[0]
    assert "workspace" in {v.invariant for v in CHECKER.check(cmds)}


def test_tool_speed_is_capped_and_the_no_person_flag_allows_more():
    def top_speed(config):
        gate = make_gate(config)
        gate.engage(HOME)
        gate.filter(HOME)  # at the target already: the guarded ramp ends
        target = HOME + np.array([-60.0, 30.0, -30.0, 0.0, 0.0, 0.0])
        cmds = np.array([gate.filter(target).command_rad for _ in range(60)])
        tool = KIN.points(cmds)[:, 2]
        return np.linalg.norm(np.diff(tool, axis=0), axis=1).max() * config.control_hz

    slow = top_speed(CONFIG)
    fast = top_speed(SafetyConfig(no_person_present=True))
    assert slow <= 0.25 + 1e-6 and fast > slow


def test_stop_holds_at_once_and_latches_until_reset():
    gate = make_gate()
    gate.engage(HOME)
    moving = settle(gate, HOME + 20.0, ticks=10)
    stop = gate.request_stop("keyboard")
    np.testing.assert_array_equal(stop.command, moving.command)
    assert Reason.STOP in stop.reasons
    assert np.array_equal(gate.filter(HOME + 40.0).command, moving.command)
    gate.set_speed_scale(0.5)  # slowing is allowed while stopped; nothing else changes
    assert gate.latched
    gate.reset()
    assert not gate.latched


def test_speed_scale_only_slows():
    gate = make_gate()
    with pytest.raises(ValueError, match="speed scale"):
        gate.set_speed_scale(1.5)
    with pytest.raises(ValueError, match="speed scale"):
        gate.set_speed_scale(float("nan"))


def test_no_action_brakes_smoothly_to_rest():
    gate = make_gate()
    gate.engage(HOME)
    settle(gate, HOME + np.array([0.0, -30.0, 30.0, 0, 0, 0]), ticks=15)
    cmds = [gate.brake().command_rad for _ in range(20)]
    steps = np.abs(np.diff(cmds, axis=0))
    assert np.all(np.diff(steps, axis=0) <= CONFIG.accel_limit() + 1e-9)  # only decelerates
    assert np.all(steps[-1] == 0)  # at rest


def test_interventions_are_split_into_shaping_and_protective_with_the_joint_they_acted_on():
    gate = make_gate()
    gate.engage(HOME)
    closed = HOME.copy()
    closed[5] = 0.0  # the jaws' hard stop: 4.5 % past the gripper's soft range
    shaped = settle(gate, closed, ticks=40)
    assert shaped.reasons & Reason.JOINT_LIMIT and shaped.shaped and not shaped.protective
    assert shaped.joints["JOINT_LIMIT"] == (5,)
    bad = closed.copy()
    bad[0] = np.nan
    refused = gate.filter(bad)
    assert refused.protective and Reason.NON_FINITE in refused.reasons
    stats = gate.stats.as_dict()
    assert stats["shaping"] == stats["ticks"] - 1  # all but the NaN (engage starts the ramp)
    assert stats["protective"] == 1 and stats["protective_rate"] == 1 / stats["ticks"]
    assert stats["by_reason_joint"]["JOINT_LIMIT"] == {"gripper": 40}
    summary = intervention_summary(stats["by_reason"], stats["by_reason_joint"])
    assert summary["shaping"]["JOINT_LIMIT"] == {"ticks": 40, "joint": "gripper", "joint_ticks": 40}
    assert summary["protective"]["NON_FINITE"]["joint"] is None
    assert "RAMP" in summary["shaping"] and "HOLD" in summary["protective"]


def test_commands_before_engage_are_an_error():
    with pytest.raises(RuntimeError, match="engage"):
        make_gate().filter(HOME)


# ---------------------------------------------------------------------------- properties
def some_start(rng: np.random.Generator, inside_forbidden: bool = False) -> np.ndarray:
    """A start clear of every limit, or with a check point inside forbidden space."""
    return random_start(rng, make_gate(), inside_forbidden)


tick = st.one_of(
    st.tuples(st.just("smooth"), st.lists(st.floats(-12, 12), min_size=6, max_size=6)),
    st.tuples(st.just("jump"), st.lists(st.floats(-400, 400), min_size=6, max_size=6)),
    st.tuples(
        st.just("non_finite"),
        st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 0.0]), min_size=6, max_size=6),
    ),
    st.tuples(st.just("none"), st.none()),
    st.tuples(st.just("stop"), st.none()),
    st.tuples(st.just("reset"), st.none()),
    st.tuples(st.just("late"), st.floats(0.04, 2.0)),
    st.tuples(st.just("future"), st.floats(0.01, 5.0)),
    st.tuples(st.just("slow"), st.floats(0.1, 1.0)),
    # A lerobot action dict missing motors, and radians sent where degrees belong.
    st.tuples(st.just("partial_dict"), st.sets(st.sampled_from(SO101_MOTOR_FEATURES), max_size=5)),
    st.tuples(st.just("radians"), st.none()),
)


def play(gate: SafetyGate, start: np.ndarray, ticks) -> tuple[np.ndarray, np.ndarray]:
    """Plays hypothesis-drawn ticks; returns commands [T+1, 6] (rad) and hold flags."""
    decision = gate.engage(start)
    cmds, holds = [decision.command_rad, gate.filter(start, now=0.0).command_rad], [False, False]
    target, now = start.copy(), 0.0
    for kind, arg in ticks:
        now += 1 / 30
        stamp = None
        if kind == "smooth":
            target = target + np.asarray(arg)
            action = target
        elif kind == "jump":
            target = np.clip(np.asarray(arg), -360, 360)
            target[5] = np.clip(target[5], -20, 120)
            action = target
        elif kind == "non_finite":
            action = np.where(np.isfinite(arg), target, arg)
        elif kind == "partial_dict":
            action = {k: float(target[SO101_MOTOR_FEATURES.index(k)]) for k in arg}
        elif kind == "radians":
            action = np.deg2rad(target)
        elif kind == "late":
            now += arg
            action = target
        elif kind == "future":
            stamp, action = now + arg, target
        elif kind == "slow":
            gate.set_speed_scale(arg)
            action = target
        else:
            action = None
        if kind == "stop":
            decision = gate.request_stop("test")
        elif kind == "reset":
            gate.reset()
            decision = gate.filter(None, now=now)
        else:
            decision = gate.filter(action, stamp=stamp, now=now)
        cmds.append(decision.command_rad)
        holds.append(bool(decision.reasons & Reason.HOLD))
    return np.array(cmds), np.array(holds)


def check_any_sequence(seed, ticks, inside):
    """Joint range, step, acceleration, workspace, table plane, keep-out and tool/elbow speed
    hold for every command, whatever the policy sends (NaN, jumps, late/future ticks...), from
    a start clear of every limit or (``inside``) inside forbidden space, where no point may get
    deeper into any limit and braking never needs a harder stop."""
    gate = make_gate()
    cmds, holds = play(gate, some_start(np.random.default_rng(seed), inside), ticks)
    assert CHECKER.check(cmds, holds) == []
    assert not gate.stats.by_reason["ACCEL_OVERRIDE"]


SEQUENCES = st.lists(tick, min_size=5, max_size=60)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@settings(FAST, max_examples=500)
@given(seed=st.integers(0, 2**32 - 1), ticks=SEQUENCES, inside=st.booleans())
def test_gate_invariants_hold_for_any_action_sequence(seed, ticks, inside):
    check_any_sequence(seed, ticks, inside)


@pytest.mark.slow
@settings(FAST, max_examples=10_000)
@given(seed=st.integers(0, 2**32 - 1), ticks=SEQUENCES, inside=st.booleans())
def test_gate_invariants_hold_over_ten_thousand_hypothesis_sequences(seed, ticks, inside):
    check_any_sequence(seed, ticks, inside)


def corpus_violations(make, sequences: int, seed: int = 0) -> int:
    """Invariant violations of gates from ``make()`` over a numpy-generated corpus."""
    rng = np.random.default_rng(seed)
    total = 0
    for _ in range(sequences):
        gate = make()
        start = some_start(rng, inside_forbidden=rng.random() < 0.3)
        cmds, holds = run_sequence(gate, start, random_sequence(rng, 40))
        total += len(CHECKER.check(cmds, holds))
    return total


def test_generated_corpus_has_no_violations():
    assert corpus_violations(make_gate, sequences=150) == 0


@pytest.mark.slow
def test_ten_thousand_generated_sequences_have_no_violations():
    assert corpus_violations(make_gate, sequences=10_000, seed=1) == 0


# ---------------------------------------------------------------------------- mutation check
class NoNanCheckGate(SafetyGate):
    """A broken gate: its validation lets non-finite values through."""

    def _validate(self, action, stamp, now):
        try:
            values = self._as_array(action)
        except (ValueError, TypeError, KeyError):
            return None, Reason.BAD_SHAPE
        return so101.to_radians(values), Reason.NONE


class DoubleStepGate(SafetyGate):
    """A broken gate: twice the step limit."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._step = self._step * 2


@pytest.mark.parametrize("broken", [NoNanCheckGate, DoubleStepGate])
def test_mutated_gates_fail_the_invariant_checks(broken):
    """The checks above can fail: the same corpus catches a deliberately broken gate."""
    assert corpus_violations(lambda: broken(CONFIG, kinematics=KIN), sequences=30) > 0


# ---------------------------------------------------------------------------- self-check
def self_check_failures(make, sequences: int, seed: int = 0) -> int:
    """Sequences of gates from ``make()`` in which the SelfCheck (checking each decision before
    it would be written) refused a command."""
    rng = np.random.default_rng(seed)
    failed = 0
    for _ in range(sequences):
        gate = make()
        decisions: list = []
        start = some_start(rng, inside_forbidden=rng.random() < 0.3)
        run_sequence(gate, start, random_sequence(rng, 40), decisions)
        check = SelfCheck(CONFIG)
        check.restart(decisions[0].command_rad)
        failed += not all(check.check(d) for d in decisions[1:])
    return failed


def test_self_check_passes_every_command_of_a_sound_gate():
    assert self_check_failures(make_gate, sequences=100) == 0


class NoTableGate(SafetyGate):
    """A broken gate: its Cartesian check sees no table, box or keep-out."""

    def _depths(self, pts, along=None):
        shape = list(pts.shape[:-1])
        if along is not None:
            del shape[along]
        return np.zeros((*shape, 7 + len(self.config.keep_out)))


@pytest.mark.parametrize("broken", [DoubleStepGate, NoTableGate])
def test_self_check_refuses_the_commands_of_a_broken_gate(broken):
    assert self_check_failures(lambda: broken(CONFIG, kinematics=KIN), sequences=30) > 0


def test_self_check_lets_an_arm_that_starts_outside_the_limits_move_back():
    low = so101.from_radians(so101.JOINT_LIMITS_RAD[:, 0])
    start = HOME.copy()
    start[0] = low[0] + 1.0  # 1° from the hard stop: 4° outside the soft range
    gate = make_gate()
    check = SelfCheck(CONFIG)
    check.restart(gate.engage(start).command_rad)
    decisions = [gate.filter(HOME) for _ in range(60)]
    assert all(check.check(d) for d in decisions), check.failure
    assert decisions[-1].command[0] > low[0] + 5.0  # back inside


def test_invariant_check_lets_an_arm_that_starts_outside_the_limits_move_back_only():
    """The audit re-check (armvla record's log, the replay harness) accepts the gate's ramp
    back in from a start outside the soft range; one tick farther out is a violation."""
    low = so101.from_radians(so101.JOINT_LIMITS_RAD[:, 0])
    start = HOME.copy()
    start[0] = low[0] + 1.0
    gate = make_gate()
    decisions = [gate.engage(start)] + [gate.filter(HOME) for _ in range(60)]
    commands = np.array([d.command_rad for d in decisions])
    assert CHECKER.check(commands) == []
    out = commands.copy()
    out[5:, 0] = out[4, 0] - np.deg2rad(0.5)  # a step back out, then held there
    assert (5, "joint_limit") in [(v.tick, v.invariant) for v in CHECKER.check(out)]
    assert all(v.invariant != "joint_limit" or v.tick == 5 for v in CHECKER.check(out))


def test_self_check_fails_for_good_when_the_config_changes_in_memory():
    config = SafetyConfig()
    gate = SafetyGate(config, kinematics=KIN)
    check = SelfCheck(config, rehash_every=1)
    check.restart(gate.engage(HOME).command_rad)
    assert check.check(gate.filter(HOME))
    config.max_joint_speed_rad_s[0] *= 10  # a list inside the frozen dataclass
    assert not check.check(gate.filter(HOME))
    assert "config changed" in check.failure
    config.max_joint_speed_rad_s[0] /= 10
    assert not check.check(gate.filter(HOME))  # latched
