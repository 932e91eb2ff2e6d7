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
