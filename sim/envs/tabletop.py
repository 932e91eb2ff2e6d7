"""``TabletopEnv``: what every task of the suite shares, the SO-101 twin on a table.

A task is a MuJoCo scene (the arm, the table, the front camera and its objects) plus what it
draws at reset and how it judges success. The base class owns the rest, so every task has the
same observation and action spaces, units, camera rig, domain randomization and failure modes:

* observation (dict): ``observation.images.<camera>`` uint8 [H, W, 3] per camera (``front``,
  ``wrist``), ``observation.state`` float32 [6] joint positions in lerobot units (degrees,
  gripper 0-100), ``task`` the instruction;
* action: float32 [6] joint position targets in the same units; a wrong shape or a NaN is a
  ``ValueError``; a target outside the joints' range is clipped to it (the servos' own range);
* a diverged simulation truncates the episode with ``info["unstable"]``.

Subclasses implement :meth:`_choose_task` (the instruction), :meth:`_sample_layout` and
:meth:`_place_layout` (the scene), and :meth:`_evaluate` (success and reward terms).
"""

from __future__ import annotations

import string
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

from data.keys import OBS_STATE, TASK, image_key
from safety import so101
from sim.domain import DOMAINS, RealWorld, apply_world, as_world, jpeg_roundtrip
from sim.randomize import DomainRandomization, SceneRandomizer, as_randomization
from sim.render import CameraRig

# Arm pose at reset (radians): gripper raised over the workspace, half open.
HOME_RAD = np.array([0.0, -1.45, 1.1, 1.25, 0.0, 0.6])
TEXT_CHARSET = string.ascii_letters + string.digits + " ,.'-"
# The pan axis sits 38.8 mm in front of the base origin: reach is measured from it.
PAN_AXIS_XY = np.array([0.0388353, 0.0])


def reach(xy) -> float:
    """Horizontal distance of ``xy`` (m, base frame) from the arm's pan axis."""
    return float(np.hypot(xy[0] - PAN_AXIS_XY[0], xy[1] - PAN_AXIS_XY[1]))


