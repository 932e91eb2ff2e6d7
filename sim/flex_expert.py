"""Scripted privileged-state experts for the deformable tasks: grasp a vertex, carry it, let go.

Each expert reads the flex's vertices (privileged state), picks the vertex to pinch and the
yaw that closes the jaws across the cloth or rope there, and plans with :class:`ArmMotion`
(inside the safety gate's limits when given them): above the vertex, straight down, close the
jaws, carry the vertex along the task's path, then release and rise or hold. If the vertex is
not between the jaws once they have closed, or slips out on the way, the expert opens, rises
and starts again from where the cloth or rope now lies (up to ``MAX_ATTEMPTS`` grasps).
"""

from __future__ import annotations

import numpy as np

from safety import so101
from sim.envs.tabletop import PAN_AXIS_XY
from sim.envs.towel import CORNERS
from sim.motion import ArmMotion

MAX_ATTEMPTS = 3
OPEN_PCT = (35.0, 50.0)  # jaws' opening on the way down (lerobot %)
CLOSED_PCT = 0.0  # clipped to the gate's soft range by ArmMotion
HELD_RADIUS = 0.015  # the pinched vertex within this of the grasp point (horizontal): held
LOST_RADIUS = 0.03  # farther than this while carrying: it slipped out
# Closing, the moving tip swings through an arc 16 mm below where it starts, lowest 19 mm under
# the grasp point at ~18 % (the gate's fingertip point): at 21 mm it clears the table, and the
# fixed pad's end (6 mm up) sits below the middle of the 16 mm rope or towel.
FLEX_GRASP_Z = 0.021
TOWEL_GRASP_Z = FLEX_GRASP_Z


def yaw_across(tangent_xy: np.ndarray, at_xy: np.ndarray) -> float:
    """Yaw (rad) whose jaws close across a strand running along ``tangent_xy`` at ``at_xy``:
    of the two such yaws (they differ by pi) the one the wrist reaches with the least roll."""
    across = float(np.arctan2(tangent_xy[1], tangent_xy[0])) + np.pi / 2
    # With the jaws down, the wrist's roll is zero at a yaw along the pan direction (measured
    # with TopDownIK); near -160 or +160 degrees of roll the IK cannot reach at all.
    natural = float(np.arctan2(*(at_xy - PAN_AXIS_XY)[::-1]))
    k = np.round((natural - across) / np.pi)
    return across + k * np.pi


