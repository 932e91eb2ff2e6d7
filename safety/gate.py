"""SafetyGate: every motion command passes here before it reaches a motor, in sim and on the arm.

Per tick, for a requested joint target (lerobot units: degrees, gripper 0-100):

1. Validate: shape/keys, finite values, plausible units, no future timestamp. Invalid -> brake
   along the path the last tick proved safe, at the acceleration limit (as for a missing
   action), so a joint at full speed never stops dead; ``invalid_latch_count`` in a row latch a
   protective stop, which brakes to rest and then holds.
2. Clamp the target into the joint ranges shrunk by the soft margin.
3. Choose this tick's joint step per joint inside the step limit (against the last *command*, so
   a late tick never catches up), the acceleration limit (change of step), and a braking bound
   that lets the joint stop inside its limits (and on its target) at the acceleration limit.
4. Check the Cartesian workspace by forward kinematics: the new command, points between it and
   the last one, and every configuration on the way to rest if the arm braked from here. All
   checked points (elbow, wrist, tool, fingertips) stay in the workspace box, above the table
   and out of keep-out volumes, and the tool and elbow stay under the speed cap. If the full step
   fails, the step is blended toward "brake" (decelerate at the limit), which the previous tick
   proved safe, to the largest fraction that passes. Then each joint still short of its full
   step takes it where the result passes every check too, so one blocked direction does not
   freeze the rest (jaws stopped on the table still close, the wrist still turns).

Forbidden space is measured per check point and per limit (each box face, the table plane, each
keep-out volume). An arm engaged inside it (switched on folded over its base, resting on the
table) may move out or along, but no point gets deeper into any limit than the path the gate
last committed to (the step and its braking path) reached; that allowance starts at the
engaged pose and only shrinks. A single worst-point depth would let one point deep in the
keep-out license every other point to cross the box or the table up to that depth, and an
allowance read off the current pose (not the committed path) would let last tick's braking
path fail this tick, leaving only a stop harder than the acceleration limit.

The gate works in joint radians internally (safety/so101.py converts), keeps no reference to any
bus or simulator, and returns what should be sent; its caller (the bus writer, or the sim env
wrapper) sends exactly that. Stops latch until :meth:`SafetyGate.reset`: a requested stop
(operator, voice, watchdog) holds within the tick; the protective stop after invalid input
brakes to rest first.
"""

from __future__ import annotations

import enum
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from safety import so101
from safety.config import SafetyConfig, joint_limits_rad
from safety.kinematics import POINT_NAMES, ArmKinematics
from safety.so101 import SO101_JOINTS, SO101_MOTOR_FEATURES

# Plausible lerobot units: arm joints in degrees within a turn, the gripper in percent.
# (Radians passed by mistake are within these too, but then so tiny that limits still hold.)
_UNIT_LOW = np.array([-360.0] * 5 + [-20.0])
_UNIT_HIGH = np.array([360.0] * 5 + [120.0])
_EPS = 1e-12


class Reason(enum.IntFlag):
    """Why the gate changed or held a command (reason codes for counts and the audit log)."""

    NONE = 0
    NON_FINITE = enum.auto()  # NaN or inf in the action
    BAD_SHAPE = enum.auto()  # wrong shape or keys
    BAD_UNITS = enum.auto()  # values no SO-101 command in lerobot units can have
    FUTURE_TIMESTAMP = enum.auto()  # the action claims to come from the future
    JOINT_LIMIT = enum.auto()  # target clamped into the soft joint range
    STEP_LIMIT = enum.auto()  # joint step capped
    ACCEL_LIMIT = enum.auto()  # change of joint step capped
    LIMIT_BRAKING = enum.auto()  # slowed so that a hold stops inside the joint range
    WORKSPACE = enum.auto()  # step scaled back: box, table plane or keep-out
    TOOL_SPEED = enum.auto()  # step scaled back: tool or elbow speed cap
    ACCEL_OVERRIDE = enum.auto()  # safety needed a stop harder than the acceleration limit
    HOLD = enum.auto()  # the last safe command repeated
    LATCHED = enum.auto()  # a protective stop is latched
    STOP = enum.auto()  # a stop was requested (keyboard, voice, watchdog)
    NO_ACTION = enum.auto()  # no fresh action: braking to rest
    RAMP = enum.auto()  # guarded ramp after engage/resume
    SLOWED = enum.auto()  # speed scaled down (derate, "slow down")

    def names(self) -> list[str]:
        return [r.name for r in Reason if r and r in self]


