"""Smoke test of bench/policy_speed.py: it runs end to end and ends with the promised JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "policy_speed.py"


def test_policy_speed_bench_runs_and_prints_json():
    # A fresh process, as users run it. Minimal iterations and tiny batches: plumbing, not speed.
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--iters=2",
            "--warmup=1",
            "--train-iters=1",
            "--train-warmup=0",
            "--batch-size=1",
            "--armvla-batch-size=2",
            "--threads=1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "armvla_p50_ms",
        "act_p50_ms",
        "latency_ratio",
        "armvla_train_samples_per_s",
        "act_train_samples_per_s",
        "train_ratio",
        "armvla_own_batch_samples_per_s",
    ):
        assert result[key] > 0, key
    assert result["armvla_p95_ms"] >= result["armvla_p50_ms"]
    assert result["act_chunk_size"] == 100
    assert result["armvla_chunk_size"] > 0
    assert result["train_batch_size"] == 1
    assert result["armvla_own_batch_size"] == 2
    assert result["threads"] == 1
    assert result["act_params_trainable"] > result["armvla_params_trainable"] > 0
