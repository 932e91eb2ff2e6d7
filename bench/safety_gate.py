"""Safety gate figures, side by side with what lerobot alone does, from one run.

1. **Invariants over a generated corpus** (``--sequences`` adversarial action sequences: smooth
   chunks with random switches, huge jumps, NaN/inf, wrong shapes, partial action dicts,
   radians by mistake, missing actions, late and future ticks, stops and resets; see
   ``safety.check.random_sequence``), 30 % of them from a start with a check point inside
   forbidden space (folded over the base's keep-out, below the table clearance), where no point
   may get deeper into any limit than it started. Every command the armvla gate sends is
   re-checked by the independent ``InvariantChecker`` (joint range with margin, step,
   acceleration, workspace box, table plane, keep-out, tool/elbow speed). Also counted: ticks
   needing a stop harder than the acceleration limit (``ACCEL_OVERRIDE``), and the largest change
   of step of the arm joints on ticks braking on invalid input (target <= 0.7 deg/tick^2, the
   acceleration limit; lerobot repeats the last goal or dies on NaN: a dead stop). The peer
   is lerobot 0.6.1's own protection for the SO-101: ``max_relative_target`` (3°, via
   ``ensure_safe_goal_position``) plus the servo's clamp to the calibrated range.
2. **Gate compute per tick**: p50/p99 of ``SafetyGate.filter`` (target p99 <= 2 ms), next to
   the peer's clamp.
3. **Stop request -> hold on the wire** over the serial-bus twin, through lerobot's unmodified
   SO-101 driver: ``GatedArm.stop()`` writes the hold from the requesting thread; the peer is a
   stop flag the control loop picks up at its next tick (how a plain lerobot loop stops). Time
   from the request to the hold's Goal_Position packet arriving at the servos (target <= one
   tick + 10 ms).

The last line printed is one JSON object. Run with ``MUJOCO_GL=egl``::

    MUJOCO_GL=egl python bench/safety_gate.py --sequences 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from data.keys import SO101_JOINTS  # noqa: E402
from safety import so101  # noqa: E402
from safety.check import (  # noqa: E402
    InvariantChecker,
    random_sequence,
    random_start,
    run_sequence,
)
from safety.config import SafetyConfig  # noqa: E402
from safety.gate import INVALID, Reason, SafetyGate  # noqa: E402

TARGET_P99_MS = 2.0
TARGET_INVALID_ACCEL_DEG = 0.7  # the arm joints' acceleration limit at 30 Hz (SAFETY.md)
# Tick kinds of random_sequence the gate refuses as invalid input.
INVALID_KINDS = ("non_finite", "bad_shape", "partial_dict", "future")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sequences", type=int, default=10_000, help="generated action sequences")
    p.add_argument("--ticks", type=int, default=40, help="ticks per sequence")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--stops", type=int, default=20, help="stop requests timed on the wire, each")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- corpus
# Share of sequences that start with a check point inside forbidden space (an arm switched on
# folded over its base or resting low): the class an outside fuzz found (gate_escapes.json).
INSIDE_FORBIDDEN_SHARE = 0.3


def max_accel_on(cmds: np.ndarray, ticks: np.ndarray) -> float:
    """Largest change of step (deg/tick^2) of the five arm joints at the flagged ``ticks`` [T]
    of commands ``cmds`` [T, 6] (rad); 0 when none is flagged."""
    dd = np.rad2deg(np.abs(np.diff(cmds, n=2, axis=0)[:, :5]))  # row t-2 = change at tick t
    flagged = np.asarray(ticks)[2:]
    return float(dd[flagged].max()) if flagged.any() else 0.0


class LerobotClamp:
    """lerobot's SO-101 path without armvla: ``max_relative_target`` against the present
    position (ideal tracking: present = last goal), then the servo's clamp to the calibrated
    range. A NaN in a degrees joint makes lerobot's unnormalize raise (the loop dies, the servos
    keep their last goal); in the gripper's 0-100 range it maps to the range minimum."""

    def __init__(self, max_relative_deg: float = 3.0):
        from lerobot.robots.utils import ensure_safe_goal_position

        self._clamp = ensure_safe_goal_position
        self.max_relative = float(max_relative_deg)
        self.low = so101.ACTION_LOW
        self.high = so101.ACTION_HIGH
        self.compute_s: list[float] = []
        self.crashes = 0

    def run(self, start: np.ndarray, ticks: list[dict]) -> np.ndarray:
        """Commands sent [T + 1, 6] (rad), row 0 = the start, one row per tick."""
        last = start.copy()
        sent = [so101.to_radians(last)]
        for tick in ticks:
            action = tick["action"]
            if tick["kind"] in ("none", "stop", "reset") or action is None or len(action) != 6:
                sent.append(sent[-1])  # nothing written (a shape error raises in lerobot)
                continue
            t0 = time.perf_counter()
            goal = dict(zip(SO101_JOINTS, np.asarray(action, dtype=float), strict=True))
            present = dict(zip(SO101_JOINTS, last, strict=True))
            pairs = {k: (goal[k], present[k]) for k in SO101_JOINTS}
            safe = self._clamp(pairs, self.max_relative)
            values = np.array([safe[k] for k in SO101_JOINTS])
            if not np.isfinite(values[5]):
                values[5] = self.low[5]  # RANGE_0_100: min(100, max(0, nan)) == 0
            if not np.all(np.isfinite(values[:5])):
                self.crashes += 1
                sent.append(sent[-1])
                continue
            values = np.clip(values, self.low, self.high)  # the servo's own angle limits
            self.compute_s.append(time.perf_counter() - t0)
            last = values
            sent.append(so101.to_radians(values))
        return np.array(sent)


