"""GatedArm on the serial-bus twin through lerobot's unmodified SO-101 driver: every goal write on
the wire is a gate decision, goal := present before torque on, stop holds at once, teardown
parks before torque off."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

from data.keys import SO101_JOINTS
from real.arm import (
    PARK_POSE,
    CalibrationMismatchError,
    GatedArm,
    HealthPoller,
    calibration_problems,
)
from real.feetech_twin import FaultConfig, SO101Twin, TwinConfig
from real.feetech_twin.control_table import BY_NAME, decode_value
from real.feetech_twin.protocol import Instruction
from real.heartbeat import Heartbeat
from safety.config import SafetyConfig
from safety.gate import Reason, SafetyGate

ROBOT_ID = "arm_test"
GOAL = BY_NAME["Goal_Position"].address
TORQUE = BY_NAME["Torque_Enable"].address
TORQUE_LIMIT_ADDRESS = BY_NAME["Torque_Limit"].address


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    calib_dir = tmp_path_factory.mktemp("calibration")
    with SO101Twin(TwinConfig(robot_id=ROBOT_ID, calibration_dir=calib_dir, seed=4)) as twin:
        twin.write_calibration()
        yield twin


class WireLog:
    """Every instruction packet the twin receives, with its arrival time."""

    def __init__(self, twin: SO101Twin):
        self.packets: list[tuple[float, object]] = []
        self._lock = threading.Lock()
        twin.set_packet_listener(self._on_packet)

    def _on_packet(self, packet) -> None:
        with self._lock:
            self.packets.append((time.perf_counter(), packet))

    def writes(self, address: int) -> list[tuple[float, dict[int, int]]]:
        """(time, {id: raw value}) of every WRITE/SYNC_WRITE starting at ``address``."""
        reg = next(r for r in BY_NAME.values() if r.address == address)
        out = []
        with self._lock:
            packets = list(self.packets)
        for t, p in packets:
            if p.code == Instruction.SYNC_WRITE and p.params[0] == address:
                n = p.params[1]
                body = p.params[2:]
                values = {
                    body[i]: decode_value(reg, bytes(body[i + 1 : i + 1 + n]))
                    for i in range(0, len(body), n + 1)
                }
                out.append((t, values))
            elif p.code == Instruction.WRITE and p.params[0] == address:
                out.append((t, {p.servo_id: decode_value(reg, bytes(p.params[1:]))}))
        return out


@pytest.fixture
def arm(twin):
    twin.set_faults(FaultConfig())
    twin.wait_for_late_replies()  # one still in flight would be read as the handshake's answer
    log = WireLog(twin)
    robot = SO101Follower(
        SO101FollowerConfig(
            port=twin.port, id=ROBOT_ID, calibration_dir=Path(twin.config.calibration_dir)
        )
    )
    arm = GatedArm(robot, SafetyGate(calibration=twin.calibration))
    arm.wire = log
    yield arm
    arm.close()
    twin.set_packet_listener(None)


def _flushed(arm: GatedArm) -> WireLog:
    """The wire log once the twin has handled every packet sent so far. Writes get no reply and
    the twin reads the pty on its own thread, so under load it can lag the sender by many
    packets; it handles packets in order, so the reply to a read means all earlier writes are in."""
    arm.robot.bus.sync_read("Present_Position", num_retry=2)
    return arm.wire


def _normalized(arm: GatedArm, raw: dict[int, int]) -> np.ndarray:
    """Raw goal steps from the wire -> lerobot units, through lerobot's own calibration."""
    bus = arm.robot.bus
    ids = {m.id: name for name, m in bus.motors.items()}
    values = bus._normalize(raw)
    return np.array([values[i] for i in sorted(ids)])


def test_goal_is_set_to_present_before_torque_turns_on(arm):
    arm.connect()
    torque_on = [t for t, v in arm.wire.writes(TORQUE) if 1 in v.values()]
    goals = [t for t, _ in arm.wire.writes(GOAL)]
    assert torque_on and goals, "connect() wrote no torque-on or no goal"
    assert min(goals) < min(torque_on)
    assert arm.gate.engaged


