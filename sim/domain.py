"""The "real" domain: how the twin's world differs from the sim envs', one setting each.

No physical arm is reachable on the build machines; the serial-bus twin (``armvla twin``) is
the stand-in real world. A real arm's world never matches a simulator's rendering, so the twin
renders and behaves like another world: the front camera mounted a little off the sim's pose
with another lens, warmer and dimmer light, a darker table, frames through JPEG on the ZMQ
camera path, and the gripper's torque capped at half (lerobot writes ``Max_Torque_Limit=500``
to the SO-101's gripper servo). Servo compliance and bus latency come from the twin's servo
model (real/feetech_twin) and exist only on the twin.

``domain="real"`` on any task env (``armvla eval --task.domain=real``) applies the same
:class:`RealWorld` without the bus, for fast evaluation: for one state its frames are the
twin's published frames (tests/real/test_twin_world.py). Training data of the real domain
comes only through ``armvla record`` against the twin, as it would from an arm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import mujoco
import numpy as np

DOMAINS = ("sim", "real")


@dataclass
class RealWorld:
    # Front camera moved from the sim's pose, m, [x, y, z] in the arm's base frame (it looks
    # along -x: a negative x is closer to the arm). A camera mounted by hand sits this far off.
    camera_offset_m: list[float] = field(default_factory=lambda: [-0.008, 0.006, 0.006])
    # Front camera turned, degrees, about the base frame's [x, y, z] axes.
    camera_turn_deg: list[float] = field(default_factory=lambda: [0.0, 1.5, -2.0])
    # Change of the front camera's vertical field of view, degrees (another lens).
    camera_fov_deg: float = 3.0
    # Factor on the lights' intensity (the headlight's too).
    light_intensity: float = 0.8
    # Colour temperature shift, > 0 warmer: red x (1 + it), blue x (1 - it).
    light_warmth: float = 0.1
    # The directional light turned about the base frame's y axis, degrees.
    light_tilt_deg: float = 12.0
    # Factor on each channel of the table's colour: a darker, warmer surface.
    table_rgb: list[float] = field(default_factory=lambda: [0.82, 0.74, 0.62])
    # The gripper's torque cap as a fraction of the sim's (the arm's driver caps it at half).
    gripper_torque: float = 0.5
    # JPEG quality of the frames (the twin's ZMQ camera publisher encodes at this quality).
    jpeg_quality: int = 95

    def __post_init__(self):
        if len(self.camera_offset_m) != 3 or len(self.camera_turn_deg) != 3:
            raise ValueError("camera_offset_m and camera_turn_deg must be [x, y, z]")
        if len(self.table_rgb) != 3 or min(self.table_rgb) < 0:
            raise ValueError(f"table_rgb must be three factors >= 0, got {self.table_rgb}")
        if not 0 < self.gripper_torque <= 1 or self.light_intensity < 0:
            raise ValueError("gripper_torque must be in (0, 1] and light_intensity >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


def as_world(value) -> RealWorld:
    """A RealWorld from itself, a dict of its fields, or None (the defaults)."""
    if value is None:
        return RealWorld()
    if isinstance(value, RealWorld):
        return value
    if isinstance(value, dict):
        return RealWorld(**value)
    raise TypeError(f"world must be a RealWorld or a dict, got {type(value)}")


def apply_world(
    model: mujoco.MjModel,
    world: RealWorld,
    cameras: list[int],
    table: str,
    gripper_actuator: int | None,
) -> None:
    """Changes a compiled scene in place into the real domain's: ``cameras`` (ids of the fixed
    cameras) moved, turned and with a wider lens, the light, the table's colour and, unless
    ``gripper_actuator`` is None (on the twin the servo's torque register caps it), the
    gripper's torque cap."""
    turn = np.empty(4)
    mujoco.mju_euler2Quat(turn, np.deg2rad(world.camera_turn_deg), "XYZ")
    for cam in cameras:
        quat = np.empty(4)
        mujoco.mju_mulQuat(quat, turn, model.cam_quat[cam].copy())
        model.cam_quat[cam] = quat
        model.cam_pos[cam] += np.asarray(world.camera_offset_m)
        model.cam_fovy[cam] += world.camera_fov_deg
    tint = world.light_intensity * np.array([1 + world.light_warmth, 1.0, 1 - world.light_warmth])
    tilt = np.deg2rad(world.light_tilt_deg)
    rot = np.array([[np.cos(tilt), 0, np.sin(tilt)], [0, 1, 0], [-np.sin(tilt), 0, np.cos(tilt)]])
    for i in range(model.nlight):
        model.light_dir[i] = rot @ model.light_dir[i]
        model.light_diffuse[i] = np.clip(model.light_diffuse[i] * tint, 0.0, 1.0)
    head = model.vis.headlight
    head.ambient[:] = np.clip(head.ambient * tint, 0.0, 1.0)
    head.diffuse[:] = np.clip(head.diffuse * tint, 0.0, 1.0)
    mat = int(model.geom_matid[model.geom(table).id])
    model.mat_rgba[mat, :3] = np.clip(model.mat_rgba[mat, :3] * np.asarray(world.table_rgb), 0, 1)
    if gripper_actuator is not None:
        model.actuator_forcerange[gripper_actuator] *= world.gripper_torque


def jpeg_encode(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB frame as the twin publishes it: the array encoded as is, which
    lerobot's ZMQ camera decodes with OpenCV back into the same channel order."""
    ok, jpeg = cv2.imencode(".jpg", rgb, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return jpeg.tobytes()


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` through the twin's ZMQ camera path: encoded, then decoded as lerobot does."""
    return cv2.imdecode(np.frombuffer(jpeg_encode(rgb, quality), np.uint8), cv2.IMREAD_COLOR)