def corpus(args) -> dict:
    import logging

    from tqdm import tqdm

    # lerobot's clamp logs a warning for every capped goal: thousands here.
    logging.disable(logging.WARNING)

    config = SafetyConfig()
    checker = InvariantChecker(config)
    rng = np.random.default_rng(args.seed)
    probe = SafetyGate(config)
    peer = LerobotClamp()
    gate_v, peer_v, gate_ticks = {}, {}, 0
    compute: list[float] = []
    interventions = overrides = inside = 0
    invalid_acc, peer_invalid_acc, invalid_ticks = 0.0, 0.0, 0
    for _ in tqdm(range(args.sequences), desc="corpus", unit="seq"):
        outside = rng.random() < INSIDE_FORBIDDEN_SHARE
        inside += outside
        start = random_start(rng, probe, inside_forbidden=outside)
        ticks = random_sequence(rng, args.ticks)
        gate = SafetyGate(config, kinematics=probe.kin)
        decisions: list = []
        cmds, holds = run_sequence(gate, start, ticks, decisions)
        for v in checker.check(cmds, holds):
            gate_v[v.invariant] = gate_v.get(v.invariant, 0) + 1
        overrides += sum(bool(d.reasons & Reason.ACCEL_OVERRIDE) for d in decisions)
        # Invalid input and the protective stop it latches brake; requested stops hold.
        braking = np.array(
            [
                bool(d.reasons & (INVALID | Reason.LATCHED)) and not d.reasons & Reason.HOLD
                for d in decisions
            ]
        )
        invalid_ticks += int(braking.sum())
        invalid_acc = max(invalid_acc, max_accel_on(cmds, braking))
        compute += list(gate.stats.compute_s)
        gate_ticks += gate.stats.ticks
        interventions += gate.stats.interventions
        sent = peer.run(start, ticks)
        for v in checker.check(sent):
            peer_v[v.invariant] = peer_v.get(v.invariant, 0) + 1
        # The same ticks for lerobot (its rows: start, then one per tick).
        bad = np.array([False] + [t["kind"] in INVALID_KINDS for t in ticks])
        peer_invalid_acc = max(peer_invalid_acc, max_accel_on(sent, bad))
    ms = np.array(compute) * 1e3
    peer_ms = np.array(peer.compute_s) * 1e3
    return {
        "sequences": args.sequences,
        "sequences_starting_inside_forbidden_space": inside,
        "ticks": gate_ticks,
        "violations": sum(gate_v.values()),
        "violations_by_invariant": gate_v,
        "accel_override_ticks": overrides,
        "invalid_braking_ticks": invalid_ticks,
        "invalid_max_accel_deg": invalid_acc,
        "lerobot_invalid_max_accel_deg": peer_invalid_acc,
        "gate_interventions": interventions,
        "gate_p50_ms": float(np.percentile(ms, 50)),
        "gate_p99_ms": float(np.percentile(ms, 99)),
        "gate_max_ms": float(ms.max()),
        "lerobot_violations": sum(peer_v.values()),
        "lerobot_violations_by_invariant": peer_v,
        "lerobot_loop_crashes": peer.crashes,
        "lerobot_clamp_p50_ms": float(np.percentile(peer_ms, 50)),
        "lerobot_clamp_p99_ms": float(np.percentile(peer_ms, 99)),
    }


