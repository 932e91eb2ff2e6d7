"""Scripted privileged-state expert for PickColorCube: approach -> descend -> grasp -> lift.

Grasp poses are solved with inverse kinematics (mink) on a private copy of the arm model: the
gripper points straight down and its jaws close across two faces of the named cube. Motion
between poses is interpolated in joint space with a minimum-jerk profile; descents follow a
vertical line through several IK waypoints so the fingers do not sweep into the cube. The
approach flows into the descent without a stop, and the jaws close as soon as the arm arrives:
a demo that pauses for a random time in a static pose teaches a single-frame policy to wait
there, and replanning every few ticks then waits forever.

The motion itself (timing, limits, gravity feed-forward, the gripper's ramp) is
:class:`sim.motion.ArmMotion`'s.

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

import numpy as np

from safety import so101
from sim.envs.pick_color_cube import PickColorCubeEnv
from sim.envs.tabletop import PAN_AXIS_XY
from sim.motion import SOFT_HIGH, SOFT_LOW, ArmMotion, MotionLimits

__all__ = ["SOFT_HIGH", "SOFT_LOW", "MotionLimits", "PickCubeExpert"]

MAX_ATTEMPTS = 3  # grasps per episode before the expert gives up
OPEN_PCT = (35.0, 55.0)  # range of the jaws' opening on the way down (lerobot %)
CLOSING_PCT = 25.0  # gripper below this (lerobot %) with the cube between the jaws: grasping


class PickCubeExpert(ArmMotion):
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
        super().__init__(env, seed=seed, variation=variation, limits=limits)
        self.env: PickColorCubeEnv
        self.landing_prob = landing_prob
        self.miss_prob = miss_prob
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
        self._clear_motion(open_pct=self.p["open_pct"])
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