def test_every_goal_write_on_the_wire_is_a_gate_decision(arm):
    start = arm.connect().command
    n_connect = len(_flushed(arm).writes(GOAL))
    for i in range(40):
        target = start + np.array([20.0, -10.0, 10.0, 5.0, 30.0, 20.0]) * np.sin(i / 10)
        arm.send(target)
        time.sleep(1 / 60)
    on_wire = _flushed(arm).writes(GOAL)[n_connect:]
    assert len(on_wire) == len(arm.writes) == 40
    for (_, raw), (_, command) in zip(on_wire, arm.writes, strict=True):
        # One encoder step is 0.088 deg (gripper: its travel / range in steps).
        np.testing.assert_allclose(_normalized(arm, raw), command, atol=0.2)


def test_stop_writes_the_hold_at_once_and_latches(arm):
    start = arm.connect().command
    for _ in range(15):
        arm.send(start + np.array([30.0, 0, 0, 0, 0, 0]))
    before = len(arm.wire.writes(GOAL))
    t0 = time.perf_counter()
    stop = arm.stop("test")
    deadline = time.monotonic() + 2.0  # the twin reads the pty on its own thread
    while len(arm.wire.writes(GOAL)) == before and time.monotonic() < deadline:
        time.sleep(0.001)
    last_write_t, raw = arm.wire.writes(GOAL)[-1]
    np.testing.assert_allclose(_normalized(arm, raw), stop.command, atol=0.2)
    assert last_write_t - t0 < 0.1
    held = arm.send(start + np.array([60.0, 0, 0, 0, 0, 0]))
    assert Reason.STOP in held.reasons
    np.testing.assert_array_equal(held.command, stop.command)


def test_close_parks_through_the_gate_then_turns_torque_off(twin, arm):
    start = arm.connect().command
    arm.send(start)
    arm.close()
    goal_times = [t for t, _ in arm.wire.writes(GOAL)]
    torque_off = [t for t, v in arm.wire.writes(TORQUE) if 0 in v.values()]
    assert torque_off and max(goal_times) < max(torque_off)  # park, then torque off
    parked = _normalized(arm, arm.wire.writes(GOAL)[-1][1])
    np.testing.assert_allclose(parked, PARK_POSE, atol=1.0)
    assert all(twin.read_register(s.name, "Torque_Enable") == 0 for s in twin.servos)
    arm.close()  # idempotent


def test_dead_bus_skips_the_park_but_still_closes(twin, arm):
    arm.connect()
    arm.bus_dead = True
    arm.close()
    assert not arm.robot.is_connected