class FlexGraspExpert(ArmMotion):
    """Base of the flex experts; a task's expert says what to pinch and where to carry it.

    Subclasses implement :meth:`_grasp` (vertex index, yaw, grasp height) and :meth:`_carry`
    (grasp-point waypoints [K, 3] from the pinch to the goal), and set ``release``.
    """

    release = True  # open and rise at the goal (False: hold there)

    def __init__(self, env, seed: int | None = None, variation: bool = True, limits=None):
        super().__init__(env, seed=seed, variation=variation, limits=limits)
        self.reset()

    def reset(self) -> None:
        """Call after ``env.reset``: draws this episode's variations and clears the plan."""
        u = self._uniform
        self.p = {
            "pre_height": u(0.04, 0.06),
            "open_pct": u(*OPEN_PCT),
            "speed": u(1.4, 2.0),  # rad/s of the fastest joint on free-space moves
            "descend_speed": u(0.05, 0.07),  # m/s of the grasp point
            "carry_speed": u(0.05, 0.07),
            "grasp_dz": u(0.0, 0.003),
            "offset": np.array([u(-0.002, 0.002), u(-0.002, 0.002)]),
        }
        self._phase = 0
        self._attempts = 0
        self._vertex = 0
        self._yaw = 0.0
        self._close_ticks = 0
        self._last_grip: float | None = None
        self._clear_motion(open_pct=self.p["open_pct"])

    @property
    def gave_up(self) -> bool:
        """It has used all its grasps and holds still (``MAX_ATTEMPTS``)."""
        return self._attempts >= MAX_ATTEMPTS

    def take_over(self) -> None:
        """Starts a plan from the state another controller left (DAgger takeover demos): the
        jaws open over the vertex from where they are."""
        self.reset()

    # ------------------------------------------------------------------ what a task defines
    def _grasp(self) -> tuple[int, float, float]:
        """(vertex to pinch, jaw yaw, grasp-point height) for the flex as it lies now."""
        raise NotImplementedError

    def _carry(self, start: np.ndarray) -> np.ndarray:
        """Grasp-point waypoints [K, 3] from ``start`` (the pinch) to the goal."""
        raise NotImplementedError

    # ------------------------------------------------------------------ planning
    def _carry_more(self) -> np.ndarray | None:
        """At the goal, still holding: more waypoints when the task fell short, else None."""
        return None

    def vertices(self) -> np.ndarray:
        raise NotImplementedError

    def _held(self, radius: float) -> bool:
        grasp = self.env.grasp_position()
        v = self.vertices()[self._vertex]
        return bool(np.hypot(*(v[:2] - grasp[:2])) < radius and abs(v[2] - grasp[2]) < 0.03)

    def _plan_next_phase(self) -> None:
        q_now = self._q_now()
        p = self.p
        if self._phase == 0:  # above the vertex, then straight down
            self._gripper_pct = p["open_pct"]
            self._vertex, self._yaw, grasp_z = self._grasp()
            xy = self.vertices()[self._vertex][:2] + p["offset"]
            grasp_z += p["grasp_dz"]
            here = self.env.grasp_position()
            pre_z = max(grasp_z + p["pre_height"], min(here[2], grasp_z + 0.08))
            q_pre = self._ik(np.r_[xy, pre_z], self._yaw, q_now)
            path, q = [], q_pre
            for z in np.linspace(pre_z, grasp_z, 5)[1:]:
                q = self._ik(np.r_[xy, z], self._yaw, q)
                path.append(q)
            self._queue_segment(q_now, [q_pre], speed=p["speed"], profile=self._from_rest)
            descent = self._ticks_for_distance(pre_z - grasp_z, p["descend_speed"])
            self._queue_segment(q_pre, path, ticks=descent)
            self._phase = 1
        elif self._phase == 1:  # close the jaws until they stop
            self._gripper_pct = CLOSED_PCT
            self._close_ticks += 1
            grip = so101.from_radians(self.env.arm_qpos())[5]
            settled = self._last_grip is not None and abs(grip - self._last_grip) < 0.5
            self._last_grip = grip
            ramping = self.gripper_ramping()
            if (ramping or not settled or self._close_ticks < 4) and self._close_ticks < 40:
                self._queue.append(q_now)
                return
            if not self._held(HELD_RADIUS):
                self._retry(q_now)
                return
            start = self.env.grasp_position()
            self._queue_carry(q_now, start, self._carry(start))
            self._phase = 2
        elif self._phase == 2:  # at the goal: let go and rise, or hold
            if not self._held(LOST_RADIUS):
                self._retry(q_now)
                return
            more = self._carry_more()
            if more is not None:  # the task saw it fall short: carry on from here
                self._queue_carry(q_now, self.env.grasp_position(), more)
                return
            if not self.release:
                self._queue.extend([q_now] * 30)
                return
            self._gripper_pct = p["open_pct"]
            self._queue.extend([q_now] * 6)
            self._phase = 3
        elif self._phase == 3:
            up = self.env.grasp_position() + np.array([0.0, 0.0, p["pre_height"]])
            q_up = self._ik(up, self._yaw, q_now)
            ticks = self._ticks_for_distance(p["pre_height"], p["descend_speed"])
            self._queue_segment(q_now, [q_up], ticks=ticks, profile=self._from_rest)
            self._phase = 4
        else:
            self._queue.extend([q_now] * 30)

    def _queue_carry(self, q_now: np.ndarray, start: np.ndarray, waypoints: np.ndarray) -> None:
        """Moves the grasp point through ``waypoints`` at the carry speed, jaws as they are."""
        path, q = [], q_now
        for point in waypoints:
            q = self._ik(point, self._yaw, q)
            path.append(q)
        dist = float(np.sum(np.linalg.norm(np.diff(np.vstack([start, waypoints]), axis=0), axis=1)))
        ticks = self._ticks_for_distance(dist, self.p["carry_speed"])
        self._queue_segment(q_now, path, ticks=ticks, profile=self._from_rest)

    def _retry(self, q_now: np.ndarray) -> None:
        """The vertex is not between the jaws: open, rise and plan the grasp again."""
        self._attempts += 1
        self._gripper_pct = self.p["open_pct"]
        self._close_ticks, self._last_grip = 0, None
        if self._attempts >= MAX_ATTEMPTS:
            self._queue.extend([q_now] * 30)
            self._phase = 4
            return
        up = self.env.grasp_position() + np.array([0.0, 0.0, self.p["pre_height"]])
        q_up = self._ik(up, self._yaw, q_now)
        ticks = self._ticks_for_distance(self.p["pre_height"], self.p["descend_speed"])
        self._queue_segment(q_now, [q_up], ticks=ticks, profile=self._from_rest)
        self._phase = 0


