"""Scripted privileged-state expert for PickColorCube: approach -> descend -> grasp -> lift.

Grasp poses are solved with inverse kinematics (mink) on a private copy of the arm model: the
gripper points straight down and its jaws close across two faces of the named cube. Motion
between poses is interpolated in joint space with a minimum-jerk profile; descents follow a
vertical line through several IK waypoints so the fingers do not sweep into the cube. The
approach flows into the descent without a stop, and the jaws close as soon as the arm arrives:
a demo that pauses for a random time in a static pose teaches a single-frame policy to wait
there, and replanning every few ticks then waits forever.

The servos sag under gravity (they are torque-limited position controllers, like the real
STS3215), so commands carry a gravity feed-forward offset computed from the model: an expert
on the real arm would learn the same correction.

Each episode draws small variations (heights, speeds, grasp offsets, gripper opening)
from the expert's own generator so that demos are not all identical.

Given the safety gate's limits (:class:`MotionLimits`), the expert plans inside them: each
segment is slowed until its joint steps, their changes (acceleration) and the tool and elbow
speeds stay under a fraction of the limits, the gripper ramps instead of jumping, and no joint
is sent past the gate's soft range. A demo is then exactly what the gated arm executes, so a
policy trained on it asks for motions the gate passes unchanged instead of ones it has to
smooth and lag (the arm behind its own plan is a state no demo shows).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.interpolate import CubicSpline

from safety import so101
from safety.config import SafetyConfig, joint_limits_rad
from sim.envs.pick_color_cube import PickColorCubeEnv
from sim.ik import TopDownIK

PAN_AXIS_XY = np.array([0.0388353, 0.0])
MAX_ATTEMPTS = 3  # grasps per episode before the expert gives up
OPEN_PCT = (35.0, 55.0)  # range of the jaws' opening on the way down (lerobot %)
CLOSING_PCT = 25.0  # gripper below this (lerobot %) with the cube between the jaws: grasping
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


@dataclass
class _Segment:
    """Joint-space trajectory piece: waypoints [K, 6] radians traversed in ``ticks`` ticks."""

    waypoints: np.ndarray
    ticks: int
    pause: int  # ticks to hold the final pose afterwards


class PickCubeExpert:
    """Solves PickColorCube-v1 from privileged state (cube poses) of an unwrapped env."""

    def __init__(
        self,
        env,
        seed: int | None = None,
        variation: bool = True,
        miss_prob: float = 0.0,
        limits: MotionLimits | None = None,
        landing_prob: float = 0.0,
    ):
        """Args:
        env: a PickColorCube env (wrappers are looked through).
        seed: the expert's own generator (variations, staged misses).
        variation: randomize heights, speeds, offsets; False = the mean demo.
        miss_prob: probability per episode that the named cube is pushed out of the jaws as
            they start to close, so the demo shows the expert noticing the empty grasp,
            opening and grasping again (recovery demos). 0 keeps demos identical to before.
        limits: plan every motion inside these limits (module docstring); None plans at the
            expert's own speeds and leaves limiting to whoever executes the commands.
        landing_prob: probability per episode that the named cube slides under one jaw late
            in the first descent, so the jaw comes down on top of it; the demo shows the
            expert noticing the jaws stopped above the grasp (or the cube off centre), rising
            and aligning again (recovery demos). 0 keeps demos identical to before.
        """
        if not 0.0 <= miss_prob <= 1.0:
            raise ValueError(f"miss_prob must be in [0, 1], got {miss_prob}")
        if not 0.0 <= landing_prob <= 1.0:
            raise ValueError(f"landing_prob must be in [0, 1], got {landing_prob}")
        self.landing_prob = landing_prob
        self.env: PickColorCubeEnv = env.unwrapped
        self.rng = np.random.default_rng(seed)
        self.variation = variation
        self.miss_prob = miss_prob
        self.limits = limits
        self.arm_model = mujoco.MjModel.from_xml_path(str(so101.ARM_XML))
        self.arm_data = mujoco.MjData(self.arm_model)
        self._ik_solver = TopDownIK(self.arm_model)
        self._kp = float(self.arm_model.actuator_gainprm[0, 0])
        self.reset()

    # ------------------------------------------------------------------ public
    def reset(self) -> None:
        """Call after ``env.reset``: draws this episode's variations and clears the plan."""
        u = self._uniform
        self.p = {
            "pre_height": u(0.05, 0.08),
            "lift_height": u(0.075, 0.095),
            "open_pct": u(*OPEN_PCT),
            "speed": u(1.4, 2.0),  # rad/s of the fastest joint on free-space moves
            "descend_speed": u(0.06, 0.09),  # m/s of the grasp point
            "offset": np.array([u(-0.003, 0.003), u(-0.003, 0.003)]),
            "grasp_dz": u(0.001, 0.005),
            "close_ticks": int(round(u(9, 14))),  # upper bound; the jaws usually stop sooner
        }
        self._phase = 0
        self._queue: list[np.ndarray] = []
        self._gripper_pct = self.p["open_pct"]
        self._grip_cmd: float | None = None  # the gripper command sent (ramped under limits)
        self._grip_vel = 0.0
        self._sent: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._last_q: np.ndarray | None = None
        self._close_ticks = 0
        self._last_grip: float | None = None
        self._attempts = 0
        self._yaw = 0.0
        self._staged: list[str] = []
        # Drawn only when asked for, so that miss_prob=0 leaves the generator's stream as it was.
        self._stage_miss = self.miss_prob > 0 and self.rng.random() < self.miss_prob
        self._stage_landing = self.landing_prob > 0 and self.rng.random() < self.landing_prob
        self._grasp_z: float | None = None  # height the current descent ends at
        self._from_grasp: np.ndarray | None = None  # grasp point where take_over() found it
        self._from_on_top = False  # and whether a jaw rested on the cube's top then

    def take_over(self) -> None:
        """Call instead of :meth:`reset` when the expert takes over an episode that another
        controller (a policy) has been driving: the plan starts from the state it left.

        Holding the named cube up, the expert lifts it; with the jaws around it on the table,
        it closes them; otherwise it flies to the approach point over the cube at the jaws'
        present height (capped at the usual approach height; 1.5 cm higher if they are low
        and more than 4 mm off centre, so they do not drag the cube) and descends. Demos
        recorded from here label the states a policy visits with the expert's correction
        (DAgger); a policy that is on course sees the expert carry on, not start over."""
        self.reset()
        env = self.env
        grasp = env.grasp_position()
        cube = env.cube_positions()[env.target]
        self._yaw = self._grasp_yaw(cube, env.cube_yaws()[env.target])
        around = self._holding_target()
        grip = so101.from_radians(env.arm_qpos())[5]
        if around and env.cube_lifts()[env.target] > 0.01:
            self._gripper_pct, self._phase = 0.0, 2
        elif around and grip < CLOSING_PCT:
            self._gripper_pct, self._phase = 0.0, 1
        else:
            self._from_grasp, self._from_on_top = grasp, self._jaw_on_target()
            if self.variation:  # keep the opening the jaws have, where a demo's could be
                self.p["open_pct"] = float(np.clip(grip, *OPEN_PCT))

    def staged(self) -> list[str]:
        """The recoveries staged in this episode so far ("miss", "landing")."""
        return list(self._staged)

    def act(self, obs=None) -> np.ndarray:
        """Next action [6] in lerobot units (degrees, gripper 0-100)."""
        while not self._queue:
            self._plan_next_phase()
        if self._stage_landing and not self._staged and self._phase == 1:
            self._maybe_slide_target_under_a_jaw()
        q = self._queue.pop(0)
        self._last_q = q
        return self._command(q)

    # ------------------------------------------------------------------ planning
    def _uniform(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi)) if self.variation else 0.5 * (lo + hi)

    def _plan_next_phase(self) -> None:
        env, p = self.env, self.p
        cube = env.cube_positions()[env.target]
        target_xy = cube[:2] + p["offset"]
        yaw = self._grasp_yaw(cube, env.cube_yaws()[env.target])
        q_now = self._last_q if self._last_q is not None else env.arm_qpos()
        grasp_z = cube[2] + p["grasp_dz"]
        if self.limits is not None:  # closing jaws swing their tips ~3 mm down: keep off the table
            grasp_z += 0.005

        if self._phase == 0:  # above the cube, then straight down, in one unbroken motion
            self._gripper_pct = p["open_pct"]
            self._yaw = yaw
            self._grasp_z = grasp_z
            pre_z, drop = grasp_z + p["pre_height"], p["pre_height"]
            if self._from_grasp is not None:  # taking over: see take_over()
                here, self._from_grasp = self._from_grasp, None
                beside = np.hypot(*(here[:2] - target_xy)) > 0.012 and here[2] < grasp_z + 0.03
                rise = 0.015 if self._from_on_top or beside else 0.0
                pre_z = float(np.clip(here[2] + rise, grasp_z + 0.01, pre_z))
                drop = pre_z - grasp_z
            q_pre = self._ik(np.r_[target_xy, pre_z], yaw, q_now)
            path, q = [q_pre], q_pre
            for z in np.linspace(pre_z, grasp_z, 5)[1:]:
                q = self._ik(np.r_[target_xy, z], yaw, q)
                path.append(q)
            approach = self._ticks_for_joints(np.vstack([q_now, q_pre]), p["speed"])
            descent = self._ticks_for_distance(drop, p["descend_speed"])
            if self.limits is None:
                self._queue_segment(
                    q_now, path, ticks=approach + descent, stage_ticks=(approach, descent)
                )
            else:  # the corner at q_pre, taken at speed, would break the acceleration limit
                self._queue_segment(q_now, [q_pre], ticks=approach)
                self._queue_segment(q_pre, path[1:], ticks=descent)
        elif self._phase == 1:  # close the jaws; the lift starts as soon as they stop moving
            # Only with landing demos on, so that the shipped recipes' demos stay as they were.
            checks = self.landing_prob > 0 and self._close_ticks == 0
            if checks and self._attempts < MAX_ATTEMPTS - 1 and self._misaligned():
                self._open_and_rise(q_now)  # a jaw sits on the cube: rise and align again
                return
            self._gripper_pct = 0.0
            if self._close_ticks == 0 and self._stage_miss and self._attempts == 0:
                self._push_target_out_of_the_jaws()
            self._close_ticks += 1
            grip = so101.from_radians(env.arm_qpos())[5]
            settled = self._last_grip is not None and abs(grip - self._last_grip) < 0.5
            self._last_grip = grip
            # Under limits the command ramps closed: wait for it (the squeeze grows with it).
            cap = p["close_ticks"] + (30 if self.limits is not None else 0)
            closing = not (self._close_ticks > 3 and settled) or self.gripper_ramping()
            if closing and self._close_ticks < cap:
                self._queue.append(q_now)
                return  # stay in this phase: one tick at a time, reading the gripper
            if not self._holding_target() and self._attempts < MAX_ATTEMPTS - 1:
                self._open_and_rise(q_now)
                return
        elif self._phase == 2:  # lift straight up
            lift_z = grasp_z + p["lift_height"]
            path, q = [], q_now
            for z in np.linspace(grasp_z, lift_z, 5)[1:]:
                q = self._ik(np.r_[target_xy, z], yaw, q)
                path.append(q)
            ticks = self._ticks_for_distance(p["lift_height"], p["descend_speed"])
            self._queue_segment(q_now, path, ticks=ticks, pause=0, profile=self._from_rest)
        else:  # hold the cube up until the episode ends
            self._queue.extend([q_now] * 30)
        self._phase += 1

    @property
    def _from_rest(self) -> str:
        """Profile of a move that starts where the arm stands still: at speed at once, except
        under limits, where that first step would break the acceleration limit."""
        return "ease_out" if self.limits is None else "min_jerk"

    def _holding_target(self) -> bool:
        """Whether the named cube sits between the closed jaws (privileged check)."""
        cube = self.env.cube_positions()[self.env.target]
        grasp = self.env.grasp_position()
        return bool(np.hypot(*(cube[:2] - grasp[:2])) < 0.012 and abs(cube[2] - grasp[2]) < 0.02)

    def _misaligned(self) -> bool:
        """At the bottom of a descent, before closing: whether the jaws stopped well above the
        grasp (resting on the cube) or the cube is not between them (privileged check)."""
        cube = self.env.cube_positions()[self.env.target]
        grasp = self.env.grasp_position()
        blocked = self._grasp_z is not None and grasp[2] - self._grasp_z > 0.012
        return bool(blocked or np.hypot(*(cube[:2] - grasp[:2])) > 0.01)

    def _jaw_on_target(self) -> bool:
        """Whether a jaw rests on the named cube's top: a contact between them whose normal is
        near vertical (privileged check; jaws squeezing its sides push sideways)."""
        model, data = self.env.model, self.env.data
        cube = model.body(f"cube_{self.env.target}").id
        jaws = {model.body("gripper").id, model.body("moving_jaw").id}
        for contact in data.contact[: data.ncon]:
            bodies = {model.geom_bodyid[contact.geom1], model.geom_bodyid[contact.geom2]}
            if cube in bodies and bodies & jaws and abs(contact.frame[2]) > 0.7:
                return True
        return False

    def _maybe_slide_target_under_a_jaw(self) -> None:
        """Stages a jaw landing on the cube: once the grasp point is 4.5 cm above the grasp
        (jaw tips about 1.5 cm above the cube's top), slides the named cube toward one of the
        pads, to a free spot in reach, so that pad comes down on it."""
        env = self.env
        if env.grasp_position()[2] - self._grasp_z > 0.045:
            return
        self._staged.append("landing")
        centre = env.grasp_position()[:2]
        pads = [env.data.geom(name).xpos[:2].copy() for name in ("fixed_pad", "moving_pad")]
        for i in self.rng.permutation(2):
            to_pad = pads[i] - centre
            dist = np.hypot(*to_pad)
            toward, across = to_pad / dist, np.array([-to_pad[1], to_pad[0]]) / dist
            # The cube's centre 6-15 mm inside the pad: the pad comes down on its top, near the
            # edge, as it does when a grasp is 5-15 mm off centre.
            xy = centre + toward * (dist - self.rng.uniform(0.006, 0.015))
            xy = xy + across * self.rng.uniform(-0.004, 0.004)
            if self._free_spot(xy):
                env.place_cube(env.target, xy)
                return

    def _free_spot(self, xy: np.ndarray) -> bool:
        """Whether the named cube may rest at ``xy``: in reach and clear of the other cubes."""
        env, lay = self.env, self.env.layout
        reach = np.hypot(*(xy - PAN_AXIS_XY))
        if not lay.min_reach <= reach <= lay.max_reach:
            return False
        others = [c[:2] for color, c in env.cube_positions().items() if color != env.target]
        return all(np.hypot(*(xy - o)) >= lay.min_separation for o in others)

    def _open_and_rise(self, q_now: np.ndarray) -> None:
        """The jaws closed on nothing: open them, rise straight back to the approach height and
        plan the grasp again from where the cube is now."""
        self._attempts += 1
        self._gripper_pct = self.p["open_pct"]
        self._close_ticks, self._last_grip = 0, None
        up = self.env.grasp_position() + np.array([0.0, 0.0, self.p["pre_height"]])
        q_up = self._ik(up, self._yaw, q_now)
        ticks = self._ticks_for_distance(self.p["pre_height"], self.p["descend_speed"])
        self._queue_segment(q_now, [q_up], ticks=ticks, profile=self._from_rest)
        self._phase = 0

    def _push_target_out_of_the_jaws(self) -> None:
        """Stages a missed grasp: moves the named cube 3-4.5 cm aside, to a free spot."""
        env = self.env
        here = env.cube_positions()[env.target][:2]
        dist = self.rng.uniform(0.03, 0.045)
        start = self.rng.uniform(0.0, 2 * np.pi)
        for angle in start + np.arange(12) * np.pi / 6:
            xy = here + dist * np.array([np.cos(angle), np.sin(angle)])
            if self._free_spot(xy):
                env.place_cube(env.target, xy)
                self._staged.append("miss")
                return

    def _grasp_yaw(self, cube: np.ndarray, cube_yaw: float) -> float:
        """Jaw yaw aligned with a cube face, chosen so the wrist rolls as little as possible."""
        natural = np.arctan2(cube[1] - PAN_AXIS_XY[1], cube[0] - PAN_AXIS_XY[0]) + np.pi / 2
        k = np.round((natural - cube_yaw) / (np.pi / 2))
        return float(cube_yaw + k * np.pi / 2)

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