INVALID = Reason.NON_FINITE | Reason.BAD_SHAPE | Reason.BAD_UNITS | Reason.FUTURE_TIMESTAMP
# Shaping: the command is a smoothed or clamped version of a reasonable request (target pulled
# into the soft joint range, step and acceleration limits, limit braking, the guarded ramp, a
# speed scale). Every good policy sees these: they are how the arm moves, not a problem.
SHAPING = (
    Reason.JOINT_LIMIT
    | Reason.STEP_LIMIT
    | Reason.ACCEL_LIMIT
    | Reason.LIMIT_BRAKING
    | Reason.RAMP
    | Reason.SLOWED
)
# Protective: the gate kept the arm out of harm's way (box, table, keep-out, tool speed), refused
# a request (invalid input, no fresh action), or stopped it (holds, latches, stops, a stop
# harder than the acceleration limit). These are worth a look in any run.
PROTECTIVE = (
    INVALID
    | Reason.WORKSPACE
    | Reason.TOOL_SPEED
    | Reason.ACCEL_OVERRIDE
    | Reason.HOLD
    | Reason.LATCHED
    | Reason.STOP
    | Reason.NO_ACTION
)
# Reasons that mean the command differs from what was asked (counted as interventions).
INTERVENTIONS = (
    INVALID
    | Reason.JOINT_LIMIT
    | Reason.STEP_LIMIT
    | Reason.ACCEL_LIMIT
    | Reason.LIMIT_BRAKING
    | Reason.WORKSPACE
    | Reason.TOOL_SPEED
    | Reason.ACCEL_OVERRIDE
    | Reason.HOLD
)


@dataclass(frozen=True)
class GateDecision:
    """One tick of the gate.

    Attributes:
        seq: tick number of this gate (the bus writer tags its writes with it).
        command: joint targets to send [6], lerobot units (degrees, gripper 0-100).
        command_rad: the same in joint radians [6].
        reasons: every constraint that acted this tick.
        fraction: share of the requested step that was taken after the Cartesian checks.
        compute_s: time the gate spent on this tick.
        joints: per reason name, the joints it changed (indices into SO101_JOINTS), for the
            reasons that act per joint (limits, smoothing, Cartesian scaling).
    """

    seq: int
    command: np.ndarray
    command_rad: np.ndarray
    reasons: Reason
    fraction: float
    compute_s: float
    joints: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def intervened(self) -> bool:
        return bool(self.reasons & INTERVENTIONS)

    @property
    def shaped(self) -> bool:
        return bool(self.reasons & SHAPING)

    @property
    def protective(self) -> bool:
        return bool(self.reasons & PROTECTIVE)

    def as_action(self) -> dict[str, float]:
        """The command as a lerobot action dict (``{"shoulder_pan.pos": deg, ...}``)."""
        return {k: float(v) for k, v in zip(SO101_MOTOR_FEATURES, self.command, strict=True)}


@dataclass
class GateStats:
    """Counts over gate decisions (a run, an episode): ticks, interventions in two classes
    (shaping, protective), reasons, the joints each reason acted on, compute time."""

    ticks: int = 0
    interventions: int = 0  # ticks whose command differs from the request
    shaping: int = 0  # ticks with a shaping reason
    protective: int = 0  # ticks with a protective reason
    by_reason: Counter = field(default_factory=Counter)
    by_reason_joint: Counter = field(default_factory=Counter)  # (reason, joint index) -> ticks
    compute_s: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def add(self, decision: GateDecision, timed: bool = True) -> None:
        self.ticks += 1
        if timed:
            self.compute_s.append(decision.compute_s)
        self.interventions += decision.intervened
        self.shaping += decision.shaped
        self.protective += decision.protective
        for name in decision.reasons.names():
            self.by_reason[name] += 1
        for name, joints in decision.joints.items():
            for j in joints:
                self.by_reason_joint[name, j] += 1

    def as_dict(self) -> dict:
        times = np.asarray(self.compute_s) * 1e3 if self.compute_s else np.zeros(1)
        return {
            "ticks": self.ticks,
            "interventions": self.interventions,
            "shaping": self.shaping,
            "protective": self.protective,
            "shaping_rate": self.shaping / self.ticks if self.ticks else None,
            "protective_rate": self.protective / self.ticks if self.ticks else None,
            "by_reason": dict(sorted(self.by_reason.items())),
            "by_reason_joint": {
                name: {
                    SO101_JOINTS[j]: n
                    for (r, j), n in sorted(self.by_reason_joint.items())
                    if r == name
                }
                for name in sorted({r for r, _ in self.by_reason_joint})
            },
            "compute_p50_ms": float(np.percentile(times, 50)),
            "compute_p99_ms": float(np.percentile(times, 99)),
        }


