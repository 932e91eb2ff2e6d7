"""``SO101Twin``: six emulated STS3215 servos on a pseudo-terminal, driving a task's MuJoCo scene.

lerobot's unmodified SO-101 follower connects to ``twin.port`` as it would to ``/dev/ttyACM0``::

    with SO101Twin(TwinConfig(robot_id="twin")) as twin:
        twin.write_calibration(calib_dir)
        robot = SO101Follower(SO101FollowerConfig(port=twin.port, id="twin", calibration_dir=calib_dir))
        robot.connect()

Calibration: the servos' EEPROM holds an already calibrated arm (homing offsets, position limits)
and :meth:`SO101Twin.write_calibration` writes the matching lerobot JSON, so ``connect()`` finds
``is_calibrated`` true and never prompts. The values are chosen so that lerobot's normalization
reproduces safety/so101.py exactly: arm joints in degrees = MuJoCo joint radians in degrees (the
middle of each calibrated range is the MJCF zero), gripper 0-100 % = closed..open in the MJCF.
"""

from __future__ import annotations

import gc
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from real.feetech_twin.control_table import RESOLUTION
from real.feetech_twin.emulator import BusStats, FaultConfig, FeetechBus, PtyServer
from real.feetech_twin.lock import TwinLock
from real.feetech_twin.physics import TwinPhysics
from real.feetech_twin.servo import STEPS_PER_RAD, JointEncoder, Servo, ThermalConfig
from safety import so101
from sim.domain import DOMAINS, RealWorld
from sim.registry import resolve_task

MOTOR_IDS = {name: i + 1 for i, name in enumerate(so101.SO101_JOINTS)}  # lerobot's SO-101 ids
# Arbitrary, like a real arm's: where each horn happened to sit on its encoder when assembled.
# (Sign-magnitude bit 11 on the wire, so within +-2047.)
HOMING_OFFSETS = (-1021, 437, 1352, -611, 12, -1744)
HALF_TURN = (RESOLUTION - 1) // 2  # 2047, where lerobot's half-turn homing puts the middle


def twin_calibration() -> dict[str, dict[str, int]]:
    """Per motor: the lerobot MotorCalibration fields the twin's EEPROM holds."""
    calib = {}
    for i, name in enumerate(so101.SO101_JOINTS):
        lo_rad, hi_rad = so101.JOINT_LIMITS_RAD[i]
        if name == "wrist_roll":
            # lerobot's calibrate() gives the continuous joint the whole turn.
            lo, hi = 0, RESOLUTION - 1
        elif name == "gripper":
            lo = HALF_TURN + round(lo_rad * STEPS_PER_RAD)
            hi = HALF_TURN + round(hi_rad * STEPS_PER_RAD)
        else:
            # Symmetric around the half turn so that lerobot's middle, (min + max) / 2, is 2047.
            half = int(min(-lo_rad, hi_rad) * STEPS_PER_RAD)
            lo, hi = HALF_TURN - half, HALF_TURN + half
        calib[name] = {
            "id": MOTOR_IDS[name],
            "drive_mode": 0,
            "homing_offset": HOMING_OFFSETS[i],
            "range_min": lo,
            "range_max": hi,
        }
    return calib


def joint_encoder(name: str, calib: dict[str, int]) -> JointEncoder:
    """The encoder mapping that makes lerobot's normalization equal the sim convention."""
    lo, hi, offset = calib["range_min"], calib["range_max"], calib["homing_offset"]
    if name == "gripper":
        # RANGE_0_100: % = (present - min) / (max - min); the sim's % is linear in the angle
        # from GRIPPER_CLOSED_RAD to GRIPPER_OPEN_RAD, so map those ends onto min and max.
        closed, opened = so101.GRIPPER_CLOSED_RAD, so101.GRIPPER_OPEN_RAD
        steps_per_rad = (hi - lo) / (opened - closed)
        return JointEncoder(lo - closed * steps_per_rad + offset, steps_per_rad)
    # DEGREES: deg = (present - (min + max) / 2) * 360 / 4095, so zero sits at the middle.
    return JointEncoder((lo + hi) / 2 + offset, STEPS_PER_RAD)


