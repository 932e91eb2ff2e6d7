"""``armvla eval``: closed-loop success of a policy checkpoint on a sim task.

Examples::

    armvla eval --policy=outputs/train/last --episodes=100
    armvla eval --policy=outputs/train/last --dataset=outputs/datasets/pick_color_cube
    armvla eval --policy=outputs/train/last --language_probe=true --episodes=20

Episodes run in worker processes (one env and one policy each, all cores by default); episode
``i`` uses env seed ``seed + i``. The default ``--seed=1000000`` keeps evaluation scenes apart
from training scenes, since ``armvla generate`` numbers its seeds from 0; with ``--dataset`` the
seeds the dataset was generated from are checked and an overlap is refused.

Writes ``<out>/eval_report.json`` (success rate with a 95% Wilson interval, per-instruction
breakdown, episode lengths, wrong-cube and language-probe counts, one record per episode) and
Rerun recordings ``<out>/recordings/episode_<seed>.rrd`` of the first episodes and of failures.
Ctrl-C or SIGTERM stops at once (episodes in flight are dropped) and still writes the report of
the finished episodes, marked ``interrupted``.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data.keys import SOURCE_REAL, SOURCE_SIM
from policy.eval_report import build_report, print_summary, wilson_interval, write_recording
from policy.rollout import EpisodeJob, inference_source, init_worker, run_episode
from sim.generate import GENERATE_META, TaskConfig
from sim.registry import resolve_task

REPORT_FILE = "eval_report.json"
__all__ = [
    "EvalConfig",
    "check_heldout",
    "checkpoint_path",
    "evaluate",
    "probe_targets",
    "wilson_interval",
]


@dataclass
class EvalConfig:
    # Checkpoint folder (config.json + model.safetensors + stats.json), or the name of one shipped
    # with armvla: "default" (policy/checkpoints/pick_color_cube) or "cotrain" (sim + real
    # co-trained, policy/checkpoints/cotrain).
    policy: str = "default"
    # Task to evaluate on, and the image size and cameras rendered for the policy.
    task: TaskConfig = field(default_factory=TaskConfig)
    # Number of scenes (env seeds) to evaluate; with --language_probe each is played once per color.
    episodes: int = 50
    # Env seed of the first episode; episode i uses seed + i. `armvla generate` seeds start at 0,
    # so the default keeps evaluation scenes out of any dataset of fewer than a million episodes.
    seed: int = 1_000_000
    # LeRobotDataset the policy was trained on (its root folder): refuse eval seeds it was
    # generated from (read from <root>/meta/armvla_generate.json).
    dataset: Path | None = None
    # Worker processes (0 = one per CPU core); each loads the policy once and keeps one env.
    workers: int = 0
    # Output folder for eval_report.json and recordings/.
    out: Path = Path("outputs/eval")
    # Rerun recordings (.rrd) of the first this-many episodes.
    record_first: int = 3
    # At most this many more recordings, of failed episodes.
    record_failures: int = 10
    # Instruction given in every episode instead of the task's own (e.g. a paraphrase).
    instruction: str | None = None
    # Play every scene once per cube color (same seed, reset option target=<color>) and report how
    # often the cube that got lifted is the one the instruction names.
    language_probe: bool = False
    # Step limit per episode (default: the task's max_episode_steps, 300 for PickColorCube-v1).
    max_steps: int | None = None
    # Data source whose normalization statistics the policy uses: "sim" or "real". None: "real"
    # in the real domain (--task.domain=real) when the policy has real statistics, else "sim",
    # as `armvla run` picks on an arm.
    source: str | None = None

    def __post_init__(self):
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if self.record_first < 0 or self.record_failures < 0:
            raise ValueError("--record_first and --record_failures must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max_steps must be >= 1, got {self.max_steps}")
        if self.source not in (None, SOURCE_SIM, SOURCE_REAL):
            raise ValueError(f"--source must be sim or real, got {self.source!r}")
        if self.instruction is not None and not self.instruction.strip():
            raise ValueError("--instruction must not be empty; leave it out to use the task's own")
        self.out = Path(self.out)
        if self.dataset is not None:
            self.dataset = Path(self.dataset)


def evaluate(cfg: EvalConfig) -> dict:
    """Runs the policy on ``cfg.episodes`` scenes and writes the report and recordings.

    All inputs are checked before any worker starts.

    Returns:
        The report, as written to ``<out>/eval_report.json``.

    Raises:
        FileNotFoundError: the checkpoint or the dataset's seed record is missing.
        ValueError: the policy needs a camera the task does not render, the task has no named
            targets for ``--language_probe``, or eval seeds overlap the dataset's.
        KeyboardInterrupt: after writing the partial report, when interrupted.
    """
    from tqdm import tqdm

    from policy.checkpoint import load_policy

    spec = resolve_task(cfg.task.name)
    max_steps = cfg.max_steps or spec.max_episode_steps
    policy_path = checkpoint_path(cfg.policy)
    policy = load_policy(policy_path)  # loads fully once: bad weights fail here
    policy_cfg = policy.config
    source = inference_source(policy, cfg.task.domain, cfg.source)
    del policy
    missing = [c for c in policy_cfg.cameras if c not in cfg.task.cameras]
    if missing:
        raise ValueError(
            f"policy {policy_path} looks at cameras {list(policy_cfg.cameras)} but the task renders "
            f"{cfg.task.cameras}; pass --task.cameras='[{','.join(policy_cfg.cameras)}]'"
        )
    seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
    if cfg.dataset is not None:
        check_heldout(seeds, cfg.dataset)
    targets = probe_targets(spec.entry_point) if cfg.language_probe else [None]
    jobs = [
        EpisodeJob(i, seed, target, cfg.instruction, record=i < cfg.record_first)
        for i, (seed, target) in enumerate((s, t) for s in seeds for t in targets)
    ]
    cfg.out.mkdir(parents=True, exist_ok=True)
    workers = min(cfg.workers or os.cpu_count() or 1, len(jobs))

    t0 = time.perf_counter()
    results: list[dict] = []
    recordings: list[str] = []
    interrupted = False

    def _sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _sigterm)
    ctx = mp.get_context("spawn")
    failures_recorded = ctx.Value("i", 0)
    cams = tuple(cfg.task.cameras)
    pool = ctx.Pool(
        workers,
        initializer=init_worker,
        initargs=(
            str(policy_path),
            cfg.task.name,
            cfg.task.image_size,
            cams,
            max_steps,
            failures_recorded,
            cfg.record_failures,
            cfg.task.env_kwargs(),
            source,
        ),
    )
    bar = tqdm(total=len(jobs), desc=f"eval {cfg.task.name}", unit="ep")
    try:
        for result in pool.imap(run_episode, jobs):
            frames = result.pop("frames")
            result["recording"] = None
            first = result["index"] < cfg.record_first
            failure_slot = not result["success"] and failures_recorded.value < cfg.record_failures
            if frames is not None and (first or failure_slot):
                if not first:
                    with failures_recorded.get_lock():
                        failures_recorded.value += 1
                name = f"episode_{result['seed']}"
                if result["target"] is not None and cfg.language_probe:
                    name += f"_{result['target']}"  # one scene per color under the probe
                path = cfg.out / "recordings" / f"{name}.rrd"
                write_recording(path, frames, result, cams, str(policy_path))
                result["recording"] = str(path)
                recordings.append(str(path))
            results.append(result)
            wins = sum(r["success"] for r in results)
            bar.set_postfix(success=f"{wins}/{len(results)} ({100 * wins / len(results):.0f}%)")
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        # Also on errors: close() + join() would wait for every queued episode to finish.
        pool.terminate()
        pool.join()
        signal.signal(signal.SIGTERM, previous)

    report = {
        "policy": str(policy_path),
        "task": cfg.task.name,
        **build_report(results, language_probe=cfg.language_probe),
        "episodes_planned": len(jobs),
        "seeds": seeds,
        "max_steps": max_steps,
        "source": source,
        "workers": workers,
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "interrupted": interrupted,
        "recordings": recordings,
        "config": asdict(cfg),
        "episode_results": results,
    }
    path = cfg.out / REPORT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))  # Paths as strings
    tmp.replace(path)
    print_summary(report, path)
    if interrupted:
        raise KeyboardInterrupt
    return report


def checkpoint_path(name_or_path: str) -> Path:
    """The checkpoint folder for ``--policy``, or a FileNotFoundError saying what to pass."""
    from policy.checkpoint import CONFIG_FILE, SHIPPED, resolve_checkpoint

    path = resolve_checkpoint(name_or_path)
    if not (path / CONFIG_FILE).is_file():
        if str(name_or_path) in SHIPPED:
            raise FileNotFoundError(
                f"the shipped checkpoint {path} is missing from this install; "
                f"pass --policy=<checkpoint folder> (one written by `armvla train`)"
            )
        raise FileNotFoundError(
            f"--policy={name_or_path}: no checkpoint there ({CONFIG_FILE} is missing); pass a "
            f"folder written by `armvla train`, or one of the shipped names {sorted(SHIPPED)}"
        )
    return path


def check_heldout(seeds: list[int], dataset: Path) -> None:
    """Refuses eval seeds that the dataset at ``dataset`` was generated from."""
    meta_path = Path(dataset) / "meta" / GENERATE_META
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"--dataset={dataset}: {meta_path} is missing, so its seeds are unknown; pass the root "
            f"of a dataset written by `armvla generate`, or leave --dataset out"
        )
    meta = json.loads(meta_path.read_text())
    used = set(meta.get("episode_seeds", [])) | set(meta.get("failed_seeds", []))
    overlap = sorted(used.intersection(seeds))
    if overlap:
        raise ValueError(
            f"eval seeds {seeds[0]}..{seeds[-1]} overlap {len(overlap)} seed(s) of the training "
            f"data in {dataset} (first: {overlap[0]}); pass --seed={max(used) + 1} or higher"
        )


def probe_targets(entry_point: str) -> list[str]:
    """The named targets (cube colors) of a task, from its env module's ``COLORS``."""
    module = importlib.import_module(entry_point.split(":")[0])
    colors = getattr(module, "COLORS", None)
    if not colors:
        raise ValueError(
            f"--language_probe needs a task with named targets; {entry_point} defines no COLORS"
        )
    return list(colors)