# ---------------------------------------------------------------------------- stop latency
def stop_latency(n_stops: int) -> dict:
    from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

    from real.arm import GatedArm
    from real.feetech_twin import SO101Twin, TwinConfig
    from real.feetech_twin.control_table import BY_NAME, decode_value
    from real.feetech_twin.protocol import Instruction

    goal_reg = BY_NAME["Goal_Position"]
    calib_dir = Path(tempfile.mkdtemp(prefix="armvla_bench_"))
    twin = SO101Twin(TwinConfig(robot_id="bench", calibration_dir=calib_dir, seed=0)).start()
    twin.write_calibration()
    arrivals: list[tuple[float, dict[int, int]]] = []

    def on_packet(packet):
        if packet.code == Instruction.SYNC_WRITE and packet.params[0] == goal_reg.address:
            n, body = packet.params[1], packet.params[2:]
            raw = {
                body[i]: decode_value(goal_reg, bytes(body[i + 1 : i + 1 + n]))
                for i in range(0, len(body), n + 1)
            }
            arrivals.append((time.perf_counter(), raw))

    twin.set_packet_listener(on_packet)
    robot = SO101Follower(
        SO101FollowerConfig(port=twin.port, id="bench", calibration_dir=calib_dir)
    )
    arm = GatedArm(robot, SafetyGate(calibration=twin.calibration))
    start = arm.connect().command
    period = arm.gate.config.dt
    flag = threading.Event()
    running = threading.Event()
    running.set()
    flagged_at: list[float] = []

    def loop():
        i = 0
        next_t = time.perf_counter()
        while running.is_set():
            if flag.is_set():  # the peer: the loop notices a stop flag at its next tick
                flag.clear()
                arm.stop("flag")
            else:
                arm.send(start + np.array([15.0, -8.0, 8.0, 5.0, 20.0, 10.0]) * np.sin(i / 15))
            i += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.perf_counter()))

    def time_to_hold(t0: float, hold: np.ndarray) -> float:
        bus = arm.robot.bus
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for t, raw in list(arrivals):
                if t >= t0:
                    values = bus._normalize(raw)
                    got = np.array([values[i + 1] for i in range(6)])
                    if np.allclose(got, hold, atol=0.2):
                        return (t - t0) * 1e3
            time.sleep(0.001)
        return float("nan")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    rng = np.random.default_rng(1)
    direct, at_tick = [], []
    try:
        for mode in ("direct", "next_tick"):
            for _ in range(n_stops):
                time.sleep(rng.uniform(0.3, 0.6))
                arrivals.clear()
                t0 = time.perf_counter()
                if mode == "direct":
                    hold = arm.stop("bench").command
                    direct.append(time_to_hold(t0, hold))
                else:
                    flagged_at.append(t0)
                    flag.set()
                    while flag.is_set():
                        time.sleep(0.0005)
                    hold = arm.gate._cmd  # noqa: SLF001 - the hold the loop just sent
                    at_tick.append(time_to_hold(t0, so101.from_radians(hold)))
                time.sleep(0.1)
                arm.gate.reset()
    finally:
        running.clear()
        thread.join(timeout=2)
        arm.close()
        twin.close()
    return {
        "stop_to_hold_ms": float(np.nanpercentile(direct, 50)),
        "stop_to_hold_max_ms": float(np.nanmax(direct)),
        "next_tick_stop_to_hold_ms": float(np.nanpercentile(at_tick, 50)),
        "next_tick_stop_to_hold_max_ms": float(np.nanmax(at_tick)),
        "stop_target_ms": period * 1e3 + 10.0,
        "stops_timed": len(direct),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    c = corpus(args)
    s = stop_latency(args.stops)
    rows = [
        ("", "armvla gate", "lerobot alone"),
        ("invariant violations", f"{c['violations']}", f"{c['lerobot_violations']}"),
        ("control loop crashes (NaN)", "0", f"{c['lerobot_loop_crashes']}"),
        (
            "compute per tick p50 / p99",
            f"{c['gate_p50_ms']:.3f} / {c['gate_p99_ms']:.3f} ms",
            f"{c['lerobot_clamp_p50_ms']:.3f} / {c['lerobot_clamp_p99_ms']:.3f} ms",
        ),
        (
            "invalid input: largest change of step",
            f"{c['invalid_max_accel_deg']:.3f} deg/tick^2",
            f"{c['lerobot_invalid_max_accel_deg']:.3f} deg/tick^2",
        ),
        (
            "stop -> hold on the wire p50 / max",
            f"{s['stop_to_hold_ms']:.1f} / {s['stop_to_hold_max_ms']:.1f} ms",
            f"{s['next_tick_stop_to_hold_ms']:.1f} / {s['next_tick_stop_to_hold_max_ms']:.1f} ms",
        ),
    ]
    print(
        f"corpus: {c['sequences']} sequences, {c['ticks']} ticks; "
        f"{c['sequences_starting_inside_forbidden_space']} start inside forbidden space; "
        f"{c['invalid_braking_ticks']} ticks braking on invalid input; "
        f"{c['accel_override_ticks']} ticks needed a stop harder than the acceleration limit"
    )
    for label, ours, peer in rows:
        print(f"{label:<36} {ours:>22} {peer:>22}")
    print(f"armvla violations by invariant: {c['violations_by_invariant'] or 'none'}")
    print(f"lerobot violations by invariant: {c['lerobot_violations_by_invariant']}")
    ok_p99 = c["gate_p99_ms"] <= TARGET_P99_MS
    ok_stop = s["stop_to_hold_max_ms"] <= s["stop_target_ms"]
    ok_invalid = c["invalid_max_accel_deg"] <= TARGET_INVALID_ACCEL_DEG + 1e-6
    print(
        f"targets: gate p99 <= {TARGET_P99_MS} ms: {'meets' if ok_p99 else 'MISSES'}; "
        f"stop -> hold <= {s['stop_target_ms']:.1f} ms: {'meets' if ok_stop else 'MISSES'}; "
        f"0 violations: {'meets' if c['violations'] == 0 else 'MISSES'}; "
        f"invalid input change of step <= {TARGET_INVALID_ACCEL_DEG} deg/tick^2: "
        f"{'meets' if ok_invalid else 'MISSES'}"
    )
    result = {**c, **s, "python": sys.version.split()[0]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