class RopeExpert(FlexGraspExpert):
    """RopeToMark-v1: pinch the named end one edge in, drag it onto the named mark, let go."""

    def vertices(self) -> np.ndarray:
        return self.env.rope.positions(self.env.data)

    def _grasp(self) -> tuple[int, float, float]:
        env = self.env
        end = env.end_vertex(env.end)
        inner = 1 if end == 0 else env.rope.n - 2  # one edge (1.8 cm) in from the tip
        pos = self.vertices()
        tangent = pos[min(inner + 1, env.rope.n - 1), :2] - pos[max(inner - 1, 0), :2]
        return inner, yaw_across(tangent, pos[inner, :2]), FLEX_GRASP_Z

    def _carry(self, start: np.ndarray) -> np.ndarray:
        env = self.env
        pos = self.vertices()
        # Put the tip (one edge beyond the pinch) on the mark: aim the pinch short of it.
        tip = pos[env.end_vertex(env.end), :2] - pos[self._vertex, :2]
        return _drag_path(start, env.marks.positions(env.data)[env.mark] - 0.5 * tip)


def _drag_path(start: np.ndarray, goal_xy: np.ndarray, n: int = 8) -> np.ndarray:
    """Grasp-point waypoints [n, 3] from ``start`` to ``goal_xy``: 1 cm off the table on the
    way, so what trails slides rather than snags, and back down at the goal."""
    xy = np.linspace(start[:2], goal_xy, n + 1)[1:]
    z = np.full(n, start[2] + 0.01)
    z[-1] = start[2]
    return np.column_stack([xy, z])


def _corner_yaw(pos: np.ndarray, corner: int) -> float:
    """Jaws that close along the corner's diagonal, one outside the tip and one on the cloth."""
    diagonal = pos[corner, :2] - pos[:, :2].mean(axis=0)
    return yaw_across(np.array([-diagonal[1], diagonal[0]]), pos[corner, :2])


class TowelLiftExpert(FlexGraspExpert):
    """TowelLiftCorner-v1: pinch the named corner along its diagonal, lift it 6 cm, hold."""

    release = False
    lift = 0.06

    def vertices(self) -> np.ndarray:
        return self.env.vertices()

    def _grasp(self) -> tuple[int, float, float]:
        corner = self.env.corner_vertex(self.env.side)
        return corner, _corner_yaw(self.vertices(), corner), TOWEL_GRASP_Z

    def _carry(self, start: np.ndarray) -> np.ndarray:
        return np.array([start + [0.0, 0.0, self.lift / 2], start + [0.0, 0.0, self.lift]])


