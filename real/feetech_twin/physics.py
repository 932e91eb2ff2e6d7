"""MuJoCo behind the servos: a task's scene stepped in (scaled) real time on its own thread.

Each physics step turns every servo's registers into actuator settings (goal -> speed-limited
position target, P/D coefficients -> gains, torque limits -> force range, torque off -> zero
gain) and, after the step, writes the joint's state back into the servo's Present_* registers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace

import mujoco
import numpy as np

from real.feetech_twin.lock import TwinLock
from real.feetech_twin.servo import Servo, ThermalConfig
from safety import so101
from sim.domain import as_world
from sim.registry import make_env

# lerobot's SO-101 follower writes P=16, D=32 at configure(); the MJCF gains model the servo at
# those settings, so other coefficients scale the gains proportionally.
REFERENCE_P, REFERENCE_D = 16, 32
# Longest stretch of simulated time one wake-up may catch up on; beyond it the twin slips
# (runs slower than real time) rather than spiralling when the machine is busy.
MAX_CATCH_UP_S = 0.05
WAKE_PERIOD_S = 0.005


class TwinPhysics:
    """The scene, its servos and the stepping loop.

    Args:
        servos: one per SO-101 joint, in ``safety.so101.SO101_JOINTS`` order.
        lock: guards the MuJoCo state and the servos' registers (shared with the bus thread).
        thermal: thermal model parameters.
        max_speed_deg_s: no-load speed of a servo when Goal_Velocity is 0 (its maximum).
        realtime_factor: simulated seconds per wall-clock second.
        seed: scene layout (object poses, the instruction's choices, arm start pose noise).
        image_size, cameras: renderer settings of the scene (for a sim-camera adapter).
        task: the registered task whose scene the servos drive.
        domain: ``"real"`` (the twin's own world, sim/domain.py) or ``"sim"`` (the sim env's).
        world: the real domain's settings (a RealWorld or a dict of its fields).
    """

    def __init__(
        self,
        servos: list[Servo],
        lock: TwinLock,
        thermal: ThermalConfig,
        max_speed_deg_s: float = 300.0,
        realtime_factor: float = 1.0,
        seed: int = 0,
        image_size: int = 96,
        cameras: tuple[str, ...] = ("front", "wrist"),
        task: str = "PickColorCube-v1",
        domain: str = "real",
        world=None,
    ):
        self.servos = servos
        self.lock = lock
        self.thermal = thermal
        self.max_speed = np.deg2rad(max_speed_deg_s) if max_speed_deg_s > 0 else np.inf
        self.realtime_factor = realtime_factor
        # The gripper's torque cap is the servo's Torque_Limit register here (lerobot writes
        # 50 % to it at configure), not a changed model: the env keeps the full force range.
        world = replace(as_world(world), gripper_torque=1.0)
        self.env = make_env(
            task,
            render_mode="rgb_array",
            image_size=image_size,
            cameras=cameras,
            domain=domain,
            world=asdict(world),
        ).unwrapped
        self.env.reset(seed=seed)
        self.model, self.data = self.env.model, self.env.data
        self.dt = self.model.opt.timestep
        names = so101.SO101_JOINTS
        self._qadr = np.array([self.model.joint(j).qposadr[0] for j in names])
        self._dadr = np.array([self.model.joint(j).dofadr[0] for j in names])
        self._act = np.array([self.model.actuator(j).id for j in names])
        self._kp0 = self.model.actuator_gainprm[self._act, 0].copy()
        self._kv0 = -self.model.actuator_biasprm[self._act, 2].copy()
        self._fmax = self.model.actuator_forcerange[self._act, 1].copy()
        self._target = self.data.qpos[self._qadr].copy()  # speed-limited position targets
        self.blocked: dict[int, float] = {}  # joint index -> angle it is held at
        self.sim_time = 0.0
        self.on_step: Callable[[], None] | None = None  # e.g. fault bookkeeping, under the lock
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.sync_servos(dt=0.0)
        for servo in self.servos:  # a powered-up servo's goal register reads its position
            servo.set("Goal_Position", servo.get("Present_Position"))

    # ------------------------------------------------------------------ stepping
    def step(self, n: int = 1) -> None:
        """Advances the simulation ``n`` steps. Call with the lock held.

        Register-derived settings (gains, force limits, goals) are read once per call: the host
        can only change them between calls, since the bus thread needs the same lock.
        """
        enabled, goal, speed = self._apply_registers()
        for _ in range(n):
            q = self.data.qpos[self._qadr]
            # The servo's trajectory generator: the target moves toward the goal at bounded speed.
            self._target += np.clip(goal - self._target, -speed * self.dt, speed * self.dt)
            self._target[~enabled] = q[~enabled]
            self.data.ctrl[self._act] = self._target
            mujoco.mj_step(self.model, self.data)
            for i, angle in self.blocked.items():
                # A jammed joint: it stays where it jammed while its actuator keeps pushing.
                self.data.qpos[self._qadr[i]] = angle
                self.data.qvel[self._dadr[i]] = 0.0
        self.sim_time += n * self.dt
        self.sync_servos(dt=n * self.dt)

    def _apply_registers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Servo registers -> actuator gains and force ranges; returns (torque enabled [6],
        goal angles [6] in rad, speed limits [6] in rad/s)."""
        enabled = np.zeros(len(self.servos), dtype=bool)
        goal, speed = np.zeros(len(self.servos)), np.zeros(len(self.servos))
        for i, servo in enumerate(self.servos):
            act = self._act[i]
            enabled[i] = servo.torque_enabled
            if not enabled[i]:
                # Limp: no stiffness, no motor damping; the joint's passive damping still acts.
                kp = kv = 0.0
            else:
                kp = self._kp0[i] * servo.get("P_Coefficient") / REFERENCE_P
                kv = self._kv0[i] * servo.get("D_Coefficient") / REFERENCE_D
                goal[i] = servo.goal_q()
                speed[i] = servo.max_speed_rad_s(self.max_speed)
            self.model.actuator_gainprm[act, 0] = kp
            self.model.actuator_biasprm[act, 1] = -kp
            self.model.actuator_biasprm[act, 2] = -kv
            fmax = self._fmax[i] * servo.torque_fraction()
            self.model.actuator_forcerange[act] = (-fmax, fmax)
        return enabled, goal, speed

    def sync_servos(self, dt: float) -> None:
        """Writes the joints' state into the servos' Present_* registers."""
        q = self.data.qpos[self._qadr]
        qd = self.data.qvel[self._dadr]
        force = self.data.actuator_force[self._act]
        for i, servo in enumerate(self.servos):
            servo.update_present(q[i], qd[i], force[i] / self._fmax[i], dt, self.thermal)

    def block(self, joint: int, blocked: bool = True) -> None:
        """Jams (or frees) a joint at its present angle. Call with the lock held."""
        if blocked:
            self.blocked.setdefault(joint, float(self.data.qpos[self._qadr[joint]]))
        else:
            self.blocked.pop(joint, None)

    def joint_radians(self) -> np.ndarray:
        """Joint angles [6] (rad), SO101_JOINTS order."""
        with self.lock:
            return self.data.qpos[self._qadr].copy()

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="feetech-twin-physics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        wall0, sim0 = time.monotonic(), self.sim_time
        while not self._stop.is_set():
            due = sim0 + (time.monotonic() - wall0) * self.realtime_factor - self.sim_time
            n = int(due / self.dt)
            if n * self.dt > MAX_CATCH_UP_S:
                n = int(MAX_CATCH_UP_S / self.dt)
                wall0, sim0 = time.monotonic(), self.sim_time + n * self.dt  # slip, don't spiral
            # Small batches keep the lock free for the bus thread between them.
            while n > 0 and not self._stop.is_set():
                batch = min(n, 5)
                with self.lock:
                    self.step(batch)
                    if self.on_step is not None:
                        self.on_step()
                n -= batch
            # Waking every few milliseconds keeps the twin's CPU share small on a busy machine;
            # readings are then at most that old, like a real servo's sampling.
            self._stop.wait(WAKE_PERIOD_S)
