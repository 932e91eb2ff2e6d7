"""``armvla generate``: scripted expert demos written as a LeRobotDataset v3.

Episodes run in worker processes (one env each, all cores by default); the main process writes
the successful ones through lerobot's own ``LeRobotDataset.create/add_frame/save_episode``
with video cameras, the instruction as ``task`` and the source tagged ``sim``. Episode ``i``
uses env seed ``seed + i``, so a run is reproducible and its seeds are recorded next to the
dataset (``meta/armvla_generate.json``) for evaluation to hold out. Ctrl-C or SIGTERM stops
after the episode in flight and finalizes the dataset: every finished episode stays intact.

Takeover demos (``--takeover_policy``) need a trained policy, and policy sits above sim: the
``armvla generate`` command (:func:`policy.takeover.generate`) builds a
:class:`policy.takeover.PolicyDriver` and passes it to :func:`generate`, whose workers load it
once and let it drive each episode before the expert takes over.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from data.dataset import ROBOT_TYPE, SOURCE, prepare_output, quiet_encoders, so101_features
from data.keys import ACTION, OBS_STATE, SOURCE_SIM, TASK, image_key
from data.workers import guarded_initializer, raise_if_setup_failed
from safety.config import SafetyConfig
from sim.domain import DOMAINS, RealWorld
from sim.randomize import DomainRandomization
from sim.registry import resolve_task

GENERATE_META = "armvla_generate.json"
# A takeover demo shorter than this shows the policy's success, not the expert's: not written.
MIN_TAKEOVER_FRAMES = 10


@dataclass
class TaskConfig:
    # Registered task id (see `armvla generate --help`); e.g. PickColorCube-v1.
    name: str = "PickColorCube-v1"
    # Square camera image size in pixels (height = width).
    image_size: int = 96
    # Cameras to record, as named in the scene.
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    # Domain randomization, drawn anew every episode (sim/randomize.py): switches
    # --task.randomize.camera/lighting/colors/objects/actuators=true, each with its ranges
    # (e.g. --task.randomize.camera_fov_deg='[-6,6]'). Off by default.
    randomize: DomainRandomization = field(default_factory=DomainRandomization)
    # "sim", or "real": the twin's world without the bus (sim/domain.py), for `armvla eval`
    # only; real-domain data comes only through `armvla record` on the twin or an arm.
    domain: str = "sim"
    # The real domain's settings (camera pose and lens, light, table, gripper torque, JPEG),
    # e.g. --task.world.camera_fov_deg=3; the defaults are the twin's.
    world: RealWorld = field(default_factory=RealWorld)

    def __post_init__(self):
        resolve_task(self.name)
        if self.domain not in DOMAINS:
            raise ValueError(f"--task.domain must be one of {DOMAINS}, got {self.domain!r}")
        if self.image_size < 16:
            raise ValueError(f"--task.image_size must be >= 16, got {self.image_size}")
        if not self.cameras:
            raise ValueError("--task.cameras needs at least one camera")

    def env_kwargs(self) -> dict:
        """The env's ``randomization`` (the switches and ranges, None when all off),
        ``domain`` and ``world`` arguments."""
        return {
            "randomization": asdict(self.randomize) if self.randomize.enabled else None,
            "domain": self.domain,
            "world": asdict(self.world),
        }


@dataclass
class GenerateConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    # Number of expert episodes to run; the successful ones are written.
    episodes: int = 100
    # Output folder of the LeRobotDataset.
    out: Path = Path("outputs/datasets/pick_color_cube")
    # Dataset repo id stored in its metadata (default: armvla/<out folder name>).
    repo_id: str | None = None
    # Env seed of the first episode; episode i uses seed + i.
    seed: int = 0
    # Worker processes running episodes (0 = one per CPU core).
    workers: int = 0
    # Replace an existing dataset at --out.
    overwrite: bool = False
    # Append to an existing dataset at --out, continuing after its last seed.
    resume: bool = False
    # Randomize the expert (heights, speeds, grasp offsets) so demos are not identical.
    expert_variation: bool = True
    # Fraction of episodes with a staged miss: the named cube is pushed out of the jaws as they
    # close, and the demo shows the expert opening and grasping again (recovery demos).
    recovery_prob: float = 0.0
    # Fraction of episodes with a staged landing: late in the first descent the named cube
    # slides toward one jaw, which comes down on top of it; the demo shows the expert rising
    # off the cube and aligning again (recovery demos for a grasp that arrives off centre). Off
    # by default: measured with the shipped checkpoint's recipe plus --landing_prob=0.2 (897
    # demos, 15 000 steps), gated evaluation on validation seeds 2000000-2000199: 117/200, the
    # then shipped checkpoint 193/200; the policy learned to land on the cube and rise in a loop.
    landing_prob: float = 0.0
    # Drive the expert through the safety gate (demo motion = what the gated arm does). Off by
    # default: the expert's stages are timed open loop, so under the gate the arm lags its plan
    # and grasps land off-centre. Measured with `make demo`'s recipe (300 demos, 450 s training,
    # gated evaluation on 300 held-out scenes): 259/300 with ungated demos, 245/300 gated,
    # 222/300 when the dataset stored the gated command, not the expert's request. Evaluation
    # and the arm always gate; the hash of the limits is stored with the demos either way.
    safety_gate: bool = False
    # Plan the expert's motion inside the safety gate's limits (joint speed and acceleration,
    # tool speed, soft joint range): no demo command is one the gate must change, and the gate
    # only trails it by its braking distance (a few degrees, not 25). Off by default: the
    # demos get slower (134 vs 99 ticks) and so did the policy. Measured with the shipped
    # checkpoint's recipe (600 demos, 20% recovery, 12 000 steps), gated evaluation on seeds
    # 1000000-1000099: 66/100 within the task's 300 steps, 84/100 within 450; the shipped
    # checkpoint of the time (ungated expert, no recovery) 89/100.
    expert_limits: bool = False
    # Takeover demos (DAgger-style): this policy checkpoint (a folder written by `armvla train`,
    # or "default" for the shipped one) drives each episode first, through the safety gate as
    # in `armvla eval`; at a tick drawn from --takeover_ticks the expert takes over from the
    # state the policy left, and only the expert's frames are written. They label the states
    # the policy really visits (approaches a few mm off centre, jaws on the cube) with the
    # expert's correction. Episodes the policy finishes before the takeover write nothing.
    takeover_policy: str | None = None
    # [first, last]: the takeover tick is drawn uniformly from this range in each episode. The
    # policy "finished" when it solved the task before, or when the expert needed < 10 ticks.
    takeover_ticks: list[int] = field(default_factory=lambda: [15, 130])

    def __post_init__(self):
        if self.task.domain != "sim":
            raise ValueError(
                "armvla generate writes sim demos only (--task.domain=sim): real-domain data "
                "comes through `armvla record` on the twin or an arm, never from the simulator"
            )
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if not 0.0 <= self.recovery_prob <= 1.0:
            raise ValueError(f"--recovery_prob must be in [0, 1], got {self.recovery_prob}")
        if not 0.0 <= self.landing_prob <= 1.0:
            raise ValueError(f"--landing_prob must be in [0, 1], got {self.landing_prob}")
        if (
            len(self.takeover_ticks) != 2
            or not 0 <= self.takeover_ticks[0] <= self.takeover_ticks[1]
        ):
            raise ValueError(
                f"--takeover_ticks must be [first, last] with 0 <= first <= last, got "
                f"{self.takeover_ticks}"
            )
        self.out = Path(self.out)


class TakeoverDriver(Protocol):
    """What drives an episode before the expert takes over (e.g. policy.takeover.PolicyDriver).

    Picklable: it goes to every worker process, which calls :meth:`load` once.
    """

    checkpoint: Path  # recorded with the dataset (meta "takeover": {"policy", "ticks"})

    def load(self) -> None:
        """Loads what it needs to act, in the worker process."""

    def reset(self) -> None:
        """A new episode starts."""

    def act(self, obs: dict) -> np.ndarray:
        """The env action [6] (float32, lerobot units) for one observation."""


# ---------------------------------------------------------------------------- workers
_worker_env = None
_worker_expert_cls = None
_worker_driver: TakeoverDriver | None = None
_worker_gated_expert = False


@guarded_initializer
def _init_worker(
    task_name: str,
    image_size: int,
    cameras: tuple[str, ...],
    safety_gate: bool,
    driver: TakeoverDriver | None = None,
    env_kwargs: dict | None = None,
) -> None:
    # The main process owns Ctrl-C: it stops the pool and finalizes the dataset.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import importlib

    from sim.registry import make_env

    global _worker_env, _worker_expert_cls, _worker_driver, _worker_gated_expert
    spec = resolve_task(task_name)
    # With --safety_gate the expert drives the arm through the gate, so the demo's motion is
    # what the gated arm does. Either way the dataset's action is the expert's request (its
    # intent, as lerobot records a leader arm's position), which the gate filters when a
    # policy trained on it runs.
    env = make_env(task_name, image_size=image_size, cameras=cameras, **(env_kwargs or {}))
    # A takeover policy always drives through the gate, as in `armvla eval`; the expert after
    # it only with --safety_gate (run_expert_episode steps the wrapped env otherwise).
    _worker_env = env
    if safety_gate or driver is not None:
        # Imported only when used: the gated env brings lerobot (and with it torch) along.
        from safety.gated_env import SafetyGateWrapper

        _worker_env = SafetyGateWrapper(env)
    _worker_gated_expert = safety_gate
    _worker_driver = None
    if driver is not None:
        driver.load()
        _worker_driver = driver
    module, cls = spec.expert.split(":")
    _worker_expert_cls = getattr(importlib.import_module(module), cls)


def expert_motion_limits(config: SafetyConfig | None = None):
    """The safety gate's limits as the scripted expert plans with them (lerobot units)."""
    from safety import so101
    from safety.config import joint_limits_rad
    from sim.expert import MotionLimits

    cfg = config or SafetyConfig()
    ranges = joint_limits_rad()
    return MotionLimits(
        step=np.rad2deg(cfg.step_limit()),
        accel=np.rad2deg(cfg.accel_limit()),
        low=so101.from_radians(ranges[:, 0] + cfg.joint_margin_rad),
        high=so101.from_radians(ranges[:, 1] - cfg.joint_margin_rad),
        tool_speed=cfg.tool_speed_cap() * cfg.dt,
    )


