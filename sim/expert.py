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
"""

from __future__ import annotations

from dataclasses import dataclass

import mink
import mujoco
import numpy as np

from sim import so101
from sim.envs.pick_color_cube import PickColorCubeEnv

PAN_AXIS_XY = np.array([0.0388353, 0.0])
MAX_ATTEMPTS = 3  # grasps per episode before the expert gives up


@dataclass
class _Segment:
    """Joint-space trajectory piece: waypoints [K, 6] radians traversed in ``ticks`` ticks."""

    waypoints: np.ndarray
    ticks: int
    pause: int  # ticks to hold the final pose afterwards


class PickCubeExpert:
    """Solves PickColorCube-v1 from privileged state (cube poses) of an unwrapped env."""

    def __init__(
        self, env, seed: int | None = None, variation: bool = True, miss_prob: float = 0.0
    ):
        """Args:
        env: a PickColorCube env (wrappers are looked through).
        seed: the expert's own generator (variations, staged misses).
        variation: randomize heights, speeds, offsets; False = the mean demo.
        miss_prob: probability per episode that the named cube is pushed out of the jaws as
            they start to close, so the demo shows the expert noticing the empty grasp,
            opening and grasping again (recovery demos). 0 keeps demos identical to before.
        """
        if not 0.0 <= miss_prob <= 1.0:
            raise ValueError(f"miss_prob must be in [0, 1], got {miss_prob}")
        self.env: PickColorCubeEnv = env.unwrapped
        self.rng = np.random.default_rng(seed)
        self.variation = variation
        self.miss_prob = miss_prob
        self.arm_model = mujoco.MjModel.from_xml_path(str(so101.ARM_XML))
        self.arm_data = mujoco.MjData(self.arm_model)
        self._cfg = mink.Configuration(self.arm_model)
        self._grasp_task = mink.FrameTask(
            "grasp", "site", position_cost=1.0, orientation_cost=0.1, lm_damping=1e-3
        )
        self._posture = mink.PostureTask(self.arm_model, cost=1e-3)
        self._limits = [mink.ConfigurationLimit(self.arm_model)]
        self._kp = float(self.arm_model.actuator_gainprm[0, 0])
        self.reset()

    # ------------------------------------------------------------------ public
    def reset(self) -> None:
        """Call after ``env.reset``: draws this episode's variations and clears the plan."""
        u = self._uniform
        self.p = {
            "pre_height": u(0.05, 0.08),
            "lift_height": u(0.075, 0.095),
            "open_pct": u(35.0, 55.0),
            "speed": u(1.4, 2.0),  # rad/s of the fastest joint on free-space moves
            "descend_speed": u(0.06, 0.09),  # m/s of the grasp point
            "offset": np.array([u(-0.003, 0.003), u(-0.003, 0.003)]),
            "grasp_dz": u(0.001, 0.005),
            "close_ticks": int(round(u(9, 14))),  # upper bound; the jaws usually stop sooner
        }
        self._phase = 0
        self._queue: list[np.ndarray] = []
        self._gripper_pct = self.p["open_pct"]
        self._last_q: np.ndarray | None = None
        self._close_ticks = 0
        self._last_grip: float | None = None
        self._attempts = 0
        self._yaw = 0.0
        # Drawn only when asked for, so that miss_prob=0 leaves the generator's stream as it was.
        self._stage_miss = self.miss_prob > 0 and self.rng.random() < self.miss_prob

    def act(self, obs=None) -> np.ndarray:
        """Next action [6] in lerobot units (degrees, gripper 0-100)."""
        while not self._queue:
            self._plan_next_phase()
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

        if self._phase == 0:  # above the cube, then straight down, in one unbroken motion
            self._gripper_pct = p["open_pct"]
            self._yaw = yaw
            pre_z = grasp_z + p["pre_height"]
            q_pre = self._ik(np.r_[target_xy, pre_z], yaw, q_now)
            path, q = [q_pre], q_pre
            for z in np.linspace(pre_z, grasp_z, 5)[1:]:
                q = self._ik(np.r_[target_xy, z], yaw, q)
                path.append(q)
            approach = self._ticks_for_joints(np.vstack([q_now, q_pre]), p["speed"])
            descent = self._ticks_for_distance(p["pre_height"], p["descend_speed"])
            self._queue_segment(
                q_now, path, ticks=approach + descent, stage_ticks=(approach, descent)
            )
        elif self._phase == 1:  # close the jaws; the lift starts as soon as they stop moving
            self._gripper_pct = 0.0
            if self._close_ticks == 0 and self._stage_miss and self._attempts == 0:
                self._push_target_out_of_the_jaws()
            self._close_ticks += 1
            grip = so101.from_radians(env.arm_qpos())[5]
            settled = self._last_grip is not None and abs(grip - self._last_grip) < 0.5
            self._last_grip = grip
            if not (self._close_ticks > 3 and settled) and self._close_ticks < p["close_ticks"]:
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
            self._queue_segment(q_now, path, ticks=ticks, pause=0, profile="ease_out")
        else:  # hold the cube up until the episode ends
            self._queue.extend([q_now] * 30)
        self._phase += 1

    def _holding_target(self) -> bool:
        """Whether the named cube sits between the closed jaws (privileged check)."""
        cube = self.env.cube_positions()[self.env.target]
        grasp = self.env.grasp_position()
        return bool(np.hypot(*(cube[:2] - grasp[:2])) < 0.012 and abs(cube[2] - grasp[2]) < 0.02)

    def _open_and_rise(self, q_now: np.ndarray) -> None:
        """The jaws closed on nothing: open them, rise straight back to the approach height and
        plan the grasp again from where the cube is now."""
        self._attempts += 1
        self._gripper_pct = self.p["open_pct"]
        self._close_ticks, self._last_grip = 0, None
        up = self.env.grasp_position() + np.array([0.0, 0.0, self.p["pre_height"]])
        q_up = self._ik(up, self._yaw, q_now)
        ticks = self._ticks_for_distance(self.p["pre_height"], self.p["descend_speed"])
        self._queue_segment(q_now, [q_up], ticks=ticks, profile="ease_out")
        self._phase = 0

    def _push_target_out_of_the_jaws(self) -> None:
        """Stages a missed grasp: moves the named cube 3-4.5 cm aside, to a free spot."""
        env = self.env
        cubes = env.cube_positions()
        here = cubes[env.target][:2]
        others = [c[:2] for color, c in cubes.items() if color != env.target]
        dist = self.rng.uniform(0.03, 0.045)
        start = self.rng.uniform(0.0, 2 * np.pi)
        lay = env.layout
        for angle in start + np.arange(12) * np.pi / 6:
            xy = here + dist * np.array([np.cos(angle), np.sin(angle)])
            reach = np.hypot(*(xy - PAN_AXIS_XY))
            if not lay.min_reach <= reach <= lay.max_reach:
                continue
            if any(np.hypot(*(xy - o)) < lay.min_separation for o in others):
                continue
            env.place_cube(env.target, xy)
            return

    def _grasp_yaw(self, cube: np.ndarray, cube_yaw: float) -> float:
        """Jaw yaw aligned with a cube face, chosen so the wrist rolls as little as possible."""
        natural = np.arctan2(cube[1] - PAN_AXIS_XY[1], cube[0] - PAN_AXIS_XY[0]) + np.pi / 2
        k = np.round((natural - cube_yaw) / (np.pi / 2))
        return float(cube_yaw + k * np.pi / 2)

    def _ik(self, pos: np.ndarray, yaw: float, q_init: np.ndarray) -> np.ndarray:
        """Joint radians [6] putting the grasp site at ``pos``, jaws down, rotated by ``yaw``."""
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        target = mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(rot), pos)
        q0 = np.array(q_init, dtype=np.float64).copy()
        q0[5] = so101.to_radians(np.r_[np.zeros(5), self._gripper_pct])[5]
        self._cfg.update(q0)
        self._grasp_task.set_target(target)
        self._posture.set_target(q0)
        tasks = [self._grasp_task, self._posture]
        for _ in range(200):
            vel = mink.solve_ik(self._cfg, tasks, 0.05, "daqp", damping=1e-3, limits=self._limits)
            self._cfg.integrate_inplace(vel, 0.05)
            err = self._grasp_task.compute_error(self._cfg)
            if np.linalg.norm(err[:3]) < 5e-4 and np.linalg.norm(vel) < 1e-3:
                break
        return self._cfg.q.copy()

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
        seg_len = np.linalg.norm(np.diff(waypoints, axis=0), axis=1)
        if stage_ticks is not None and len(seg_len) > 1:
            first, rest = stage_ticks
            tail = seg_len[1:]
            tail = tail / tail.sum() * rest if tail.sum() > 0 else np.full(len(tail), 0.0)
            seg_len = np.r_[first if seg_len[0] > 1e-9 else 0.0, tail]
        # Minimum-jerk timing along the piecewise-linear joint path.
        cum = np.r_[0.0, np.cumsum(seg_len)]
        total = cum[-1] if cum[-1] > 0 else 1.0
        for i in range(1, ticks + 1):
            t = i / ticks
            if profile == "ease_out":
                arc = (1.0 - (1.0 - t) ** 2) * total
            else:
                arc = (10 * t**3 - 15 * t**4 + 6 * t**5) * total
            j = min(np.searchsorted(cum, arc, side="right") - 1, len(seg_len) - 1)
            frac = 0.0 if seg_len[j] == 0 else (arc - cum[j]) / seg_len[j]
            self._queue.append(waypoints[j] + frac * (waypoints[j + 1] - waypoints[j]))
        self._queue.extend([waypoints[-1]] * pause)

    def _command(self, q: np.ndarray) -> np.ndarray:
        """Joint target [6] in lerobot units, offset to cancel the servos' gravity sag."""
        q = np.array(q, dtype=np.float64)
        q[5] = so101.to_radians(np.r_[np.zeros(5), self._gripper_pct])[5]
        self.arm_data.qpos[:] = q
        self.arm_data.qvel[:] = 0.0
        mujoco.mj_forward(self.arm_model, self.arm_data)
        sag = self.arm_data.qfrc_bias / self._kp
        cmd = q.copy()
        cmd[:5] += sag[:5]
        out = so101.from_radians(cmd)
        return np.clip(out, so101.ACTION_LOW, so101.ACTION_HIGH)
