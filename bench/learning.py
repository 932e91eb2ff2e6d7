"""Success after the same wall-clock training budget on the same data: armvla vs lerobot 0.6.1's ACT.

Both policies train on the same LeRobotDataset (``--dataset``, e.g. made by ``armvla generate``)
for the same wall-clock budget on this machine, one after the other (never at the same time), then
play the same held-out scenes (env seeds ``--seed-start`` ..) of the dataset's task in the same
env, rendered at the dataset's own image size, with the same step limit (the task's
``max_episode_steps``) and the same success measure (the env's ``info["success"]`` at the end of
the episode):

* armvla: ``armvla train`` (``policy.train.train``) with its default preset and batch size and
  ``time_budget_s=--budget-s`` (its learning-rate schedule anneals to the budget), then
  ``armvla eval`` (``policy.eval.evaluate``) on the final checkpoint;
* ACT: ``ACTConfig()`` defaults (ResNet-18 from scratch, chunk 100, 100 actions executed per
  chunk, VAE, dim 512; ``pretrained_backbone_weights=None`` since nothing can be downloaded),
  lerobot's AdamW preset (lr 1e-5, weight decay 1e-4, gradient norm clipped at 10, constant lr,
  as ``lerobot-train`` does for ACT) at ``--act-batch-size`` (8, lerobot's default), trained by a
  plain loop on batches from armvla's in-memory sampler (``policy.data.MixtureSampler``, action
  chunks of 100, images at the dataset's size) passed through ACT's own preprocessor
  (normalization: state/action mean/std from the same frames, std floored at armvla's
  ``MIN_STD``; images ImageNet mean/std). Its weights go to ``<out>/act/model.safetensors``
  (with lerobot's ``config.json``), and it plays the episodes through armvla's own rollout loop
  (``policy.rollout.run_episode``) behind a small adapter, in ``--workers`` spawned processes.

The budget counts the training loop only, from its first optimizer step, for both: sampling
batches (and armvla's augmentation, ACT's normalization) is inside it; decoding the dataset into
memory, computing stats and building the model are outside it. ACT has no language input, so on
a task whose instruction names the target it can only guess which object is meant.

Slow: two budgets of training plus two evaluations; run on demand, on an otherwise idle machine::

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 python bench/learning.py \\
        --dataset outputs/datasets/pick_color_cube --budget-s 600 --episodes 50

The last line printed is one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lerobot  # noqa: E402
import torch  # noqa: E402
from _act import (  # noqa: E402
    ACTAdapter,
    act_config,
    act_stats,
    build_act,
    data_stats,
    load_act_weights,
    save_act,
)

from data.keys import ACTION, OBS_STATE, image_key  # noqa: E402
from data.workers import guarded_initializer  # noqa: E402
from policy.eval import check_heldout  # noqa: E402
from policy.eval_report import build_report, wilson_interval  # noqa: E402
from policy.normalize import MIN_STD  # noqa: E402
from policy.rollout import EpisodeJob, run_episode  # noqa: E402
from sim.generate import GENERATE_META, TaskConfig  # noqa: E402
from sim.registry import resolve_task  # noqa: E402

CAMERAS = ("front", "wrist")
STATE_DIM = ACTION_DIM = 6
TRAIN_SEED = 0  # armvla's TrainConfig default seed; ACT's weights and sampler use it too
ACT_META = "bench_act.json"
REPORT_FILE = "eval_report.json"
TIMING_NOTE = (
    "budget = training loop only, from its first optimizer step (batch sampling and "
    "normalization/augmentation inside); dataset decoding, stats and model construction excluded "
    "for both"
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="LeRobotDataset root both policies train on (e.g. made by `armvla generate`)",
    )
    parser.add_argument(
        "--budget-s", type=float, default=600.0, help="wall-clock training budget per policy"
    )
    parser.add_argument("--episodes", type=int, default=50, help="held-out eval episodes")
    parser.add_argument(
        "--seed-start",
        type=int,
        default=1_000_000,
        help="env seed of the first eval episode (episode i uses seed-start + i)",
    )
    parser.add_argument("--workers", type=int, default=2, help="eval processes per policy")
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/bench/learning"), help="checkpoints and reports"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads while training"
    )
    parser.add_argument(
        "--act-batch-size", type=int, default=8, help="ACT's batch size (lerobot's default: 8)"
    )
    parser.add_argument("--skip-act", action="store_true", help="only armvla (debugging)")
    parser.add_argument("--skip-armvla", action="store_true", help="only ACT (debugging)")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    if min(args.episodes, args.workers, args.threads, args.act_batch_size) < 1:
        parser.error("--episodes, --workers, --threads and --act-batch-size must be >= 1")
    if args.seed_start < 0:
        parser.error("--seed-start must be >= 0")
    if args.skip_act and args.skip_armvla:
        parser.error("--skip-act and --skip-armvla together leave nothing to measure")
    return args


# ---------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    task: str  # registered task id the dataset was generated on
    image_size: int  # square camera images, as stored
    episodes: int
    frames: int


def dataset_info(root: Path) -> DatasetInfo:
    """What the benchmark needs from a dataset's metadata, or a clear error."""
    info_path = Path(root) / "meta" / "info.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"no LeRobotDataset at {root} ({info_path} is missing); make one with `armvla generate`"
        )
    info = json.loads(info_path.read_text())
    shapes = set()
    for cam in CAMERAS:
        feature = info["features"].get(image_key(cam))
        if feature is None:
            raise ValueError(f"dataset {root} has no camera {cam!r}; both need {list(CAMERAS)}")
        shapes.add(tuple(feature["shape"][:2]))  # (height, width, channels)
    height, width = next(iter(shapes))
    if len(shapes) != 1 or height != width:
        raise ValueError(f"dataset {root}: cameras must share one square size, got {shapes}")
    generated = Path(root) / "meta" / GENERATE_META
    task = json.loads(generated.read_text()).get("task") if generated.is_file() else None
    return DatasetInfo(
        root=Path(root),
        task=task or TaskConfig().name,
        image_size=int(height),
        episodes=int(info["total_episodes"]),
        frames=int(info["total_frames"]),
    )