def intervention_summary(by_reason: dict, by_reason_joint: dict) -> dict:
    """Reasons split by class, each with its ticks and the joint it acted on most.

    ``by_reason`` {reason: ticks}, ``by_reason_joint`` {reason: {joint: ticks}} (summed over
    runs or episodes) -> {"shaping": {reason: {"ticks", "joint", "joint_ticks"}}, "protective":
    {...}}, each sorted by ticks; ``joint`` is None for reasons that do not act per joint."""
    out: dict[str, dict] = {"shaping": {}, "protective": {}}
    for name, n in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        reason = Reason[name]
        group = "shaping" if reason & SHAPING else "protective" if reason & PROTECTIVE else None
        if group is None:
            continue
        joints = by_reason_joint.get(name) or {}
        top = max(joints, key=joints.get) if joints else None
        out[group][name] = {
            "ticks": n,
            "joint": top,
            "joint_ticks": joints.get(top, 0) if top else 0,
        }
    return out


def as_joint_array(action) -> np.ndarray:
    """A request as [6] floats in SO-101 joint order, from a lerobot action dict (exactly the
    ``"<joint>.pos"`` keys) or a sequence of six; KeyError / ValueError / TypeError otherwise."""
    if isinstance(action, dict):
        if set(action) != set(SO101_MOTOR_FEATURES):
            raise KeyError(f"action keys {sorted(action)} != {SO101_MOTOR_FEATURES}")
        action = [action[k] for k in SO101_MOTOR_FEATURES]
    values = np.asarray(action, dtype=np.float64)
    if values.shape != (6,):
        raise ValueError(f"action needs shape (6,), got {values.shape}")
    return values


