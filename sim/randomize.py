"""Domain randomization of a task's MuJoCo scene, drawn anew at every reset.

A policy trained on one fixed rendering memorizes pixels: the pick-color checkpoint that gets
98/100 in its own scenes falls to 0/20 with the front camera 2 cm forward and 1 cm up, with a
56° instead of 50° field of view, or under warmer, dimmer light on a darker table (DESIGN.md).
Each group below is one switch with its ranges; all are off by default, so a task without
``--task.randomize.*`` renders and behaves exactly as before. The ranges are written into the
dataset's metadata and the eval report with the rest of the task config.

A range ``(low, high)`` is sampled uniformly per episode; ``low == high`` fixes a perturbation,
which is how a single shift is evaluated (``--task.randomize.camera=true
--task.randomize.camera_shift_m='[0.02,0.02]'`` moves the front camera by 2 cm along a random
direction each episode).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import mujoco
import numpy as np


def _pair(low: float, high: float):
    return field(default_factory=lambda: [low, high])


@dataclass
class DomainRandomization:
    # Move and turn the scene's fixed cameras (not the wrist camera, which rides on the arm)
    # and change their field of view.
    camera: bool = False
    # A fixed move of the camera, m, [x, y, z] in the arm's base frame, before the random shift
    # (the front camera looks along -x: '[-0.02,0,0.01]' is 2 cm closer to the arm, 1 cm up).
    camera_offset_m: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    # Distance the camera moves, m, in a random direction.
    camera_shift_m: list[float] = _pair(0.0, 0.03)
    # Angle it turns, degrees, about a random axis.
    camera_turn_deg: list[float] = _pair(0.0, 5.0)
    # Change of the vertical field of view, degrees (added to the scene's).
    camera_fov_deg: list[float] = _pair(-6.0, 6.0)
    # Light direction, colour and intensity.
    lighting: bool = False
    # Tilt of the directional light away from its direction in the scene, degrees.
    light_tilt_deg: list[float] = _pair(0.0, 35.0)
    # Factor on the light's and the headlight's intensity.
    light_intensity: list[float] = _pair(0.5, 1.4)
    # Colour temperature shift: > 0 warmer (more red, less blue), < 0 cooler; factor 1 +/- it.
    light_warmth: list[float] = _pair(-0.2, 0.2)
    # Table texture tint and object colours (a red cube stays the reddest of the three).
    colors: bool = False
    # Factor on the table's brightness (its texture is multiplied by it).
    table_brightness: list[float] = _pair(0.55, 1.15)
    # Factor on each channel of the table's colour on top of that (its tint).
    table_tint: list[float] = _pair(0.9, 1.1)
    # Jitter of each channel of each object's colour.
    object_color_jitter: list[float] = _pair(-0.12, 0.12)
    # Object size and mass.
    objects: bool = False
    # Factor on each object's size.
    object_scale: list[float] = _pair(0.9, 1.1)
    # Factor on each object's mass.
    object_mass: list[float] = _pair(0.6, 1.6)
    # Actuator gains and the gripper's torque cap.
    actuators: bool = False
    # Factor on each arm joint's position gain (the servo's stiffness).
    gain: list[float] = _pair(0.8, 1.2)
    # Factor on the gripper's torque cap (the arm's driver caps it at half).
    gripper_torque: list[float] = _pair(0.4, 1.0)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, list):
                continue
            if name == "camera_offset_m":
                if len(value) != 3 or not all(np.isfinite(value)):
                    raise ValueError(f"--task.randomize.{name} must be [x, y, z], got {value}")
                continue
            if len(value) != 2 or not all(np.isfinite(value)) or value[0] > value[1]:
                raise ValueError(
                    f"--task.randomize.{name} must be [low, high] with low <= high, got {value}"
                )

    @property
    def enabled(self) -> bool:
        return any((self.camera, self.lighting, self.colors, self.objects, self.actuators))


def as_randomization(value) -> DomainRandomization | None:
    """A DomainRandomization from itself, a dict of its fields (as worker processes and
    configs pass it), or None."""
    if value is None or isinstance(value, DomainRandomization):
        return value
    if isinstance(value, dict):
        return DomainRandomization(**value)
    raise TypeError(f"randomization must be a DomainRandomization or a dict, got {type(value)}")


class SceneRandomizer:
    """Keeps a model's nominal values and draws a randomized scene from them at each reset.

    Args:
        model: the task's compiled model (changed in place).
        cfg: the switches and ranges.
        cameras: the fixed cameras to move (by name).
        objects: the bodies whose geoms are resized, recoloured and made heavier or lighter.
        table: the table geom (recoloured through its material).
        arm_actuators / gripper_actuator: actuator ids for gains and the torque cap.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        cfg: DomainRandomization,
        cameras: list[str],
        objects: list[str],
        table: str,
        arm_actuators: list[int],
        gripper_actuator: int,
    ):
        self.model, self.cfg = model, cfg
        self.cameras = [model.camera(c).id for c in cameras]
        self.bodies = [model.body(b).id for b in objects]
        self.geoms = [np.flatnonzero(model.geom_bodyid == b) for b in self.bodies]
        self.table_mat = int(model.geom_matid[model.geom(table).id])
        self.arm, self.gripper = list(arm_actuators), int(gripper_actuator)
        m = model
        self._nominal = {
            "cam_pos": m.cam_pos.copy(),
            "cam_quat": m.cam_quat.copy(),
            "cam_fovy": m.cam_fovy.copy(),
            "light_dir": m.light_dir.copy(),
            "light_diffuse": m.light_diffuse.copy(),
            "headlight_ambient": m.vis.headlight.ambient.copy(),
            "headlight_diffuse": m.vis.headlight.diffuse.copy(),
            "mat_rgba": m.mat_rgba.copy(),
            "geom_rgba": m.geom_rgba.copy(),
            "geom_size": m.geom_size.copy(),
            "geom_rbound": m.geom_rbound.copy(),
            "geom_aabb": m.geom_aabb.copy(),
            "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(),
            "gainprm": m.actuator_gainprm.copy(),
            "biasprm": m.actuator_biasprm.copy(),
            "forcerange": m.actuator_forcerange.copy(),
        }
        self.params: dict = {}

    def restore(self) -> None:
        m, n = self.model, self._nominal
        m.cam_pos[:], m.cam_quat[:], m.cam_fovy[:] = n["cam_pos"], n["cam_quat"], n["cam_fovy"]
        m.light_dir[:], m.light_diffuse[:] = n["light_dir"], n["light_diffuse"]
        m.vis.headlight.ambient[:] = n["headlight_ambient"]
        m.vis.headlight.diffuse[:] = n["headlight_diffuse"]
        m.mat_rgba[:], m.geom_rgba[:] = n["mat_rgba"], n["geom_rgba"]
        m.geom_size[:], m.geom_rbound[:] = n["geom_size"], n["geom_rbound"]
        m.geom_aabb[:] = n["geom_aabb"]
        m.body_mass[:], m.body_inertia[:] = n["body_mass"], n["body_inertia"]
        m.actuator_gainprm[:], m.actuator_biasprm[:] = n["gainprm"], n["biasprm"]
        m.actuator_forcerange[:] = n["forcerange"]

    def apply(self, rng: np.random.Generator) -> dict:
        """Restores the nominal scene, then draws this episode's; returns what was drawn
        (also kept in :attr:`params`)."""
        self.restore()
        cfg, m, n = self.cfg, self.model, self._nominal
        u = lambda r: float(rng.uniform(*r))  # noqa: E731
        p: dict = {}
        if cfg.camera:
            for cam in self.cameras:
                shift = np.asarray(cfg.camera_offset_m) + _unit(rng) * u(cfg.camera_shift_m)
                turn = np.deg2rad(u(cfg.camera_turn_deg))
                rot = np.empty(4)
                mujoco.mju_axisAngle2Quat(rot, _unit(rng), turn)
                quat = np.empty(4)
                mujoco.mju_mulQuat(quat, rot, n["cam_quat"][cam])
                m.cam_pos[cam] = n["cam_pos"][cam] + shift
                m.cam_quat[cam] = quat
                m.cam_fovy[cam] = n["cam_fovy"][cam] + u(cfg.camera_fov_deg)
                p[f"camera_{m.camera(cam).name}"] = {
                    "shift_m": shift.round(4).tolist(),
                    "turn_deg": round(float(np.rad2deg(turn)), 2),
                    "fovy_deg": round(float(m.cam_fovy[cam]), 2),
                }
        if cfg.lighting:
            scale, warmth = u(cfg.light_intensity), u(cfg.light_warmth)
            tint = np.array([1.0 + warmth, 1.0, 1.0 - warmth])
            tilt = np.deg2rad(u(cfg.light_tilt_deg))
            for i in range(m.nlight):
                d = n["light_dir"][i] / np.linalg.norm(n["light_dir"][i])
                side = np.cross(d, _unit(rng))
                side /= max(np.linalg.norm(side), 1e-9)
                m.light_dir[i] = np.cos(tilt) * d + np.sin(tilt) * side
                m.light_diffuse[i] = np.clip(n["light_diffuse"][i] * scale * tint, 0.0, 1.0)
            m.vis.headlight.ambient[:] = np.clip(n["headlight_ambient"] * scale * tint, 0, 1)
            m.vis.headlight.diffuse[:] = np.clip(n["headlight_diffuse"] * scale * tint, 0, 1)
            p["light"] = {
                "intensity": round(scale, 3),
                "warmth": round(warmth, 3),
                "tilt_deg": round(float(np.rad2deg(tilt)), 1),
            }
        if cfg.colors:
            brightness = u(cfg.table_brightness)
            tint = brightness * rng.uniform(*cfg.table_tint, 3)
            m.mat_rgba[self.table_mat, :3] = np.clip(n["mat_rgba"][self.table_mat, :3] * tint, 0, 1)
            for geoms in self.geoms:
                for g in geoms:
                    rgba = n["geom_rgba"][g, :3]
                    jitter = rng.uniform(*cfg.object_color_jitter, 3)
                    # The named colour stays the object's dominant channel.
                    jitter[np.argmax(rgba)] = abs(jitter[np.argmax(rgba)])
                    m.geom_rgba[g, :3] = np.clip(rgba + jitter, 0.0, 1.0)
            p["table_brightness"] = round(brightness, 3)
        if cfg.objects:
            for body, geoms in zip(self.bodies, self.geoms, strict=True):
                scale, mass = u(cfg.object_scale), u(cfg.object_mass)
                m.geom_size[geoms] = n["geom_size"][geoms] * scale
                m.geom_rbound[geoms] = n["geom_rbound"][geoms] * scale
                m.geom_aabb[geoms] = n["geom_aabb"][geoms] * scale  # collision culling uses it
                m.body_mass[body] = n["body_mass"][body] * mass * scale**3
                m.body_inertia[body] = n["body_inertia"][body] * mass * scale**5
                p[f"object_{m.body(body).name}"] = {
                    "scale": round(scale, 3),
                    "mass_kg": round(float(m.body_mass[body]), 4),
                }
        if cfg.actuators:
            gains = {}
            for a in self.arm:
                k = u(cfg.gain)
                m.actuator_gainprm[a, 0] = n["gainprm"][a, 0] * k
                m.actuator_biasprm[a, 1] = n["biasprm"][a, 1] * k
                gains[m.actuator(a).name] = round(k, 3)
            cap = u(cfg.gripper_torque)
            m.actuator_forcerange[self.gripper] = n["forcerange"][self.gripper] * cap
            p["gain"], p["gripper_torque"] = gains, round(cap, 3)
        self.params = p
        return p


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / max(np.linalg.norm(v), 1e-9)