class TabletopEnv(gym.Env):
    """Base of the suite's language-conditioned tabletop tasks (module docstring).

    Args:
        render_mode: ``"rgb_array"`` or None.
        image_size: camera images' side (or (height, width)), pixels.
        cameras: which of the scene's cameras are observed.
        control_hz: control ticks per second.
        hold_steps: consecutive ticks a success condition must hold.
        fast_render: no shadows or multisampling (10-100x faster on a CPU).
        randomization: a :class:`sim.randomize.DomainRandomization` (or a dict of its fields),
            drawn anew at every reset; what was drawn is ``info["domain"]`` of the reset.
        domain: ``"sim"``, or ``"real"`` for the twin's world without the bus (camera pose and
            lens, light, table, gripper torque cap, JPEG frames; :mod:`sim.domain`).
        world: the real domain's settings (a :class:`sim.domain.RealWorld` or a dict of its
            fields; default its defaults, which are the twin's).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    scene_xml: Path  # set by each task
    randomized_objects: tuple[str, ...] = ()  # bodies resized / recoloured by randomization
    # What a reset decided besides the MuJoCo state (the instruction's choices, rest heights):
    # with it, scene_state() puts a copy of the env in the same scene.
    task_attributes: tuple[str, ...] = ("instruction",)

    def __init__(
        self,
        render_mode: str | None = "rgb_array",
        image_size: int | tuple[int, int] = 96,
        cameras: tuple[str, ...] = ("front", "wrist"),
        control_hz: float = 30.0,
        hold_steps: int = 10,
        fast_render: bool = True,
        randomization: DomainRandomization | dict | None = None,
        domain: str = "sim",
        world: RealWorld | dict | None = None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        if height < 16 or width < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
        self.render_mode = render_mode
        self.cameras = tuple(cameras)
        self.hold_steps = hold_steps

        self.model = mujoco.MjModel.from_xml_path(str(self.scene_xml))
        self.data = mujoco.MjData(self.model)
        self.control_dt = 1.0 / control_hz
        self.n_substeps = max(1, round(self.control_dt / self.model.opt.timestep))
        self.model.opt.timestep = self.control_dt / self.n_substeps

        self._arm_qpos = np.array([self.model.joint(j).qposadr[0] for j in so101.SO101_JOINTS])
        self._arm_dof = np.array([self.model.joint(j).dofadr[0] for j in so101.SO101_JOINTS])
        self._grasp_site = self.model.site("grasp").id
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; choose from {DOMAINS}")
        self.domain = domain
        self.world = as_world(world) if domain == "real" else None
        gripper = self.model.actuator("gripper").id
        fixed_cameras = [i for i in range(self.model.ncam) if self.model.cam_bodyid[i] == 0]
        if self.world is not None:  # before the randomizer: it varies the real world's scene
            apply_world(self.model, self.world, fixed_cameras, "table", gripper)
        self.randomization = as_randomization(randomization)
        self._randomizer = None
        if self.randomization is not None and self.randomization.enabled:
            self._randomizer = SceneRandomizer(
                self.model,
                self.randomization,
                # fixed in the world, not the wrist's
                cameras=[self.model.camera(i).name for i in fixed_cameras],
                objects=list(self.randomized_objects),
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
        self.instruction = ""
        self._held = 0
        self._last_images: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ what a task defines
    def _choose_task(self, options: dict) -> None:
        """Draws (or takes from ``options``) what the instruction asks; sets ``instruction``."""
        raise NotImplementedError

    def _sample_layout(self):
        """Draws the scene's layout (object poses) from ``np_random``."""
        raise NotImplementedError

    def _place_layout(self, layout) -> None:
        """Writes a layout into ``data.qpos`` (after the randomization has resized things)."""
        raise NotImplementedError

    def _after_settle(self) -> None:
        """Called once the reset's first tick has let contacts settle (measure rest states)."""

    def _option(self, options: dict, key: str, choices: tuple[str, ...], what: str) -> str:
        """``options[key]`` when given (one of ``choices``, else a ValueError naming ``what``),
        otherwise one of ``choices`` drawn from ``np_random``."""
        value = options.get(key)
        if value is None:
            value = choices[self.np_random.integers(len(choices))]
        if value not in choices:
            raise ValueError(f"unknown {what} {value!r}; choose from {choices}")
        return value

    def _evaluate(self) -> tuple[bool, float, dict]:
        """This tick's (success condition holds, reward, named reward terms); ``_held`` counts
        consecutive ticks of the condition and success needs ``hold_steps`` of them."""
        raise NotImplementedError

    def _info(self, success: bool) -> dict:
        return {"success": success, "is_success": success}

    def success_condition(self) -> bool:
        """Whether the instruction's success condition holds in the state now (without the
        ``hold_steps`` a success needs in an episode); e.g. for the twin's status line."""
        return bool(self._evaluate()[0])

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        domain = self.reset_scene(seed=seed, options=options)
        obs = self._observe()
        info = self._info(success=False)
        if domain is not None:
            info["domain"] = domain
        return obs, info

    def reset_scene(self, *, seed: int | None = None, options: dict | None = None) -> dict | None:
        """:meth:`reset` without the observation (nothing is rendered, so any thread may call
        it); returns what the randomization drew, or None."""
        super().reset(seed=seed)
        self._choose_task(options or {})
        mujoco.mj_resetData(self.model, self.data)
        home = HOME_RAD + self.np_random.uniform(-0.05, 0.05, size=HOME_RAD.shape)
        self.data.qpos[self._arm_qpos] = home
        self.data.ctrl[:] = home
        layout = self._sample_layout()
        # Drawn after the layout: a seed gives the same scene with randomization on or off.
        domain = self._randomizer.apply(self.np_random) if self._randomizer else None
        self._place_layout(layout)
        mujoco.mj_forward(self.model, self.data)
        # Let contacts settle so resting states are measured, not assumed.
        for _ in range(self.n_substeps):
            mujoco.mj_step(self.model, self.data)
        self._after_settle()
        self._held = 0
        return domain

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
        holds, reward, terms = self._evaluate()
        self._held = self._held + 1 if holds else 0
        success = self._held >= self.hold_steps
        terms["success"] = float(success)
        reward += float(success)
        info = self._info(success=success)
        info["reward_terms"] = terms
        return self._observe(), float(reward), success, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._last_images is None:
            self._last_images = self._rig.render(self.data)
        return self._last_images[self.cameras[0]]

    def close(self):
        self._rig.close()

    # ------------------------------------------------------------------ privileged state
    def arm_qpos(self) -> np.ndarray:
        return self.data.qpos[self._arm_qpos].copy()

    def grasp_position(self) -> np.ndarray:
        return self.data.site_xpos[self._grasp_site].copy()

    def object_lifts(self) -> dict[str, float]:
        """Height (m) each task object rose above its rest; eval reports what was lifted."""
        return {}

    def scene_state(self) -> dict:
        """The scene now, JSON-ready: the MuJoCo state and what the reset decided
        (``task_attributes``); :meth:`set_scene_state` on another instance of the same task
        reproduces it (the twin's side channel serves it to the scripted operator)."""
        d = self.data
        return {
            "nq": int(self.model.nq),
            "qpos": d.qpos.tolist(),
            "qvel": d.qvel.tolist(),
            "mocap_pos": d.mocap_pos.tolist(),
            "mocap_quat": d.mocap_quat.tolist(),
            "task": {a: _jsonable(getattr(self, a)) for a in self.task_attributes},
        }

    def set_scene_state(self, state: dict) -> None:
        """Puts this env in the scene ``state`` (from :meth:`scene_state` of the same task)."""
        if state.get("nq") != self.model.nq or set(state.get("task", {})) != set(
            self.task_attributes
        ):
            raise ValueError(
                f"scene state of another task (nq {state.get('nq')} and {sorted(state.get('task', {}))}"
                f", this {type(self).__name__} has nq {self.model.nq} and "
                f"{sorted(self.task_attributes)})"
            )
        d = self.data
        d.qpos[:], d.qvel[:] = state["qpos"], state["qvel"]
        if self.model.nmocap:
            d.mocap_pos[:], d.mocap_quat[:] = state["mocap_pos"], state["mocap_quat"]
        for name, value in state["task"].items():
            setattr(self, name, value)
        mujoco.mj_forward(self.model, self.data)

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

    def _observe(self) -> dict:
        self._last_images = self._rig.render(self.data)
        if self.world is not None:  # the frames the twin's ZMQ camera path delivers
            q = self.world.jpeg_quality
            self._last_images = {c: jpeg_roundtrip(i, q) for c, i in self._last_images.items()}
        obs = {image_key(cam): img for cam, img in self._last_images.items()}
        obs[OBS_STATE] = so101.from_radians(self.arm_qpos()).astype(np.float32)
        obs[TASK] = self.instruction
        return obs


def _jsonable(value):
    """``value`` with numpy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