class SafetyGate:
    """The only writer of motion commands (see module docstring).

    Args:
        config: the validated limits.
        calibration: lerobot calibration dict of the arm (narrows the joint ranges), or None for
            the MJCF's official ranges.
        kinematics: FK for the Cartesian checks (default: from the twin's MJCF).
    """

    def __init__(
        self,
        config: SafetyConfig | None = None,
        calibration: dict | None = None,
        kinematics: ArmKinematics | None = None,
    ):
        self.config = config or SafetyConfig()
        self.config_hash = self.config.hash()
        self.calibration = calibration
        cfg = self.config
        limits = joint_limits_rad(calibration)
        self.soft_low = limits[:, 0] + cfg.joint_margin_rad
        self.soft_high = limits[:, 1] - cfg.joint_margin_rad
        if np.any(self.soft_low >= self.soft_high):
            raise ValueError("joint_margin_rad leaves no room inside a joint's range")
        self.kin = kinematics or ArmKinematics()
        self._step = cfg.step_limit()
        self._acc = cfg.accel_limit()
        self._box_low = np.asarray(cfg.workspace.low)
        self._box_high = np.asarray(cfg.workspace.high)
        m = cfg.keep_out_margin_m
        self._keep_low = np.array([np.asarray(b.low) - m for b in cfg.keep_out]).reshape(-1, 3)
        self._keep_high = np.array([np.asarray(b.high) + m for b in cfg.keep_out]).reshape(-1, 3)
        jaw = {"tool", "fixed_tip", "moving_tip"}
        self._floor = np.array(
            [
                cfg.table_z_m
                + (cfg.fingertip_table_clearance_m if p in jaw else cfg.table_clearance_m)
                for p in POINT_NAMES
            ]
        )
        self._speed_points = np.array([POINT_NAMES.index("tool"), POINT_NAMES.index("elbow")])
        self._n_interp = cfg.interpolation_points + 1  # checked points per tick, end included
        self._fractions = np.arange(1, self._n_interp + 1) / self._n_interp
        self._k_acc = np.arange(1, 65)[:, None] * self._acc  # [64, 6]: k ticks of braking
        self._inv_acc = 1.0 / self._acc
        self._tick_cap = cfg.tool_speed_cap() * cfg.dt  # m per tick
        self._grid = np.arange(8) / 8  # the blend search's candidates, 0 to 7/8, ...
        self._fine = np.arange(1, 4) / 32  # ... then 1/32 to 3/32 above the best
        self._last_best: int | None = None  # the grid point the last search chose
        self._weights: dict[tuple[int, bool], np.ndarray] = {}  # _path_weights' cache
        self.stats = GateStats()
        self.seq = 0
        self._cmd: np.ndarray | None = None  # last command sent (rad)
        self._here_points: np.ndarray | None = None  # its check points [P, 3]
        self._allowance: np.ndarray | None = None  # depth allowed per point and limit [P, C]
        self._last_moved = 0.0
        self._brake_moved = 0.0  # how far braking would move the tool/elbow this tick (m)
        self._vel = np.zeros(6)  # last step (rad/tick)
        self._invalid_streak = 0
        self._latched: Reason = Reason.NONE
        self._latch_why = ""
        self._latch_brakes = False  # the latched stop brakes to rest before it holds
        self._ramp = False
        self.speed_scale = 1.0

    # ------------------------------------------------------------------ lifecycle
    def engage(self, present: np.ndarray) -> GateDecision:
        """Adopts the measured position as the command (goal := present before torque on).

        Later targets far from it are reached by a guarded ramp (reduced speed) from here.
        """
        q = so101.to_radians(self._as_array(present))
        if not np.all(np.isfinite(q)):
            raise ValueError(f"cannot engage: the present position is not finite: {present}")
        self._cmd = q
        self._here_points = self.kin.points(q)  # FK of the command, cached between ticks
        # Engaged inside forbidden space: no point may get deeper into any limit than now.
        self._set_allowance(self._depths(self._here_points))
        self._last_moved = 0.0  # how far the tool/elbow moved last tick (m)
        self._vel = np.zeros(6)
        self._ramp = True
        self._invalid_streak = 0
        return self._commit(q, np.zeros(6), Reason.RAMP, 1.0, 0.0)

    @property
    def engaged(self) -> bool:
        return self._cmd is not None

    @property
    def latched(self) -> Reason:
        """The latched stop (Reason.STOP or Reason.LATCHED), or Reason.NONE."""
        return self._latched

    @property
    def latch_reason(self) -> str:
        return self._latch_why

    def request_stop(self, source: str = "operator") -> GateDecision:
        """Latches a stop and returns the hold command to send now."""
        self._latch(Reason.STOP, f"stop requested by {source}")
        return self._hold(Reason.STOP, 0.0)

    def latch(self, why: str) -> GateDecision:
        """Latches a protective stop (watchdogs, faults) and returns the hold command."""
        self._latch(Reason.LATCHED, why)
        return self._hold(Reason.LATCHED, 0.0)

    def reset(self, present: np.ndarray | None = None) -> None:
        """Deliberate reset of a latched stop: resumes from rest (at ``present`` if given,
        else at the held command) with a guarded ramp."""
        was_latched = bool(self._latched)
        self._latched, self._latch_why = Reason.NONE, ""
        self._invalid_streak = 0
        if present is not None:
            self.engage(present)
        elif was_latched:
            self._ramp = True  # from rest, or from the protective stop's braking

    def set_speed_scale(self, scale: float) -> None:
        """Slows every motion to ``scale`` of the configured limits (derate, "slow down").
        Only ever slower: values above 1 are refused."""
        if not (math.isfinite(scale) and 0 < scale <= 1):
            raise ValueError(f"speed scale must be in (0, 1], got {scale}")
        self.speed_scale = float(scale)

    # ------------------------------------------------------------------ the tick
    def filter(
        self,
        action,
        stamp: float | None = None,
        now: float | None = None,
    ) -> GateDecision:
        """Turns a requested target into the command to send this tick.

        Args:
            action: [6] array or lerobot action dict (``"<motor>.pos"`` keys), lerobot units;
                None means no fresh action (brake to rest).
            stamp: time the action was computed for (s); refused if ahead of ``now``.
            now: the gate's clock (s); defaults to time.monotonic().
        """
        t0 = time.perf_counter()
        if self._cmd is None:
            raise RuntimeError("SafetyGate.engage(present) must run before the first command")
        if self._latched:
            if self._latch_brakes and np.any(self._vel != 0):
                return self._move(None, self._latched, t0)  # protective stop: brake to rest
            return self._hold(self._latched | Reason.HOLD, t0)
        if action is None:
            return self._move(None, Reason.NO_ACTION, t0)
        target, bad = self._validate(action, stamp, now)
        if bad:
            # The whole action is refused; the braking path the last tick proved safe is
            # followed instead, so a joint moving at the step limit slows at the acceleration
            # limit rather than stopping dead (SAFETY.md 2 and 5).
            self._invalid_streak += 1
            if self._invalid_streak >= self.config.invalid_latch_count:
                self._latch(Reason.LATCHED, f"{self._invalid_streak} invalid actions in a row")
                self._latch_brakes = True
                bad |= Reason.LATCHED
            if not np.any(self._vel != 0):
                return self._hold(bad, t0)  # at rest already: braking is holding
            return self._move(None, bad, t0)
        self._invalid_streak = 0
        return self._move(target, Reason.NONE, t0)

    def brake(self) -> GateDecision:
        """No fresh action: decelerate to rest at the acceleration limit (a smooth halt)."""
        return self.filter(None)

    # ------------------------------------------------------------------ internals
    def _validate(self, action, stamp, now) -> tuple[np.ndarray | None, Reason]:
        try:
            values = self._as_array(action)
        except (ValueError, TypeError, KeyError):
            return None, Reason.BAD_SHAPE
        if not np.all(np.isfinite(values)):
            return None, Reason.NON_FINITE
        if np.any(values < _UNIT_LOW) or np.any(values > _UNIT_HIGH):
            return None, Reason.BAD_UNITS
        if stamp is not None:
            clock = time.monotonic() if now is None else now
            if not math.isfinite(stamp) or stamp > clock + self.config.future_tolerance_s:
                return None, Reason.FUTURE_TIMESTAMP
        return so101.to_radians(values), Reason.NONE

    _as_array = staticmethod(as_joint_array)

    def _move(self, target: np.ndarray | None, reasons: Reason, t0: float) -> GateDecision:
        cmd, vel, acc = self._cmd, self._vel, self._acc
        scale = self.speed_scale * (self.config.ramp_speed_fraction if self._ramp else 1.0)
        step = self._step * scale
        if scale < 1.0:
            reasons |= Reason.RAMP if self._ramp else Reason.SLOWED
        brake = np.sign(vel) * np.maximum(np.abs(vel) - acc, 0.0)
        masks: dict[Reason, np.ndarray] = {}  # the joints each per-joint reason acted on
        if target is None:
            want = brake
        else:
            clamped = np.clip(target, self.soft_low, self.soft_high)
            masks[Reason.JOINT_LIMIT] = np.abs(clamped - target) > 1e-9
            desired = clamped - cmd
            dist = np.abs(desired)
            reach = np.minimum(dist, np.maximum(_stop_speed(dist, acc), np.minimum(dist, acc)))
            want = np.sign(desired) * np.minimum(reach, step)
            masks[Reason.STEP_LIMIT] = reach > step + _EPS
            if self._ramp and np.all(dist <= self._step + 1e-9):
                self._ramp = False  # caught up with the requests: full speed from now on
        # Per-joint feasible steps: acceleration, step limit, and braking inside the joint range.
        room_hi = np.maximum(self.soft_high - cmd, 0.0)
        room_lo = np.maximum(cmd - self.soft_low, 0.0)
        lim_hi = np.maximum(_stop_speed(room_hi, acc), np.minimum(room_hi, acc))
        lim_lo = np.maximum(_stop_speed(room_lo, acc), np.minimum(room_lo, acc))
        upper = np.minimum.reduce([np.full(6, np.inf) if target is None else step, lim_hi])
        lower = np.maximum.reduce([-np.full(6, np.inf) if target is None else -step, -lim_lo])
        upper, lower = np.minimum(upper, vel + acc), np.maximum(lower, vel - acc)
        chosen = np.clip(want, lower, upper)
        # An empty interval (the speed scale just dropped): decelerate as hard as allowed.
        empty = lower > upper
        chosen[empty] = brake[empty]
        changed = np.abs(chosen - want) > 1e-12
        masks[Reason.ACCEL_LIMIT] = changed & ((want > vel + acc) | (want < vel - acc))
        masks[Reason.LIMIT_BRAKING] = changed & ((want > lim_hi) | (want < -lim_lo))
        step_taken, fraction, why, points = self._cartesian(cmd, chosen, brake)
        scaled = np.abs(step_taken - chosen) > 1e-12
        for reason in (Reason.WORKSPACE, Reason.TOOL_SPEED):
            if why & reason:
                masks[reason] = scaled
        joints = {}
        for reason, mask in masks.items():
            if mask.any():
                reasons |= reason
                joints[reason.name] = tuple(np.flatnonzero(mask).tolist())
        sp = self._speed_points
        self._last_moved = float(np.linalg.norm(points[sp] - self._here_points[sp], axis=1).max())
        self._here_points = points
        return self._commit(cmd + step_taken, step_taken, reasons | why, fraction, t0, joints)

    def _cartesian(self, cmd: np.ndarray, full: np.ndarray, brake: np.ndarray):
        """Largest blend brake + s * (full - brake), s in [0, 1], that passes the Cartesian
        checks; falls back to softer-than-allowed stops, then to a hold.

        Returns (step [6], s, reasons, check points of the new command [P, 3])."""
        here = self._here_points
        if here is None:
            here = self._here_points = self.kin.points(cmd)

        def check(steps, chords=False, reasons_of=None):
            return self._check(cmd, steps, here, chords, reasons_of)

        self._brake_moved = 0.0
        if self.speed_scale < 1.0:  # see the slowed cap in _check
            sp = self._speed_points
            self._brake_moved = float(_norm(self.kin.points(cmd + brake)[sp] - here[sp]).max())

        ok, why, ends, depth = check(full[None], chords=True)
        if ok[0]:
            return self._commit_path(full, 1.0, Reason.NONE, ends[0], depth[0])
        # The search checks the braking path at its tick ends only (a fraction of the FK); the
        # step it picks must pass with the braking chords too (the slide's last check already
        # includes them), else it searches again with them (rare: near a wall at speed).
        step, s, why_search, end, depth, chorded = self._search(check, full, brake)
        if chorded:
            return self._commit_path(step, s, why | why_search, end, depth)
        if not why_search & Reason.ACCEL_OVERRIDE:
            ok, _, ends, depth = check(step[None], chords=True)
            if ok[0]:
                return self._commit_path(step, s, why | why_search, ends[0], depth[0])
        step, s, why_search, end, depth, _ = self._search(partial(check, chords=True), full, brake)
        return self._commit_path(step, s, why | why_search, end, depth)

    def _commit_path(self, step, s, why, end, depth):
        """The chosen step's path (the step and its braking to rest) becomes the committed one:
        the allowance shrinks to the depths it reaches, so braking along it stays allowed next
        tick and nothing gets deeper later. A harder-than-allowed stop keeps the allowance."""
        if depth is not None:
            self._set_allowance(np.minimum(self._allowance, depth))
        return step, s, why, end

    def _set_allowance(self, depth: np.ndarray) -> None:
        self._allowance = depth  # [P, C]
        self._allowed = depth.reshape(-1) + 1e-9  # what _check compares a path's depths with

    def _search(self, check, full: np.ndarray, brake: np.ndarray):
        """The blend search of ``_cartesian`` with the candidate check ``check(steps)``.
        Returns (step, s, reasons, end points, path depths or None for a forced stop, whether
        the step was checked with the braking chords)."""
        # The fine candidates above the grid point the last search chose go into the same call:
        # the arm is usually cut back for several ticks in a row, and a check's cost is mostly
        # per call, not per candidate. Only the grid's failures give the reasons, as before.
        n, guess = len(self._grid), self._last_best
        blends = self._grid if guess is None else np.r_[self._grid, self._grid[guess] + self._fine]
        steps = brake[None] + blends[:, None] * (full - brake)[None]
        ok, why, ends, depths = check(steps, reasons_of=n)
        if ok[:n].any():
            best = int(np.flatnonzero(ok[:n]).max())
            self._last_best = best
            fine = self._grid[best] + self._fine  # refine inside the gap above it
            if best == guess:
                fine_steps, ok_fine, fine_ends, fine_depths = (
                    steps[n:],
                    ok[n:],
                    ends[n:],
                    depths[n:],
                )
            else:
                fine_steps = brake[None] + fine[:, None] * (full - brake)[None]
                ok_fine, _, fine_ends, fine_depths = check(fine_steps)
            if ok_fine.any():
                i = int(np.flatnonzero(ok_fine).max())
                found = fine_steps[i], fine_ends[i], fine_depths[i]
                s = float(fine[i])
            else:
                found, s = (steps[best], ends[best], depths[best]), float(self._grid[best])
            step, end, depth, chorded = self._slide(check, full, *found)
            return step, s, why, end, depth, chorded
        # Even braking fails (FK is non-convex here, or a broken caller): stop harder than the
        # acceleration limit, down to a hold.
        shrink = np.array([0.75, 0.5, 0.25])
        ok, _, ends, _ = check(shrink[:, None] * brake[None])
        if ok.any():
            i = int(np.flatnonzero(ok).min())
            return shrink[i] * brake, 0.0, why | Reason.ACCEL_OVERRIDE, ends[i], None, False
        hold = why | Reason.ACCEL_OVERRIDE | Reason.HOLD
        return np.zeros(6), 0.0, hold, self._here_points, None, False

    def _slide(self, check, full, step, end, depth):
        """The blend scales every joint alike, so one blocked direction (the jaws on the table
        plane, the tool at the box wall) would stop joints whose own motion is safe, down to a
        dead hold: jaws resting on the table could never close. Each joint that still lags
        its full step takes that step if the result passes every check; all of them together
        if that passes too, else the one that gains the most. These checks include the braking
        chords (the chosen step needs them anyway), and all lagging joints together are
        checked in the same call as each alone. Returns (step [6], points, path depths, whether
        the step was checked with the braking chords)."""
        lag = np.flatnonzero(np.abs(full - step) > 1e-9)
        if len(lag) == 0:
            return step, end, depth, False
        n = len(lag)
        rows = np.repeat(step[None], n + 1, axis=0)  # each lagging joint alone, then all
        rows[np.arange(n), lag] = full[lag]
        rows[n, lag] = full[lag]
        ok_rows, _, ends, depths = check(rows, chords=True)
        ok = ok_rows[:n]
        if not ok.any():
            return step, end, depth, False
        if ok.sum() > 1:
            if ok.all():
                if ok_rows[n]:
                    return rows[n], ends[n], depths[n], True
            else:
                union = step.copy()
                union[lag[ok]] = full[lag[ok]]
                ok_union, _, ends_union, depths_union = check(union[None], chords=True)
                if ok_union[0]:
                    return union, ends_union[0], depths_union[0], True
        gain = np.where(ok, np.abs(full - step)[lag] / np.maximum(self._step[lag], _EPS), -1.0)
        i = int(np.argmax(gain))
        return rows[i], ends[i], depths[i], True

    def _check(
        self,
        cmd: np.ndarray,
        steps: np.ndarray,
        here: np.ndarray,
        chords: bool = True,
        reasons_of: int | None = None,
    ):
        """For candidate steps [M, 6]: (ok [M], reasons, endpoint check points [M, P, 3], the
        deepest each point gets into each limit along the path [M, P, C]).
        Checks interpolated points, the endpoint, the braking path to rest, and the tool and
        elbow speed against the current command's points ``here`` [P, 3].

        With ``chords`` each braking tick is checked the way that tick will be (at its
        interpolated points too): braking at the acceleration limit is the next tick's
        fallback, and a path whose tick ends pass but whose chords cut a wall would leave only
        a stop harder than the acceleration limit. Without, only the tick ends are checked.
        ``reasons_of``: only the first that many candidates' failures give the reasons."""
        n_interp = self._n_interp
        between = n_interp if chords else 1  # checked points per braking tick
        m = len(steps)
        # Braking from the step at the acceleration limit: tick k's step is |v| - k acc per
        # joint until it reaches 0, for as many ticks as the fastest joint needs.
        speed = np.abs(steps)
        top = float((speed * self._inv_acc).max())
        top = top if math.isfinite(top) else 64.0  # a broken caller
        ticks = min(max(math.ceil(top) - 1, 0), 64)
        # The step and its braking steps [M, 1 + B, 6]; every checked configuration is the
        # command plus a fixed combination of them (see _path_weights).
        moves = np.empty((m, 1 + ticks, 6))
        moves[:, 0] = steps
        np.maximum(speed[:, None] - self._k_acc[:ticks], 0.0, out=moves[:, 1:])
        moves[:, 1:] *= np.sign(steps)[:, None]
        q = self._path_weights(ticks, chords) @ moves
        q += cmd
        k = q.shape[1]
        pts = self.kin.points(q.reshape(-1, 6)).reshape(m, k, len(POINT_NAMES), 3)
        depth = self._depths(pts, along=1)  # [M, P, C]
        ok_space = (depth.reshape(m, -1) <= self._allowed).all(1)
        ends = pts[:, n_interp - 1]
        moved = _norm2(ends[:, self._speed_points] - here[self._speed_points])
        # Under the (scaled) cap, or, after the speed scale just dropped, no faster than the
        # last tick or than braking along the committed path (which the last tick checked
        # against the full cap), so the tool slows down at the acceleration limit instead of
        # stopping dead and braking stays a valid fallback.
        cap = self._tick_cap
        slow_cap = max(cap * self.speed_scale, min(max(self._last_moved, self._brake_moved), cap))
        ok_speed = moved.max(1) <= (slow_cap + 1e-9) ** 2  # squared distances
        # Braking from the candidate must respect the cap too: joints slowing at different rates
        # can undo a cancellation and speed the tool up, and braking is the next tick's fallback.
        if ticks:
            path = pts[:, n_interp - 1 :: between, self._speed_points]  # the tick ends
            ok_speed &= _norm2(np.diff(path, axis=1)).max((1, 2)) <= (cap + 1e-9) ** 2
        why = Reason.NONE
        if not ok_space[:reasons_of].all():
            why |= Reason.WORKSPACE
        if not ok_speed[:reasons_of].all():
            why |= Reason.TOOL_SPEED
        return ok_space & ok_speed, why, ends, depth

    def _path_weights(self, ticks: int, chords: bool) -> np.ndarray:
        """[K, 1 + ticks]: the checked configurations of a path as combinations of its step and
        braking steps (added to the command): the step's interpolated points and end, then
        each braking tick's end (with ``chords``, its interpolated points too) from where the
        one before it ended. Cached per (ticks, chords)."""
        key = (ticks, chords)
        if key not in self._weights:
            fractions = self._fractions
            between = fractions if chords else fractions[-1:]
            n, per = len(fractions), len(between)
            w = np.zeros((n + ticks * per, 1 + ticks))
            w[:n, 0] = fractions
            for b in range(1, ticks + 1):
                rows = slice(n + (b - 1) * per, n + b * per)
                w[rows, :b] = 1.0  # the step and the braking ticks before this one
                w[rows, b] = between
            self._weights[key] = w
        return self._weights[key]

    def _depths(self, pts: np.ndarray, along: int | None = None) -> np.ndarray:
        """How deep each point of configurations [..., P, 3] is into each limit [..., P, C], m
        (0 = clear): below the box's low faces (x, y, z), past its high faces, under the table
        clearance, then inside each keep-out volume. With ``along``, the deepest over that axis
        of ``pts`` (a path), which drops from the result."""
        # Deepest into a face is where the coordinate is smallest (or largest) along the path.
        lo, hi = (pts, pts) if along is None else (pts.min(along), pts.max(along))
        limits = [self._box_low - lo, hi - self._box_high, (self._floor - lo[..., 2])[..., None]]
        for low, high in zip(self._keep_low, self._keep_high, strict=True):
            # Depth inside a box = distance to its nearest face (negative when outside). The
            # three coordinates are reduced one by one: numpy reduces short axes slowly.
            d = np.minimum(pts - low, high - pts)
            inside = np.minimum(np.minimum(d[..., 0], d[..., 1]), d[..., 2])
            limits.append((inside if along is None else inside.max(along))[..., None])
        return np.maximum(np.concatenate(limits, axis=-1), 0.0)

    def penetration(self, q: np.ndarray) -> np.ndarray:
        """How deep [N] the worst check point of joint configurations ``q`` [N, 6] (rad) is in
        forbidden space (below the table clearance, outside the box, inside a keep-out), m."""
        return self._depths(self.kin.points(np.atleast_2d(q))).max((-2, -1))

    def _hold(self, reasons: Reason, t0: float) -> GateDecision:
        self._vel = np.zeros(6)
        self._last_moved = 0.0
        return self._commit(self._cmd, np.zeros(6), reasons | Reason.HOLD, 0.0, t0, moved=False)

    def _latch(self, reason: Reason, why: str) -> None:
        if not self._latched:
            self._latched, self._latch_why = reason, why
            self._latch_brakes = False

    def _commit(self, cmd, step, reasons, fraction, t0, joints=None, moved=True) -> GateDecision:
        if moved:
            self._cmd, self._vel = cmd, step
        self.seq += 1
        compute = time.perf_counter() - t0 if t0 else 0.0
        decision = GateDecision(
            self.seq, so101.from_radians(cmd), cmd.copy(), reasons, fraction, compute, joints or {}
        )
        self.stats.add(decision, timed=bool(t0))
        return decision


def _norm(v: np.ndarray) -> np.ndarray:
    """Euclidean norm over the last axis (np.linalg.norm's axis handling costs more here)."""
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def _norm2(v: np.ndarray) -> np.ndarray:
    """Squared Euclidean norm over the last axis."""
    return np.einsum("...i,...i->...", v, v)


def _stop_speed(distance: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Largest step [per joint] after which braking at ``acc`` per tick² stops within
    ``distance``: the step v plus the braking steps v-a, v-2a, ... sum to at most
    (v + a/2)² / (2a), so v <= sqrt(2 a d) - a/2."""
    return np.maximum(np.sqrt(2.0 * acc * distance) - acc / 2.0, 0.0)
