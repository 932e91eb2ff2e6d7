"""``armvla twin``: serve the SO-101 serial-bus twin on a pseudo-terminal until Ctrl-C or SIGTERM.

Example::

    armvla twin --robot_id=twin --calibration_dir=/tmp/calib --link=/tmp/so101-twin
    armvla twin --task=RopeToMark-v1 --seed=3 --link=/tmp/so101-twin   # another task's scene
    lerobot-teleoperate --robot.type=so101_follower --robot.port=/tmp/so101-twin \\
        --robot.id=twin --robot.calibration_dir=/tmp/calib ...
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass

from real.feetech_twin import FaultConfig, SO101Twin, TwinConfig
from real.feetech_twin.cameras import TwinCameraPublisher, announce, announcement_path
from real.feetech_twin.scene_channel import SceneChannel


@dataclass
class TwinCommandConfig(TwinConfig):
    """``armvla twin`` options: the twin's own (``TwinConfig``) plus how long to serve."""

    # Seconds to serve before exiting cleanly; 0 serves until Ctrl-C or SIGTERM.
    duration_s: float = 0.0
    # Seconds between one-line status reports (bus counters, temperatures); 0 disables them.
    status_every_s: float = 0.0
    # Publish the scene's cameras for lerobot's zmq camera (what `armvla run` on the twin sees).
    publish_cameras: bool = True
    # TCP port of the camera publisher on 127.0.0.1; 0 picks a free one.
    camera_port: int = 0
    # Camera publishing rate (frames/s).
    camera_fps: float = 30.0
    # Serve the scene side channel (privileged state and object resets) for the scripted
    # operator, --teleop.type=armvla_twin_operator (real/feetech_twin/scene_channel.py).
    scene_channel: bool = True
    # TCP port of the scene channel on 127.0.0.1; 0 picks a free one.
    scene_port: int = 0
    # Serve a clean bus for this many seconds, then inject --faults.* (so that a client can
    # connect and configure the servos first, as on a bus that degrades while running).
    faults_after_s: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.duration_s < 0 or self.status_every_s < 0 or self.faults_after_s < 0:
            raise ValueError("duration_s, status_every_s and faults_after_s must be >= 0")
        if not 0 <= self.camera_port <= 65535 or self.camera_fps <= 0:
            raise ValueError("camera_port must be in 0..65535 and camera_fps > 0")
        if not 0 <= self.scene_port <= 65535:
            raise ValueError("scene_port must be in 0..65535")


def _status_line(twin: SO101Twin) -> str:
    s = twin.stats
    temps = [twin.read_register(servo.name, "Present_Temperature") for servo in twin.servos]
    load = twin.read_register("gripper", "Present_Load")  # 0.1 % of stall torque, signed
    status = twin.read_register("gripper", "Status")
    with twin.lock:
        lifts = {c: round(h * 100, 1) for c, h in twin.env.object_lifts().items()}
        # The scene's instruction's success condition, this instant (the env's detector).
        done = twin.env.success_condition()
    return (
        f"packets={s.packets} replies={s.replies} dropped={s.dropped_replies} "
        f"garbage_bytes={s.garbage_bytes} temperatures_c={temps} "
        f"gripper_load_pct={load / 10:g} gripper_status={status} task_done={str(done).lower()} "
        f"lift_cm={json.dumps(lifts)}"
    )


def serve(cfg: TwinCommandConfig) -> None:
    """Runs the twin and prints how to connect lerobot to it; returns after a clean shutdown."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    twin = SO101Twin(cfg)
    cameras = scene = None
    try:
        twin.start()
        if cfg.faults_after_s:
            twin.set_faults(FaultConfig())
        faults_at = time.monotonic() + cfg.faults_after_s if cfg.faults_after_s else None
        calib_path = twin.write_calibration()
        if cfg.scene_channel:
            scene = SceneChannel(twin, cfg.scene_port).start()
        if cfg.publish_cameras:
            cameras = TwinCameraPublisher(twin, cfg.camera_port, cfg.camera_fps).start()
            announce(
                twin.device,
                cameras.host,
                cameras.port,
                cfg.cameras,
                cfg.image_size,
                scene_port=scene.port if scene else None,
                task=cfg.task,
            )
        print(f"SO-101 twin serving on {twin.port}" + (f" (-> {twin.device})" if cfg.link else ""))
        print(
            f"task {cfg.task} ({cfg.domain} world), scene seed {cfg.seed}: {twin.env.instruction!r}"
        )
        if scene is not None:
            print(f"scene channel: tcp://{scene.host}:{scene.port}")
        print(f"calibration for robot id {cfg.robot_id!r}: {calib_path}")
        for name, c in twin.calibration.items():
            print(
                f"  {name:<14} id={c['id']} homing_offset={c['homing_offset']:>5} "
                f"range=[{c['range_min']}, {c['range_max']}]"
            )
        print(
            "connect with: --robot.type=so101_follower "
            f"--robot.port={twin.port} --robot.id={cfg.robot_id} "
            f"--robot.calibration_dir={calib_path.parent}",
            flush=True,
        )
        if cameras is not None:
            spec = ", ".join(
                f"{c}: {{type: zmq, server_address: {cameras.host}, port: {cameras.port}, "
                f"camera_name: {c}}}"
                for c in cfg.cameras
            )
            print(f'cameras ({cfg.camera_fps:g} fps): --robot.cameras="{{{spec}}}"', flush=True)
        deadline = time.monotonic() + cfg.duration_s if cfg.duration_s else None
        next_status = time.monotonic() + cfg.status_every_s
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.1)
            if faults_at is not None and time.monotonic() >= faults_at:
                twin.set_faults(cfg.faults)
                print(f"faults on: {cfg.faults}", flush=True)
                faults_at = None
            if cfg.status_every_s and time.monotonic() >= next_status:
                print(_status_line(twin), flush=True)
                next_status += cfg.status_every_s
    except KeyboardInterrupt:
        pass
    finally:
        if cameras is not None:
            cameras.stop()
            announcement_path(twin.device or "").unlink(missing_ok=True)
        if scene is not None:
            scene.stop()
        twin.close()
        signal.signal(signal.SIGTERM, previous)
    print("SO-101 twin stopped", flush=True)
