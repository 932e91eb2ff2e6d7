"""``armvla train``: LeRobotDataset(s) in, policy checkpoints out.

Built on HF accelerate: the same command trains on one CPU, one GPU, or many
(``accelerate launch --multi_gpu --num_processes N -m policy.train ...``; on a machine without
GPUs that starts N CPU processes, as does ``accelerate launch --cpu --num_processes N``); each
process draws its own batches from the in-memory mixture and accelerate averages the gradients. Checkpoints are plain folders
(``config.json`` + ``model.safetensors`` + ``stats.json``) that ``armvla eval --policy=<folder>``
loads; ``training_state.safetensors`` next to them lets ``--resume=true`` continue exactly.

The learning-rate schedule follows whichever runs out first, the step budget or the wall-clock
budget (``--time_budget_s``), so a time-boxed run still anneals properly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from policy.checkpoint import save_policy
from policy.config import PolicyConfig, preset
from policy.normalize import INSTRUCTION, instruction_stats

LAST = "last"
NORMALIZATIONS = ("per_source", "shared")


@dataclass
class DataConfig:
    # LeRobotDataset folders to train on (made by `armvla generate` or `armvla record`).
    roots: list[Path] = field(default_factory=lambda: [Path("outputs/datasets/pick_color_cube")])
    # Mixture weight per dataset (same order as roots); default: equal weights.
    weights: list[float] | None = None
    # Normalization statistics of state and action: "per_source" (each data source, sim and
    # real, its own: for an arm whose calibration differs from the sim's) or "shared" (every
    # source gets the statistics of all frames pooled, so a motion learned from one source
    # means the same joint angles in the other: co-training on an arm calibrated like the sim).
    normalization: str = "per_source"

    def __post_init__(self):
        self.roots = [Path(r) for r in self.roots]
        if not self.roots:
            raise ValueError("--data.roots needs at least one dataset folder")
        if self.weights is not None:
            if len(self.weights) != len(self.roots):
                raise ValueError(
                    f"--data.weights has {len(self.weights)} values for {len(self.roots)} roots"
                )
            if min(self.weights) <= 0:
                raise ValueError("--data.weights must be positive")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"--data.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    # Named policy preset the options below start from: default, debug or flow.
    preset: str = "default"
    # Policy options (e.g. --policy.d_model=256); applied on top of the preset.
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Output folder: checkpoints/<step>/, checkpoints/last/, tensorboard logs.
    out: Path = Path("outputs/train/pick_color_cube")
    # Optimizer steps (per process).
    steps: int = 4000
    # Stop after this many seconds of training even if steps remain (None = no limit).
    time_budget_s: float | None = None
    # Samples per optimizer step (per process).
    batch_size: int = 64
    # Peak AdamW learning rate; it warms up linearly, then follows a cosine down to a tenth.
    lr: float = 3e-4
    # AdamW weight decay.
    weight_decay: float = 1e-4
    # Steps of linear learning-rate warmup.
    warmup_steps: int = 200
    # Clip the gradient's global norm to this value.
    grad_clip: float = 1.0
    # Save a checkpoint every N steps (and always at the end).
    save_every: int = 1000
    # Log loss, learning rate and throughput every N steps (progress bar, tensorboard, wandb).
    log_every: int = 25
    # Seed of the model's initialization, data order and augmentation.
    seed: int = 0
    # Continue from <out>/checkpoints/last (same config required).
    resume: bool = False
    # Replace an existing <out> instead of refusing.
    overwrite: bool = False
    # Torch CPU threads (0 = torch's default).
    threads: int = 0
    # Also log to Weights & Biases when wandb is installed.
    wandb: bool = False

    def __post_init__(self):
        self.out = Path(self.out)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("--steps and --batch_size must be >= 1")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other; pick one")


def resolve_policy_config(cfg: TrainConfig) -> PolicyConfig:
    """The preset with every option the user changed from PolicyConfig's defaults applied."""
    base = preset(cfg.preset)
    defaults = PolicyConfig()
    changes = {}
    for f in dataclasses.fields(PolicyConfig):
        value = getattr(cfg.policy, f.name)
        if value != getattr(defaults, f.name):
            changes[f.name] = value
    return dataclasses.replace(base, **changes)