# ---------------------------------------------------------------------------- armvla
def run_armvla(args, ds: DatasetInfo) -> dict:
    """``armvla train`` for the budget, then ``armvla eval`` of its final checkpoint."""
    from policy.checkpoint import load_config
    from policy.eval import EvalConfig, evaluate
    from policy.train import DataConfig, TrainConfig, train

    out = args.out / "armvla"
    cfg = TrainConfig(
        data=DataConfig(roots=[ds.root]),
        out=out,
        steps=10**6,
        time_budget_s=args.budget_s,
        overwrite=True,
        threads=args.threads,
        save_every=10**6,  # one checkpoint at the end, like ACT's loop; no saving in the budget
        seed=TRAIN_SEED,
    )
    checkpoint = train(cfg)
    _, extra = load_config(checkpoint)
    gc.collect()
    report = evaluate(
        EvalConfig(
            policy=str(checkpoint),
            task=TaskConfig(name=ds.task, image_size=ds.image_size, cameras=list(CAMERAS)),
            episodes=args.episodes,
            seed=args.seed_start,
            dataset=ds.root,
            workers=args.workers,
            out=out / "eval",
            record_first=0,  # no recordings, as for ACT
            record_failures=0,
        )
    )
    return {
        "successes": report["successes"],
        "episodes": report["episodes"],
        "steps": int(extra["step"]),
        "train_time_s": float(extra["train_time_s"]),
        "batch_size": cfg.batch_size,
        "wrong_cube_episodes": report["wrong_cube_episodes"],
        "checkpoint": str(checkpoint),
        "report": str(out / "eval" / REPORT_FILE),
    }