@dataclass
class TwinConfig:
    """The serial-bus twin of the SO-101 follower."""

    # lerobot robot id (--robot.id); names the calibration file <robot_id>.json.
    robot_id: str = "so101_twin"
    # Where to write the calibration (--robot.calibration_dir); None: lerobot's default folder
    # for the SO follower ($HF_LEROBOT_CALIBRATION/robots/so_follower).
    calibration_dir: Path | None = None
    # Simulated seconds per wall-clock second; 1.0 is real time (what the real arm does).
    realtime_factor: float = 1.0
    # The task whose scene is behind the bus: any registered family (`armvla generate --help`).
    task: str = "PickColorCube-v1"
    # The world behind the bus: "real" renders and behaves unlike the sim envs, as an arm's
    # world does (sim/domain.py: camera pose and lens, light, table, JPEG; the gripper's torque
    # cap is its servo's register); "sim" serves the sim env's own world (to tell the bus's
    # effects from the domain gap).
    domain: str = "real"
    # The real domain's settings, e.g. --world.camera_fov_deg=3 (defaults: sim/domain.py).
    world: RealWorld = field(default_factory=RealWorld)
    # Scene layout: object poses, the instruction's choices, arm start pose noise.
    seed: int = 0
    # Servo speed when Goal_Velocity is 0 (the STS3215's no-load speed is ~270-310 °/s).
    max_speed_deg_s: float = 300.0
    # Rendered image size and cameras of the scene (for a sim-camera adapter).
    image_size: int = 96
    cameras: tuple[str, ...] = ("front", "wrist")
    # Also expose the port at this stable path (a symlink to /dev/pts/N), e.g. /tmp/so101-twin.
    link: str | None = None
    # Faults to inject from the start (changeable at run time with SO101Twin.set_faults).
    faults: FaultConfig = field(default_factory=FaultConfig)
    # Servo thermal model.
    thermal: ThermalConfig = field(default_factory=ThermalConfig)

    def __post_init__(self):
        resolve_task(self.task)
        if self.domain not in DOMAINS:
            raise ValueError(f"--domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.realtime_factor <= 0:
            raise ValueError(f"realtime_factor must be > 0, got {self.realtime_factor}")
        if self.max_speed_deg_s < 0:
            raise ValueError(
                f"max_speed_deg_s must be >= 0 (0: unlimited), got {self.max_speed_deg_s}"
            )
        unknown = self.faults.joints() - set(so101.SO101_JOINTS)
        if unknown:
            raise ValueError(
                f"faults name unknown joints {sorted(unknown)}; use {so101.SO101_JOINTS}"
            )


class SO101Twin:
    """Emulated SO-101 servo bus on a pty, backed by a task's MuJoCo scene.

    Attributes:
        port: the serial port path to give lerobot (``--robot.port``); set by :meth:`start`.
        lock: guards the MuJoCo state and the servo registers; hold it to read ``data`` or render.
        env: the task env (unwrapped) whose model and data the servos drive.
        servos: the six :class:`Servo` objects in lerobot's motor order.
    """

    def __init__(self, config: TwinConfig | None = None):
        self.config = config or TwinConfig()
        self.lock = TwinLock()
        self.calibration = twin_calibration()
        self.servos = []
        for name, calib in self.calibration.items():
            eeprom = {
                "Homing_Offset": calib["homing_offset"],
                "Min_Position_Limit": calib["range_min"],
                "Max_Position_Limit": calib["range_max"],
                "Return_Delay_Time": 0,
            }
            self.servos.append(Servo(calib["id"], name, joint_encoder(name, calib), eeprom))
        cfg = self.config
        self.physics = TwinPhysics(
            self.servos,
            self.lock,
            cfg.thermal,
            max_speed_deg_s=cfg.max_speed_deg_s,
            realtime_factor=cfg.realtime_factor,
            seed=cfg.seed,
            image_size=cfg.image_size,
            cameras=cfg.cameras,
            task=cfg.task,
            domain=cfg.domain,
            world=asdict(cfg.world),
        )
        self.env = self.physics.env
        self._scene_seed = cfg.seed
        self.bus = FeetechBus(self.servos, random.Random(cfg.seed))
        self.set_faults(cfg.faults)
        self.port: str | None = None  # what lerobot opens: the link if configured, else the pty
        self.device: str | None = None  # the pty itself, /dev/pts/N
        self._server: PtyServer | None = None
        self._rig = None
        self._snapshot: mujoco.MjData | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SO101Twin:
        """Opens the pty and starts the bus and physics threads; returns self."""
        if self._server is None:
            # The twin stands in for servos, which never pause. A full garbage collection of a
            # torch-sized heap, triggered by any thread of this process, stalls the bus thread
            # for ~100 ms: longer than lerobot's ~34 ms reply timeout. Freezing the heap that
            # exists now keeps those collections short. (For hard isolation run `armvla twin`
            # in its own process.)
            gc.freeze()
            self._server = PtyServer(self.bus, self.lock, link=self.config.link)
            self._server.start()
            self.port, self.device = self._server.port, self._server.device
            self.physics.start()
        return self

    def stop(self) -> None:
        """Stops both threads and closes the pty (idempotent)."""
        self.physics.stop()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._rig is not None:
            self._rig.close()
            self._rig = None
        self.port = self.device = None

    def __enter__(self) -> SO101Twin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def close(self) -> None:
        self.stop()
        self.env.close()

    # ------------------------------------------------------------------ calibration
    def write_calibration(
        self, calibration_dir: str | Path | None = None, robot_id: str | None = None
    ) -> Path:
        """Writes lerobot's calibration JSON matching the servos' EEPROM; returns its path."""
        calibration_dir = calibration_dir or self.config.calibration_dir
        if calibration_dir is None:
            from lerobot.utils.constants import HF_LEROBOT_CALIBRATION, ROBOTS

            calibration_dir = HF_LEROBOT_CALIBRATION / ROBOTS / "so_follower"
        path = Path(calibration_dir) / f"{robot_id or self.config.robot_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.calibration, indent=4) + "\n")
        return path

    # ------------------------------------------------------------------ faults and state
    def set_faults(self, faults: FaultConfig) -> None:
        """Replaces the injected faults (takes effect at the next packet / physics step)."""
        unknown = faults.joints() - set(so101.SO101_JOINTS)
        if unknown:
            raise ValueError(f"faults name unknown joints {sorted(unknown)}")
        with self.lock:
            self.bus.faults = faults
            for i, servo in enumerate(self.servos):
                servo.injected_error = faults.error_bits.get(servo.name, 0)
                servo.extra_heat_c_per_s = faults.heat_c_per_s.get(servo.name, 0.0)
                self.physics.block(i, servo.name in faults.blocked_joints)

    @property
    def scene_seed(self) -> int:
        """The seed of the scene on the table now (the config's, then each reset's)."""
        return self._scene_seed

    def reset_scene(self, seed: int, options: dict | None = None) -> None:
        """Lays the task's objects out anew (the seed's layout and instruction) and leaves the
        arm where it is: what a person does between episodes at a real arm."""
        env, data = self.env, self.env.data
        with self.lock:
            arm_q = data.qpos[env._arm_qpos].copy()
            arm_qd = data.qvel[env._arm_dof].copy()
            ctrl = data.ctrl.copy()
            env.reset_scene(seed=seed, options=options or {})
            data.qpos[env._arm_qpos], data.qvel[env._arm_dof] = arm_q, arm_qd
            data.ctrl[:] = ctrl
            mujoco.mj_forward(env.model, data)
            self._scene_seed = seed

    def wait_for_late_replies(self, timeout_s: float = 5.0) -> None:
        """Returns once every reply the ``late_reply`` fault held back has gone out on the wire
        (a late reply still in flight would land in whatever read comes next, e.g. a connect's
        model-number handshake). Raises TimeoutError if some are still held after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self._server is not None and self._server.late_pending():
            if time.monotonic() > deadline:
                raise TimeoutError(f"late replies still held back after {timeout_s} s")
            time.sleep(0.01)

    def set_packet_listener(self, listener) -> None:
        """Calls ``listener(packet)`` for every instruction packet the servos receive (on the bus
        thread, under the twin's lock; keep it short). None removes it. Needs :meth:`start`."""
        if self._server is None:
            raise RuntimeError("start the twin before listening to its bus")
        self._server.on_packet = listener

    @property
    def stats(self) -> BusStats:
        return self.bus.stats

    def servo(self, name: str) -> Servo:
        return self.servos[so101.SO101_JOINTS.index(name)]

    def read_register(self, joint: str, register: str) -> int:
        """A register's decoded value, read directly (no bus): for tests and monitoring."""
        with self.lock:
            return self.servo(joint).get(register)

    def joint_positions(self) -> np.ndarray:
        """The simulated joints [6] in lerobot units (degrees, gripper 0-100)."""
        return so101.from_radians(self.physics.joint_radians())

    def close_renderer(self) -> None:
        """Frees the renderer; call from the thread that rendered (its GL context lives there)."""
        if self._rig is not None:
            self._rig.close()
            self._rig = None

    def render(self) -> dict[str, np.ndarray]:
        """Camera images {camera: uint8 [H, W, 3]} of the scene now.

        The renderer is created by the first call and bound to that thread's GL context, so call
        it from one thread (e.g. a sim-camera adapter's).
        """
        from sim.render import CameraRig

        if self._rig is None:
            size = self.config.image_size
            self._rig = CameraRig(self.env.model, self.config.cameras, size, size)
            self._snapshot = mujoco.MjData(self.env.model)
        # Copy the state under the lock (~0.01 ms) and render the copy outside it (4-12 ms),
        # so neither the bus nor the physics waits for the cameras; both views show one instant.
        with self.lock:
            mujoco.mj_copyData(self._snapshot, self.env.model, self.env.data)
        return self._rig.render(self._snapshot)