def _lr_factor(step: int, elapsed: float, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = step / cfg.steps
    if cfg.time_budget_s:
        progress = max(progress, elapsed / cfg.time_budget_s)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(cfg: TrainConfig) -> Path:
    """Trains a policy; returns the folder of the final checkpoint."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from policy.checkpoint import build_policy
    from policy.data import MixtureSampler, check_mixture, load_dataset
    from policy.model import count_parameters
    from policy.train_state import load_training_state

    policy_cfg = resolve_policy_config(cfg)
    check_mixture(cfg.data.roots, policy_cfg.cameras)  # before any output or decoding
    ckpt_dir = cfg.out / "checkpoints"
    _prepare_out(cfg, ckpt_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    log_with = ["tensorboard"] + (["wandb"] if cfg.wandb and _has("wandb") else [])
    acc = Accelerator(cpu=not torch.cuda.is_available(), log_with=log_with, project_dir=cfg.out)
    set_seed(cfg.seed + acc.process_index)
    weights = cfg.data.weights or [1.0] * len(cfg.data.roots)
    datasets = [
        load_dataset(root, policy_cfg.cameras, policy_cfg.image_size, w)
        for root, w in zip(cfg.data.roots, weights, strict=True)
    ]
    sampler = MixtureSampler(
        datasets, policy_cfg.chunk_size, seed=cfg.seed + 1000 * acc.process_index
    )
    stats = sampler.stats(shared=cfg.data.normalization == "shared")

    stats[INSTRUCTION] = _instruction_stats(policy_cfg, sampler.task)
    policy = build_policy(policy_cfg, stats)
    decay, no_decay = [], []
    for name, p in policy.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "pos" in name or "readout" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    step, elapsed_before = 0, 0.0
    if cfg.resume:
        step, elapsed_before = load_training_state(ckpt_dir / LAST, policy, optimizer, sampler)
    policy, optimizer = acc.prepare(policy, optimizer)
    acc.init_trackers("armvla", config=_flat(cfg, policy_cfg))
    unwrapped = acc.unwrap_model(policy)
    if acc.is_main_process:
        print(
            f"training {policy_cfg.type} ({count_parameters(unwrapped) / 1e6:.2f} M trainable "
            f"params) on {sampler.num_frames} frames from {len(datasets)} dataset(s), "
            f"sources {sorted(k for k in stats if k != INSTRUCTION)}, {acc.num_processes} process(es) on {acc.device}"
        )

    policy.train()
    t0 = time.perf_counter()
    bar = tqdm(
        total=cfg.steps, initial=step, desc="train", unit="step", disable=not acc.is_main_process
    )
    last_log, samples_since = time.perf_counter(), 0
    while step < cfg.steps:
        elapsed = elapsed_before + time.perf_counter() - t0
        if cfg.time_budget_s and elapsed >= cfg.time_budget_s:
            break
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, elapsed, cfg)
        batch = _to_device(sampler.sample(cfg.batch_size), acc.device)
        loss, metrics = policy(batch)
        optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        if cfg.grad_clip:
            acc.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        samples_since += cfg.batch_size * acc.num_processes
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            rate = samples_since / max(now - last_log, 1e-9)
            last_log, samples_since = now, 0
            lr = optimizer.param_groups[0]["lr"]
            if cfg.time_budget_s:  # the bar's total: the steps the remaining time allows
                steps_per_s = rate / (cfg.batch_size * acc.num_processes)
                left = max(cfg.time_budget_s - elapsed, 0.0)
                bar.total = min(cfg.steps, step + int(left * steps_per_s))
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", samples_s=f"{rate:.0f}", lr=f"{lr:.1e}")
            acc.log(
                {"train/loss": metrics["loss"], "train/lr": lr, "train/samples_per_s": rate},
                step=step,
            )
        if step % cfg.save_every == 0 and step < cfg.steps:
            _save(
                acc,
                unwrapped,
                optimizer,
                sampler,
                ckpt_dir,
                step,
                elapsed_before + time.perf_counter() - t0,
            )
    bar.close()
    elapsed = elapsed_before + time.perf_counter() - t0
    final = _save(acc, unwrapped, optimizer, sampler, ckpt_dir, step, elapsed)
    acc.end_training()
    if acc.is_main_process:
        print(f"trained {step} steps in {elapsed:.0f} s; checkpoint: {final}")
    return final


def _instruction_stats(policy_cfg: PolicyConfig, tasks: list[str]) -> dict:
    from policy.language import InstructionEncoder

    distinct = sorted(set(tasks))
    encoder = InstructionEncoder(policy_cfg.language.model_path, policy_cfg.language.dim)
    return instruction_stats(encoder(distinct).numpy())


def _save(acc, policy, optimizer, sampler, ckpt_dir: Path, step: int, elapsed: float) -> Path:
    from policy.train_state import save_training_state

    acc.wait_for_everyone()
    folder = ckpt_dir / f"{step:06d}"
    if acc.is_main_process:
        save_policy(policy, folder, extra={"step": step, "train_time_s": round(elapsed, 1)})
        save_training_state(folder, optimizer, sampler, step, elapsed)
        last = ckpt_dir / LAST
        tmp = ckpt_dir / f".{LAST}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        shutil.rmtree(last, ignore_errors=True)
        tmp.rename(last)
    acc.wait_for_everyone()
    return folder


def _prepare_out(cfg: TrainConfig, ckpt_dir: Path) -> None:
    if cfg.resume:
        if not (ckpt_dir / LAST / "config.json").is_file():
            raise FileNotFoundError(
                f"--resume=true but {ckpt_dir / LAST} holds no checkpoint; train without --resume first"
            )
        return
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        if not cfg.overwrite:
            raise FileExistsError(
                f"{cfg.out} already has checkpoints; pass --resume=true to continue or "
                f"--overwrite=true to start over"
            )
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            shutil.rmtree(ckpt_dir)
    cfg.out.mkdir(parents=True, exist_ok=True)


def _to_device(batch: dict, device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def _flat(cfg: TrainConfig, policy_cfg: PolicyConfig) -> dict:
    out = {
        k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, (int, float, str, bool))
    }
    out.update(
        {
            f"policy.{k}": v
            for k, v in policy_cfg.to_dict().items()
            if isinstance(v, (int, float, str, bool))
        }
    )
    return out


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _requested_cpu_processes() -> int:
    """N when ``accelerate launch --cpu --num_processes N`` started this single process.

    accelerate (1.15) runs multi-process CPU training only under MPI (``--mpirun_hostfile``);
    without it, its simple launcher starts ONE process and only leaves ``ACCELERATE_USE_CPU`` and
    ``MASTER_ADDR`` behind. Then the requested N is read from the launcher's command line (our
    parent) so that the documented command really trains on N processes.
    """
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1") or "MASTER_ADDR" not in env:
        return 1
    if any(k in env for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")):
        return 1  # already one of several processes (torchrun, MPI)
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return 1
    for i, arg in enumerate(argv):
        if arg in ("--num_processes", "--num-processes") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(("--num_processes=", "--num-processes=")):
            value = arg.split("=", 1)[1]
        else:
            continue
        return int(value) if value.isdigit() else 1
    return 1


def _spawn_cpu_processes(n: int) -> None:
    """Runs this module in ``n`` CPU processes with torch's elastic launcher (as torchrun)."""
    from torch.distributed.run import get_args_parser, run

    print(f"accelerate --cpu: starting {n} training processes (torch.distributed, gloo)")
    args = get_args_parser().parse_args(
        [
            f"--nproc_per_node={n}",
            f"--master_addr={os.environ['MASTER_ADDR']}",
            f"--master_port={os.environ.get('MASTER_PORT', '29500')}",
            "--module",
            "policy.train",
            *sys.argv[1:],
        ]
    )
    run(args)


def main() -> None:
    """Entry for ``accelerate launch -m policy.train --data.roots=[...] ...``."""
    import draccus

    from policy.cli import USER_ERRORS

    n = _requested_cpu_processes()
    if n > 1:
        _spawn_cpu_processes(n)
        return
    cfg = draccus.parse(config_class=TrainConfig, args=sys.argv[1:], prog="policy.train")
    try:
        train(cfg)
    except USER_ERRORS as err:
        print(f"train: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
