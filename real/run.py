"""``armvla run``: a policy drives an SO-101 (real, or the serial-bus twin) through the safety gate.

One control loop at ``--fps``: observation (joint state over the bus, camera frames) -> the
supervisor's watchdogs -> the next action of the current chunk -> SafetyGate -> motors. The
policy runs on its own thread: a chunk is requested every ``replan_every`` ticks from the newest
observation, and when it arrives the actions for ticks already gone are dropped, then it is
cross-faded into the queue (policy.chunking), so inference never stalls the loop.

The instruction comes from ``--instruction`` or a prompt; while running, type a new
instruction, or ``stop`` (hold, park, torque off). Ctrl-C and SIGTERM do the same.

    armvla twin --link=/tmp/so101-twin &         # or a real arm on /dev/ttyACM0
    armvla run --robot.type=so101_follower --robot.port=/tmp/so101-twin \\
        --robot.id=so101_twin --policy=default --instruction="pick up the red cube"
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.keys import OBS_STATE, SO101_JOINTS, SOURCE_REAL, SOURCE_SIM, TASK, image_key
from real.arm import GatedArm, HealthPoller, tracking_error_rad
from real.heartbeat import Heartbeat, parse_target
from safety.config import SafetyConfig
from safety.gate import SafetyGate
from safety.grasp_hold import GraspHold
from safety.supervisor import Directive, Supervisor, TickReport

logger = logging.getLogger(__name__)

try:  # lerobot's robot configs register their --robot.type choices on import
    from lerobot.robots import RobotConfig
    from lerobot.robots.so_follower import SO101FollowerConfig  # noqa: F401
except ImportError:  # pragma: no cover - lerobot is a hard dependency
    RobotConfig = object


@dataclass
class RunConfig:
    # The arm, as lerobot configures it: --robot.type=so101_follower --robot.port=/dev/ttyACM0
    # --robot.id=<calibration name> [--robot.cameras="{front: {type: opencv, ...}}"]. On a twin
    # started by `armvla twin`, its cameras are found from the port when none are given.
    robot: RobotConfig | None = None
    # Checkpoint folder, or a shipped one: "default" (sim pick) or "cotrain" (sim + real
    # co-trained; its real stats are used on the arm).
    policy: str = "default"
    # What to do; None asks at a prompt. Type a new one while running, or "stop".
    instruction: str | None = None
    # Control loop rate (Hz); the safety limits' per-tick values follow it.
    fps: float = 30.0
    # Stop (hold, park, torque off) after this many seconds; 0 runs until stopped.
    duration_s: float = 0.0
    # Data source whose normalization statistics to use: "sim" or "real"; None picks "real" when
    # the checkpoint has it (a real arm), else "sim".
    source: str | None = None
    # Operator's statement that nobody is within reach: allows the faster tool speed cap.
    no_person_present: bool = False
    # Heartbeat for an external watchdog relay (SAFETY.md 17): udp://HOST:PORT or file:/path.
    # It beats on every checked write and stops for good when the safety self-check fails or
    # the bus dies; `armvla heartbeat` watches it and runs a command when it stops.
    heartbeat: str | None = None
    # Where the tick-level audit log (JSONL) and the timing summary go.
    out: Path = Path("outputs/run")

    def __post_init__(self):
        require_robot(self.robot)
        parse_target(self.heartbeat, "--heartbeat")
        if not 1 <= self.fps <= 200:
            raise ValueError(f"--fps must be in [1, 200], got {self.fps}")
        if self.duration_s < 0:
            raise ValueError(f"--duration_s must be >= 0, got {self.duration_s}")
        if self.source not in (None, SOURCE_SIM, SOURCE_REAL):
            raise ValueError(f"--source must be sim or real, got {self.source!r}")


def require_robot(robot) -> None:
    """Commands that drive an arm need its lerobot config; the error says how to give one."""
    if robot is None:
        raise ValueError(
            "--robot.type is required, e.g. --robot.type=so101_follower "
            "--robot.port=/dev/ttyACM0 (or the port `armvla twin` printed)"
        )


class InferenceWorker:
    """Runs ``policy.predict_action_chunk`` on a thread for the newest submitted observation."""

    def __init__(self, policy):
        self.policy = policy
        self._lock = threading.Lock()
        self._request: tuple[int, dict] | None = None
        self._result: tuple[int, np.ndarray, float] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.busy = False
        self.error: BaseException | None = None
        self.latency_s: list[float] = []
        self._thread = threading.Thread(target=self._run, name="policy", daemon=True)
        self._thread.start()

    def submit(self, tick: int, batch: dict) -> None:
        with self._lock:
            self._request = (tick, batch)
            self.busy = True
        self._wake.set()

    def take(self) -> tuple[int, np.ndarray, float] | None:
        """(tick of the observation, chunk [T, D], time it finished) once, or None."""
        with self._lock:
            result, self._result = self._result, None
        return result

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        import torch

        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                request, self._request = self._request, None
            if request is None:
                continue
            tick, batch = request
            t0 = time.perf_counter()
            try:
                with torch.inference_mode():
                    chunk = self.policy.predict_action_chunk(batch)[0].cpu().numpy()
            except BaseException as exc:  # surfaced by the control loop
                self.error = exc
                return
            self.latency_s.append(time.perf_counter() - t0)
            with self._lock:
                self._result = (tick, chunk.astype(np.float64), time.monotonic())
                self.busy = False


class ChunkQueue:
    """The chunk being executed, indexed by control tick; a new chunk is cross-faded in over
    ``blend`` ticks so switching never jumps (the gate would smooth a jump, but needn't)."""

    def __init__(self, blend: int):
        self.blend = blend
        self.chunk: np.ndarray | None = None  # [T, D]
        self.start_tick = 0  # tick the chunk's first action belongs to

    def push(self, chunk: np.ndarray, start_tick: int, now_tick: int) -> None:
        new = chunk.copy()
        if self.chunk is not None and self.blend > 0:
            for i in range(self.blend):
                tick = now_tick + i
                old = self.action(tick)
                j = tick - start_tick
                if old is None or not 0 <= j < len(new):
                    break
                w = (i + 1) / (self.blend + 1)
                new[j] = w * new[j] + (1 - w) * old
        self.chunk, self.start_tick = new, start_tick

    def action(self, tick: int) -> np.ndarray | None:
        if self.chunk is None:
            return None
        j = tick - self.start_tick
        return self.chunk[j] if 0 <= j < len(self.chunk) else None

    def reset(self) -> None:
        self.chunk = None


def _twin_cameras(robot_cfg, names: list[str] | None) -> None:
    """Fills in lerobot zmq cameras for a twin started by `armvla twin` on robot_cfg.port
    (``names``: the cameras wanted, None for all the twin renders)."""
    from lerobot.cameras.zmq import ZMQCameraConfig

    from real.feetech_twin.cameras import find_announcement

    info = find_announcement(getattr(robot_cfg, "port", "") or "")
    if info is None:
        return
    names = list(info["cameras"]) if names is None else names
    missing = [n for n in names if n not in info["cameras"]]
    if missing:
        raise ValueError(f"the twin on {robot_cfg.port} renders {info['cameras']}, not {missing}")
    robot_cfg.cameras = {
        n: ZMQCameraConfig(
            server_address=info["host"], port=info["port"], camera_name=n, timeout_ms=2000
        )
        for n in names
    }
    print(f"cameras {names}: the twin's, from {info['host']}:{info['port']}", flush=True)


def _calibration_dict(robot) -> dict:
    return {
        name: {"range_min": c.range_min, "range_max": c.range_max}
        for name, c in (robot.calibration or {}).items()
    }


def connect_gated_arm(
    robot_cfg,
    fps: float,
    no_person_present: bool,
    cameras: list[str] | None,
    heartbeat: str | None = None,
) -> GatedArm:
    """lerobot's robot for ``robot_cfg`` behind a SafetyGate with its calibration, connected
    with goal := present before torque on. ``cameras``: the ones needed (None: any); a twin's
    are filled in from its port when the config names none. ``heartbeat``: its target URL."""
    from lerobot.robots import make_robot_from_config

    if not robot_cfg.cameras:
        _twin_cameras(robot_cfg, cameras)
    missing = [c for c in cameras or [] if c not in (robot_cfg.cameras or {})]
    if missing:
        raise ValueError(
            f"the policy needs cameras {cameras}; --robot.cameras has no {missing} "
            f'(e.g. --robot.cameras="{{{missing[0]}: {{type: opencv, index_or_path: 0}}}}")'
        )
    robot = make_robot_from_config(robot_cfg)
    calibration = _calibration_dict(robot)
    if not calibration:
        raise ValueError(
            f"no calibration for robot id {robot_cfg.id!r}: run lerobot-calibrate "
            f"--robot.type={robot_cfg.type} --robot.port={robot_cfg.port} "
            f"--robot.id={robot_cfg.id} first"
        )
    safety = SafetyConfig(control_hz=float(fps), no_person_present=no_person_present)
    arm = GatedArm(
        robot, SafetyGate(safety, calibration=calibration), heartbeat=Heartbeat(heartbeat)
    )
    arm.connect()  # goal := present before torque on; the gate engages there
    return arm


def observation_times(robot, obs, now: float, last_stamps):
    """(observation time on the ``time.monotonic`` clock or None, whether every camera has a
    new frame, the stamps to pass next tick), from lerobot's capture timestamps
    (``time.perf_counter``): a still scene gives identical frames, a frozen camera no new
    capture."""
    stamps = [getattr(cam, "latest_timestamp", None) for cam in robot.cameras.values()]
    if obs is None:
        return None, True, last_stamps
    if not all(t is not None for t in stamps):
        return now, True, last_stamps
    observation_time = now - (time.perf_counter() - min(stamps))
    changed = last_stamps is None or all(a > b for a, b in zip(stamps, last_stamps, strict=True))
    return observation_time, changed, stamps


def audit_row(tick: int, t: float, decision, requested, sent, obs, config_hash: str) -> dict:
    """One tick of the audit log: the supervisor's directive, the request, what the gate sent
    and why, the measured state and the safety config hash (re-checked by recheck_audit_log)."""
    return {
        "tick": tick,
        "t": round(t, 4),
        "directive": decision.directive.name,
        "supervisor": list(decision.reasons),
        "requested": None if requested is None else _rounded(requested),
        "sent": None if sent is None else np.round(sent.command, 3).tolist(),
        "gate": [] if sent is None else sent.reasons.names(),
        # The same reasons by class, and the joints the per-joint ones acted on.
        "gate_class": [] if sent is None else _classes(sent),
        "gate_joints": {} if sent is None else _joint_names(sent.joints),
        "seq": None if sent is None else sent.seq,
        "state": None if obs is None else [round(float(obs[f"{j}.pos"]), 3) for j in SO101_JOINTS],
        "safety_config_hash": config_hash,
    }


def _classes(decision) -> list[str]:
    return [
        c for c, on in (("shaping", decision.shaped), ("protective", decision.protective)) if on
    ]


def _joint_names(joints: dict[str, tuple[int, ...]]) -> dict[str, list[str]]:
    return {reason: [SO101_JOINTS[j] for j in idx] for reason, idx in joints.items()}


def _rounded(action) -> list[float]:
    if isinstance(action, dict):
        action = [action[f"{j}.pos"] for j in SO101_JOINTS]
    return np.round(np.asarray(action, dtype=np.float64), 3).tolist()


def run(cfg: RunConfig) -> dict:
    """Runs the control loop until stopped; returns timing and safety statistics."""
    from policy.checkpoint import load_policy
    from policy.rollout import inference_source

    policy = load_policy(cfg.policy)
    policy.eval()
    pcfg = policy.config
    source = inference_source(policy, SOURCE_REAL, cfg.source)
    instruction = cfg.instruction or _ask_instruction()
    run_dir = cfg.out / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    commands: list[str] = []
    _start_prompt(commands, stop)
    arm = None
    warm_up(policy, instruction, source)
    worker = InferenceWorker(policy)
    stats = {"ticks": 0, "periods_s": [], "directives": {}}
    try:
        arm = connect_gated_arm(
            cfg.robot, cfg.fps, cfg.no_person_present, list(pcfg.cameras), cfg.heartbeat
        )
        gc.freeze()  # collections of the torch heap would stall the loop by ~100 ms
        with (run_dir / "audit.jsonl").open("w") as audit:
            stats.update(_loop(cfg, arm, worker, instruction, source, pcfg, stop, commands, audit))
    finally:
        worker.close()
        if arm is not None:
            arm.close()  # hold -> park -> torque off -> port closed, on every exit path
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = _summary(stats, arm.gate if arm else None, worker)
    (run_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary, run_dir)
    return summary


def warm_up(policy, instruction: str, source: str) -> float:
    """One inference on a blank observation before the arm connects: it loads the sentence
    encoder and embeds the instruction (seconds on a CPU), which the first tick of the loop
    would otherwise wait for with the arm halted. Returns how long it took (s)."""
    import torch

    cfg = policy.config
    size = cfg.image_size
    batch = {
        OBS_STATE: torch.zeros(1, len(SO101_JOINTS)),
        TASK: [instruction],
        "source": [source],
    }
    for c in cfg.cameras:
        batch[image_key(c)] = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    t0 = time.perf_counter()
    with torch.inference_mode():
        policy.predict_action_chunk(batch)
    return time.perf_counter() - t0


def _loop(cfg, arm, worker, instruction, source, pcfg, stop, commands, audit) -> dict:
    import torch

    cameras = list(pcfg.cameras)
    supervisor = Supervisor(arm.gate.config)
    grasp = GraspHold()
    poller = HealthPoller(arm, cfg.fps)
    last_command = None
    queue = ChunkQueue(pcfg.blend_steps)
    period = 1.0 / cfg.fps
    replan = pcfg.replan_every
    config_hash = arm.gate.config_hash
    t_start = time.monotonic()
    next_t = time.perf_counter()
    tick = 0
    last_request = -replan
    chunk_fresh_until: float | None = None
    last_stamps = None
    periods, directives = [], {}
    prev_t = None
    print(f"running: {instruction!r} at {cfg.fps:g} Hz; type a new instruction or 'stop'")
    while not stop.is_set():
        t_tick = time.perf_counter()
        if prev_t is not None:
            periods.append(t_tick - prev_t)
        prev_t = t_tick
        now = time.monotonic()
        while commands:
            text = commands.pop(0)
            if text.lower() in ("stop", "q", "quit", "exit"):
                stop.set()
            else:
                instruction = text
                queue.reset()
                print(f"instruction: {instruction!r}")
        if stop.is_set() or (cfg.duration_s and now - t_start >= cfg.duration_s):
            break
        if worker.error is not None:
            raise RuntimeError(f"policy inference failed: {worker.error}") from worker.error
        obs, bus_ok = arm.read_observation()
        observation_time, frames_changed, last_stamps = observation_times(
            arm.robot, obs, now, last_stamps
        )
        health, health_ok = poller.poll(tick)
        bus_ok = bus_ok and health_ok
        result = worker.take()
        if result is not None:
            obs_tick, chunk, _ = result
            queue.push(chunk, start_tick=obs_tick, now_tick=tick)
            chunk_fresh_until = now + replan * period
        decision = supervisor.tick(
            TickReport(
                now=now,
                action_time=chunk_fresh_until,
                observation_time=observation_time,
                frames_changed=frames_changed,
                bus_read_ok=bus_ok,
                tracking_error_rad=tracking_error_rad(last_command, obs),
                health=health,
                loop_s=time.perf_counter() - t_tick,
            )
        )
        directives[decision.directive.name] = directives.get(decision.directive.name, 0) + 1
        if decision.infer and obs is not None and not worker.busy and tick - last_request >= replan:
            state = np.array([obs[f"{j}.pos"] for j in SO101_JOINTS], dtype=np.float32)
            batch = {
                OBS_STATE: torch.from_numpy(state)[None],
                TASK: [instruction],
                "source": [source],
            }
            for c in cameras:
                batch[image_key(c)] = torch.from_numpy(np.ascontiguousarray(obs[c]))[None]
            worker.submit(tick, batch)
            last_request = tick
        arm.gate.set_speed_scale(decision.speed_scale)
        requested = queue.action(tick) if decision.directive == Directive.RUN else None
        asked = requested
        if decision.directive == Directive.RUN:
            requested = grasp.apply(requested, None if obs is None else obs["gripper.pos"])
        else:
            grasp.reset()
        arm.set_grasp_torque(grasp.holding)
        sent = None
        if decision.directive in (Directive.RUN, Directive.HALT):
            sent = arm.send(requested)
        elif decision.directive in (Directive.HOLD, Directive.RELIEVE):
            sent = arm.stop(f"supervisor: {', '.join(decision.reasons)}")
        last_command = None if sent is None else sent.command
        row = audit_row(tick, now - t_start, decision, requested, sent, obs, config_hash)
        if grasp.holding:  # the policy's own gripper request, before the grasp-hold
            row["grasp_hold"] = {"policy_gripper": round(float(asked[5]), 3)}
        audit.write(json.dumps(row) + "\n")
        if not supervisor.heartbeat_ok:
            arm.heartbeat.stop(f"supervisor: {', '.join(decision.reasons)}")
        if not arm.self_check.ok:  # the arm holds its last checked command; teardown: torque off
            print(f"stopping: {arm.self_check.failure}", file=sys.stderr)
            break
        if sent is None:  # PARK, POWER_CUT: leave the loop; teardown parks (skipped if bus died)
            arm.bus_dead = decision.directive == Directive.POWER_CUT
            print(f"stopping: {', '.join(decision.reasons)}", file=sys.stderr)
            break
        tick += 1
        next_t += period
        delay = next_t - time.perf_counter()
        if delay < -period:
            next_t = time.perf_counter()  # fell behind: don't burst to catch up
        time.sleep(max(0.0, delay))
    return {
        "ticks": tick,
        "periods_s": periods,
        "directives": directives,
        "grasp_holds": grasp.grasps,
    }


def _summary(stats: dict, gate, worker) -> dict:
    periods = np.asarray(stats["periods_s"] or [0.0]) * 1e3
    lat = np.asarray(worker.latency_s or [0.0]) * 1e3
    return {
        "ticks": stats["ticks"],
        "period_p50_ms": float(np.percentile(periods, 50)),
        "period_p99_ms": float(np.percentile(periods, 99)),
        "period_max_ms": float(periods.max()),
        "inference_p50_ms": float(np.percentile(lat, 50)),
        "directives": stats["directives"],
        "grasp_holds": stats.get("grasp_holds", 0),
        "safety": gate_summary(gate) if gate else None,
        "safety_config_hash": gate.config_hash if gate else None,
    }


def gate_summary(gate) -> dict:
    """The gate's counts with its reasons by class and the joint each acted on most."""
    from safety.gate import intervention_summary

    stats = gate.stats.as_dict()
    stats["by_class"] = intervention_summary(stats["by_reason"], stats["by_reason_joint"])
    return stats


def _print_summary(summary: dict, run_dir: Path) -> None:
    from policy.eval_report import describe_classes

    s = summary["safety"] or {}
    classes = s.get("by_class", {"shaping": {}, "protective": {}})
    print(
        f"ran {summary['ticks']} ticks: period p50 {summary['period_p50_ms']:.1f} ms, p99 "
        f"{summary['period_p99_ms']:.1f} ms; inference p50 {summary['inference_p50_ms']:.1f} ms; "
        f"grasp-holds {summary.get('grasp_holds', 0)}\n"
        f"gate of {s.get('ticks', 0)} ticks: shaping {s.get('shaping', 0)} "
        f"({describe_classes(classes['shaping']) or 'none'}); protective "
        f"{s.get('protective', 0)} ({describe_classes(classes['protective']) or 'none'})\n"
        f"summary: {run_dir / 'run_summary.json'}"
    )


def _ask_instruction() -> str:
    if not sys.stdin.isatty():
        raise ValueError("no --instruction given and no terminal to ask for one")
    text = input("instruction (e.g. 'pick up the red cube'): ").strip()
    if not text:
        raise ValueError("an instruction is needed")
    return text


def _start_prompt(commands: list[str], stop: threading.Event) -> None:
    """Reads typed lines (new instructions, 'stop') without blocking the loop."""
    if not sys.stdin or not sys.stdin.isatty():
        return

    def read():
        for line in sys.stdin:
            if line.strip():
                commands.append(line.strip())
        stop.set()  # EOF (Ctrl-D) stops too

    threading.Thread(target=read, name="prompt", daemon=True).start()
