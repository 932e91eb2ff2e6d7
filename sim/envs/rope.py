"""RopeToMark-v1: drag the named end of a rope to the named mark.

A 25 cm rope (a MuJoCo flex of 15 vertices, 16 mm thick) lies across the table in front of the arm in a
random gentle curve, with a red and a blue mark nearby. The instruction names one end and one
mark, "drag the left end of the rope to the red mark": four tasks in every scene, so only the
words say which. Left and right are the arm's own (its left is +y, which the front camera,
looking back at the arm, shows on the right of its image); the left end is the one farther to
+y, and every layout keeps the two ends at least ``min_end_gap`` apart in y.

Success: the named end's vertex within ``success_radius`` (3 cm) of the named mark's centre,
horizontally, for ``hold_steps`` consecutive ticks. Spaces and units: :mod:`sim.envs.tabletop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.envs import ASSETS
from sim.envs.flex import MARK_COLORS, FlexState, Marks, sample_marks
from sim.envs.tabletop import TabletopEnv, reach

SCENE_XML = ASSETS / "rope.xml"
ENDS = ("left", "right")
INSTRUCTION_TEMPLATE = "drag the {end} end of the rope to the {mark} mark"
ROPE_SEGMENT = 0.0178  # rest length of one edge (the flexcomp's spacing)
ROPE_RADIUS = 0.008


@dataclass(frozen=True)
class RopeLayout:
    """Where the rope and marks may lie at reset (metres in the arm's base frame, radians)."""

    centre_x: tuple[float, float] = (0.17, 0.22)
    centre_y: tuple[float, float] = (-0.04, 0.04)
    heading_deg: tuple[float, float] = (-30.0, 30.0)  # the chord's angle off the y axis
    bend_deg: tuple[float, float] = (-70.0, 70.0)  # total turn of the tangent along the rope
    wiggle_deg: tuple[float, float] = (-25.0, 25.0)  # amplitude of an S-shaped turn on top
    min_end_gap: float = 0.10  # |y_left - y_right| at least this: left and right are clear
    min_reach: float = 0.15  # every vertex and mark this far from the pan axis, at most max
    max_reach: float = 0.27
    mark_clearance: float = 0.035  # marks' centres this far from every rope vertex
    min_mark_separation: float = 0.08
    min_end_to_mark: float = 0.07  # no end starts near a mark: nothing is done at reset


class RopeToMarkEnv(TabletopEnv):
    """Rope-dragging task on the SO-101 twin (module docstring).

    Reset options: ``{"end": "left"|"right", "mark": "red"|"blue", "instruction": str}``
    override the sampled end, mark and instruction text.
    """

    scene_xml = SCENE_XML
    task_attributes = ("instruction", "end", "mark", "_left_vertex")

    def __init__(self, success_radius: float = 0.03, layout: RopeLayout = RopeLayout(), **kwargs):
        """``success_radius``: how near the named mark the named end must be (m); ``layout``:
        where the rope and marks may lie; the rest as :class:`TabletopEnv`."""
        super().__init__(**kwargs)
        self.success_radius = success_radius
        self.layout = layout
        self.rope = FlexState(self.model, "rope")
        self.marks = Marks(self.model)
        self.end, self.mark = ENDS[0], MARK_COLORS[0]
        self.instruction = INSTRUCTION_TEMPLATE.format(end=self.end, mark=self.mark)
        self._left_vertex = 0  # which end vertex (0 or N-1) is the left one this episode

    # ------------------------------------------------------------------ the task
    def _choose_task(self, options: dict) -> None:
        end = self._option(options, "end", ENDS, "rope end")
        mark = self._option(options, "mark", MARK_COLORS, "mark")
        self.end, self.mark = end, mark
        self.instruction = options.get("instruction") or INSTRUCTION_TEMPLATE.format(
            end=end, mark=mark
        )

    def _sample_layout(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        lay, rng = self.layout, self.np_random
        n = self.rope.n
        s = np.linspace(-0.5, 0.5, n - 1)  # along the rope, per edge
        for _ in range(10_000):
            heading = np.deg2rad(90.0 + rng.uniform(*lay.heading_deg))
            bend = np.deg2rad(rng.uniform(*lay.bend_deg))
            wiggle = np.deg2rad(rng.uniform(*lay.wiggle_deg))
            angles = heading + bend * s + wiggle * np.sin(2 * np.pi * s)
            steps = ROPE_SEGMENT * np.stack([np.cos(angles), np.sin(angles)], axis=1)
            xy = np.vstack([np.zeros(2), np.cumsum(steps, axis=0)])
            centre = np.array([rng.uniform(*lay.centre_x), rng.uniform(*lay.centre_y)])
            xy += centre - xy.mean(axis=0)
            if abs(xy[0, 1] - xy[-1, 1]) < lay.min_end_gap:
                continue
            reaches = np.hypot(xy[:, 0] - 0.0388353, xy[:, 1])
            if reaches.min() < lay.min_reach or reaches.max() > lay.max_reach:
                continue
            marks = self._sample_marks(xy)
            if marks is None:
                continue
            return xy, marks
        raise RuntimeError("could not place the rope and marks; the RopeLayout is too tight")

    def _sample_marks(self, rope_xy: np.ndarray) -> dict[str, np.ndarray] | None:
        lay = self.layout
        ends = rope_xy[[0, -1]]

        def accept(xy: np.ndarray) -> bool:
            return (
                lay.min_reach <= reach(xy) <= lay.max_reach - 0.01
                and np.min(np.hypot(*(rope_xy - xy).T)) >= lay.mark_clearance
                and np.min(np.hypot(*(ends - xy).T)) >= lay.min_end_to_mark
            )

        return sample_marks(self.np_random, accept, min_separation=lay.min_mark_separation)

    def _place_layout(self, layout) -> None:
        rope_xy, marks = layout
        xyz = np.column_stack([rope_xy, np.full(len(rope_xy), ROPE_RADIUS)])
        self.rope.set_positions(self.data, xyz)
        self.marks.place(self.data, marks)
        self._left_vertex = 0 if rope_xy[0, 1] > rope_xy[-1, 1] else self.rope.n - 1

    def _evaluate(self) -> tuple[bool, float, dict]:
        dist = self.end_to_mark()
        grasp_to_end = float(np.linalg.norm(self.grasp_position() - self.rope_end(self.end)))
        terms = {
            "reach": 1.0 - np.tanh(10.0 * grasp_to_end),
            "drag": 1.0 - np.tanh(10.0 * dist),
        }
        reward = 0.25 * terms["reach"] + 0.5 * terms["drag"]
        return dist <= self.success_radius, float(reward), terms

    def _info(self, success: bool) -> dict:
        return {"success": success, "is_success": success, "end": self.end, "mark": self.mark}

    # ------------------------------------------------------------------ privileged state
    def end_vertex(self, end: str) -> int:
        """Index of the named end's vertex (the left end is the one farther to +y at reset)."""
        left = self._left_vertex
        return left if end == "left" else self.rope.n - 1 - left

    def rope_end(self, end: str) -> np.ndarray:
        """World position [3] of the named end's vertex."""
        return self.rope.positions(self.data)[self.end_vertex(end)]

    def end_to_mark(self, end: str | None = None, mark: str | None = None) -> float:
        """Horizontal distance (m) from an end (default: the named one) to a mark's centre."""
        end_xy = self.rope_end(end or self.end)[:2]
        return float(np.hypot(*(end_xy - self.marks.positions(self.data)[mark or self.mark])))

    def object_lifts(self) -> dict[str, float]:
        """How high each end of the rope is above its rest (m)."""
        pos = self.rope.positions(self.data)
        return {f"{e}_end": float(pos[self.end_vertex(e), 2] - ROPE_RADIUS) for e in ENDS}
