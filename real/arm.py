"""GatedArm: a lerobot robot whose motion and torque commands all go through one SafetyGate.

lerobot's ``SO101Follower`` (or any lerobot robot with a Feetech/Dynamixel ``bus``) does the
wire protocol; this class owns *when* and *what* it is told to do:

* connect: the goal register := the present position *before* lerobot's configure() turns the
  torque on, so the arm never jumps on power-up; then the gate engages on that position.
* :meth:`send`: gate -> ``robot.send_action`` under one lock; returns the gate's decision.
* :meth:`stop` (any thread): latches the gate and writes the hold at once, without waiting for
  the control loop's next tick.
* :meth:`close`: hold -> guarded park through the gate (bounded time, skipped when the bus is
  dead) -> torque off -> port closed. Idempotent, safe on every exit path.
* every write: the decision is first re-checked by :class:`~safety.check.SelfCheck`
  (independent of the gate's code); one that fails is not written, the arm holds its last
  checked command and the heartbeat stops for good. Each checked write beats the heartbeat,
  the guarded park included, so a relay on it keeps power while the arm parks.

Every write is appended to :attr:`writes` as ``(seq, command)`` so tests can match what reached
the wire against the gate's decisions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque

import numpy as np
from lerobot.motors.motors_bus import get_address

from data.keys import SO101_JOINTS, SO101_MOTOR_FEATURES
from real.heartbeat import Heartbeat
from safety.check import SelfCheck
from safety.gate import GateDecision, Reason, SafetyGate
from safety.supervisor import GRIPPER, ServoHealth

logger = logging.getLogger(__name__)

# Park pose (lerobot units): folded over the base, gripper half open. Reached through the gate.
PARK_POSE = np.array([0.0, -95.0, 90.0, 70.0, 0.0, 30.0])
# What lerobot's bus and cameras raise when a read fails.
BUS_ERRORS = (ConnectionError, TimeoutError, RuntimeError)
# STS3215 registers of a health poll (FEETECH.md), and the current register's unit.
HEALTH_REGISTERS = ("Present_Temperature", "Present_Voltage", "Present_Current", "Status")
CURRENT_A_PER_UNIT = 0.0065
# Status bits an STS3215 defines (FEETECH.md: 0 voltage, 1 encoder, 2 temperature, 3 current,
# 5 overload); a reply with others set, a temperature past its sensor's range or a supply the
# servo could not answer on is a corrupted or misattributed reply, not an alarm.
STATUS_BITS = 0b0010_1111
# Status packet layout (FEETECH.md: 0xFF 0xFF ID LEN ERROR PARAMS... CHECKSUM) and scservo_sdk's
# result code for a good packet.
PKT_ID, PKT_LENGTH, PKT_ERROR, PKT_DATA = 2, 3, 4, 5
COMM_SUCCESS = 0
MAX_PLAUSIBLE_C = 125.0
MIN_PLAUSIBLE_V = 3.0
# Faster than any joint can move (the STS3215's no-load speed is ~300 °/s), in lerobot units per
# second, plus a margin for reading noise: a position read that implies more is not a reading.
MAX_PLAUSIBLE_SPEED = 600.0
JUMP_MARGIN = 5.0


class ImplausibleReadError(ConnectionError):
    """A read whose values no servo can report (a corrupted or misattributed reply)."""


class HealthPoller:
    """Polls servo health at ``rate_hz`` (SAFETY.md 13: >= 2 Hz) from a control loop's ticks.

    A poll is one block read (:meth:`GatedArm.read_health`) on every ``fps // rate_hz``-th tick.
    ``poll(tick)`` returns a :class:`ServoHealth` on the ticks a poll succeeds (None otherwise);
    a poll the bus does not answer, or answers with values no servo can report, counts as a
    failed read (the next one is due as usual).
    """

    def __init__(self, arm: GatedArm, fps: float, rate_hz: float = 3.0):
        if rate_hz < 2.0:
            raise ValueError(f"servo health must be polled at >= 2 Hz, got {rate_hz}")
        self.arm = arm
        self.every = max(1, int(fps // rate_hz))

    def poll(self, tick: int) -> tuple[ServoHealth | None, bool]:
        """(health or None when no poll succeeds this tick, whether the bus answered)."""
        if tick % self.every:
            return None, True
        try:
            return self.arm.read_health(), True
        except BUS_ERRORS as exc:  # ImplausibleReadError included: a failed read, not a PARK
            logger.warning("servo health poll failed: %s", exc)
            return None, False


def tracking_error_rad(command: np.ndarray | None, obs: dict | None) -> float:
    """Largest |command - measured| over the five arm joints (rad). The gripper is left out: it
    holds an object by pressing on it, which its torque limit and grasp-hold handle."""
    if command is None or obs is None:
        return 0.0
    measured = np.array([obs[f"{j}.pos"] for j in SO101_JOINTS[:5]], dtype=np.float64)
    return float(np.deg2rad(np.abs(np.asarray(command[:5]) - measured).max()))


class GatedArm:
    """Args:
    robot: a lerobot robot (not yet connected) with ``bus`` and the SO-101's motors.
    gate: the safety gate (built with the robot's calibration).
    park_pose: where :meth:`close` parks before torque off (lerobot units), None to skip.
    park_timeout_s: longest guarded park before torque off.
    present_tolerance_steps: how far (encoder steps, ~0.09° each) outside its calibrated range a
        joint may read at connect before the calibration is taken to be wrong.
    heartbeat: where checked writes beat (SAFETY.md 17); None = no heartbeat output.
    loop_read_retries: lerobot's ``num_read_retries`` once connected (None keeps the robot
        config's). A read whose reply never comes waits scservo's 34 ms per try, so lerobot's
        two retries stretch one tick to over 100 ms on a noisy bus; the control loop retries
        on the next tick instead, and the supervisor holds after 3 failed reads in a row.
    """

    def __init__(
        self,
        robot,
        gate: SafetyGate,
        park_pose: np.ndarray | None = PARK_POSE,
        park_timeout_s: float = 3.0,
        present_tolerance_steps: int = 50,
        heartbeat: Heartbeat | None = None,
        loop_read_retries: int | None = 0,
    ):
        self.robot = robot
        self.loop_read_retries = loop_read_retries
        self.self_check = SelfCheck(gate.config, gate.calibration)
        self.heartbeat = heartbeat or Heartbeat(None)
        self._last_written: GateDecision | None = None
        self.present_tolerance_steps = present_tolerance_steps
        self.gate = gate
        self.park_pose = None if park_pose is None else np.asarray(park_pose, dtype=np.float64)
        self.park_timeout_s = park_timeout_s
        self.writes: deque[tuple[int, np.ndarray]] = deque(maxlen=100_000)
        self.bus_dead = False
        self._lock = threading.RLock()  # one writer on the bus at a time
        self._connected = False
        self._closed = False
        self._last_position: tuple[np.ndarray, float] | None = None  # last plausible, when
        self._grasp_torque = False  # the gripper's cap is grasp_torque_limit (a hold is on)

    # ------------------------------------------------------------------ lifecycle
    def connect(self, calibrate: bool = False) -> GateDecision:
        """Connects lerobot's robot with goal := present before torque on; engages the gate."""
        robot = self.robot
        original_configure = robot.configure

        def configure_holding_present():
            # lerobot's configure() ends by enabling torque: make the goal the present first.
            bus = robot.bus
            bus.disable_torque()
            present = bus.sync_read("Present_Position", normalize=False)
            problems = calibration_problems(robot, present, self.present_tolerance_steps)
            if problems:  # SAFETY.md 19: the torque stays off
                raise CalibrationMismatchError(
                    "refusing torque: the calibration does not match the arm: "
                    + "; ".join(problems)
                    + f". Recalibrate: lerobot-calibrate --robot.type={robot.name} "
                    f"--robot.port={getattr(robot.config, 'port', '<port>')} --robot.id={robot.id}"
                )
            bus.sync_write("Goal_Position", present, normalize=False)
            original_configure()
            self._cap_gripper_torque()

        robot.configure = configure_holding_present
        guard_against_stale_replies(robot.bus)
        try:
            robot.connect(calibrate=calibrate)
        except BaseException:
            with contextlib.suppress(Exception):  # torque stays off; free the port for a retry
                if robot.is_connected:
                    robot.disconnect()
                else:
                    robot.bus.disconnect(disable_torque=False)
            raise
        finally:
            robot.configure = original_configure
        self._connected = True
        config = getattr(robot, "config", None)
        if self.loop_read_retries is not None and hasattr(config, "num_read_retries"):
            config.num_read_retries = self.loop_read_retries
        present = self.present()
        self._last_position = (present, time.monotonic())
        decision = self.gate.engage(present)
        self.self_check.restart(decision.command_rad)
        self._last_written = decision  # the goal register holds it already
        return decision

    def _cap_gripper_torque(self) -> None:
        """SAFETY.md 15: the gripper's runtime torque cap (``Torque_Limit``, RAM) is set to the
        safety config's ``gripper_torque_limit`` and read back with the EEPROM cap; if the servo
        would still allow more, torque goes off and the connect fails."""
        bus = self.robot.bus
        name = SO101_JOINTS[GRIPPER]
        if name not in bus.motors:
            return
        cap = round(self.gate.config.gripper_torque_limit * 1000)  # 0.1 % units
        bus.write("Torque_Limit", name, cap, normalize=False, num_retry=2)
        self._grasp_torque = False
        have = min(
            int(bus.read(reg, name, normalize=False, num_retry=2))
            for reg in ("Max_Torque_Limit", "Torque_Limit")
        )
        if have > cap:
            bus.disable_torque()
            raise CalibrationMismatchError(
                f"refusing torque: the gripper's torque cap reads back as {have / 10:g} %, above "
                f"the safety config's gripper_torque_limit {cap / 10:g} % (the servo did not "
                "take the write; check the bus and the servo's EEPROM lock)"
            )

    def set_grasp_torque(self, holding: bool) -> bool:
        """SAFETY.md 15: while a grasp-hold squeezes an object the gripper's runtime torque cap
        is the config's ``grasp_torque_limit``, otherwise ``gripper_torque_limit``. Written only
        when it changes; returns whether the servo has the cap asked for. A failed write is
        retried on the next call (either cap is safe; the low one only grips more gently)."""
        if holding == self._grasp_torque or self.bus_dead:
            return holding == self._grasp_torque
        bus, name = self.robot.bus, SO101_JOINTS[GRIPPER]
        if name not in bus.motors:
            return False
        cfg = self.gate.config
        cap = cfg.grasp_torque_limit if holding else cfg.gripper_torque_limit
        with self._lock:  # between two goal writes
            try:
                bus.write("Torque_Limit", name, round(cap * 1000), normalize=False)
            except BUS_ERRORS as exc:
                logger.warning("gripper torque cap %.0f %% not written: %s", cap * 100, exc)
                return False
        self._grasp_torque = holding
        return True

    def present(self) -> np.ndarray:
        """Measured joint positions [6] (lerobot units), read from the bus."""
        values = self.robot.bus.sync_read("Present_Position")
        return np.array([values[name] for name in SO101_JOINTS], dtype=np.float64)

    def __enter__(self) -> GatedArm:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_observation(self) -> tuple[dict | None, bool]:
        """lerobot's observation (joint state, camera frames), or (None, False) when the bus or
        a camera fails this tick (logged; the supervisor counts failed reads)."""
        try:
            obs = self.robot.get_observation()
            self.check_plausible(obs)
            return obs, True
        except BUS_ERRORS as exc:
            logger.warning("observation failed: %s", exc)
            return None, False

    def check_plausible(self, obs: dict, now: float | None = None) -> None:
        """Raises :class:`ImplausibleReadError` when a joint reads farther from its last
        plausible reading than it could have moved since (a reply of another register read as
        its position); otherwise remembers this reading."""
        now = time.monotonic() if now is None else now
        position = np.array([obs[f"{j}.pos"] for j in SO101_JOINTS], dtype=np.float64)
        if self._last_position is not None:
            last, when = self._last_position
            bound = MAX_PLAUSIBLE_SPEED * max(0.0, now - when) + JUMP_MARGIN
            jumped = np.flatnonzero(~(np.abs(position - last) <= bound))
            if jumped.size:
                raise ImplausibleReadError(
                    "implausible position read "
                    + ", ".join(
                        f"{SO101_JOINTS[i]}: {last[i]:.1f} -> {position[i]:.1f}" for i in jumped
                    )
                    + f" in {now - when:.3f} s"
                )
        self._last_position = (position, now)

    def read_health(self) -> ServoHealth:
        """One poll of every servo's temperature, supply voltage, current and status bits, as
        one sync read of the block that holds them (Present_Voltage .. Present_Current, 9 bytes
        per servo on the STS3215). One read instead of one per register is less bus time, and
        no other read the loop makes has that reply length, so a late reply can never be taken
        for a health reply or the other way round (:func:`guard_against_stale_replies`).
        Retried as often as lerobot retries its position reads."""
        bus = self.robot.bus
        model = next(iter(bus.motors.values())).model
        where = {name: get_address(bus.model_ctrl_table, model, name) for name in HEALTH_REGISTERS}
        start = min(addr for addr, _ in where.values())
        length = max(addr + n for addr, n in where.values()) - start
        ids = [m.id for m in bus.motors.values()]
        retries = getattr(getattr(self.robot, "config", None), "num_read_retries", 0) or 0
        with self._lock:  # between two goal writes, never in the middle of one
            bus._sync_read(  # lerobot 0.6.1's block read; its values are split up below
                start, length, ids, num_retry=retries, err_msg="Failed to read servo health."
            )
            regs = {
                name: {
                    m: bus.sync_reader.getData(motor.id, addr, n) for m, motor in bus.motors.items()
                }
                for name, (addr, n) in where.items()
            }
        return self.health_from(regs)

    def health_from(self, regs: dict[str, dict[str, int]]) -> ServoHealth:
        """ServoHealth from raw reads of :data:`HEALTH_REGISTERS` (bus motor order)."""
        motors = list(self.robot.bus.motors)

        def column(name: str) -> np.ndarray:
            return np.array([regs[name][m] for m in motors], dtype=np.float64)

        health = ServoHealth(
            temperature_c=column("Present_Temperature"),
            voltage_v=column("Present_Voltage") * 0.1,  # 0.1 V units
            current_a=column("Present_Current") * CURRENT_A_PER_UNIT,
            status=column("Status").astype(np.int64),
        )
        bad = [
            f"{m}: {what}"
            for i, m in enumerate(motors)
            for what, wrong in (
                (f"{health.temperature_c[i]:g} °C", health.temperature_c[i] > MAX_PLAUSIBLE_C),
                (f"{health.voltage_v[i]:g} V", health.voltage_v[i] < MIN_PLAUSIBLE_V),
                (f"status {health.status[i]}", health.status[i] & ~STATUS_BITS),
            )
            if wrong
        ]
        if bad:
            raise ImplausibleReadError("implausible values " + ", ".join(bad))
        return health

    # ------------------------------------------------------------------ commands
    def send(self, action, stamp: float | None = None, now: float | None = None) -> GateDecision:
        """Gate ``action`` (lerobot units, dict or [6]; None = no fresh action) and write it.
        Returns the decision written (the last checked one if the self-check refused it)."""
        with self._lock:
            return self._write(self.gate.filter(action, stamp=stamp, now=now))

    def stop(self, source: str = "operator") -> GateDecision:
        """Latched stop from any thread: the hold is written now, not at the next tick."""
        with self._lock:
            return self._write(self.gate.request_stop(source))

    def _write(self, decision: GateDecision) -> GateDecision:
        if self.bus_dead:
            return decision
        if not self.self_check.check(decision):
            why = f"safety self-check failed: {self.self_check.failure}"
            self.heartbeat.stop(why)
            if not self.gate.latched:
                self.gate.latch(why)
            if self._last_written is None:
                return decision
            decision = self._last_written  # hold the last command that passed
        self.robot.send_action(decision.as_action())
        self.writes.append((decision.seq, decision.command.copy()))
        self._last_written = decision
        if self.self_check.ok:
            self.heartbeat.beat()
        return decision

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """hold -> guarded park (<= park_timeout_s, skipped if the bus is dead) -> torque off ->
        port closed. Safe to call twice and from ``finally`` blocks."""
        if self._closed or not self._connected:
            return
        self._closed = True
        with self._lock:
            try:
                if not self.bus_dead:
                    self._hold_and_park()
            except Exception as exc:  # the bus may have died mid-park: torque off regardless
                logger.error("park failed (%s); turning torque off where the arm is", exc)
                self.bus_dead = True
            finally:
                try:
                    self.robot.bus.disable_torque(num_retry=2)
                except Exception as exc:
                    logger.error("torque off failed: %s", exc)
                try:
                    self.robot.disconnect()
                except Exception as exc:
                    logger.error("closing the port failed: %s", exc)
                self.heartbeat.stop("arm closed: torque off", fault=False)
                self.heartbeat.close()

    def _hold_and_park(self) -> None:
        if not self.gate.engaged:
            return
        if not self.self_check.ok:  # the gate cannot be trusted to park: hold, then torque off
            self._write(self.gate.latch("teardown"))
            return
        self._write(self.gate.latch("teardown"))
        if self.park_pose is None:
            return
        self.gate.reset()
        deadline = time.monotonic() + self.park_timeout_s
        period = self.gate.config.dt
        while time.monotonic() < deadline:
            decision = self.gate.filter(self.park_pose)
            self._write(decision)
            if np.all(np.abs(decision.command - self.park_pose) < 0.5) and not (
                decision.reasons & Reason.WORKSPACE
            ):
                break
            time.sleep(period)
        self._write(self.gate.latch("parked"))


class CalibrationMismatchError(ValueError):
    """The servos disagree with the calibration file (EEPROM limits, homing offsets, present
    positions) or with the safety config (the gripper's torque cap): torque stays off."""


def guard_against_stale_replies(bus) -> None:
    """Makes a reply that belongs to an earlier request unable to pass for the present one.

    scservo_sdk (like dynamixel_sdk's Python port) calls ``clearPort()`` before sending each
    packet but implements it as pyserial's ``flush()``, which waits for *output*; the C SDKs
    discard unread *input* there (``tcflush(TCIFLUSH)``). Bytes still in the receive buffer are
    then the tail of an earlier exchange: a reply that came after its read timed out, or the
    rest of a sync read abandoned at a corrupted packet. And a sync read takes the first reply
    that carries the right servo id, whatever its length, so such a reply is read as the next
    read's answer from another register (CI saw a late Present_Voltage reply as 211 °C).

    Two guards, installed on this bus's port and packet handlers:

    * before each request, unread input is discarded (half-duplex, one request at a time:
      whatever came before the request is stale);
    * a sync read reply must carry the requested number of data bytes; one that does not (a
      late reply of another register, arriving during this read) is skipped like another
      servo's. A late reply of a register of the same width can still pass; position reads
      are also checked for jumps no servo can make (:meth:`GatedArm.read_observation`).
    """
    port = getattr(bus, "port_handler", None)
    handler = getattr(bus, "packet_handler", None)
    if port is None or handler is None or getattr(port, "_armvla_guarded", False):
        return

    def clear_port() -> None:
        ser = port.ser
        ser.flush()
        ser.reset_input_buffer()

    def read_rx(port_, servo_id: int, length: int):
        while True:
            packet, result = handler.rxPacket(port_)
            if result != COMM_SUCCESS:
                return [], result, 0
            if packet[PKT_ID] == servo_id and packet[PKT_LENGTH] == length + 2:
                return list(packet[PKT_DATA : PKT_DATA + length]), result, packet[PKT_ERROR]

    port.clearPort = clear_port
    handler.readRx = read_rx
    port._armvla_guarded = True


def calibration_problems(robot, present_raw: dict[str, int], tolerance_steps: int) -> list[str]:
    """What disagrees between the calibration file, the servos' EEPROM limits (and homing
    offsets) and the present positions (raw steps), one line per problem; [] when all agree."""
    expected = robot.calibration or {}
    if not expected:
        return ["no calibration file for this robot id"]
    bus = robot.bus
    in_servos = bus.read_calibration()
    problems = []
    for name, want in expected.items():
        have = in_servos.get(name)
        if have is None:
            problems.append(f"{name} is in the calibration file but not on the bus")
            continue
        if (have.range_min, have.range_max) != (want.range_min, want.range_max):
            problems.append(
                f"{name}: servo EEPROM range {have.range_min}-{have.range_max}, "
                f"file {want.range_min}-{want.range_max}"
            )
        if getattr(bus, "protocol_version", 0) == 0 and have.homing_offset != want.homing_offset:
            problems.append(
                f"{name}: servo homing offset {have.homing_offset}, file {want.homing_offset}"
            )
        raw = present_raw.get(name)
        lo, hi = want.range_min - tolerance_steps, want.range_max + tolerance_steps
        if raw is not None and not lo <= raw <= hi:
            problems.append(
                f"{name}: present position {raw} outside its calibrated range "
                f"{want.range_min}-{want.range_max}"
            )
    return problems


def action_dict(values: np.ndarray) -> dict[str, float]:
    """[6] lerobot units -> ``{"shoulder_pan.pos": ...}``."""
    return {k: float(v) for k, v in zip(SO101_MOTOR_FEATURES, values, strict=True)}
