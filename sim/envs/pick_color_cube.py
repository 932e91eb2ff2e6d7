"""PickColorCube-v1: pick up the cube whose color the instruction names.

Three 3 cm cubes (red, green, blue) lie at random non-overlapping positions and yaws in front of
the SO-101 twin; the instruction names one ("pick up the red cube"). Success is the named cube
lifted at least ``lift_height`` above its resting height and held there for ``hold_steps``
consecutive control ticks while the other cubes stay on the table.

Actions and the ``observation.state`` vector use lerobot's SO-101 convention (degrees, gripper
0-100); the twin converts at its boundary (safety/so101.py).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

from data.keys import OBS_STATE, TASK, image_key
from safety import so101
from sim.envs import ASSETS
from sim.randomize import DomainRandomization, SceneRandomizer, as_randomization
from sim.render import CameraRig

SCENE_XML = ASSETS / "pick_color_cube.xml"
COLORS = ("red", "green", "blue")
INSTRUCTION_TEMPLATE = "pick up the {color} cube"
CUBE_HALF = 0.015

# Arm pose at reset (radians): gripper raised over the workspace, half open.
HOME_RAD = np.array([0.0, -1.45, 1.1, 1.25, 0.0, 0.6])
TEXT_CHARSET = string.ascii_letters + string.digits + " ,.'-"


@dataclass(frozen=True)
class CubeLayout:
    """Where cubes may be placed at reset (metres in the arm's base frame, radians)."""

    x_range: tuple[float, float] = (0.14, 0.26)
    y_range: tuple[float, float] = (-0.12, 0.12)
    min_reach: float = 0.14  # distance from the pan axis
    max_reach: float = 0.27
    min_separation: float = 0.065
    yaw_range: tuple[float, float] = (-np.pi / 4, np.pi / 4)


class PickColorCubeEnv(gym.Env):
    """Language-conditioned pick task on the SO-101 twin.

    Observation (dict):
        ``observation.images.<camera>``: uint8 [H, W, 3] for each camera (``front``, ``wrist``).
        ``observation.state``: float32 [6], joint positions (degrees, gripper 0-100).
        ``task``: the instruction string.
    Action: float32 [6], joint position targets in the same units as the state.
    Reset options: ``{"target": "red"|"green"|"blue", "instruction": str}`` override the sampled
    target color and the instruction text.
    ``randomization`` (a :class:`sim.randomize.DomainRandomization` or a dict of its fields)
    draws the front camera, light, colours, cube size and mass and actuator gains anew at every
    reset; what was drawn is ``info["domain"]`` of the reset.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        render_mode: str | None = "rgb_array",
        image_size: int | tuple[int, int] = 96,
        cameras: tuple[str, ...] = ("front", "wrist"),
        control_hz: float = 30.0,
        lift_height: float = 0.05,
        hold_steps: int = 10,
        fast_render: bool = True,
        layout: CubeLayout = CubeLayout(),
        randomization: DomainRandomization | dict | None = None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        if height < 16 or width < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
        self.render_mode = render_mode
        self.cameras = tuple(cameras)
        self.lift_height = lift_height
        self.hold_steps = hold_steps
        self.layout = layout

        self.model = mujoco.MjModel.from_xml_path(str(SCENE_XML))
        self.data = mujoco.MjData(self.model)
        self.control_dt = 1.0 / control_hz
        self.n_substeps = max(1, round(self.control_dt / self.model.opt.timestep))
        self.model.opt.timestep = self.control_dt / self.n_substeps

        self._arm_qpos = np.array([self.model.joint(j).qposadr[0] for j in so101.SO101_JOINTS])
        self._arm_dof = np.array([self.model.joint(j).dofadr[0] for j in so101.SO101_JOINTS])
        self._cube_qpos = {c: self.model.joint(f"cube_{c}").qposadr[0] for c in COLORS}
        self._cube_body = {c: self.model.body(f"cube_{c}").id for c in COLORS}
        self._grasp_site = self.model.site("grasp").id
        self._cube_geom = {c: self.model.geom(f"cube_{c}").id for c in COLORS}
        self.randomization = as_randomization(randomization)
        self._randomizer = None
        if self.randomization is not None and self.randomization.enabled:
            gripper = self.model.actuator("gripper").id
            self._randomizer = SceneRandomizer(
                self.model,
                self.randomization,
                cameras=[
                    self.model.camera(i).name
                    for i in range(self.model.ncam)
                    if self.model.cam_bodyid[i] == 0
                ],  # fixed in the world, not the wrist's
                objects=[f"cube_{c}" for c in COLORS],
                table="table",
                arm_actuators=[a for a in range(self.model.nu) if a != gripper],
                gripper_actuator=gripper,
            )

        self._rig = CameraRig(self.model, self.cameras, height, width, fast=fast_render)
        self.observation_space = gym.spaces.Dict(
            {
                **{
                    image_key(cam): gym.spaces.Box(0, 255, (height, width, 3), np.uint8)
                    for cam in self.cameras
                },
                OBS_STATE: gym.spaces.Box(-360.0, 360.0, (so101.N_JOINTS,), np.float32),
                TASK: gym.spaces.Text(max_length=128, min_length=1, charset=TEXT_CHARSET),
            }
        )
        self.action_space = gym.spaces.Box(
            so101.ACTION_LOW.astype(np.float32), so101.ACTION_HIGH.astype(np.float32)
        )
        self.target = COLORS[0]
        self.instruction = INSTRUCTION_TEMPLATE.format(color=self.target)
        self._rest_z = dict.fromkeys(COLORS, CUBE_HALF)
        self._held = 0
        self._last_images: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        target = options.get("target")
        if target is None:
            target = COLORS[self.np_random.integers(len(COLORS))]
        if target not in COLORS:
            raise ValueError(f"unknown target color {target!r}; choose from {COLORS}")
        self.target = target
        self.instruction = options.get("instruction") or INSTRUCTION_TEMPLATE.format(color=target)

        mujoco.mj_resetData(self.model, self.data)
        home = HOME_RAD + self.np_random.uniform(-0.05, 0.05, size=HOME_RAD.shape)
        self.data.qpos[self._arm_qpos] = home
        self.data.ctrl[:] = home
        layout = self._sample_cubes()
        # Drawn after the layout: a seed gives the same scene with randomization on or off.
        domain = self._randomizer.apply(self.np_random) if self._randomizer else None
        for color, (x, y, yaw) in zip(COLORS, layout, strict=True):
            adr = self._cube_qpos[color]
            half = float(self.model.geom_size[self._cube_geom[color], 2])
            self.data.qpos[adr : adr + 3] = (x, y, half)
            self.data.qpos[adr + 3 : adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        mujoco.mj_forward(self.model, self.data)
        # Let contacts settle so resting heights are measured, not assumed.
        for _ in range(self.n_substeps):
            mujoco.mj_step(self.model, self.data)
        self._rest_z = {c: float(self.data.xpos[self._cube_body[c]][2]) for c in COLORS}
        self._held = 0
        obs = self._observe()
        info = self._info(success=False)
        if domain is not None:
            info["domain"] = domain
        return obs, info

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (so101.N_JOINTS,):
            raise ValueError(
                f"action must have shape ({so101.N_JOINTS},) in lerobot units "
                f"{so101.SO101_JOINTS}, got {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}")
        target = np.clip(action, so101.ACTION_LOW, so101.ACTION_HIGH)
        self.data.ctrl[:] = so101.to_radians(target)
        before = self._instabilities()
        for _ in range(self.n_substeps):
            mujoco.mj_step(self.model, self.data)
        if self._instabilities() > before:
            # MuJoCo found NaN or huge accelerations and reset the state to the model's qpos0
            # (it warns in MUJOCO_LOG.TXT): the episode cannot go on from there. It ends,
            # truncated, and says why; generate writes only successes, eval counts a failure.
            info = self._info(success=False)
            info["unstable"] = True
            self._held = 0
            return self._observe(), 0.0, False, True, info

        lifts = self.cube_lifts()
        others_down = all(lifts[c] < 0.02 for c in COLORS if c != self.target)
        if lifts[self.target] >= self.lift_height and others_down:
            self._held += 1
        else:
            self._held = 0
        success = self._held >= self.hold_steps
        reward, terms = self._reward(lifts, others_down, success)
        info = self._info(success=success)
        info["reward_terms"] = terms
        return self._observe(), reward, success, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._last_images is None:
            self._last_images = self._rig.render(self.data)
        return self._last_images[self.cameras[0]]

    def close(self):
        self._rig.close()

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

    def arm_qpos(self) -> np.ndarray:
        return self.data.qpos[self._arm_qpos].copy()

    def grasp_position(self) -> np.ndarray:
        return self.data.site_xpos[self._grasp_site].copy()

    # ------------------------------------------------------------------ internals
    def _instabilities(self) -> int:
        w = self.data.warning
        return sum(
            int(w[k].number)
            for k in (
                mujoco.mjtWarning.mjWARN_BADQACC,
                mujoco.mjtWarning.mjWARN_BADQVEL,
                mujoco.mjtWarning.mjWARN_BADQPOS,
            )
        )

    def _sample_cubes(self) -> list[tuple[float, float, float]]:
        lay = self.layout
        placed: list[tuple[float, float, float]] = []
        for _ in range(10_000):
            x = self.np_random.uniform(*lay.x_range)
            y = self.np_random.uniform(*lay.y_range)
            reach = np.hypot(x - 0.0388, y)  # the pan axis sits 38.8 mm in front of the base origin
            if not lay.min_reach <= reach <= lay.max_reach:
                continue
            if any(np.hypot(x - px, y - py) < lay.min_separation for px, py, _ in placed):
                continue
            placed.append((x, y, self.np_random.uniform(*lay.yaw_range)))
            if len(placed) == len(COLORS):
                return placed
        raise RuntimeError("could not place the cubes; the CubeLayout is too tight")

    def _observe(self) -> dict:
        self._last_images = self._rig.render(self.data)
        obs = {image_key(cam): img for cam, img in self._last_images.items()}
        obs[OBS_STATE] = so101.from_radians(self.arm_qpos()).astype(np.float32)
        obs[TASK] = self.instruction
        return obs

    def _reward(self, lifts, others_down, success):
        dist = float(np.linalg.norm(self.grasp_position() - self.cube_positions()[self.target]))
        terms = {
            "reach": 1.0 - np.tanh(10.0 * dist),
            "lift": float(np.clip(lifts[self.target] / self.lift_height, 0.0, 1.0)),
            "wrong_cube": 0.0 if others_down else -1.0,
            "success": float(success),
        }
        reward = (
            0.25 * terms["reach"] + 0.5 * terms["lift"] + terms["wrong_cube"] + terms["success"]
        )
        return float(reward), terms

    def _info(self, success: bool) -> dict:
        return {"success": success, "target": self.target, "is_success": success}
