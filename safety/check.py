"""Independent re-check of what a safety gate sent: the invariants of SAFETY.md, tick by tick.

Used by the property tests (over generated action sequences), by ``bench/safety_gate.py`` and to
re-check audit logs. It shares no code with the gate's decisions on purpose, only the config and
the kinematic description of the arm, so a broken gate (NaN check removed, step limit doubled)
shows up here as violations (the mutation check in tests/safety/test_gate.py).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from safety.config import SafetyConfig, joint_limits_rad
from safety.gate import GateDecision, Reason
from safety.kinematics import POINT_NAMES, ArmKinematics
from safety.so101 import SO101_MOTOR_FEATURES

logger = logging.getLogger(__name__)

# Numerical slack: the gate's arithmetic and this check's may differ in the last bits.
TOL_RAD = 1e-7
TOL_M = 1e-6
JAW_POINTS = ("tool", "fixed_tip", "moving_tip")


@dataclass(frozen=True)
class Violation:
    tick: int  # index into the checked commands (0 = the engaged start)
    invariant: str  # non_finite | joint_limit | step | accel | workspace | table | keep_out | speed
    detail: str


class InvariantChecker:
    """Checks a sequence of commands sent by a gate against a config.

    Args:
        config: the limits the commands must respect.
        calibration: lerobot calibration the gate used (joint ranges), or None.
    """

    def __init__(self, config: SafetyConfig, calibration: dict | None = None):
        self.config = config
        limits = joint_limits_rad(calibration)
        self.low = limits[:, 0] + config.joint_margin_rad
        self.high = limits[:, 1] - config.joint_margin_rad
        self.kin = ArmKinematics()
        self.step = config.step_limit()
        self.acc = config.accel_limit()
        jaw = np.array([p in JAW_POINTS for p in POINT_NAMES])
        clearance = np.where(jaw, config.fingertip_table_clearance_m, config.table_clearance_m)
        self.floor = config.table_z_m + clearance
        self.tool, self.elbow = POINT_NAMES.index("tool"), POINT_NAMES.index("elbow")

    def check(
        self,
        commands: np.ndarray,
        holds: np.ndarray | None = None,
        tolerance: float = TOL_RAD,
        allowance: np.ndarray | None = None,
    ) -> list[Violation]:
        """Violations in ``commands`` [T, 6] (joint radians; row 0 = the engaged start).

        Args:
            holds: [T] bool, ticks where the gate held (stops may brake harder than the
                acceleration limit: SAFETY.md's "hold" repeats the last command).
            tolerance: slack on joint quantities (rad), e.g. for float32 recordings.
            allowance: [P, C] depth into each limit each point may have (:meth:`depths` of the
                engaged start); default: that of row 0.
        """
        tol = tolerance
        cmds = np.asarray(commands, dtype=np.float64)
        holds = np.zeros(len(cmds), bool) if holds is None else np.asarray(holds, bool)
        out: list[Violation] = []
        bad = ~np.isfinite(cmds).all(1)
        out += [Violation(int(t), "non_finite", str(cmds[t])) for t in np.flatnonzero(bad)]
        if bad.any():
            return out  # nothing else is meaningful on NaN
        # Outside a joint's limits (with margin) and not closer to them than the last command:
        # an arm engaged outside them (goal := present) may only ramp back in, never go out.
        excess = np.maximum(np.maximum(self.low - cmds, cmds - self.high), 0.0)
        outward = (excess[1:] > tol) & (excess[1:] > excess[:-1] + tol)
        out += [
            Violation(int(t) + 1, "joint_limit", f"joints {np.flatnonzero(outward[t]).tolist()}")
            for t in np.flatnonzero(outward.any(1))
        ]
        d = np.diff(cmds, axis=0)
        over = np.abs(d) > self.step + tol
        out += [
            Violation(int(t) + 1, "step", f"{np.rad2deg(d[t]).round(3).tolist()} deg")
            for t in np.flatnonzero(over.any(1))
        ]
        dd = np.diff(d, axis=0)
        exempt = holds[2:]  # a hold may stop harder than the acceleration limit
        over = (np.abs(dd) > self.acc + 2 * tol).any(1) & ~exempt
        out += [
            Violation(int(t) + 2, "accel", f"{np.rad2deg(dd[t]).round(3).tolist()} deg/tick^2")
            for t in np.flatnonzero(over)
        ]
        # 0.5 m lever: rad -> m
        out += self._cartesian(cmds, tol_m=max(TOL_M, tol * 0.5), allowance=allowance)
        return out

    def depths(self, q: np.ndarray) -> np.ndarray:
        """How deep each check point of configurations ``q`` [N, 6] (rad) is into each limit
        [N, P, C] (m, 0 = clear): table plane, box (below each low face, above each high face),
        then each keep-out volume (with its margin)."""
        cfg = self.config
        pts = self.kin.points(np.asarray(q, dtype=np.float64).reshape(-1, 6))  # [N, P, 3]
        low, high = np.asarray(cfg.workspace.low), np.asarray(cfg.workspace.high)
        parts = [(self.floor - pts[..., 2])[..., None], low - pts, pts - high]
        for box in cfg.keep_out:
            lo = np.asarray(box.low) - cfg.keep_out_margin_m
            hi = np.asarray(box.high) + cfg.keep_out_margin_m
            parts.append(np.minimum(pts - lo, hi - pts).min(-1, keepdims=True))
        return np.maximum(np.concatenate(parts, axis=-1), 0.0)

    def _cartesian(
        self, cmds: np.ndarray, tol_m: float = TOL_M, allowance: np.ndarray | None = None
    ) -> list[Violation]:
        """Where the commands go: no check point deeper into any one limit (table, box face,
        keep-out) than ``allowance`` [P, C] (default: the start, row 0). From a start clear of
        every limit that is "never outside"; an arm engaged inside forbidden space (folded
        over its base, resting on the table) may move out or along, never deeper, and never
        into a limit it was clear of."""
        cfg = self.config
        n = cfg.interpolation_points + 1
        frac = np.arange(1, n + 1) / n
        # Every command and the points between it and the previous one.
        seg = cmds[:-1, None] + frac[None, :, None] * np.diff(cmds, axis=0)[:, None]
        q = np.concatenate([cmds[:1, None].repeat(n, 1), seg])  # [T, n, 6]
        depth = self.depths(q.reshape(-1, 6)).reshape(len(cmds), n, len(POINT_NAMES), -1)
        allowed = depth[0, -1] if allowance is None else np.asarray(allowance)
        over = (depth > allowed + tol_m).any(1)  # [T, P, C]
        pts = self.kin.points(cmds)  # [T, P, 3]
        out: list[Violation] = []
        keep = [f"keep-out {box}" for box in cfg.keep_out]
        for t in range(1, len(cmds)):
            if over[t, :, 0].any():
                out.append(Violation(t, "table", f"min z {depth[t, :, :, 0].max():.4f} m deep"))
            if over[t, :, 1:7].any():
                out.append(Violation(t, "workspace", "a checked point left the workspace box"))
            for k, name in enumerate(keep):
                if over[t, :, 7 + k].any():
                    out.append(Violation(t, "keep_out", f"deeper inside {name}"))
            cap = cfg.tool_speed_cap() * cfg.dt + tol_m
            for idx, name in ((self.tool, "tool"), (self.elbow, "elbow")):
                moved = np.linalg.norm(pts[t, idx] - pts[t - 1, idx])
                if moved > cap:
                    speed = moved / cfg.dt
                    out.append(Violation(t, "speed", f"{name} at {speed:.3f} m/s"))
        return out


def random_start(rng: np.random.Generator, gate, inside_forbidden: bool = False) -> np.ndarray:
    """A random joint configuration inside the gate's soft joint ranges (lerobot units): with
    every check point clear of the Cartesian limits, or (``inside_forbidden``) with at least
    one inside forbidden space (folded over the base's keep-out, below the table clearance,
    outside the box), as an arm switched on where it rests can be."""
    from safety import so101

    while True:
        q = rng.uniform(gate.soft_low, gate.soft_high)
        if (gate.penetration(q)[0] > 0) == inside_forbidden:
            return so101.from_radians(q)


def random_sequence(rng: np.random.Generator, n_ticks: int) -> list[dict]:
    """One adversarial tick sequence for the gate: smooth chunked targets with random chunk
    switches, huge jumps, NaN/inf, wrong shapes, partial action dicts, radians sent by mistake,
    missing actions, late and future timestamps, stops and resets. Each tick is
    ``{"kind", "action", "stamp_offset", "dt"}``; ``action`` is in lerobot units (degrees,
    gripper 0-100) unless the kind says otherwise."""
    ticks = []
    target = rng.uniform([-120, -110, -100, -100, -160, -10], [120, 110, 100, 100, 160, 110])
    vel = rng.normal(0, 4.0, 6)  # deg/tick: often beyond the step limit, so that it binds
    for _ in range(n_ticks):
        dt = 1 / 30 * rng.choice([1.0, rng.uniform(0.5, 3.0)], p=[0.8, 0.2])  # jitter, late ticks
        r = rng.random()
        stamp = 0.0
        if r < 0.05:
            kind, action = "non_finite", target.copy()
            action[rng.integers(6)] = rng.choice([np.nan, np.inf, -np.inf])
        elif r < 0.07:
            kind, action = "bad_shape", rng.uniform(-90, 90, rng.choice([0, 5, 7, 12]))
        elif r < 0.08:  # a lerobot action dict missing some motors
            keys = rng.choice(SO101_MOTOR_FEATURES, rng.integers(1, 6), replace=False)
            kind, action = "partial_dict", {str(k): float(rng.uniform(-90, 90)) for k in keys}
        elif r < 0.11:
            kind, action = "none", None
        elif r < 0.14:
            kind, action = "future", target.copy()
            stamp = rng.uniform(0.01, 1.0)
        elif r < 0.16:
            kind, action = "stop", None
        elif r < 0.18:
            kind, action = "reset", None
        elif r < 0.28:  # a huge jump anywhere, even far past the joint limits
            kind = "jump"
            target = rng.uniform(
                [-300, -300, -300, -300, -300, -20], [300, 300, 300, 300, 300, 120]
            )
            action = target.copy()
        elif r < 0.30:  # radians by mistake: plausible units, a target near the zero pose
            kind, action = "radians", np.deg2rad(target)
        elif r < 0.40:  # a new chunk: the trajectory switches direction
            kind = "switch"
            vel = rng.normal(0, 6.0, 6)
            target = target + vel
            action = target.copy()
        else:
            kind = "smooth"
            target = target + vel + rng.normal(0, 0.3, 6)
            action = target.copy()
        ticks.append({"kind": kind, "action": action, "stamp_offset": stamp, "dt": float(dt)})
    return ticks


def run_sequence(
    gate, start: np.ndarray, ticks: list[dict], decisions: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Plays ``ticks`` through ``gate`` from the engaged ``start`` (lerobot units); returns the
    commands sent [T+2, 6] (rad, row 0 = engaged, row 1 = holding it) and the hold flags.
    ``decisions``, if given, receives every GateDecision in order (the engage one first)."""
    from safety.gate import Reason

    decision = gate.engage(start)
    commands, holds = [decision.command_rad], [False]
    out = decisions if decisions is not None else []
    out.append(decision)
    decision = gate.filter(start, now=0.0)  # at the target: the guarded ramp ends
    commands.append(decision.command_rad)
    holds.append(False)
    out.append(decision)
    now = 0.0
    for tick in ticks:
        now += tick["dt"]
        if tick["kind"] == "stop":
            decision = gate.request_stop("test")
        elif tick["kind"] == "reset":
            gate.reset()
            decision = gate.filter(None, now=now)
        else:
            stamp = now + tick["stamp_offset"] if tick["stamp_offset"] else None
            decision = gate.filter(tick["action"], stamp=stamp, now=now)
        commands.append(decision.command_rad)
        holds.append(bool(decision.reasons & Reason.HOLD))
        out.append(decision)
    return np.array(commands), np.array(holds)


def recheck_audit_log(path, config: SafetyConfig | None = None) -> list[Violation]:
    """Re-checks the commands of an ``armvla run`` audit log (JSONL, one tick per line).

    The log's safety config hash must match ``config`` (default: SafetyConfig()): a log written
    under other limits is re-checked against those, not these.
    """
    import json
    from pathlib import Path

    from safety import so101

    config = config or SafetyConfig()
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    hashes = {r["safety_config_hash"] for r in rows}
    if hashes - {config.hash()}:
        raise ValueError(f"{path} was written under safety config {hashes}, not {config.hash()}")
    sent = [r for r in rows if r.get("sent") is not None]
    if not sent:
        return []
    commands = so101.to_radians(np.array([r["sent"] for r in sent], dtype=np.float64))
    holds = np.array(["HOLD" in r["gate"] for r in sent])
    # The log rounds to 0.001 degree.
    return InvariantChecker(config).check(commands, holds, tolerance=1e-4)


# ---------------------------------------------------------------------------- per decision
# SelfCheck re-checks each command the gate decided before the arm runtime writes it
# (real.arm.GatedArm), with the InvariantChecker above (joint range, step, acceleration,
# workspace, table, keep-out, tool speed over the last three commands), and re-hashes the safety
# config now and then, so limits changed in memory after start show up. A command that fails is
# never written: the arm holds its last checked command, the self-check stays failed and the
# heartbeat stops (real/heartbeat.py).

# Reasons under which the gate may stop harder than the acceleration limit (a hold, or a
# harder-than-allowed stop when braking itself fails a check), if the step only slows down.
_HARD_STOP = Reason.HOLD | Reason.ACCEL_OVERRIDE
# Joints engaged outside their soft range may move back in (the checker's Cartesian invariants
# take the engaged pose's depths as their allowance instead).
_WHERE = {"joint_limit"}


class SelfCheck:
    """Independent re-check of each gate decision before it is written.

    Args:
        config: the limits the gate enforces.
        calibration: the lerobot calibration the gate's joint ranges come from.
        rehash_every: re-hash the config every this many checks (a changed hash fails).
    """

    def __init__(
        self, config: SafetyConfig, calibration: dict | None = None, rehash_every: int = 30
    ):
        self.config = config
        self.config_hash = config.hash()
        self.checker = InvariantChecker(config, calibration)
        self.rehash_every = rehash_every
        self.failure: str | None = None
        self._window: deque[tuple[np.ndarray, bool]] = deque(maxlen=3)
        self._allowance: np.ndarray | None = None  # depths of the engaged pose [P, C]
        self._count = 0

    @property
    def ok(self) -> bool:
        return self.failure is None

    def restart(self, command_rad: np.ndarray) -> None:
        """The gate engaged at ``command_rad`` (the measured pose): a new sequence starts."""
        self._window.clear()
        self._window.append((np.asarray(command_rad, dtype=np.float64).copy(), True))
        self._allowance = self.checker.depths(self._window[0][0])[0]

    def check(self, decision: GateDecision) -> bool:
        """Whether ``decision`` may be written. A failure latches: later ones fail too."""
        if self.failure is not None:
            return False
        self._count += 1
        if self._count % self.rehash_every == 0 and self.config.hash() != self.config_hash:
            return self._fail("the safety config changed in memory since start")
        if not self._window:  # nothing to compare with: only the pose itself is checked
            self.restart(decision.command_rad)
        hard_stop = bool(decision.reasons & _HARD_STOP) and self._slows_down(decision.command_rad)
        window = [*self._window, (decision.command_rad, hard_stop)]
        commands = np.array([c for c, _ in window])
        holds = np.array([h for _, h in window])
        last = len(window) - 1
        checked = self.checker.check(commands, holds, allowance=self._allowance)
        violations = [v for v in checked if v.tick == last]
        if any(v.invariant in _WHERE for v in violations) and self._not_worse(commands[-2:]):
            # Started outside a joint's range: moving back is what the gate does, one limited
            # step at a time, so a pose no farther out than the last passes.
            violations = [v for v in violations if v.invariant not in _WHERE]
        if violations:
            v = violations[0]
            return self._fail(f"gate command {decision.seq} fails {v.invariant}: {v.detail}")
        self._window.append((decision.command_rad.copy(), hard_stop))
        return True

    def _slows_down(self, command: np.ndarray) -> bool:
        """A stop may brake harder than the acceleration limit, but only brake: every joint's
        step is no larger than its last one and in the same direction (or zero)."""
        if len(self._window) < 2:
            return True
        last = self._window[-1][0] - self._window[-2][0]
        step = np.asarray(command) - self._window[-1][0]
        return bool(np.all((step * last >= 0) & (np.abs(step) <= np.abs(last) + 1e-12)))

    def _not_worse(self, pair: np.ndarray) -> bool:
        """Whether the new command [1] is no further outside the joint ranges (per joint) than
        the previous one [0]."""
        c = self.checker
        excess = np.maximum(c.low - pair, 0.0) + np.maximum(pair - c.high, 0.0)
        return not np.any(excess[1] > excess[0] + 1e-9)

    def _fail(self, why: str) -> bool:
        self.failure = why
        logger.error("safety self-check failed: %s", why)
        return False
