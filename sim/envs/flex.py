"""What the deformable tasks share: a MuJoCo flex's vertices as state, and marks on the table.

A flexcomp with ``dof="full"`` gives every vertex its own body with three slide joints, so a
vertex's world position is its body's rest position plus those three joints' qpos; a shape is
set at reset by writing them (the edge constraints then hold it).
"""

from __future__ import annotations

import mujoco
import numpy as np

MARK_COLORS = ("red", "blue")


class FlexState:
    """Read and write the vertex positions of one flex of a model (world frame, metres)."""

    def __init__(self, model: mujoco.MjModel, name: str):
        self.model = model
        self.id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_FLEX, name)
        if self.id < 0:
            raise ValueError(f"no flex named {name!r} in the scene")
        first = int(model.flex_vertadr[self.id])
        self.n = int(model.flex_vertnum[self.id])
        bodies = model.flex_vertbodyid[first : first + self.n]
        self._first = first
        adr = []
        for body in bodies:
            jnt = int(model.body_jntadr[body])
            if model.body_jntnum[body] != 3:
                raise ValueError(f"flex {name!r} needs dof='full' (3 slide joints per vertex)")
            adr.append(int(model.jnt_qposadr[jnt]))
        self._qpos = np.array(adr)
        self._dof = np.array([int(model.jnt_dofadr[model.body_jntadr[b]]) for b in bodies])
        self._rest = model.body_pos[bodies].copy()  # vertex bodies hang off the world

    def positions(self, data: mujoco.MjData) -> np.ndarray:
        """Vertex positions [N, 3] (after ``mj_forward`` / a step)."""
        return data.flexvert_xpos[self._first : self._first + self.n].copy()

    def set_positions(self, data: mujoco.MjData, xyz: np.ndarray) -> None:
        """Puts the vertices at ``xyz`` [N, 3], at rest; call ``mj_forward`` after."""
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.shape != (self.n, 3):
            raise ValueError(f"expected {self.n} vertex positions [N, 3], got {xyz.shape}")
        offsets = xyz - self._rest
        for k in range(3):
            data.qpos[self._qpos + k] = offsets[:, k]
            data.qvel[self._dof + k] = 0.0


def sample_marks(
    rng: np.random.Generator,
    accept,
    x_range: tuple[float, float] = (0.12, 0.28),
    y_range: tuple[float, float] = (-0.14, 0.14),
    min_separation: float = 0.08,
    tries: int = 200,
) -> dict[str, np.ndarray] | None:
    """{color: xy} of the red and blue marks, each drawn uniformly in the box until
    ``accept(xy)`` holds and it lies ``min_separation`` from the marks before it; None when a
    mark finds no place in ``tries`` draws (the caller draws the scene again)."""
    marks: dict[str, np.ndarray] = {}
    for color in MARK_COLORS:
        for _ in range(tries):
            xy = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
            if not accept(xy):
                continue
            if any(np.hypot(*(xy - m)) < min_separation for m in marks.values()):
                continue
            marks[color] = xy
            break
        else:
            return None
    return marks


def footprint_area(xy: np.ndarray, triangles: np.ndarray, cell: float = 0.0025) -> float:
    """Area (m^2) of the table a cloth covers: the union of its triangles' projections
    (``xy`` [N, 2] vertex positions, ``triangles`` [T, 3] vertex indices), sampled on a grid
    of ``cell``; a fold or a heap covers less than the flat cloth."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    gx = np.arange(lo[0] + cell / 2, hi[0], cell)
    gy = np.arange(lo[1] + cell / 2, hi[1], cell)
    if len(gx) == 0 or len(gy) == 0:
        return 0.0
    points = np.stack(np.meshgrid(gx, gy, indexing="ij"), axis=-1).reshape(-1, 2)
    a, b, c = (xy[triangles[:, k]] for k in range(3))
    e1, e2 = b - a, c - a  # [T, 2]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(det) > 1e-12  # a triangle folded edge-on covers nothing
    e1, e2, a, det = e1[ok], e2[ok], a[ok], det[ok]
    rel = points[None, :, :] - a[:, None, :]  # [T, P, 2]
    u = (rel[..., 0] * e2[:, None, 1] - rel[..., 1] * e2[:, None, 0]) / det[:, None]
    v = (e1[:, None, 0] * rel[..., 1] - e1[:, None, 1] * rel[..., 0]) / det[:, None]
    inside = (u >= 0) & (v >= 0) & (u + v <= 1)
    return float(inside.any(axis=0).sum() * cell * cell)


class Marks:
    """The red and blue marks: flat mocap discs, visual only, moved at reset."""

    def __init__(self, model: mujoco.MjModel):
        self._mocap = {c: int(model.body_mocapid[model.body(f"mark_{c}").id]) for c in MARK_COLORS}
        self.radius = float(model.geom(f"mark_{MARK_COLORS[0]}").size[0])

    def place(self, data: mujoco.MjData, xy: dict[str, np.ndarray]) -> None:
        for color, (x, y) in xy.items():
            data.mocap_pos[self._mocap[color]] = (x, y, 0.0)

    def positions(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """{color: xy [2]} of each mark's centre."""
        return {c: data.mocap_pos[i, :2].copy() for c, i in self._mocap.items()}
