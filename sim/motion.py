"""Scripted arm motion inside the safety gate's limits, shared by the suite's experts.

``ArmMotion`` turns joint-space waypoints into per-tick commands: a minimum-jerk (or, under
limits, trapezoidal) timing, a cubic spline through IK waypoints, each segment slowed until its
joint steps, their changes (acceleration) and the tool and elbow speeds stay under a fraction of
the gate's limits; the gripper ramps instead of jumping; no joint is sent past the gate's soft
range. The servos sag under gravity (they are torque-limited position controllers, like the real
STS3215), so commands carry a gravity feed-forward offset computed from the model: an expert
on the real arm would learn the same correction.

A task's expert subclasses it and implements ``_plan_next_phase`` (queue the next segment).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.interpolate import CubicSpline

from safety import so101
from safety.config import SafetyConfig, joint_limits_rad
from sim.ik import TopDownIK

ELBOW_OFFSET = np.array([0.0, 0.0, 0.0182])  # the gate's elbow point in the lower_arm frame
# The safety gate's soft joint range (default config) in lerobot units. Demo actions stay inside
# it: a target past it is one the gate clamps on every tick (closing the jaws to 0 % asked for
# 4.5 % past the gripper's soft limit through every grasp), and a policy trained on such demos
# asks for it too, so its runs showed the clamp on most ticks. Physically nothing changes on
# the arm: the gate sends the soft limit either way, and the jaws stop on the cube long before.
_RANGE = joint_limits_rad()
SOFT_LOW = so101.from_radians(_RANGE[:, 0] + SafetyConfig().joint_margin_rad)
SOFT_HIGH = so101.from_radians(_RANGE[:, 1] - SafetyConfig().joint_margin_rad)


@dataclass(frozen=True)
class MotionLimits:
    """Per-tick motion limits the expert plans inside (the safety gate's, in lerobot units).

    ``step``/``accel`` are [6] degrees per tick and per tick² of the commanded joints (the
    gripper's in degrees of its jaw joint), ``low``/``high`` [6] the soft range in lerobot units,
    ``tool_speed`` metres per tick for the tool point and the elbow. ``fraction`` of each limit
    is used, leaving the gate a margin for the gravity feed-forward and rounding.
    """

    step: np.ndarray
    accel: np.ndarray
    low: np.ndarray
    high: np.ndarray
    tool_speed: float
    fraction: float = 0.8


class ArmMotion:
    """Per-tick commands for a scripted expert on an unwrapped suite env (module docstring).

    Args:
        env: a :class:`sim.envs.tabletop.TabletopEnv` (wrappers are looked through).
        seed: the expert's own generator (its variations).
        variation: randomize the expert's parameters; False = the mean demo.
        limits: plan every motion inside these limits; None plans at the expert's own speeds
            and leaves limiting to whoever executes the commands.
    """

    def __init__(self, env, seed: int | None = None, variation: bool = True, limits=None):
        self.env = env.unwrapped
        self.rng = np.random.default_rng(seed)
        self.variation = variation
        self.limits: MotionLimits | None = limits
        self.arm_model = mujoco.MjModel.from_xml_path(str(so101.ARM_XML))
        self.arm_data = mujoco.MjData(self.arm_model)
        self._ik_solver = TopDownIK(self.arm_model)
        self._kp = float(self.arm_model.actuator_gainprm[0, 0])
        self._clear_motion(open_pct=50.0)

    def _clear_motion(self, open_pct: float) -> None:
        """Empties the plan and the command history (at the start of an episode)."""
        self._queue: list[np.ndarray] = []
        self._gripper_pct = open_pct
        self._grip_cmd: float | None = None  # the gripper command sent (ramped under limits)
        self._grip_vel = 0.0
        self._sent: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._last_q: np.ndarray | None = None

    def _plan_next_phase(self) -> None:
        raise NotImplementedError

    def act(self, obs=None) -> np.ndarray:
        """Next action [6] in lerobot units (degrees, gripper 0-100)."""
        while not self._queue:
            self._plan_next_phase()
        q = self._queue.pop(0)
        self._last_q = q
        return self._command(q)

    def _q_now(self) -> np.ndarray:
        """Where the plan stands: the last planned joint radians, else the arm's."""
        return self._last_q if self._last_q is not None else self.env.arm_qpos()

    def _uniform(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi)) if self.variation else 0.5 * (lo + hi)

    @property
    def _from_rest(self) -> str:
        """Profile of a move that starts where the arm stands still: at speed at once, except
        under limits, where that first step would break the acceleration limit."""
        return "ease_out" if self.limits is None else "min_jerk"

    def _ik(self, pos: np.ndarray, yaw: float, q_init: np.ndarray) -> np.ndarray:
        """Joint radians [6] putting the grasp site at ``pos``, jaws down, rotated by ``yaw``."""
        q0 = np.array(q_init, dtype=np.float64).copy()
        q0[5] = so101.to_radians(np.r_[np.zeros(5), self._gripper_pct])[5]
        return self._ik_solver.solve(pos, yaw, q0)

    def _ticks_for_distance(self, dist: float, speed: float) -> int:
        return max(3, int(np.ceil(dist / speed / self.env.control_dt)))

    def _ticks_for_joints(self, waypoints: np.ndarray, speed: float) -> int:
        longest = np.max(np.abs(np.diff(waypoints[:, :5], axis=0)).sum(axis=0))
        return max(5, int(np.ceil(longest / speed / self.env.control_dt)))

    def _queue_segment(
        self, q_start, path, speed=None, ticks=None, pause=0, stage_ticks=None, profile="min_jerk"
    ):
        """Queue a traversal of ``q_start -> path``: minimum-jerk, or ``ease_out`` (moving at
        twice the mean speed from the first tick, slowing to rest) where the arm starts from a
        pause that the demo should not prolong.

        ``stage_ticks=(first, rest)`` paces the first piece and the remaining pieces separately
        (e.g. a fast approach flowing into a slow descent) without stopping between them: the
        arm only comes to rest at the end, so no state along the way is a pause whose length
        the policy would have to guess.
        """
        waypoints = np.vstack([q_start, *path])
        if ticks is None:
            ticks = self._ticks_for_joints(waypoints, speed)
        first, rest = stage_ticks if stage_ticks is not None else (ticks, 0)
        smooth = self.limits is not None
        if smooth:  # reaches the speed limit sooner than minimum jerk for the same peak accel
            profile = "trapezoid"
        samples = self._sample(waypoints, ticks, (first, rest), profile, smooth)
        # Under limits: slow down the stage (or the whole segment) that breaks one, until none
        # does. Each round lengthens it by 8 %, so 80 rounds allow ~470x: far beyond any move.
        for _ in range(80 if self.limits is not None else 0):
            bad = self._first_violation(samples, waypoints[0])
            if bad is None:
                break
            if stage_ticks is not None and rest > 0 and bad >= first * ticks / (first + rest):
                rest = int(np.ceil(rest * 1.08))
            else:
                first = int(np.ceil(first * 1.08))
            ticks = first + rest
            samples = self._sample(waypoints, ticks, (first, rest), profile, smooth)
        self._queue.extend(samples)
        self._queue.extend([waypoints[-1]] * pause)

    @staticmethod
    def _sample(waypoints, ticks, stage_ticks, profile, smooth=False) -> list[np.ndarray]:
        """``ticks`` joint vectors along the path through ``waypoints``, timed by the profile;
        ``stage_ticks`` shares the time between the first piece and the rest. The path is
        piecewise linear, or with ``smooth`` a cubic spline: IK waypoints along a straight line
        of the tool bend in joint space, and a corner taken at speed is an acceleration spike."""
        seg_len = np.linalg.norm(np.diff(waypoints, axis=0), axis=1)
        first, rest = stage_ticks
        if rest > 0 and len(seg_len) > 1:
            tail = seg_len[1:]
            tail = tail / tail.sum() * rest if tail.sum() > 0 else np.full(len(tail), 0.0)
            seg_len = np.r_[first if seg_len[0] > 1e-9 else 0.0, tail]
        cum = np.r_[0.0, np.cumsum(seg_len)]
        total = cum[-1] if cum[-1] > 0 else 1.0
        spline = None
        if smooth and len(waypoints) > 2 and np.all(seg_len > 1e-9):
            spline = CubicSpline(np.r_[0.0, np.cumsum(seg_len)], waypoints, bc_type="natural")
        out = []
        for i in range(1, ticks + 1):
            t = i / ticks
            if profile == "ease_out":
                arc = (1.0 - (1.0 - t) ** 2) * total
            elif profile == "trapezoid":  # constant acceleration over the first and last 30 %
                r, v = 0.3, 1.0 / 0.7
                if t < r:
                    arc = v * t * t / (2 * r) * total
                elif t > 1 - r:
                    arc = (1.0 - v * (1 - t) ** 2 / (2 * r)) * total
                else:
                    arc = v * (t - r / 2) * total
            else:  # minimum jerk
                arc = (10 * t**3 - 15 * t**4 + 6 * t**5) * total
            if spline is not None:
                out.append(spline(arc))
                continue
            j = min(np.searchsorted(cum, arc, side="right") - 1, len(seg_len) - 1)
            frac = 0.0 if seg_len[j] == 0 else (arc - cum[j]) / seg_len[j]
            out.append(waypoints[j] + frac * (waypoints[j + 1] - waypoints[j]))
        return out

    def _first_violation(self, samples: list[np.ndarray], q_start: np.ndarray) -> int | None:
        """Index of the first planned tick whose arm command would exceed a fraction of the
        limits (joint step, its change, tool or elbow speed), counting from the commands
        queued or sent before it; None when the whole plan fits."""
        lim = self.limits
        f = lim.fraction
        # The two commands before the plan: already queued ones, else the last ones sent.
        queued = [self._kinematics(q) for q in self._queue[-2:]]
        history = (self._sent + queued)[-2:] or [self._kinematics(q_start)]
        prev2, prev = (history * 2)[-2:]
        for i, q in enumerate(samples):
            now = self._kinematics(q)
            step = now[0] - prev[0]
            if np.any(np.abs(step) > f * lim.step[:5]):
                return i
            if np.any(np.abs(step - (prev[0] - prev2[0])) > f * lim.accel[:5]):
                return i
            moved = max(np.linalg.norm(now[1] - prev[1]), np.linalg.norm(now[2] - prev[2]))
            if moved > f * lim.tool_speed:
                return i
            prev2, prev = prev, now
        return None

    def _kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arm command [5] (degrees, with the gravity feed-forward) for the joint radians ``q``,
        and the tool and elbow positions there."""
        self.arm_data.qpos[:] = q
        self.arm_data.qvel[:] = 0.0
        mujoco.mj_forward(self.arm_model, self.arm_data)
        cmd = np.array(q, dtype=np.float64)
        cmd[:5] += self.arm_data.qfrc_bias[:5] / self._kp
        tool = self.arm_data.site("grasp").xpos.copy()
        body = self.arm_data.body("lower_arm")
        elbow = body.xpos + body.xmat.reshape(3, 3) @ ELBOW_OFFSET
        return np.rad2deg(cmd[:5]), tool, elbow

    def _command(self, q: np.ndarray) -> np.ndarray:
        """Joint target [6] in lerobot units, offset to cancel the servos' gravity sag."""
        q = np.array(q, dtype=np.float64)
        grip = self._gripper_command()
        q[5] = so101.to_radians(np.r_[np.zeros(5), grip])[5]
        arm_deg, tool, elbow = self._kinematics(q)
        self._sent.append((arm_deg, tool, elbow))
        del self._sent[:-2]
        out = np.r_[arm_deg, grip]
        if self.limits is not None:
            return np.clip(out, self.limits.low, self.limits.high)
        return np.clip(out, SOFT_LOW, SOFT_HIGH)

    def _gripper_command(self) -> float:
        """The gripper target in %: the jaw's goal, reached by a speed- and acceleration-limited
        ramp under limits (and clipped to their soft range), at once without."""
        goal = self._gripper_pct
        lim = self.limits
        if lim is None:
            return goal
        goal = float(np.clip(goal, lim.low[5], lim.high[5]))
        if self._grip_cmd is None:  # first command: the jaws start where they are
            self._grip_cmd = float(
                np.clip(so101.from_radians(self.env.arm_qpos())[5], lim.low[5], lim.high[5])
            )
        pct_per_deg = 100.0 / np.rad2deg(so101.GRIPPER_OPEN_RAD - so101.GRIPPER_CLOSED_RAD)
        vmax = lim.fraction * lim.step[5] * pct_per_deg
        amax = lim.fraction * lim.accel[5] * pct_per_deg
        err = goal - self._grip_cmd
        # Fastest speed from which the ramp can still stop at the goal, then the accel limit.
        # (Discrete ticks: v + (v - a) + ... + a covers v²/2a + v/2.)
        brake = np.sqrt(2.0 * amax * abs(err) + amax**2 / 4.0) - amax / 2.0
        want = np.sign(err) * min(vmax, brake)
        self._grip_vel = float(np.clip(want, self._grip_vel - amax, self._grip_vel + amax))
        if abs(err) <= amax:
            self._grip_vel, self._grip_cmd = 0.0, goal
        else:
            self._grip_cmd += self._grip_vel
        return self._grip_cmd

    def gripper_ramping(self) -> bool:
        """Whether the gripper command is still on its way to the jaw's goal."""
        return (
            self.limits is not None
            and self._grip_cmd is not None
            and abs(
                self._grip_cmd
                - float(np.clip(self._gripper_pct, self.limits.low[5], self.limits.high[5]))
            )
            > 1e-6
        )