class _DoubleStepGate(SafetyGate):
    """A broken gate: twice the step limit (what the self-check must catch on the wire)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._step = self._step * 2


def _receiver():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    return rx, f"udp://127.0.0.1:{rx.getsockname()[1]}"


def _drain(rx) -> list[bytes]:
    out = []
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(rx.recvfrom(1024)[0])
    return out


def test_every_checked_write_beats_the_heartbeat_through_the_park(twin):
    """SAFETY.md 17: beats while writes pass the self-check, the park included (a relay on the
    heartbeat keeps power while the arm parks), then one STOP at torque off."""
    rx, url = _receiver()
    robot = _follower(twin, Path(twin.config.calibration_dir))
    arm = GatedArm(robot, SafetyGate(calibration=twin.calibration), heartbeat=Heartbeat(url))
    start = arm.connect().command
    for _ in range(10):
        arm.send(start)
    arm.close()
    got = _drain(rx)
    rx.close()
    beats = [g for g in got if not g.split()[1].startswith(b"STOP")]
    assert len(beats) == len(arm.writes) > 10  # the park's writes beat too
    assert got[-1] == b"armvla-heartbeat STOP arm closed: torque off"


def test_a_command_failing_the_self_check_never_reaches_the_wire(twin):
    rx, url = _receiver()
    robot = _follower(twin, Path(twin.config.calibration_dir))
    gate = _DoubleStepGate(calibration=twin.calibration)
    arm = GatedArm(robot, gate, heartbeat=Heartbeat(url))
    arm.wire = WireLog(twin)
    try:
        start = arm.connect().command
        arm.send(start)  # at the target: the guarded ramp ends, full speed from here
        n_connect = len(_flushed(arm).writes(GOAL))
        sent = [arm.send(start + np.array([40.0, 0, 0, 0, 0, 0])) for _ in range(30)]
        assert not arm.self_check.ok and "fails step" in arm.self_check.failure
        assert gate.latched  # and the gate holds from now on
        writes = _flushed(arm).writes(GOAL)[n_connect:]
        on_wire = np.array([_normalized(arm, raw) for _, raw in writes])
        steps = np.abs(np.diff(np.vstack([start, on_wire]), axis=0))[:, 0]
        assert steps.max() <= 3.0 + 0.2  # SAFETY.md's 3°/tick, within one encoder step
        np.testing.assert_allclose(sent[-1].command, on_wire[-1], atol=0.2)  # what was written
    finally:
        arm.close()
        twin.set_packet_listener(None)
    got = _drain(rx)
    rx.close()
    assert any(g.startswith(b"armvla-heartbeat STOP safety self-check failed") for g in got)
    stop_at = next(i for i, g in enumerate(got) if b"STOP" in g)
    assert len(got) == stop_at + 1  # silent for good after the failure, teardown included


def _follower(twin, calibration_dir) -> SO101Follower:
    return SO101Follower(
        SO101FollowerConfig(port=twin.port, id=ROBOT_ID, calibration_dir=calibration_dir)
    )


def test_calibration_that_disagrees_with_the_servos_refuses_torque(twin, tmp_path):
    """SAFETY.md 19: EEPROM limits and the calibration file must agree before torque on."""
    calib = json.loads((Path(twin.config.calibration_dir) / f"{ROBOT_ID}.json").read_text())
    calib["elbow_flex"]["range_min"] += 200
    (tmp_path / f"{ROBOT_ID}.json").write_text(json.dumps(calib))
    twin.set_faults(FaultConfig())
    robot = _follower(twin, tmp_path)
    arm = GatedArm(robot, SafetyGate(calibration=twin.calibration))
    with pytest.raises(CalibrationMismatchError, match="elbow_flex: servo EEPROM range") as err:
        arm.connect()
    assert "lerobot-calibrate" in str(err.value)
    assert all(twin.read_register(s.name, "Torque_Enable") == 0 for s in twin.servos)
    assert not robot.bus.is_connected  # the port is free for the next try
    arm = GatedArm(_follower(twin, Path(twin.config.calibration_dir)), SafetyGate())
    arm.connect()  # the matching file connects
    arm.close()


def test_the_gripper_torque_cap_of_the_safety_config_is_set_and_read_back(twin, monkeypatch):
    """SAFETY.md 15: the gripper's runtime torque cap is the config's, whatever lerobot's
    configure leaves in the EEPROM (500 = 50 %); a servo that does not take it keeps torque off."""
    twin.set_faults(FaultConfig())
    calib = Path(twin.config.calibration_dir)
    arm = GatedArm(_follower(twin, calib), SafetyGate(SafetyConfig(gripper_torque_limit=0.3)))
    arm.connect()
    try:
        assert twin.read_register("gripper", "Torque_Limit") == 300
        assert twin.read_register("gripper", "Max_Torque_Limit") == 500
        assert twin.read_register("elbow_flex", "Torque_Limit") == 1000  # the arm's untouched
    finally:
        arm.close()

    robot = _follower(twin, calib)
    write = type(robot.bus).write

    def lost_write(self, data_name, motor, value, **kwargs):
        if data_name != "Torque_Limit":
            write(self, data_name, motor, value, **kwargs)

    monkeypatch.setattr(type(robot.bus), "write", lost_write)
    with twin.lock:  # as after a power cycle
        twin.servo("gripper").set("Torque_Limit", 1000)
    arm = GatedArm(robot, SafetyGate(SafetyConfig(gripper_torque_limit=0.3)))
    with pytest.raises(CalibrationMismatchError, match="torque cap reads back as 50 %"):
        arm.connect()
    assert all(twin.read_register(s.name, "Torque_Enable") == 0 for s in twin.servos)


def test_a_grasp_hold_lowers_the_gripper_torque_cap_below_its_overload_threshold(arm, twin):
    arm.connect()
    log = _flushed(arm)
    cap = TORQUE_LIMIT_ADDRESS
    before = len(log.writes(cap))
    assert arm.set_grasp_torque(True) and arm.set_grasp_torque(True)  # the second: no write
    assert twin.read_register("gripper", "Torque_Limit") == 220  # grasp_torque_limit
    assert (
        twin.read_register("gripper", "Torque_Limit")
        < twin.read_register("gripper", "Overload_Torque") * 10
    )  # lerobot's 25 %: the overload protection does not trip while holding
    assert arm.set_grasp_torque(False)
    assert twin.read_register("gripper", "Torque_Limit") == 500  # gripper_torque_limit again
    writes = _flushed(arm).writes(cap)[before:]
    gripper_id = arm.robot.bus.motors["gripper"].id
    assert [w for _, w in writes] == [{gripper_id: 220}, {gripper_id: 500}]
    with pytest.raises(ValueError, match="grasp_torque_limit"):
        SafetyConfig(grasp_torque_limit=0.6)


def test_present_position_outside_the_calibrated_range_is_a_problem():
    class Cal:
        def __init__(self, lo, hi, offset=0):
            self.range_min, self.range_max, self.homing_offset = lo, hi, offset

    class Bus:
        protocol_version = 0

        def read_calibration(self):
            return {"a": Cal(1000, 3000), "b": Cal(1000, 3000, offset=5)}

    class Robot:
        bus = Bus()
        calibration = {"a": Cal(1000, 3000), "b": Cal(1000, 3000)}

    problems = calibration_problems(Robot(), {"a": 3100, "b": 2000}, tolerance_steps=50)
    assert problems == [
        "a: present position 3100 outside its calibrated range 1000-3000",
        "b: servo homing offset 5, file 0",
    ]
    assert calibration_problems(Robot(), {"a": 3040, "b": 2000}, 50) == [
        "b: servo homing offset 5, file 0"
    ]
    Robot.calibration = {}
    assert calibration_problems(Robot(), {}, 50) == ["no calibration file for this robot id"]


class _HealthArm:
    """Stands in for GatedArm's health reads: records their ticks; raises ``error`` if set."""

    def __init__(self, error: Exception | None = None):
        self.reads: list[int] = []
        self.error = error
        self.tick = 0

    def read_health(self):
        self.reads.append(self.tick)
        if self.error is not None:
            raise self.error
        return "health"