def run_expert_episode(
    seed: int,
    variation: bool = True,
    miss_prob: float = 0.0,
    limits: bool = False,
    landing_prob: float = 0.0,
    takeover_ticks: tuple[int, int] = (15, 130),
) -> dict:
    """Runs one expert episode in this worker's env; returns its frames stacked per key.

    With a takeover driver in the worker, the policy drives first (``takeover_ticks``) and the
    frames start where the expert took over; ``"takeover_tick"`` says where (None = no policy),
    and ``"policy_finished"`` is True when the policy solved the task before that tick."""
    raise_if_setup_failed()
    env = _worker_env
    obs, _ = env.reset(seed=seed)
    # Only options that are on are passed, so experts without them work too.
    kwargs = {k: v for k, v in (("miss_prob", miss_prob), ("landing_prob", landing_prob)) if v}
    if limits:
        kwargs["limits"] = expert_motion_limits()
    expert = _worker_expert_cls(env.unwrapped, seed=seed, variation=variation, **kwargs)
    step = env.step
    takeover = None
    if _worker_driver is not None:
        # Its own stream: the expert's draws stay those of the seed.
        takeover = int(
            np.random.default_rng([seed, 1]).integers(takeover_ticks[0], takeover_ticks[1] + 1)
        )
        obs, done = _drive_with_policy(env, obs, takeover)
        if done:
            return {
                "seed": seed,
                "success": False,
                "policy_finished": True,
                "takeover_tick": takeover,
            }
        expert.take_over()
        if not _worker_gated_expert:
            step = env.env.step  # past the gate the policy drove through
    # The gate's interventions on the demo's commands; the policy's share is not the demo's.
    before = env.episode_stats.interventions if _worker_gated_expert else 0
    frames: dict[str, list] = {}
    info = {"success": False}
    while True:
        action = expert.act(obs)
        for key, value in obs.items():
            if key != TASK:
                frames.setdefault(key, []).append(value)
        frames.setdefault(ACTION, []).append(np.asarray(action, dtype=np.float32))
        obs, _, terminated, truncated, info = step(action)
        if terminated or truncated:
            break
    # The policy had all but finished (lerobot also needs 2 frames for a video's stats).
    finished = takeover is not None and len(frames[ACTION]) < MIN_TAKEOVER_FRAMES
    return {
        "seed": seed,
        "success": bool(info["success"]) and not finished,
        "policy_finished": finished,
        "takeover_tick": takeover,
        "task": obs[TASK],
        "frames": {k: np.stack(v) for k, v in frames.items()},
        "safety": {
            "ticks": len(frames[ACTION]),
            "interventions": (
                env.episode_stats.interventions - before if _worker_gated_expert else 0
            ),
        },
    }


