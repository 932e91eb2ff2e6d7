"""``armvla twin`` in a child process, for tests and benchmarks that drive it from outside.

A twin in its own process never shares a garbage collector or a GIL with the client under test,
as real servos don't. The child's stdout is parsed for its port and its cube-lift status lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path


class TwinProcess:
    """Starts ``armvla twin`` and waits until its cameras are published.

    Args:
        calibration_dir: where the twin writes lerobot's calibration file.
        robot_id: lerobot robot id (names the calibration file).
        seed: scene layout.
        extra_args: more ``armvla twin`` flags, e.g. ``["--faults.corrupt_byte_prob=0.05"]``.
    """

    def __init__(
        self,
        calibration_dir: Path,
        robot_id: str = "so101_twin",
        seed: int = 0,
        extra_args: list[str] | None = None,
        timeout_s: float = 120.0,
    ):
        self.calibration_dir = Path(calibration_dir)
        self.robot_id = robot_id
        cmd = [
            sys.executable,
            "-m",
            "policy.cli",
            "twin",
            f"--robot_id={robot_id}",
            f"--calibration_dir={calibration_dir}",
            f"--seed={seed}",
            "--status_every_s=0.25",
            *(extra_args or []),
        ]
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        self.port: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.is_set():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("armvla twin did not start:\n" + "\n".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            m = re.match(r"SO-101 twin serving on (\S+)", line)
            if m:
                self.port = m.group(1)
            if line.startswith("cameras"):
                self._ready.set()

    def max_lift_cm(self) -> dict[str, float]:
        """Highest lift of each task object (cube, rope end, towel corner) over the status
        lines so far (cm)."""
        best: dict[str, float] = {}
        for line in list(self.lines):
            m = re.search(r"lift_cm=(\{.*\})", line)
            if m:
                for color, cm in json.loads(m.group(1)).items():
                    best[color] = max(best.get(color, 0.0), cm)
        return best

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