def test_health_polls_read_once_at_the_polling_rate():
    fake = _HealthArm()
    poller = HealthPoller(fake, fps=30, rate_hz=3.0)
    results = []
    for tick in range(30):
        fake.tick = tick
        results.append(poller.poll(tick))
    assert fake.reads == [0, 10, 20]  # 3 Hz
    assert [t for t, (health, _) in enumerate(results) if health == "health"] == [0, 10, 20]
    assert all(ok for _, ok in results)
    with pytest.raises(ValueError, match=">= 2 Hz"):
        HealthPoller(fake, fps=30, rate_hz=1.0)


def test_a_health_poll_without_reply_is_a_failed_read():
    fake = _HealthArm(error=ConnectionError("no reply"))
    poller = HealthPoller(fake, fps=30)
    results = [poller.poll(tick) for tick in range(13)]
    assert [t for t, (_, ok) in enumerate(results) if not ok] == [0, 10]
    assert all(health is None for health, _ in results)


def test_a_health_poll_no_servo_could_report_is_a_failed_read_not_an_alarm():
    """Seen under load: a reply read late, as another register's, gave 211 °C, 1.8 V and
    undefined status bits; that is a bad read for the bus rules, while a real alarm parks."""
    from types import SimpleNamespace

    from real.arm import ImplausibleReadError

    motors = {name: None for name in ("a", "b")}
    arm = SimpleNamespace(robot=SimpleNamespace(bus=SimpleNamespace(motors=motors)))

    def regs(temp, volts, status):
        return {
            "Present_Temperature": {"a": 30, "b": temp},
            "Present_Voltage": {"a": 120, "b": volts},
            "Present_Current": {"a": 10, "b": 10},
            "Status": {"a": 0, "b": status},
        }

    real_alarm = GatedArm.health_from(arm, regs(64, 118, 4))  # hot servo, overheat bit
    assert real_alarm.temperature_c[1] == 64 and real_alarm.status[1] == 4
    for bad, what in (
        (regs(211, 120, 0), "211 °C"),
        (regs(30, 18, 0), "1.8 V"),
        (regs(30, 120, 182), "status 182"),
    ):
        with pytest.raises(ImplausibleReadError, match=f"b: {what}"):
            GatedArm.health_from(arm, bad)

    poller = HealthPoller(_HealthArm(error=ImplausibleReadError("b: 211 °C")), fps=30)
    assert poller.poll(0) == (None, False)