# ---------------------------------------------------------------------------- ACT
def train_act(args, ds: DatasetInfo, out: Path) -> dict:
    """lerobot's ACT trained by a plain loop for the budget; weights saved under ``out``."""
    from tqdm import tqdm

    from policy.data import MixtureSampler, load_dataset

    data = load_dataset(ds.root, CAMERAS, ds.image_size)
    config = act_config(CAMERAS, ds.image_size, STATE_DIM, ACTION_DIM)
    sampler = MixtureSampler([data], config.chunk_size, seed=TRAIN_SEED)
    del data
    stats = {
        OBS_STATE: data_stats(sampler.state, MIN_STD),
        ACTION: data_stats(sampler.action, MIN_STD),
    }
    torch.manual_seed(TRAIN_SEED)
    policy, pre, _ = build_act(config, act_stats(stats[OBS_STATE], stats[ACTION], CAMERAS))
    preset = config.get_optimizer_preset()
    optimizer = preset.build(policy.get_optim_params())
    params = [p for p in policy.parameters() if p.requires_grad]
    print(
        f"training lerobot ACT ({sum(p.numel() for p in params) / 1e6:.2f} M trainable params) "
        f"on {sampler.num_frames} frames at {ds.image_size}x{ds.image_size}, batch "
        f"{args.act_batch_size}, for {args.budget_s:g} s"
    )

    policy.train()
    step, loss_value = 0, float("nan")
    bar = tqdm(desc="train ACT", unit="step")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.budget_s:
        batch = pre(sampler.sample(args.act_batch_size))
        loss, metrics = policy(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, preset.grad_clip_norm)
        optimizer.step()
        step += 1
        loss_value = float(loss.detach())
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss_value:.4f}", l1=f"{metrics['l1_loss']:.4f}")
    elapsed = time.perf_counter() - t0
    bar.close()
    print(f"trained ACT {step} steps in {elapsed:.0f} s (last loss {loss_value:.4f})")

    weights = save_act(policy, out)  # model.safetensors + lerobot's config.json
    meta = {
        "lerobot": lerobot.__version__,
        "cameras": list(CAMERAS),
        "image_size": ds.image_size,
        "stats": stats,
        "steps": step,
        "train_time_s": round(elapsed, 1),
        "batch_size": args.act_batch_size,
        "optimizer": asdict(preset),
        "dataset": str(ds.root),
    }
    (out / ACT_META).write_text(json.dumps(meta, indent=2))
    return {
        "weights": weights,
        "stats": stats,
        "steps": step,
        "train_time_s": elapsed,
        "batch_size": args.act_batch_size,
    }


