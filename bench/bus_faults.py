"""The control loop on a degraded serial bus: `armvla run` on the twin with corrupted reply bytes,
side by side with the same run on a clean bus.

For each corruption rate the twin (its own process) serves a clean bus while lerobot connects,
then corrupts each reply byte with that probability (``--faults_after_s``); the shipped policy
runs for ``--seconds`` through the safety gate. Reported per run: control period p50/p99 (target
p99 <= 2x nominal), ticks per directive (RUN, HOLD after repeated failed reads...), gate
interventions, and the invariant violations the independent re-check finds in the run's audit
log (must be 0: no unsafe write). The last line printed is one JSON object. ``MUJOCO_GL=egl``::

    MUJOCO_GL=egl python bench/bus_faults.py --corrupt 0.05 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from lerobot.robots.so_follower import SO101FollowerConfig  # noqa: E402

from real.feetech_twin.process import TwinProcess  # noqa: E402
from real.run import RunConfig, run  # noqa: E402
from safety.check import recheck_audit_log  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corrupt", type=float, default=0.05, help="corrupted reply bytes (0-1)")
    p.add_argument("--seconds", type=float, default=15.0, help="run length per condition")
    p.add_argument("--seed", type=int, default=1_000_006, help="twin scene")
    p.add_argument("--instruction", default="pick up the red cube")
    return p.parse_args(argv)


def one_run(corrupt: float, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="armvla_bus_"))
    faults = [f"--faults.corrupt_byte_prob={corrupt}", "--faults_after_s=8"] if corrupt else []
    twin = TwinProcess(tmp / "calib", robot_id="bench", seed=args.seed, extra_args=faults)
    try:
        robot = SO101FollowerConfig(port=twin.port, id="bench", calibration_dir=tmp / "calib")
        summary = run(
            RunConfig(
                robot=robot,
                instruction=args.instruction,
                duration_s=args.seconds,
                out=tmp / "run",
            )
        )
        time.sleep(0.3)
        lifts = twin.max_lift_cm()
        corrupted = any(line.startswith("faults on") for line in twin.lines)
    finally:
        twin.close()
    log = next((tmp / "run").glob("*/audit.jsonl"))
    return {
        "corrupt_byte_prob": corrupt,
        "faults_were_on": corrupted or not corrupt,
        "period_p50_ms": summary["period_p50_ms"],
        "period_p99_ms": summary["period_p99_ms"],
        "directives": summary["directives"],
        "gate_interventions": summary["safety"]["interventions"],
        "violations": len(recheck_audit_log(log)),
        "max_lift_cm": lifts,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    nominal = 1000 / 30
    clean = one_run(0.0, args)
    noisy = one_run(args.corrupt, args)
    print(f"{'':<28} {'clean bus':>16} {f'{args.corrupt:.0%} corrupted':>16}")
    for key, fmt in (("period_p50_ms", "{:.1f} ms"), ("period_p99_ms", "{:.1f} ms")):
        print(f"{key:<28} {fmt.format(clean[key]):>16} {fmt.format(noisy[key]):>16}")
    for key in ("violations", "gate_interventions"):
        print(f"{key:<28} {clean[key]:>16} {noisy[key]:>16}")
    print(f"{'directives':<28} {clean['directives']}  |  {noisy['directives']}")
    ok = noisy["period_p99_ms"] <= 2 * nominal and noisy["violations"] == 0
    print(
        f"target: p99 period <= {2 * nominal:.1f} ms and 0 unsafe writes with "
        f"{args.corrupt:.0%} corrupted bytes: {'meets' if ok else 'MISSES'}"
    )
    result = {"nominal_period_ms": nominal, "clean": clean, "corrupted": noisy, "meets": ok}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
