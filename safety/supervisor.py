"""Supervisor: the watchdogs and health rules around the gate, as a pure state machine.

The control loop reports what it saw each tick (a fresh action or not, the observation's age and
whether its frames changed, whether the bus read worked, servo health when polled, how long the
tick took); :meth:`Supervisor.tick` answers with one :class:`Directive` for this tick:

========================  =======================================================  =========
condition                 directive                                                latched
========================  =======================================================  =========
all fresh and healthy     RUN (send the policy's action through the gate)          -
no fresh action 100 ms    HALT (gate.brake(): smooth stop)                         no
no fresh action 2 s       PARK (park, torque off)                                  yes
stale/frozen observation  no new inference (``infer=False``); freshness rules      no
3 bus reads failed        HOLD (freeze goals)                                      yes
bus silent 0.5 s          POWER_CUT (heartbeat stops; the relay cuts the power)    yes
temperature >= 55 °C      RUN at ``derate_fraction`` speed                         no
temperature >= 62 °C      PARK                                                     yes
stall (current high and
  tracking error > 0.5 s) RELIEVE (goal := present, then torque off)               yes
voltage / status alarm    PARK                                                     yes
loop overruns in a row    HOLD (protective stop)                                   yes
========================  =======================================================  =========

Latched directives stay until :meth:`Supervisor.reset` (a deliberate operator action). The
heartbeat (:attr:`Supervisor.heartbeat_ok`) is what an external relay watches: it goes false on
POWER_CUT or when the loop stops calling :meth:`tick`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from safety.config import SafetyConfig


class Directive(enum.IntEnum):
    """What the control loop does this tick, by increasing severity."""

    RUN = 0
    HALT = 1  # brake smoothly to rest (no fresh command)
    HOLD = 2  # latched protective stop: repeat the held command
    RELIEVE = 3  # stall: goal := present, then torque off
    PARK = 4  # guarded park, then torque off
    POWER_CUT = 5  # the bus is dead: stop the heartbeat so the relay cuts power


GRIPPER = 5  # index of the gripper in the health arrays (the bus's motor order)
OVERLOAD_BIT = 32  # STS3215 Status bit 5 (FEETECH.md)
LATCHING = {Directive.HOLD, Directive.RELIEVE, Directive.PARK, Directive.POWER_CUT}


@dataclass(frozen=True)
class ServoHealth:
    """One health poll of the servos (arrays over the six motors)."""

    temperature_c: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    status: np.ndarray  # Status register bits (nonzero = an alarm)


@dataclass(frozen=True)
class TickReport:
    """What the control loop observed this tick."""

    now: float  # monotonic seconds
    action_time: float | None = None  # when the newest action was produced; None = never
    observation_time: float | None = None  # when the newest observation was captured
    frames_changed: bool = True  # camera frames differ from the previous tick's
    bus_read_ok: bool = True
    tracking_error_rad: float = 0.0  # max |command - measured| over the joints
    health: ServoHealth | None = None  # present on ticks where health was polled
    loop_s: float = 0.0  # how long the previous tick's work took


@dataclass(frozen=True)
class Decision:
    directive: Directive
    infer: bool  # may the policy run on this tick's observation
    speed_scale: float  # for gate.set_speed_scale
    reasons: tuple[str, ...]


@dataclass
class Supervisor:
    config: SafetyConfig = field(default_factory=SafetyConfig)
    # Current (A) above which a servo counts as straining (stall relief when it persists).
    stall_current_a: float = 1.5
    min_voltage_v: float = 6.0

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        """Deliberate reset of every latch (the operator's action, never the policy's)."""
        self.latched: Directive | None = None
        self.latch_reason = ""
        self._failed_reads = 0
        self._last_bus_ok: float | None = None
        self._frozen = 0
        self._overruns = 0
        self._strain_since: float | None = None
        self._derated = False
        self.heartbeat_ok = True

    def tick(self, r: TickReport) -> Decision:
        cfg = self.config
        reasons: list[str] = []
        directive = Directive.RUN
        speed = 1.0

        def escalate(level: Directive, why: str) -> None:
            nonlocal directive
            reasons.append(why)
            directive = max(directive, level)

        # Bus.
        if r.bus_read_ok:
            self._failed_reads = 0
            self._last_bus_ok = r.now
        else:
            self._failed_reads += 1
            if self._last_bus_ok is None:
                self._last_bus_ok = r.now
            if r.now - self._last_bus_ok >= cfg.bus_dead_s:
                escalate(Directive.POWER_CUT, f"bus silent for {r.now - self._last_bus_ok:.2f} s")
            elif self._failed_reads >= cfg.bus_failed_reads:
                escalate(Directive.HOLD, f"{self._failed_reads} bus reads failed in a row")

        # Command freshness.
        age = None if r.action_time is None else r.now - r.action_time
        if age is None or age >= cfg.command_stale_park_s:
            if r.action_time is not None:
                escalate(Directive.PARK, f"no fresh action for {age:.2f} s")
            else:
                escalate(Directive.HALT, "no action yet")
        elif age >= cfg.command_stale_hold_s:
            escalate(Directive.HALT, f"action {1e3 * age:.0f} ms old")

        # Observation freshness: never infer on stale or frozen inputs.
        infer = True
        self._frozen = 0 if r.frames_changed else self._frozen + 1
        if r.observation_time is None or r.now - r.observation_time > cfg.observation_max_age_s:
            infer = False
            reasons.append("observation stale")
        if self._frozen >= cfg.frozen_frame_count:
            infer = False
            reasons.append(f"camera frozen for {self._frozen} frames")

        # Servo health.
        if r.health is not None:
            h = r.health
            hottest = float(np.max(h.temperature_c))
            if hottest >= cfg.temperature_park_c:
                escalate(Directive.PARK, f"servo at {hottest:.0f} °C")
            elif hottest >= cfg.temperature_derate_c:
                self._derated = True
            elif hottest < cfg.temperature_derate_c - 3.0:  # hysteresis
                self._derated = False
            # The gripper's overload protection trips while it squeezes an object (lerobot sets
            # its Overload_Torque low for that): a grasp, not a fault. Any other bit parks.
            alarms = np.asarray(h.status, dtype=np.int64).copy()
            alarms[GRIPPER] &= ~OVERLOAD_BIT
            if np.any(alarms != 0):
                escalate(Directive.PARK, f"servo status alarm {alarms.tolist()}")
            if float(np.min(h.voltage_v)) < self.min_voltage_v:
                escalate(Directive.PARK, f"supply at {float(np.min(h.voltage_v)):.1f} V")
            straining = float(np.max(h.current_a)) > self.stall_current_a
            tracking = r.tracking_error_rad > cfg.tracking_error_rad
            if straining and tracking:
                if self._strain_since is None:
                    self._strain_since = r.now
                if r.now - self._strain_since >= cfg.tracking_timeout_s:
                    escalate(Directive.RELIEVE, "stall: high current and tracking error")
            else:
                self._strain_since = None
        if self._derated:
            speed = cfg.derate_fraction
            reasons.append("derated (hot servo)")

        # Timing budget of the loop itself.
        if r.loop_s > cfg.dt:
            self._overruns += 1
            if self._overruns >= cfg.overrun_latch_count:
                escalate(Directive.HOLD, f"{self._overruns} loop overruns in a row")
        else:
            self._overruns = 0

        if directive in LATCHING and (self.latched is None or directive > self.latched):
            self.latched, self.latch_reason = directive, "; ".join(reasons)
        if self.latched is not None:
            directive = max(directive, self.latched)
        if directive == Directive.POWER_CUT:
            self.heartbeat_ok = False
        # Inference may run while halted for want of an action (that is how the first one comes).
        return Decision(directive, infer and directive <= Directive.HALT, speed, tuple(reasons))
