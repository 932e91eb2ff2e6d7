"""Smoke test of bench/sim_speed.py: it runs end to end and ends with the promised JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sim_speed.py"


def test_sim_speed_bench_runs_and_prints_json():
    # A fresh process, as users run it: "torch_free" is only meaningful there, since other
    # test modules in this session may have imported torch. Tiny sizes: plumbing, not speed.
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--steps", "3", "--warmup", "2", "--image-size", "16"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")},
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("env_steps_per_s", "physics_steps_per_s", "default_render_env_steps_per_s"):
        assert result[key] > 0
    assert result["image_size"] == [16, 16]
    assert result["cameras"] == ["front", "wrist"]
    assert result["torch_free"] is True