def _drive_with_policy(env, obs: dict, ticks: int) -> tuple[dict, bool]:
    """The worker's takeover driver drives ``ticks`` ticks; returns the last observation and
    whether the episode ended (solved or out of time) before the takeover."""
    _worker_driver.reset()
    for _ in range(ticks):
        action = _worker_driver.act(obs)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return obs, True
    return obs, False


# ---------------------------------------------------------------------------- main
def _load_meta(root: Path) -> dict:
    path = root / "meta" / GENERATE_META
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_meta(root: Path, meta: dict) -> None:
    path = root / "meta" / GENERATE_META
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path)


# Frames the video encoder may buffer per camera. Episodes are handed to the writer in one burst,
# and lerobot's streaming encoder drops a frame (leaving the video shorter than the episode's
# data) when its queue stays full for 0.1 s, which happened under CPU load with its default of
# 30. A queue longer than any episode cannot fill: save_episode drains it between episodes.
ENCODER_QUEUE_FRAMES = 2048


def _open_dataset(cfg: GenerateConfig, repo_id: str, resume: bool):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    size, cams = cfg.task.image_size, tuple(cfg.task.cameras)
    features = so101_features(cams, size, size)
    fps = 30
    if resume:
        ds = LeRobotDataset.resume(
            repo_id,
            root=cfg.out,
            streaming_encoding=True,
            encoder_queue_maxsize=ENCODER_QUEUE_FRAMES,
        )
        for key, feat in features.items():
            have = ds.meta.features.get(key)
            if have is None or tuple(have["shape"]) != tuple(feat["shape"]):
                raise ValueError(
                    f"cannot resume {cfg.out}: its feature {key!r} is {have} but this run "
                    f"would write {feat}; use the same --task options or a new --out"
                )
        return ds
    return LeRobotDataset.create(
        repo_id,
        fps=fps,
        features=features,
        root=cfg.out,
        robot_type=ROBOT_TYPE,
        use_videos=True,
        streaming_encoding=True,
        encoder_queue_maxsize=ENCODER_QUEUE_FRAMES,
        metadata_buffer_size=1,
    )


