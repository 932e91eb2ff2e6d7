"""``armvla record``: teleoperated demos on an SO-101 (or its twin) into a LeRobotDataset v3.

One control loop at ``--dataset.fps``: the follower's observation (joint state, cameras) -> the
supervisor's watchdogs -> the teleoperator's joint targets -> grasp-hold -> SafetyGate ->
motors, and the frame (state, cameras, the command the gate sent as ``action`` - for the
gripper, the operator's request while a grasp-hold is on - the task text, source ``real``)
handed to the :class:`~real.recorder.EpisodeRecorder`, whose writer thread encodes and commits
each episode atomically, so recording never blocks the loop and a crash loses at most the
episode in flight.

Teleoperators: lerobot's SO-101 leader arm (``--teleop.type=so101_leader``: a person, on a
physical arm), the keyboard end-effector teleop (``--teleop.type=armvla_keyboard_ee``), dataset
playback (``--teleop.type=armvla_replay``; see real/teleop.py) or, on the twin only, the
scripted operator (``--teleop.type=armvla_twin_operator``; real/operator.py), which plays the
person: it sees the scene through the twin's side channel and plans with the task's expert.

Keys (lerobot's): ``n`` or Right ends the episode (saved) or the reset period early, ``r`` or
Left re-records the episode, ``q`` or Esc saves it and stops. Ctrl-C and SIGTERM stop too: the
episode in flight is aborted (marked in ``meta/armvla_recorder.json``), the arm holds, parks
and turns its torque off. A writer error (e.g. disk full) aborts the episode and stops the
recording with the arm holding; it never stops the loop mid-tick.

    armvla twin --link=/tmp/so101-twin &
    armvla record --robot.type=so101_follower --robot.port=/tmp/so101-twin --robot.id=so101_twin \\
        --teleop.type=armvla_keyboard_ee --dataset.root=outputs/datasets/cloth \\
        --dataset.single_task="fold the cloth" --dataset.num_episodes=5
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.dataset import so101_features
from data.keys import ACTION, OBS_STATE, SO101_JOINTS, image_key
from real.arm import HealthPoller, tracking_error_rad
from real.heartbeat import parse_target
from real.recorder import EpisodeRecorder, RecorderConfig
from real.run import (
    audit_row,
    connect_gated_arm,
    gate_summary,
    observation_times,
    require_robot,
)
from safety.grasp_hold import GRIPPER, GraspHold, joint_array
from safety.supervisor import Directive, Supervisor, TickReport

logger = logging.getLogger(__name__)

try:  # lerobot's configs register their --robot.type / --teleop.type choices on import
    from lerobot.robots import RobotConfig
    from lerobot.robots.so_follower import SO101FollowerConfig  # noqa: F401
    from lerobot.teleoperators import TeleoperatorConfig
    from lerobot.teleoperators.so_leader import SO101LeaderConfig  # noqa: F401

    import real.operator  # noqa: F401  (armvla_twin_operator)
    import real.teleop  # noqa: F401  (armvla_keyboard_ee, armvla_replay)
except ImportError:  # pragma: no cover - lerobot is a hard dependency
    RobotConfig = TeleoperatorConfig = object

# A session that re-records more than this many times its episode count stops (the scripted
# operator failing scene after scene means something is wrong with the twin or the task).
MAX_RERECORDS_PER_EPISODE = 2
# What a key does, in lerobot's recording convention (letters work over laggy SSH links too).
CONTROL_KEYS = {
    "n": "exit_early",
    "right": "exit_early",
    "r": "rerecord_episode",
    "left": "rerecord_episode",
    "q": "stop_recording",
    "esc": "stop_recording",
}


@dataclass
class RecordDatasetConfig:
    # Dataset folder (LeRobotDataset v3); created, or appended to with --resume=true.
    root: Path = Path("outputs/datasets/so101_real")
    # Dataset id stored in its metadata (default: armvla/<root folder name>).
    repo_id: str | None = None
    # The instruction stored with every episode, e.g. "fold the cloth"; None asks at a prompt.
    single_task: str | None = None
    # Episodes to record in this session (re-recorded ones don't count).
    num_episodes: int = 10
    # Longest episode (s); `n` ends one earlier.
    episode_time_s: float = 30.0
    # Time between episodes to reset the scene (s); the teleoperator keeps the arm; `n` skips.
    reset_time_s: float = 10.0
    # Control and recording rate (Hz).
    fps: int = 30

    def __post_init__(self):
        self.root = Path(self.root)
        if self.num_episodes < 1:
            raise ValueError(f"--dataset.num_episodes must be >= 1, got {self.num_episodes}")
        if self.episode_time_s <= 0 or self.reset_time_s < 0:
            raise ValueError("--dataset.episode_time_s must be > 0 and reset_time_s >= 0")
        if not 1 <= self.fps <= 200:
            raise ValueError(f"--dataset.fps must be in [1, 200], got {self.fps}")
        if self.single_task is not None and not self.single_task.strip():
            raise ValueError("--dataset.single_task must not be empty")


@dataclass
class RecordConfig:
    # The follower arm, as lerobot configures it (--robot.type=so101_follower --robot.port=...
    # --robot.id=...; cameras with --robot.cameras=...). On a twin from `armvla twin`, its
    # cameras are found from the port when none are given.
    robot: RobotConfig | None = None
    # The teleoperator: so101_leader (lerobot's leader arm), armvla_keyboard_ee or armvla_replay.
    teleop: TeleoperatorConfig | None = None
    dataset: RecordDatasetConfig = field(default_factory=RecordDatasetConfig)
    # Append to the dataset at --dataset.root (repairing what a killed session left).
    resume: bool = False
    # Operator's statement that nobody is within reach: allows the faster tool speed cap.
    no_person_present: bool = False
    # Heartbeat for an external watchdog relay (SAFETY.md 17): udp://HOST:PORT or file:/path;
    # see `armvla run --help` and `armvla heartbeat --help`.
    heartbeat: str | None = None
    # Writer queue sizes and durability of the recorder.
    recorder: RecorderConfig = field(default_factory=RecorderConfig)
    # Where the tick-level audit log (JSONL) and the session summary go.
    out: Path = Path("outputs/record")

    def __post_init__(self):
        require_robot(self.robot)
        parse_target(self.heartbeat, "--heartbeat")
        if self.teleop is None:
            raise ValueError(
                "--teleop.type is required: so101_leader (--teleop.port=...), "
                "armvla_keyboard_ee, or armvla_replay (--teleop.root=<dataset>)"
            )


class RecordingControls:
    """lerobot's recording keys as flags, read from the keyboard (pynput, or the terminal when
    that cannot capture), plus a stop flag for signals. Keys that are not recording controls
    go to the teleoperator when it takes keys (``press``)."""

    def __init__(self, teleop=None):
        self.flags = {"exit_early": False, "rerecord_episode": False, "stop_recording": False}
        self._teleop_press = getattr(teleop, "press", None)
        self.listener = None

    def start(self) -> None:
        if not sys.stdin or not sys.stdin.isatty():
            return  # piped or CI runs: the timers (and signals) drive the session
        from lerobot.utils.keyboard_input import create_key_listener

        self.listener = create_key_listener(self.dispatch, controls_help=self.help())
        if self.listener is None:
            print("no keyboard available: episodes end on their timers", file=sys.stderr)

    def help(self) -> str:
        text = "n: next, r: re-record, q: stop"
        if self._teleop_press is not None:
            from real.teleop import KEY_HELP

            text += "; " + KEY_HELP
        return text

    def dispatch(self, key: str) -> None:
        flag = CONTROL_KEYS.get(key.lower())
        if flag is not None:
            self.flags[flag] = True
        elif self._teleop_press is not None:
            self._teleop_press(key)

    def take(self, flag: str) -> bool:
        value, self.flags[flag] = self.flags[flag], False
        return value

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()


def record(cfg: RecordConfig) -> dict:
    """Records ``cfg.dataset.num_episodes`` episodes; returns the session summary."""
    from real.teleop import make_teleoperator

    ds = cfg.dataset
    # Checked before the arm connects, so a wrong flag never moves it (teardown parks).
    if not cfg.resume and ds.root.exists() and any(ds.root.iterdir()):
        raise FileExistsError(
            f"{ds.root} exists; pass --resume=true to add episodes to it, or choose another "
            "--dataset.root"
        )
    if cfg.resume and not (ds.root / "meta" / "info.json").is_file():
        raise FileNotFoundError(
            f"cannot resume: {ds.root} holds no dataset (no meta/info.json); drop --resume to "
            "create it"
        )
    teleop = make_teleoperator(cfg.teleop)
    # A scripted operator takes each episode's instruction from its scene.
    task = ds.single_task or (None if getattr(teleop, "provides_tasks", False) else _ask_task())
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    run_dir = cfg.out / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    arm = recorder = None
    controls = RecordingControls(teleop)
    summary: dict = {"task": task, "root": str(ds.root)}
    try:
        arm = connect_gated_arm(
            cfg.robot, ds.fps, cfg.no_person_present, cameras=None, heartbeat=cfg.heartbeat
        )
        cameras = list(arm.robot.cameras)
        if not cameras:
            raise ValueError(
                "the robot has no cameras; policies need at least one: "
                '--robot.cameras="{front: {type: opencv, index_or_path: 0, width: 640, '
                'height: 480, fps: 30}}"'
            )
        teleop.connect()
        # Image sizes from a real frame: some cameras only learn theirs from the stream.
        first = arm.robot.get_observation()
        shapes = {c: tuple(np.asarray(first[c]).shape) for c in cameras}
        h, w = shapes[cameras[0]][:2]
        if any(shape != (h, w, 3) for shape in shapes.values()):
            raise ValueError(f"all cameras must give one image size (h, w, 3); got {shapes}")
        repo_id = ds.repo_id or f"armvla/{ds.root.name}"
        recorder = EpisodeRecorder(
            ds.root,
            repo_id,
            ds.fps,
            so101_features(tuple(cameras), h, w),
            resume=cfg.resume,
            config=cfg.recorder,
        )
        summary["episodes_before"] = recorder.status().episodes_committed
        controls.start()
        gc.freeze()  # a collection of lerobot's and torch's heaps would stall the loop
        with (run_dir / "audit.jsonl").open("w") as audit:
            session = RecordingSession(cfg, arm, teleop, recorder, controls, stop, audit)
            summary.update(session.run(task, cameras))
    finally:
        controls.stop()
        if recorder is not None:
            recorder.close()  # an unsaved episode is aborted; pending commits finish
            summary["status"] = _status_dict(recorder)
        if arm is not None:
            arm.close()  # hold -> park -> torque off -> port closed, on every exit path
        if teleop.is_connected:
            teleop.disconnect()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if arm is not None:
        summary["safety"] = gate_summary(arm.gate)
        summary["safety_config_hash"] = arm.gate.config_hash
    (run_dir / "record_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary, run_dir)
    return summary


class RecordingSession:
    """The episode / reset cycle over one connected arm, teleoperator and recorder."""

    def __init__(self, cfg, arm, teleop, recorder, controls, stop, audit):
        self.cfg, self.arm, self.teleop, self.recorder = cfg, arm, teleop, recorder
        self.controls, self.stop, self.audit = controls, stop, audit
        self.supervisor = Supervisor(arm.gate.config)
        self.poller = HealthPoller(arm, cfg.dataset.fps)
        self.grasp = GraspHold()
        self._last_command = None
        self.period = 1.0 / cfg.dataset.fps
        self.tick = 0
        self.periods: list[float] = []
        self.directives: dict[str, int] = {}
        self.end_reason = "done"
        self._t_start = time.monotonic()
        self._last_stamps = None
        self.tasks: dict[str, int] = {}  # instruction -> episodes started with it
        self._teleop_feedback = callable(getattr(teleop, "send_feedback", None)) and bool(
            getattr(teleop, "feedback_features", None)
        )

    def run(self, task: str, cameras: list[str]) -> dict:
        ds, rec = self.cfg.dataset, self.recorder
        self.cameras = cameras
        saved = rerecorded = 0
        what = repr(task) if task else "the scene's own instructions"
        print(f"recording {ds.num_episodes} episode(s) of {what} into {ds.root}")
        while saved < ds.num_episodes:
            if hasattr(self.teleop, "start_episode"):
                self.teleop.start_episode()
            episode_task = getattr(self.teleop, "episode_task", None) or task
            self.tasks[episode_task] = self.tasks.get(episode_task, 0) + 1
            rec.start_episode(episode_task)
            number = rec.status().episodes_committed + rec.status().pending_saves
            print(
                f"episode {number}: recording {episode_task!r} (n: save, r: re-record, q: stop)",
                flush=True,
            )
            outcome = self._phase(ds.episode_time_s, recording=True)
            if outcome == "rerecord":
                rec.discard_episode()
                rerecorded += 1
                print(f"episode {number}: discarded, re-recording it", flush=True)
                if rerecorded > MAX_RERECORDS_PER_EPISODE * ds.num_episodes:
                    self.end_reason = f"stopped: {rerecorded} episodes re-recorded"
                    break
            elif outcome in ("done", "stop"):
                if rec.save_episode():
                    saved += 1
                    print(f"episode {number}: saved", flush=True)
                if outcome == "stop":
                    self.end_reason = "stopped by the operator"
                    break
            else:  # fault, recorder error or a signal: close() aborts the open episode
                break
            if saved >= ds.num_episodes or self.stop.is_set():
                break
            if hasattr(self.teleop, "cue_next_episode"):
                self.teleop.cue_next_episode()
            print(f"reset the scene ({ds.reset_time_s:g} s; n: skip)", flush=True)
            if self._phase(ds.reset_time_s, recording=False) not in ("done", "rerecord"):
                break
        if self.stop.is_set() and self.end_reason == "done":
            self.end_reason = "interrupted (signal)"
        periods = np.asarray(self.periods or [0.0]) * 1e3
        return {
            "episodes_saved": saved,
            "episodes_rerecorded": rerecorded,
            "tasks": self.tasks,
            "end": self.end_reason,
            "ticks": self.tick,
            "period_p50_ms": float(np.percentile(periods, 50)),
            "period_p99_ms": float(np.percentile(periods, 99)),
            "directives": self.directives,
        }

    def _phase(self, duration_s: float, recording: bool) -> str:
        """Runs the loop for ``duration_s``; returns why it ended: "done", "rerecord", "stop",
        "fault" (the supervisor stopped the arm), "recorder" (writer error) or "signal"."""
        controls = self.controls
        for flag in controls.flags:  # keys pressed during the previous phase don't carry over
            controls.take(flag)
        t_end = time.monotonic() + duration_s
        next_t = time.perf_counter()
        prev_t = None
        while True:
            t_tick = time.perf_counter()
            if prev_t is not None:
                self.periods.append(t_tick - prev_t)
            prev_t = t_tick
            if self.stop.is_set():
                return "signal"
            if controls.take("stop_recording"):
                return "stop"
            if controls.take("rerecord_episode"):
                return "rerecord"
            if controls.take("exit_early"):
                return "done"
            if time.monotonic() >= t_end:
                # A scripted operator that ran out of time did not do the task: as a person
                # would, it records the episode again rather than keep a failed demo.
                failed = getattr(self.teleop, "provides_tasks", False) and not self.teleop.finished
                return "rerecord" if recording and failed else "done"
            outcome = self._tick(recording, t_tick)
            if outcome is not None:
                return outcome
            if recording and getattr(self.teleop, "finished", False):
                return "done"  # a replayed episode has ended, or the operator's task is done
            if recording and getattr(self.teleop, "gave_up", False):
                return "rerecord"  # the scripted operator failed: a fresh scene, once more
            self.tick += 1
            next_t += self.period
            delay = next_t - time.perf_counter()
            if delay < -self.period:
                next_t = time.perf_counter()  # fell behind: don't burst to catch up
            time.sleep(max(0.0, delay))

    def _tick(self, recording: bool, t_tick: float) -> str | None:
        arm, now = self.arm, time.monotonic()
        obs, bus_ok = arm.read_observation()
        observation_time, frames_changed, self._last_stamps = observation_times(
            arm.robot, obs, now, self._last_stamps
        )
        health, health_ok = self.poller.poll(self.tick)
        bus_ok = bus_ok and health_ok
        requested, action_time = None, None
        try:
            if obs is not None and self._teleop_feedback:
                self.teleop.send_feedback(obs)
            requested = self.teleop.get_action()
            action_time = now
        except (ConnectionError, TimeoutError, RuntimeError, OSError) as exc:
            logger.warning("teleoperator failed: %s", exc)  # no fresh action: the watchdog halts
        decision = self.supervisor.tick(
            TickReport(
                now=now,
                action_time=action_time,
                observation_time=observation_time,
                frames_changed=frames_changed,
                bus_read_ok=bus_ok,
                tracking_error_rad=tracking_error_rad(self._last_command, obs),
                health=health,
                loop_s=time.perf_counter() - t_tick,
            )
        )
        name = decision.directive.name
        self.directives[name] = self.directives.get(name, 0) + 1
        arm.gate.set_speed_scale(decision.speed_scale)
        sent, asked = None, joint_array(requested)
        if decision.directive == Directive.RUN and asked is not None:
            requested = self.grasp.apply(asked, None if obs is None else obs["gripper.pos"])
        elif decision.directive != Directive.RUN:
            self.grasp.reset()
        arm.set_grasp_torque(self.grasp.holding)
        if decision.directive == Directive.RUN:
            sent = arm.send(requested)
        elif decision.directive == Directive.HALT:
            sent = arm.send(None)
        elif decision.directive in (Directive.HOLD, Directive.RELIEVE):
            sent = arm.stop(f"supervisor: {', '.join(decision.reasons)}")
        self._last_command = None if sent is None else sent.command
        row = audit_row(
            self.tick, now - self._t_start, decision, requested, sent, obs, arm.gate.config_hash
        )
        if self.grasp.holding:  # the operator's own gripper request, before the grasp-hold
            row["grasp_hold"] = {"operator_gripper": round(float(asked[GRIPPER]), 3)}
        self.audit.write(json.dumps(row | {"recording": recording}) + "\n")
        if not self.supervisor.heartbeat_ok:
            arm.heartbeat.stop(f"supervisor: {', '.join(decision.reasons)}")
        stopped = sent is None or decision.directive in (Directive.HOLD, Directive.RELIEVE)
        if stopped or not arm.self_check.ok:
            # A latched stop ends the session: the episode in flight is aborted, not saved.
            arm.bus_dead = decision.directive == Directive.POWER_CUT
            why = ", ".join(decision.reasons) if stopped else arm.self_check.failure
            self.end_reason = f"safety stop: {why}"
            print(f"stopping: {why}", file=sys.stderr)
            return "fault"
        if recording and obs is not None:
            frame = {
                OBS_STATE: np.array([obs[f"{j}.pos"] for j in SO101_JOINTS], dtype=np.float32),
                ACTION: recorded_action(sent.command, asked, self.grasp.holding),
            }
            for cam in self.cameras:
                frame[image_key(cam)] = obs[cam]
            self.recorder.add_frame(frame)
            status = self.recorder.status()
            if status.state == "stopped":  # writer error or backlog: stop recording, hold
                hold = arm.stop("recorder")
                row = audit_row(
                    self.tick, now - self._t_start, decision, None, hold, obs, arm.gate.config_hash
                )
                self.audit.write(json.dumps(row | {"recording": False, "event": "recorder"}) + "\n")
                self.end_reason = f"recording stopped: {status.last_error}"
                print(f"recording stopped, the arm holds: {status.last_error}", file=sys.stderr)
                return "recorder"
        return None


def recorded_action(sent: np.ndarray, asked: np.ndarray | None, holding: bool) -> np.ndarray:
    """The dataset's action: what the gate sent, except the gripper while a grasp-hold is on,
    which is the operator's request. A policy learns to ask for a closed gripper as the
    operator did, and ``armvla run`` applies the same hold to that request; learning the held
    value instead (just past the jaws) would teach a grip too light for the hold to detect."""
    action = np.asarray(sent, dtype=np.float32).copy()
    if holding and asked is not None:
        action[GRIPPER] = asked[GRIPPER]
    return action


def _status_dict(recorder: EpisodeRecorder) -> dict:
    s = recorder.status()
    return {
        "episodes_committed": s.episodes_committed,
        "committed_this_session": s.committed_this_session,
        "episodes_aborted": s.episodes_aborted,
        "frames_dropped": s.frames_dropped,
        "last_error": s.last_error,
    }


def _print_summary(summary: dict, run_dir: Path) -> None:
    status = summary.get("status") or {}
    print(
        f"saved {summary.get('episodes_saved', 0)} episode(s) "
        f"({status.get('episodes_committed', '?')} in {summary['root']}); "
        f"end: {summary.get('end', 'error')}; period p99 "
        f"{summary.get('period_p99_ms', 0.0):.1f} ms\nsummary: {run_dir / 'record_summary.json'}"
    )


def _ask_task() -> str:
    if not sys.stdin or not sys.stdin.isatty():
        raise ValueError(
            "no --dataset.single_task given and no terminal to ask for one, "
            'e.g. --dataset.single_task="fold the cloth"'
        )
    text = input("task of these episodes (e.g. 'fold the cloth'): ").strip()
    if not text:
        raise ValueError("a task description is needed")
    return text