@guarded_initializer
def _init_act_worker(
    weights: str, stats: dict, image_size: int, task_name: str, max_steps: int
) -> None:
    """Pool initializer: rebuilds ACT from config + stats + weights and makes the env, once.

    Installs both as :mod:`policy.rollout`'s worker globals, so episodes are played by armvla's
    own ``run_episode`` (same loop, same success and lift measures) without recordings.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process owns Ctrl-C
    torch.set_num_threads(1)
    from policy import rollout
    from sim.registry import make_env

    config = act_config(CAMERAS, image_size, STATE_DIM, ACTION_DIM)
    policy, pre, post = build_act(config, act_stats(stats[OBS_STATE], stats[ACTION], CAMERAS))
    load_act_weights(policy, Path(weights))
    rollout._policy = ACTAdapter(policy, pre, post)
    rollout._env = make_env(
        task_name, image_size=image_size, cameras=CAMERAS, max_episode_steps=max_steps
    )
    rollout._failures_recorded = SimpleNamespace(value=0)  # no failure recordings
    rollout._record_failures = 0


def evaluate_act(args, ds: DatasetInfo, trained: dict, seeds: list[int], out: Path) -> dict:
    """Plays ``seeds`` with the trained ACT in ``--workers`` spawned processes; writes a report."""
    from tqdm import tqdm

    max_steps = resolve_task(ds.task).max_episode_steps
    jobs = [EpisodeJob(i, seed) for i, seed in enumerate(seeds)]
    workers = min(args.workers, len(jobs))
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(
        workers,
        initializer=_init_act_worker,
        initargs=(str(trained["weights"]), trained["stats"], ds.image_size, ds.task, max_steps),
    )
    results = []
    bar = tqdm(total=len(jobs), desc=f"eval ACT {ds.task}", unit="ep")
    try:
        for result in pool.imap(run_episode, jobs):
            result.pop("frames")
            results.append(result)
            wins = sum(r["success"] for r in results)
            bar.set_postfix(success=f"{wins}/{len(results)}")
            bar.update(1)
    finally:
        bar.close()
        pool.terminate()
        pool.join()
    report = {
        "policy": str(trained["weights"]),
        "task": ds.task,
        **build_report(results, language_probe=False),
        "seeds": seeds,
        "max_steps": max_steps,
        "workers": workers,
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "episode_results": results,
    }
    path = out / "eval" / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"ACT success {report['successes']}/{report['episodes']} on {ds.task}; report: {path}")
    return {**report, "path": str(path)}


def run_act(args, ds: DatasetInfo, seeds: list[int]) -> dict:
    out = args.out / "act"
    out.mkdir(parents=True, exist_ok=True)
    trained = train_act(args, ds, out)
    gc.collect()  # the training frames and optimizer state are no longer needed
    report = evaluate_act(args, ds, trained, seeds, out)
    return {
        "successes": report["successes"],
        "episodes": report["episodes"],
        "steps": trained["steps"],
        "train_time_s": trained["train_time_s"],
        "batch_size": trained["batch_size"],
        "wrong_cube_episodes": report["wrong_cube_episodes"],
        "checkpoint": str(trained["weights"]),
        "report": report["path"],
    }


# ---------------------------------------------------------------------------- main
def _rate(result: dict | None) -> tuple[float | None, list[float] | None]:
    if result is None:
        return None, None
    low, high = wilson_interval(result["successes"], result["episodes"])
    return result["successes"] / result["episodes"], [low, high]


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = dataset_info(args.dataset)
    max_steps = resolve_task(ds.task).max_episode_steps
    seeds = list(range(args.seed_start, args.seed_start + args.episodes))
    check_heldout(seeds, ds.root)  # before any training: eval scenes must be unseen
    t_start = time.perf_counter()

    armvla = None if args.skip_armvla else run_armvla(args, ds)
    act = None if args.skip_act else run_act(args, ds, seeds)

    a_rate, a_ci = _rate(armvla)
    c_rate, c_ci = _rate(act)
    both = armvla is not None and act is not None
    diff = round(100 * (a_rate - c_rate), 1) if both else None

    print(
        f"learning benchmark: armvla vs lerobot {lerobot.__version__} ACT, same dataset, same "
        f"{args.budget_s:g} s training budget each, torch {torch.__version__} on "
        f"{args.threads} thread(s)"
    )
    print(
        f"dataset: {ds.root} ({ds.episodes} episodes, {ds.frames} frames, "
        f"{ds.image_size}x{ds.image_size} cameras {', '.join(CAMERAS)}); task {ds.task}"
    )
    print(f"timing: {TIMING_NOTE}")
    print(
        f"eval: {args.episodes} held-out episodes, seeds {seeds[0]}..{seeds[-1]}, at most "
        f"{max_steps} steps, success = the env's info['success']; 95% Wilson intervals"
    )

    def cells(result, rate, ci):
        if result is None:
            return ["skipped"] * 5
        return [
            f"{result['steps']}",
            f"{result['batch_size']}",
            f"{result['train_time_s']:.0f}",
            f"{result['successes']}/{result['episodes']} ({100 * rate:.0f}%)",
            f"[{100 * ci[0]:.0f}%, {100 * ci[1]:.0f}%]",
        ]

    labels = ["optimizer steps", "batch size", "training time (s)", "success", "95% CI"]
    rows = [("", "armvla", "lerobot ACT")]
    rows += list(zip(labels, cells(armvla, a_rate, a_ci), cells(act, c_rate, c_ci), strict=True))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for label, a, b in rows:
        print(f"{label:<{w0}}  {a:>{w1}}  {b:>16}")
    if diff is not None:
        print(f"difference: {diff:+.1f} points (armvla - ACT)")
    print(f"notes: ACT takes no instruction; total wall time {time.perf_counter() - t_start:.0f} s")

    result = {
        "armvla_success": a_rate,
        "act_success": c_rate,
        "difference_points": diff,
        "armvla_ci": a_ci,
        "act_ci": c_ci,
        "armvla_successes": armvla["successes"] if armvla else None,
        "act_successes": act["successes"] if act else None,
        "budget_s": args.budget_s,
        "episodes": args.episodes,
        "seed_start": args.seed_start,
        "dataset": str(ds.root),
        "dataset_episodes": ds.episodes,
        "dataset_frames": ds.frames,
        "task": ds.task,
        "image_size": ds.image_size,
        "max_steps": max_steps,
        "armvla_steps": armvla["steps"] if armvla else None,
        "act_steps": act["steps"] if act else None,
        "armvla_batch_size": armvla["batch_size"] if armvla else None,
        "act_batch_size": args.act_batch_size,
        "armvla_train_time_s": round(armvla["train_time_s"], 1) if armvla else None,
        "act_train_time_s": round(act["train_time_s"], 1) if act else None,
        "armvla_wrong_cube_episodes": armvla["wrong_cube_episodes"] if armvla else None,
        "act_wrong_cube_episodes": act["wrong_cube_episodes"] if act else None,
        "armvla_checkpoint": armvla["checkpoint"] if armvla else None,
        "act_weights": act["checkpoint"] if act else None,
        "armvla_report": armvla["report"] if armvla else None,
        "act_report": act["report"] if act else None,
        "timing": TIMING_NOTE,
        "threads": args.threads,
        "workers": args.workers,
        "torch": torch.__version__,
        "lerobot": lerobot.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