def generate(cfg: GenerateConfig, driver: TakeoverDriver | None = None) -> dict:
    """Runs the expert for ``cfg.episodes`` episodes and writes the successful ones.

    Args:
        driver: drives each episode first, then the expert takes over (takeover demos);
            required when ``cfg.takeover_policy`` is set. ``armvla generate`` passes a
            policy.takeover.PolicyDriver.
    Returns a summary: attempts, successes, success rate, wall time, dataset path.
    """
    from tqdm import tqdm

    if cfg.takeover_policy and driver is None:
        raise ValueError(
            f"--takeover_policy={cfg.takeover_policy} needs a trained policy to drive first: run "
            "`armvla generate` (policy.takeover.generate), or pass "
            "driver=policy.takeover.PolicyDriver.from_flag(cfg.takeover_policy)"
        )
    takeover = None
    if driver is not None:
        takeover = {
            "policy": str(driver.checkpoint),
            "ticks": list(cfg.takeover_ticks),
        }
    resume = prepare_output(cfg.out, cfg.overwrite, cfg.resume)
    repo_id = cfg.repo_id or f"armvla/{cfg.out.name}"
    meta = _load_meta(cfg.out) if resume else {}
    first_seed = meta.get("next_seed", cfg.seed) if resume else cfg.seed
    seeds = list(range(first_seed, first_seed + cfg.episodes))
    workers = cfg.workers or os.cpu_count() or 1
    workers = min(workers, cfg.episodes)

    quiet_encoders()
    t0 = time.perf_counter()
    ds = _open_dataset(cfg, repo_id, resume)
    meta.setdefault("task", cfg.task.name)
    # The limits every demo command passed (SAFETY.md 24: the config hash goes with the data).
    safety_hash = SafetyConfig().hash()
    if meta.setdefault("safety_config_hash", safety_hash) != safety_hash:
        raise ValueError(
            f"cannot resume {cfg.out}: its demos passed safety config {meta['safety_config_hash']}"
            f" but this armvla's is {safety_hash}; generate into a new --out"
        )
    meta["safety_config"] = SafetyConfig().to_json()
    if meta.setdefault("safety_gate", cfg.safety_gate) != cfg.safety_gate:
        raise ValueError(
            f"cannot resume {cfg.out}: its demos were generated with --safety_gate="
            f"{str(meta['safety_gate']).lower()}; use the same setting or a new --out"
        )
    if meta.setdefault("expert_limits", cfg.expert_limits) != cfg.expert_limits:
        raise ValueError(
            f"cannot resume {cfg.out}: its demos were generated with --expert_limits="
            f"{str(meta['expert_limits']).lower()}; use the same setting or a new --out"
        )
    if meta.setdefault("takeover", takeover) != takeover:
        raise ValueError(
            f"cannot resume {cfg.out}: its demos were generated with takeover "
            f"{meta['takeover']}, this run asks for {takeover}; use the same --takeover_policy "
            "and --takeover_ticks or a new --out"
        )
    meta.setdefault("safety_interventions", 0)
    meta.setdefault("safety_ticks", 0)
    meta.setdefault("episode_seeds", [])
    meta.setdefault("failed_seeds", [])
    if takeover:
        meta.setdefault("policy_finished_seeds", [])
    attempts = successes = policy_finished = 0
    finished = False

    # Ctrl-C / SIGTERM only set a flag: the episode being written is finished, then the run
    # stops. Raising inside lerobot's writer (its encoder threads) could leave it unable to
    # finalize. A second Ctrl-C stops at once.
    stop_requested = False

    def _request_stop(signum, frame):
        nonlocal stop_requested
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested = True
        print("\nstopping after the current episode (Ctrl-C again to stop now)", file=sys.stderr)

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(
        workers,
        initializer=_init_worker,
        initargs=(
            cfg.task.name,
            cfg.task.image_size,
            tuple(cfg.task.cameras),
            cfg.safety_gate,
            driver,
            cfg.task.env_kwargs(),
        ),
    )
    bar = tqdm(total=cfg.episodes, desc=f"generate {cfg.task.name}", unit="ep")
    try:
        run = partial(
            run_expert_episode,
            variation=cfg.expert_variation,
            miss_prob=cfg.recovery_prob,
            limits=cfg.expert_limits,
            landing_prob=cfg.landing_prob,
            takeover_ticks=tuple(cfg.takeover_ticks),
        )
        results = pool.imap(run, seeds)
        for result in results:
            attempts += 1
            if result["success"]:
                _write_episode(ds, result)
                successes += 1
                meta["episode_seeds"].append(result["seed"])
                meta["safety_interventions"] += result["safety"]["interventions"]
                meta["safety_ticks"] += result["safety"]["ticks"]
            elif result["policy_finished"]:  # nothing left for the expert to show
                policy_finished += 1
                meta["policy_finished_seeds"].append(result["seed"])
            else:
                meta["failed_seeds"].append(result["seed"])
            meta["next_seed"] = result["seed"] + 1
            _write_meta(cfg.out, meta)
            postfix = {"success": f"{successes}/{attempts}"}
            if takeover:
                postfix["policy_done"] = policy_finished
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if stop_requested:
                break
        finished = not stop_requested
    except KeyboardInterrupt:
        pass
    finally:
        interrupted = not finished
        if interrupted:  # Ctrl-C, or an error: drop the episodes still running
            pool.terminate()
        bar.close()
        pool.close()
        pool.join()
        # An episode cut off mid-write is discarded; every saved one is kept.
        if ds.has_pending_frames():
            ds.clear_episode_buffer()
        ds.finalize()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    wall = time.perf_counter() - t0
    tried = attempts - policy_finished  # episodes the expert played
    rate = successes / tried if tried else 0.0
    summary = {
        "task": cfg.task.name,
        "attempts": attempts,
        "successes": successes,
        "success_rate": rate,
        "wall_time_s": round(wall, 1),
        "workers": workers,
        "dataset": str(cfg.out),
        "repo_id": repo_id,
        "total_episodes": ds.meta.total_episodes,
        "interrupted": interrupted,
    }
    if takeover:
        summary["policy_finished"] = policy_finished
    meta["last_run"] = {**summary, "config": _jsonable(asdict(cfg))}
    _write_meta(cfg.out, meta)
    state = "interrupted after" if interrupted else "ran"
    finished_first = (
        f" ({policy_finished} solved by the policy before the takeover, not written)"
        if takeover
        else ""
    )
    print(
        f"{state} {attempts} expert episodes of {cfg.task.name}: {successes} succeeded "
        f"({100 * rate:.1f}%){finished_first}, wall time {wall:.1f} s on {workers} worker(s)\n"
        f"dataset: {cfg.out} ({ds.meta.total_episodes} episodes, {ds.meta.total_frames} frames)"
    )
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _write_episode(ds, result: dict) -> None:
    frames = result["frames"]
    n = len(frames[ACTION])
    image_keys = [k for k in frames if k.startswith(image_key(""))]
    for i in range(n):
        frame = {OBS_STATE: frames[OBS_STATE][i], ACTION: frames[ACTION][i]}
        for key in image_keys:
            frame[key] = frames[key][i]
        frame[TASK] = result["task"]
        frame[SOURCE] = SOURCE_SIM
        ds.add_frame(frame)
    ds.save_episode()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