class TowelDragExpert(FlexGraspExpert):
    """TowelToMark-v1: pinch the corner that leads toward the named mark and drag the towel
    until its centre is on the mark (one correction while still holding), then let go."""

    max_corrections = 2
    tolerance = 0.012  # centre this near the mark: done

    def reset(self) -> None:
        super().reset()
        self._corrections = 0

    def vertices(self) -> np.ndarray:
        return self.env.vertices()

    def _offset(self) -> np.ndarray:
        env = self.env
        return env.marks.positions(env.data)[env.mark] - env.centre()

    def _grasp(self) -> tuple[int, float, float]:
        pos, away = self.vertices(), self._offset()
        centre = pos[:, :2].mean(axis=0)
        corner = max(CORNERS, key=lambda k: float(np.dot(pos[k, :2] - centre, away)))
        return corner, _corner_yaw(pos, corner), TOWEL_GRASP_Z

    def _carry(self, start: np.ndarray) -> np.ndarray:
        self._corrections = 0
        return _drag_path(start, start[:2] + self._offset())

    def _carry_more(self) -> np.ndarray | None:
        offset = self._offset()
        if self._corrections >= self.max_corrections or np.hypot(*offset) < self.tolerance:
            return None
        self._corrections += 1
        start = self.env.grasp_position()
        return _drag_path(start, start[:2] + offset, n=3)


class TowelFoldExpert(FlexGraspExpert):
    """TowelFold-v1: pinch the named corner along its diagonal, carry it in a half-ellipse over
    the fold line so that the corner (hanging ~1.3 cm off the grasp point) lands on the
    opposite corner, correct while holding, let go just above, and rise.

    Measured in the probe (DESIGN.md): released lower the jaws press the lower corner into the
    table and flick it away as they open; released higher the dropped corner slides back; a
    flat path (lift, across, down) misses by ~6 cm every time."""

    max_corrections = 2
    tolerance = 0.008

    def reset(self) -> None:
        super().reset()
        u = self._uniform
        self.p["fold_lift"] = u(0.05, 0.09)  # the half-ellipse's height above the release
        self.p["release_dz"] = u(0.031, 0.041)  # release height above the grasp height
        self._corrections = 0

    def vertices(self) -> np.ndarray:
        return self.env.vertices()

    def _corners(self) -> tuple[int, int]:
        env = self.env
        return env.corner_vertex(env.side), env.corner_vertex(env.target_corner())

    def _grasp(self) -> tuple[int, float, float]:
        corner, _ = self._corners()
        return corner, _corner_yaw(self.vertices(), corner), TOWEL_GRASP_Z

    def _carry(self, start: np.ndarray) -> np.ndarray:
        self._corrections = 0
        pos = self.vertices()
        src, dst = self._corners()
        hang = pos[src, :2] - start[:2]  # where the corner sits off the grasp point
        goal = pos[dst, :2] - hang
        release_z = start[2] + self.p["release_dz"]
        s = np.linspace(0.0, 1.0, 13)[1:]
        xy = start[:2] + s[:, None] * (goal - start[:2])
        z = release_z + self.p["fold_lift"] * np.sin(np.pi * s) ** 0.7
        up = np.r_[start[:2], start[2] + 0.5 * self.p["fold_lift"]]
        return np.vstack([up, np.column_stack([xy, z])])

    def _carry_more(self) -> np.ndarray | None:
        if self._corrections >= self.max_corrections:
            return None
        pos = self.vertices()
        src, dst = self._corners()
        error = pos[dst, :2] - pos[src, :2]
        if np.hypot(*error) < self.tolerance:
            return None
        self._corrections += 1
        grasp = self.env.grasp_position()
        return np.array([np.r_[grasp[:2] + error, grasp[2]]])