def test_a_late_reply_is_never_read_as_the_answer_to_the_next_read(arm, twin):
    """Replies that arrive after their read timed out sit in the receive buffer or arrive during
    the next read; scservo_sdk matches replies by servo id only, so one would be read as the
    next read's answer (Present_Current as a position, a voltage as a temperature). The
    control loop's reads - positions each tick, a health poll every few - must either fail or
    return the servos' own values."""
    from real.arm import ImplausibleReadError

    arm.connect()
    truth = arm.present()
    late_before = twin.bus.stats.late_replies
    twin.set_faults(FaultConfig(late_reply_prob=0.3, late_reply_s=0.1))
    positions, health, failed = [], [], 0
    try:
        for _ in range(80):
            obs, ok = arm.read_observation()
            if ok:
                positions.append(np.array([obs[f"{j}.pos"] for j in SO101_JOINTS]))
            failed += not ok
            try:
                health.append(arm.read_health())
            except (ConnectionError, ImplausibleReadError):
                failed += 1
    finally:
        twin.set_faults(FaultConfig())
    assert twin.bus.stats.late_replies - late_before >= 20 and failed >= 10  # the fault did fire
    assert len(positions) >= 30 and len(health) >= 5
    # The arm holds still: every position read is the servo's own position, within noise.
    for read in positions:
        assert np.abs(read - truth).max() < 2.0, (read, truth)
    for h in health:  # the twin's servos are cool, on 12 V, with no alarm
        assert np.all(h.temperature_c < 60) and np.all(np.abs(h.voltage_v - 12) < 1.5)
        assert np.all(h.status == 0)


def test_a_reply_that_came_after_its_read_gave_up_is_dropped_not_read_next(arm, twin):
    """Without the guard every later read would take the reply before its own: the arm's state
    one read behind, for good."""
    arm.connect()
    bus = arm.robot.bus
    bus.sync_read("Present_Position", num_retry=2)
    twin.set_faults(FaultConfig(late_reply_prob=1.0, late_reply_s=0.1))
    try:
        with pytest.raises(ConnectionError):
            bus.sync_read("Present_Position", num_retry=0)
    finally:
        twin.set_faults(FaultConfig())
    deadline = time.monotonic() + 2.0
    while bus.port_handler.ser.in_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bus.port_handler.ser.in_waiting > 0  # the late reply has arrived, unread
    bus.sync_read("Present_Position", num_retry=0)
    time.sleep(0.05)
    assert bus.port_handler.ser.in_waiting == 0  # the read took its own reply; none is left


def test_a_position_read_farther_than_a_joint_can_move_is_a_failed_read():
    from types import SimpleNamespace

    from real.arm import ImplausibleReadError

    arm = SimpleNamespace(_last_position=None)

    def obs(**moved):
        return {f"{j}.pos": moved.get(j, 10.0) for j in SO101_JOINTS}

    GatedArm.check_plausible(arm, obs(), now=0.0)
    GatedArm.check_plausible(arm, obs(elbow_flex=20.0), now=1 / 30)  # 300 °/s: a fast joint
    with pytest.raises(ImplausibleReadError, match="wrist_roll: 10.0 -> -170.0"):
        GatedArm.check_plausible(arm, obs(elbow_flex=20.0, wrist_roll=-170.0), now=2 / 30)
    with pytest.raises(ImplausibleReadError, match="gripper"):
        GatedArm.check_plausible(arm, obs(elbow_flex=20.0, gripper=float("nan")), now=2 / 30)
    # The last plausible reading stays the reference; given time, a big move is possible.
    GatedArm.check_plausible(arm, obs(wrist_roll=-170.0), now=1.0)
    assert arm._last_position[0][SO101_JOINTS.index("wrist_roll")] == -170.0
