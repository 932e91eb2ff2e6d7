"""The towel tasks: lift a towel by its named corner, or drag it onto the named mark.

A 12 cm square towel (a MuJoCo flex of 7 x 7 vertices, 16 mm thick) lies flat on the table in
front of the arm, turned as a diamond so that one corner points to the arm's left (+y) and one
to its right, with a red and a blue mark beside it. Two families share the scene:

* ``TowelLiftCorner-v1``: "lift the towel by its left corner" (or right); success is the named
  corner's vertex at least ``lift_height`` (3 cm) above its rest, held ``hold_steps`` ticks.
* ``TowelToMark-v1``: "drag the towel onto the red mark" (or blue); success is the towel's
  centre (its vertices' mean) within ``success_radius`` (3 cm) of the named mark's centre,
  horizontally, with the towel lying on the table (no vertex more than 2 cm above its rest)
  and still covering at least ``min_coverage`` (60 %) of its flat area, held.
* ``TowelFold-v1``: "fold the towel in half, left corner onto the right corner" (or right onto
  left); success is the named corner on the opposite one (within 3 cm), the towel lying in two
  layers (40-65 % of its flat area covered) and let go, held. Its scene turns the towel's
  self-collision on, so the folded half rests on the other.

Left and right are the arm's own, as in the rope task: the left corner is the one farthest to
+y at reset, and every layout keeps it ``min_corner_gap`` ahead of the next corner in y.
Spaces and units: :mod:`sim.envs.tabletop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.envs import ASSETS
from sim.envs.flex import MARK_COLORS, FlexState, Marks, footprint_area, sample_marks
from sim.envs.tabletop import PAN_AXIS_XY, TabletopEnv, reach

SCENE_XML = ASSETS / "towel.xml"
FOLD_SCENE_XML = ASSETS / "towel_fold.xml"
SIDES = ("left", "right")
LIFT_TEMPLATE = "lift the towel by its {side} corner"
DRAG_TEMPLATE = "drag the towel onto the {mark} mark"
FOLD_TEMPLATE = "fold the towel in half, {side} corner onto the {other} corner"
TOWEL_GRID = 7  # vertices per side
TOWEL_SPACING = 0.02  # rest length of an edge (the flexcomp's spacing)
TOWEL_RADIUS = 0.008
TOWEL_SIDE = TOWEL_SPACING * (TOWEL_GRID - 1)
FLAT_AREA = TOWEL_SIDE**2
CORNERS = (0, TOWEL_GRID - 1, TOWEL_GRID * (TOWEL_GRID - 1), TOWEL_GRID * TOWEL_GRID - 1)
LYING_HEIGHT = 0.02  # a vertex higher than this above its rest: the towel is not lying


@dataclass(frozen=True)
class TowelLayout:
    """Where the towel and marks may lie at reset (metres in the arm's base frame, degrees)."""

    centre_x: tuple[float, float] = (0.18, 0.22)
    centre_y: tuple[float, float] = (-0.03, 0.03)
    turn_deg: tuple[float, float] = (-20.0, 20.0)  # off the diamond (a corner to each side)
    min_corner_gap: float = 0.03  # the left corner's y ahead of the next corner's, at least
    corner_reach: tuple[float, float] = (0.15, 0.26)  # left and right corners from the pan axis
    min_reach: float = 0.06  # every vertex at least this from the pan axis (clear of the base)
    mark_clearance: float = 0.035  # marks' centres this far from every towel vertex
    mark_reach: tuple[float, float] = (0.12, 0.24)
    min_mark_separation: float = 0.08
    mark_distance: tuple[float, float] = (0.08, 0.13)  # from the towel's centre
    # Dragged by its leading corner, the towel trails it: that corner's straight path, from
    # where it lies to the towel's offset to the mark, stays this far from the pan axis.
    drag_reach: tuple[float, float] = (0.14, 0.265)


def towel_triangles(model, flex_id: int) -> np.ndarray:
    """The towel's triangles [T, 3] as indices into its vertices."""
    first = int(model.flex_elemdataadr[flex_id])
    count = int(model.flex_elemnum[flex_id])
    return model.flex_elem[first : first + 3 * count].reshape(count, 3).copy()


class TowelEnv(TabletopEnv):
    """What the towel families share: the scene, its layout and the towel's privileged state."""

    scene_xml = SCENE_XML
    task_attributes = ("instruction", "_corner")

    def __init__(self, layout: TowelLayout = TowelLayout(), **kwargs):
        """``layout``: where the towel and marks may lie; the rest as :class:`TabletopEnv`."""
        super().__init__(**kwargs)
        self.layout = layout
        self.towel = FlexState(self.model, "towel")
        if self.towel.n != TOWEL_GRID * TOWEL_GRID:
            raise ValueError(f"the towel scene needs {TOWEL_GRID}x{TOWEL_GRID} vertices")
        self.marks = Marks(self.model)
        self.triangles = towel_triangles(self.model, self.towel.id)
        grid = (np.arange(TOWEL_GRID) - (TOWEL_GRID - 1) / 2) * TOWEL_SPACING
        gx, gy = np.meshgrid(grid, grid, indexing="ij")  # vertex i * GRID + j at (x_i, y_j)
        self._flat = np.column_stack([gx.ravel(), gy.ravel()])
        self._corner = {"left": CORNERS[0], "right": CORNERS[-1]}

    # ------------------------------------------------------------------ layout
    def _sample_towel(self) -> np.ndarray:
        lay, rng = self.layout, self.np_random
        for _ in range(10_000):
            turn = np.deg2rad(45.0 + rng.uniform(*lay.turn_deg))
            rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
            centre = np.array([rng.uniform(*lay.centre_x), rng.uniform(*lay.centre_y)])
            xy = self._flat @ rot.T + centre
            ys = np.sort(xy[list(CORNERS), 1])
            if ys[-1] - ys[-2] < lay.min_corner_gap or ys[1] - ys[0] < lay.min_corner_gap:
                continue
            left, right = (xy[max(CORNERS, key=lambda k: s * xy[k, 1])] for s in (1, -1))
            if not all(
                lay.corner_reach[0] <= reach(c) <= lay.corner_reach[1] for c in (left, right)
            ):
                continue
            if min(reach(p) for p in xy) < lay.min_reach:
                continue
            return xy
        raise RuntimeError("could not place the towel; the TowelLayout is too tight")

    def _sample_marks(self, towel_xy: np.ndarray) -> dict[str, np.ndarray] | None:
        lay = self.layout
        centre = towel_xy.mean(axis=0)

        def accept(xy: np.ndarray) -> bool:
            away = xy - centre
            if not lay.mark_distance[0] <= np.hypot(*away) <= lay.mark_distance[1]:
                return False
            if not lay.mark_reach[0] <= reach(xy) <= lay.mark_reach[1]:
                return False
            if np.min(np.hypot(*(towel_xy - xy).T)) < lay.mark_clearance:
                return False
            # The corner leading toward the mark, carried straight by the towel's offset,
            # stays in reach and clear of the base all the way.
            lead = towel_xy[max(CORNERS, key=lambda k: float(np.dot(towel_xy[k] - centre, away)))]
            path = lead + np.linspace(0.0, 1.0, 11)[:, None] * away
            reaches = np.hypot(*(path - PAN_AXIS_XY).T)
            return bool(lay.drag_reach[0] <= reaches.min() and reaches.max() <= lay.drag_reach[1])

        return sample_marks(self.np_random, accept, min_separation=lay.min_mark_separation)

    def _sample_layout(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        for _ in range(1000):
            towel_xy = self._sample_towel()
            marks = self._sample_marks(towel_xy)
            if marks is not None:
                return towel_xy, marks
        raise RuntimeError("could not place the marks beside the towel; the layout is too tight")

    def _place_layout(self, layout) -> None:
        towel_xy, marks = layout
        xyz = np.column_stack([towel_xy, np.full(len(towel_xy), TOWEL_RADIUS)])
        self.towel.set_positions(self.data, xyz)
        self.marks.place(self.data, marks)
        self._corner = {
            side: max(CORNERS, key=lambda k, s=s: s * towel_xy[k, 1])
            for side, s in (("left", 1.0), ("right", -1.0))
        }

    # ------------------------------------------------------------------ privileged state
    def vertices(self) -> np.ndarray:
        """The towel's vertex positions [N, 3] (world frame)."""
        return self.towel.positions(self.data)

    def corner_vertex(self, side: str) -> int:
        """Index of the named corner's vertex (the left one is the farthest to +y at reset)."""
        return self._corner[side]

    def corner_lift(self, side: str) -> float:
        """How high the named corner is above its rest (m)."""
        return float(self.vertices()[self._corner[side], 2] - TOWEL_RADIUS)

    def centre(self) -> np.ndarray:
        """The towel's centre xy [2]: the mean of its vertices."""
        return self.vertices()[:, :2].mean(axis=0)

    def coverage(self) -> float:
        """The fraction of its flat area the towel covers on the table now (1.0 flat)."""
        return footprint_area(self.vertices()[:, :2], self.triangles) / FLAT_AREA

    def lying(self) -> bool:
        """No vertex more than ``LYING_HEIGHT`` above its rest: the towel lies on the table."""
        return bool(np.max(self.vertices()[:, 2]) - TOWEL_RADIUS <= LYING_HEIGHT)

    def object_lifts(self) -> dict[str, float]:
        """How high each named corner is above its rest (m)."""
        return {f"{side}_corner": self.corner_lift(side) for side in SIDES}


class TowelLiftCornerEnv(TowelEnv):
    """TowelLiftCorner-v1 (module docstring).

    Reset options: ``{"corner": "left"|"right", "instruction": str}`` override the sampled
    corner and the instruction text.
    """

    task_attributes = (*TowelEnv.task_attributes, "side")

    def __init__(self, lift_height: float = 0.03, **kwargs):
        """``lift_height``: how far the named corner must rise (m); the rest as
        :class:`TowelEnv`."""
        super().__init__(**kwargs)
        self.lift_height = lift_height
        self.side = SIDES[0]
        self.instruction = LIFT_TEMPLATE.format(side=self.side)

    def _choose_task(self, options: dict) -> None:
        self.side = side = self._option(options, "corner", SIDES, "towel corner")
        self.instruction = options.get("instruction") or LIFT_TEMPLATE.format(side=side)

    def _evaluate(self) -> tuple[bool, float, dict]:
        lift = self.corner_lift(self.side)
        corner = self.vertices()[self._corner[self.side]]
        grasp_to_corner = float(np.linalg.norm(self.grasp_position() - corner))
        terms = {
            "reach": 1.0 - np.tanh(10.0 * grasp_to_corner),
            "lift": float(np.clip(lift / self.lift_height, 0.0, 1.0)),
        }
        reward = 0.25 * terms["reach"] + 0.5 * terms["lift"]
        return lift >= self.lift_height, float(reward), terms

    def _info(self, success: bool) -> dict:
        # ``target`` names the corner as object_lifts does: eval counts a wrong corner lifted.
        return {
            "success": success,
            "is_success": success,
            "corner": self.side,
            "target": f"{self.side}_corner",
        }


class TowelToMarkEnv(TowelEnv):
    """TowelToMark-v1 (module docstring).

    Reset options: ``{"mark": "red"|"blue", "instruction": str}`` override the sampled mark
    and the instruction text.
    """

    task_attributes = (*TowelEnv.task_attributes, "mark")

    def __init__(self, success_radius: float = 0.03, min_coverage: float = 0.6, **kwargs):
        """``success_radius``: how near the named mark the towel's centre must be (m);
        ``min_coverage``: the fraction of its flat area it must still cover; the rest as
        :class:`TowelEnv`."""
        super().__init__(**kwargs)
        self.success_radius = success_radius
        self.min_coverage = min_coverage
        self.mark = MARK_COLORS[0]
        self.instruction = DRAG_TEMPLATE.format(mark=self.mark)

    def _choose_task(self, options: dict) -> None:
        self.mark = mark = self._option(options, "mark", MARK_COLORS, "mark")
        self.instruction = options.get("instruction") or DRAG_TEMPLATE.format(mark=mark)

    def centre_to_mark(self, mark: str | None = None) -> float:
        """Horizontal distance (m) from the towel's centre to a mark's (default: the named)."""
        return float(
            np.hypot(*(self.centre() - self.marks.positions(self.data)[mark or self.mark]))
        )

    def _evaluate(self) -> tuple[bool, float, dict]:
        dist = self.centre_to_mark()
        terms = {"drag": 1.0 - np.tanh(10.0 * dist)}
        reward = 0.5 * terms["drag"]
        if dist > self.success_radius or not self.lying():
            return False, float(reward), terms
        terms["coverage"] = self.coverage()
        return terms["coverage"] >= self.min_coverage, float(reward), terms

    def _info(self, success: bool) -> dict:
        return {"success": success, "is_success": success, "mark": self.mark}


class TowelFoldEnv(TowelEnv):
    """TowelFold-v1: "fold the towel in half, left corner onto the right corner" (or right onto
    left). The scene is the towel scene with the towel's self-collision on (towel_fold.xml).

    Success: the named corner's vertex within ``fold_radius`` (3 cm, horizontally) of the
    opposite corner's and on top of it (at least 8 mm higher: folded that way), the towel lying (no vertex more than ``max_height`` 4 cm above its
    rest), two layers (its footprint ``coverage`` between 0.4 and 0.65 of its flat area), and
    let go (no contact between the jaws and the towel), held ``hold_steps`` ticks.

    Reset options: ``{"corner": "left"|"right", "instruction": str}``.
    """

    scene_xml = FOLD_SCENE_XML
    task_attributes = (*TowelEnv.task_attributes, "side")

    def __init__(
        self,
        fold_radius: float = 0.03,
        max_height: float = 0.04,
        coverage_range: tuple[float, float] = (0.4, 0.65),
        **kwargs,
    ):
        """``fold_radius``: how near the opposite corner the named one must lie (m);
        ``max_height``: highest vertex above its rest (m); ``coverage_range``: the folded
        footprint's share of the flat area; the rest as :class:`TowelEnv`."""
        super().__init__(**kwargs)
        self.fold_radius, self.max_height = fold_radius, max_height
        self.coverage_range = tuple(coverage_range)
        self.side = SIDES[0]
        self.instruction = FOLD_TEMPLATE.format(side=SIDES[0], other=SIDES[1])
        jaws = [self.model.body(b).id for b in ("gripper", "moving_jaw")]
        self._jaw_geoms = set(np.flatnonzero(np.isin(self.model.geom_bodyid, jaws)).tolist())

    def _choose_task(self, options: dict) -> None:
        self.side = side = self._option(options, "corner", SIDES, "towel corner")
        other = SIDES[1 - SIDES.index(side)]
        self.instruction = options.get("instruction") or FOLD_TEMPLATE.format(
            side=side, other=other
        )

    def target_corner(self) -> str:
        """The corner the named one goes onto."""
        return SIDES[1 - SIDES.index(self.side)]

    def corner_gap(self) -> float:
        """Horizontal distance (m) between the named corner and the one it goes onto."""
        v = self.vertices()
        a, b = self._corner[self.side], self._corner[self.target_corner()]
        return float(np.hypot(*(v[a, :2] - v[b, :2])))

    def jaws_touch_towel(self) -> bool:
        """Whether a jaw is in contact with the towel (it has not been let go)."""
        d = self.data
        for i in range(d.ncon):
            c = d.contact[i]
            geoms, flexes = c.geom, c.flex
            if self.towel.id in (int(flexes[0]), int(flexes[1])) and (
                int(geoms[0]) in self._jaw_geoms or int(geoms[1]) in self._jaw_geoms
            ):
                return True
        return False

    def _evaluate(self) -> tuple[bool, float, dict]:
        v = self.vertices()
        gap = self.corner_gap()
        top = float(np.max(v[:, 2]) - TOWEL_RADIUS)
        # Which way it was folded: the named corner lies on the other, not under it.
        above = v[self._corner[self.side], 2] - v[self._corner[self.target_corner()], 2]
        terms = {"fold": 1.0 - np.tanh(10.0 * gap)}
        reward = 0.5 * terms["fold"]
        if gap > self.fold_radius or top > self.max_height or above < TOWEL_RADIUS:
            return False, float(reward), terms
        terms["coverage"] = self.coverage()
        lo, hi = self.coverage_range
        if not lo <= terms["coverage"] <= hi:
            return False, float(reward), terms
        return not self.jaws_touch_towel(), float(reward), terms

    def _info(self, success: bool) -> dict:
        return {"success": success, "is_success": success, "corner": self.side}
