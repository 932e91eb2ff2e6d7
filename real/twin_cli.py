"""``armvla twin``: serve the SO-101 serial-bus twin on a pseudo-terminal until Ctrl-C or SIGTERM.

Example::

    armvla twin --robot_id=twin --calibration_dir=/tmp/calib --link=/tmp/so101-twin
    lerobot-teleoperate --robot.type=so101_follower --robot.port=/tmp/so101-twin \\
        --robot.id=twin --robot.calibration_dir=/tmp/calib ...
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

from real.feetech_twin import SO101Twin, TwinConfig


@dataclass
class TwinCommandConfig(TwinConfig):
    """``armvla twin`` options: the twin's own (``TwinConfig``) plus how long to serve."""

    # Seconds to serve before exiting cleanly; 0 serves until Ctrl-C or SIGTERM.
    duration_s: float = 0.0
    # Seconds between one-line status reports (bus counters, temperatures); 0 disables them.
    status_every_s: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.duration_s < 0 or self.status_every_s < 0:
            raise ValueError("duration_s and status_every_s must be >= 0")


def _status_line(twin: SO101Twin) -> str:
    s = twin.stats
    temps = [twin.read_register(servo.name, "Present_Temperature") for servo in twin.servos]
    return (
        f"packets={s.packets} replies={s.replies} dropped={s.dropped_replies} "
        f"garbage_bytes={s.garbage_bytes} temperatures_c={temps}"
    )


def serve(cfg: TwinCommandConfig) -> None:
    """Runs the twin and prints how to connect lerobot to it; returns after a clean shutdown."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    twin = SO101Twin(cfg)
    try:
        twin.start()
        calib_path = twin.write_calibration()
        print(f"SO-101 twin serving on {twin.port}" + (f" (-> {twin.device})" if cfg.link else ""))
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
        deadline = time.monotonic() + cfg.duration_s if cfg.duration_s else None
        next_status = time.monotonic() + cfg.status_every_s
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.1)
            if cfg.status_every_s and time.monotonic() >= next_status:
                print(_status_line(twin), flush=True)
                next_status += cfg.status_every_s
    except KeyboardInterrupt:
        pass
    finally:
        twin.close()
        signal.signal(signal.SIGTERM, previous)
    print("SO-101 twin stopped", flush=True)
