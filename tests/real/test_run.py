"""Whole stack: `armvla twin` in its own process, `armvla run` with the shipped policy through
lerobot's SO-101 driver and lerobot's zmq cameras, every command through the safety gate."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from lerobot.robots.so_follower import SO101FollowerConfig

from real.feetech_twin.process import TwinProcess
from real.run import ChunkQueue, RunConfig, audit_row, gate_summary, run, warm_up
from safety.check import recheck_audit_log
from safety.gate import SafetyGate
from safety.supervisor import Directive

ROBOT_ID = "run_test"


def test_chunk_queue_indexes_by_tick_and_blends_a_late_chunk():
    q = ChunkQueue(blend=2)
    assert q.action(0) is None
    q.push(np.zeros((10, 6)), start_tick=0, now_tick=0)
    q.push(np.ones((10, 6)) * 3, start_tick=4, now_tick=7)  # computed from tick 4's observation
    first = q.action(7)[0]
    assert 0 < first < 3  # cross-faded from the old chunk
    assert q.action(9)[0] == 3  # then the new chunk, at its own tick index (9 - 4 = 5)
    assert q.action(14) is None  # past the end


def test_audit_rows_give_the_gate_classes_and_joints_and_the_summary_both_rates():
    gate = SafetyGate()
    gate.engage(np.zeros(6) + [0, 0, 0, 0, 0, 30.0])
    request = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # gripper past its soft range
    sent = [gate.filter(request) for _ in range(20)][-1]
    supervisor = SimpleNamespace(directive=Directive.RUN, reasons=[])
    row = audit_row(20, 0.66, supervisor, request, sent, None, gate.config_hash)
    assert row["gate_class"] == ["shaping"] and "JOINT_LIMIT" in row["gate"]
    assert row["gate_joints"]["JOINT_LIMIT"] == ["gripper"]
    gate.filter(np.full(6, np.nan))
    summary = gate_summary(gate)
    assert (summary["shaping"], summary["protective"], summary["ticks"]) == (21, 1, 22)
    assert summary["by_class"]["shaping"]["JOINT_LIMIT"]["joint"] == "gripper"
    assert "NON_FINITE" in summary["by_class"]["protective"]


def test_run_needs_a_robot_and_valid_options():
    with pytest.raises(ValueError, match="robot.type"):
        RunConfig()
    with pytest.raises(ValueError, match="fps"):
        RunConfig(robot=SO101FollowerConfig(port="/dev/null"), fps=0)


def test_warm_up_embeds_the_instruction_before_the_arm_connects():
    """The first tick must not wait seconds for the sentence encoder with the arm halted."""
    from policy.checkpoint import load_policy
    from policy.eval import checkpoint_path

    policy = load_policy(checkpoint_path("default"))
    encoder = next(m for m in policy.modules() if hasattr(m, "_cache"))
    assert "pick up the red cube" not in encoder._cache
    assert warm_up(policy, "pick up the red cube", "sim") > 0
    assert "pick up the red cube" in encoder._cache


@pytest.mark.slow
def test_policy_picks_the_red_cube_on_the_twin_through_lerobot(tmp_path):
    # The sim's own world behind the bus: this checks the whole stack (driver, cameras, gate,
    # heartbeat) with the pick-color checkpoint, which was trained on sim frames only; the real
    # domain's gap is what bench/cotrain.py measures.
    twin = TwinProcess(
        tmp_path / "calib", robot_id=ROBOT_ID, seed=1_000_006, extra_args=["--domain=sim"]
    )
    beats = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a relay watchdog's end
    beats.bind(("127.0.0.1", 0))
    beats.settimeout(0.5)
    received: list[bytes] = []
    done = threading.Event()

    def listen():  # as a watcher does: the socket buffer alone would drop beats
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                received.append(beats.recvfrom(1024)[0])

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        robot = SO101FollowerConfig(port=twin.port, id=ROBOT_ID, calibration_dir=tmp_path / "calib")
        summary = run(
            RunConfig(
                robot=robot,
                policy="default",
                instruction="pick up the red cube",
                duration_s=15.0,
                heartbeat=f"udp://127.0.0.1:{beats.getsockname()[1]}",
                out=tmp_path / "run",
            )
        )
        time.sleep(0.5)
        lifts = twin.max_lift_cm()
    finally:
        done.set()
        listener.join()
        twin.close()
        beats.close()
    assert lifts.get("red", 0.0) >= 5.0, f"red cube not lifted: {lifts}\n" + "\n".join(
        twin.lines[-5:]
    )
    assert max(v for c, v in lifts.items() if c != "red") < 2.0
    # Every tick's command is in the audit log and passes an independent re-check.
    log = next((tmp_path / "run").glob("*/audit.jsonl"))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(r["sent"] is not None for r in rows) == summary["ticks"] > 100
    assert recheck_audit_log(log) == []
    assert summary["period_p99_ms"] < 2 * 1000 / 30
    # The heartbeat beat on every tick (and the park after it), then said it stopped.
    assert len(received) > summary["ticks"]
    assert received[-1] == b"armvla-heartbeat STOP arm closed: torque off"
