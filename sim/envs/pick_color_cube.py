"""PickColorCube-v1: pick up the cube whose color the instruction names.

Three 3 cm cubes (red, green, blue) lie at random non-overlapping positions and yaws in front of
the SO-101 twin; the instruction names one ("pick up the red cube"). Success is the named cube
lifted at least ``lift_height`` above its resting height and held there for ``hold_steps``
consecutive control ticks while the other cubes stay on the table.

Actions and the ``observation.state`` vector use lerobot's SO-101 convention (degrees, gripper
0-100); the twin converts at its boundary (safety/so101.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from sim.envs import ASSETS
from sim.envs.tabletop import HOME_RAD, TEXT_CHARSET, TabletopEnv

SCENE_XML = ASSETS / "pick_color_cube.xml"
COLORS = ("red", "green", "blue")
INSTRUCTION_TEMPLATE = "pick up the {color} cube"
CUBE_HALF = 0.015

__all__ = ["COLORS", "CUBE_HALF", "HOME_RAD", "TEXT_CHARSET", "CubeLayout", "PickColorCubeEnv"]


@dataclass(frozen=True)
class CubeLayout:
    """Where cubes may be placed at reset (metres in the arm's base frame, radians)."""

    x_range: tuple[float, float] = (0.14, 0.26)
    y_range: tuple[float, float] = (-0.12, 0.12)
    min_reach: float = 0.14  # distance from the pan axis
    max_reach: float = 0.27
    min_separation: float = 0.065
    yaw_range: tuple[float, float] = (-np.pi / 4, np.pi / 4)


class PickColorCubeEnv(TabletopEnv):
    """Language-conditioned pick task on the SO-101 twin (spaces: :mod:`sim.envs.tabletop`).

    Reset options: ``{"target": "red"|"green"|"blue", "instruction": str}`` override the sampled
    target color and the instruction text.
    ``randomization`` (a :class:`sim.randomize.DomainRandomization` or a dict of its fields)
    draws the front camera, light, colours, cube size and mass and actuator gains anew at every
    reset; what was drawn is ``info["domain"]`` of the reset.
    """

    scene_xml = SCENE_XML
    randomized_objects = tuple(f"cube_{c}" for c in COLORS)
    task_attributes = ("instruction", "target", "_rest_z")

    def __init__(
        self,
        lift_height: float = 0.05,
        layout: CubeLayout = CubeLayout(),
        **kwargs,
    ):
        """``lift_height``: how far the named cube must rise (m); ``layout``: where cubes may
        lie; the rest (cameras, image size, rates, randomization) as :class:`TabletopEnv`."""
        super().__init__(**kwargs)
        self.lift_height = lift_height
        self.layout = layout
        self._cube_qpos = {c: self.model.joint(f"cube_{c}").qposadr[0] for c in COLORS}
        self._cube_body = {c: self.model.body(f"cube_{c}").id for c in COLORS}
        self._cube_geom = {c: self.model.geom(f"cube_{c}").id for c in COLORS}
        self.target = COLORS[0]
        self.instruction = INSTRUCTION_TEMPLATE.format(color=self.target)
        self._rest_z = dict.fromkeys(COLORS, CUBE_HALF)

    # ------------------------------------------------------------------ the task
    def _choose_task(self, options: dict) -> None:
        self.target = target = self._option(options, "target", COLORS, "target color")
        self.instruction = options.get("instruction") or INSTRUCTION_TEMPLATE.format(color=target)

    def _place_layout(self, layout) -> None:
        for color, (x, y, yaw) in zip(COLORS, layout, strict=True):
            adr = self._cube_qpos[color]
            half = float(self.model.geom_size[self._cube_geom[color], 2])
            self.data.qpos[adr : adr + 3] = (x, y, half)
            self.data.qpos[adr + 3 : adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))

    def _after_settle(self) -> None:
        self._rest_z = {c: float(self.data.xpos[self._cube_body[c]][2]) for c in COLORS}

    def _evaluate(self) -> tuple[bool, float, dict]:
        lifts = self.cube_lifts()
        others_down = all(lifts[c] < 0.02 for c in COLORS if c != self.target)
        holds = lifts[self.target] >= self.lift_height and others_down
        dist = float(np.linalg.norm(self.grasp_position() - self.cube_positions()[self.target]))
        terms = {
            "reach": 1.0 - np.tanh(10.0 * dist),
            "lift": float(np.clip(lifts[self.target] / self.lift_height, 0.0, 1.0)),
            "wrong_cube": 0.0 if others_down else -1.0,
        }
        reward = 0.25 * terms["reach"] + 0.5 * terms["lift"] + terms["wrong_cube"]
        return holds, float(reward), terms

    def _info(self, success: bool) -> dict:
        return {"success": success, "target": self.target, "is_success": success}

    # ------------------------------------------------------------------ privileged state
    def cube_positions(self) -> dict[str, np.ndarray]:
        """World positions [3] of each cube's centre (privileged; for experts and metrics)."""
        return {c: self.data.xpos[self._cube_body[c]].copy() for c in COLORS}

    def cube_yaws(self) -> dict[str, float]:
        out = {}
        for c in COLORS:
            mat = self.data.xmat[self._cube_body[c]].reshape(3, 3)
            out[c] = float(np.arctan2(mat[1, 0], mat[0, 0]))
        return out

    def cube_lifts(self) -> dict[str, float]:
        return {c: float(self.data.xpos[self._cube_body[c]][2] - self._rest_z[c]) for c in COLORS}

    def place_cube(self, color: str, xy: np.ndarray) -> None:
        """Moves a cube to ``xy`` on the table, at rest (privileged; experts staging recovery
        demos and tests use it)."""
        adr = self._cube_qpos[color]
        self.data.qpos[adr : adr + 2] = xy
        self.data.qpos[adr + 2] = self._rest_z[color]
        dof = self.model.joint(f"cube_{color}").dofadr[0]
        self.data.qvel[dof : dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def object_lifts(self) -> dict[str, float]:
        return self.cube_lifts()

    # ------------------------------------------------------------------ internals
    def _sample_layout(self) -> list[tuple[float, float, float]]:
        lay = self.layout
        placed: list[tuple[float, float, float]] = []
        for _ in range(10_000):
            x = self.np_random.uniform(*lay.x_range)
            y = self.np_random.uniform(*lay.y_range)
            # 38.8 mm: the pan axis, rounded as when the seeds' scenes were first drawn.
            if not lay.min_reach <= np.hypot(x - 0.0388, y) <= lay.max_reach:
                continue
            if any(np.hypot(x - px, y - py) < lay.min_separation for px, py, _ in placed):
                continue
            placed.append((x, y, self.np_random.uniform(*lay.yaw_range)))
            if len(placed) == len(COLORS):
                return placed
        raise RuntimeError("could not place the cubes; the CubeLayout is too tight")
