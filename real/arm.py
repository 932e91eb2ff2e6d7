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

Every write is appended to :attr:`writes` as ``(seq, command)`` so tests can match what reached
the wire against the gate's decisions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from data.keys import SO101_JOINTS, SO101_MOTOR_FEATURES
from real.safety_gate import GateDecision, Reason, SafetyGate

logger = logging.getLogger(__name__)

# Park pose (lerobot units): folded over the base, gripper half open. Reached through the gate.
PARK_POSE = np.array([0.0, -95.0, 90.0, 70.0, 0.0, 30.0])


class GatedArm:
    """Args:
    robot: a lerobot robot (not yet connected) with ``bus`` and the SO-101's motors.
    gate: the safety gate (built with the robot's calibration).
    park_pose: where :meth:`close` parks before torque off (lerobot units), None to skip.
    park_timeout_s: longest guarded park before torque off.
    """

    def __init__(
        self,
        robot,
        gate: SafetyGate,
        park_pose: np.ndarray | None = PARK_POSE,
        park_timeout_s: float = 3.0,
    ):
        self.robot = robot
        self.gate = gate
        self.park_pose = None if park_pose is None else np.asarray(park_pose, dtype=np.float64)
        self.park_timeout_s = park_timeout_s
        self.writes: deque[tuple[int, np.ndarray]] = deque(maxlen=100_000)
        self.bus_dead = False
        self._lock = threading.RLock()  # one writer on the bus at a time
        self._connected = False
        self._closed = False

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
            bus.sync_write("Goal_Position", present, normalize=False)
            original_configure()

        robot.configure = configure_holding_present
        try:
            robot.connect(calibrate=calibrate)
        finally:
            robot.configure = original_configure
        self._connected = True
        return self.gate.engage(self.present())

    def present(self) -> np.ndarray:
        """Measured joint positions [6] (lerobot units), read from the bus."""
        values = self.robot.bus.sync_read("Present_Position")
        return np.array([values[name] for name in SO101_JOINTS], dtype=np.float64)

    def __enter__(self) -> GatedArm:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def send(self, action, stamp: float | None = None, now: float | None = None) -> GateDecision:
        """Gate ``action`` (lerobot units, dict or [6]; None = no fresh action) and write it."""
        with self._lock:
            decision = self.gate.filter(action, stamp=stamp, now=now)
            self._write(decision)
            return decision

    def stop(self, source: str = "operator") -> GateDecision:
        """Latched stop from any thread: the hold is written now, not at the next tick."""
        with self._lock:
            decision = self.gate.request_stop(source)
            self._write(decision)
            return decision

    def _write(self, decision: GateDecision) -> None:
        if self.bus_dead:
            return
        self.robot.send_action(decision.as_action())
        self.writes.append((decision.seq, decision.command.copy()))

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

    def _hold_and_park(self) -> None:
        if not self.gate.engaged:
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


def action_dict(values: np.ndarray) -> dict[str, float]:
    """[6] lerobot units -> ``{"shoulder_pan.pos": ...}``."""
    return {k: float(v) for k, v in zip(SO101_MOTOR_FEATURES, values, strict=True)}
