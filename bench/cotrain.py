"""Sim + real co-training, measured: four policies on equal step budgets, all evaluated in the
real domain (the twin's world, `--task.domain=real`) and in the sim, gated, on held-out seeds.

* ``real_only``: the real demos alone: 25 PickColorCube-v1 plus 50 of each deformable family,
  recorded through `armvla record` on `armvla twin --task=<family>` with the scripted operator
  (``--teleop.type=armvla_twin_operator``), exactly as demos are recorded on an arm;
* ``sim_only``: sim PickColorCube-v1 demos from `armvla generate`, no randomization;
* ``sim_rand``: as many sim demos, with domain randomization (camera, light, colours, objects,
  actuators; sim/randomize.py defaults);
* ``mixed``: the randomized sim demos plus all the real demos, weighted (``--real-weight`` of the
  samples come from the real datasets, split equally among the families), normalized per
  source (``--mixed-normalization=shared`` pools the statistics instead; measured no better,
  docs/benchmarks.md).

Sim demos are rigid (PickColorCube); the deformable families exist only as real demos, as in the
product's recipe. Each stage keeps what it made under ``--out`` and is skipped when its result
is there (datasets recorded once and reused, trainings resumed from their last checkpoint, evals
cached by policy, family, domain, perturbation, seeds and episodes), so the bench can be run in
parts (``--stages``) and across sessions on one machine. Evaluation seeds start at
``--seed-start`` (3 000 000), far from every dataset's seeds. With ``--perturbations`` the
``mixed`` policy is also evaluated in the sim under each of the issue's perturbations.

Slow (hours on 2 cores): run on demand, on an otherwise idle machine, one stage at a time::

    MUJOCO_GL=egl .venv/bin/python bench/cotrain.py --stages record,generate
    MUJOCO_GL=egl .venv/bin/python bench/cotrain.py --stages train,eval --perturbations

It prints a table of success per family and policy with 95 % (Wilson) intervals; the last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.randomize import DomainRandomization  # noqa: E402

PICK = "PickColorCube-v1"
# Family -> real demos recorded through the twin (the counts).
REAL_DEMOS = {PICK: 25, "RopeToMark-v1": 50, "TowelLiftCorner-v1": 50, "TowelToMark-v1": 50}
POLICIES = ("real_only", "sim_only", "sim_rand", "mixed")
STAGES = ("record", "generate", "train", "eval")
RANDOMIZE = DomainRandomization(
    camera=True, lighting=True, colors=True, objects=True, actuators=True
)
# The perturbations, each fixed at one value (docs/tasks-and-eval.md).
PERTURBATIONS = {
    "camera_2cm_closer_1cm_up": DomainRandomization(
        camera=True,
        camera_offset_m=[-0.02, 0.0, 0.01],
        camera_shift_m=[0.0, 0.0],
        camera_turn_deg=[0.0, 0.0],
        camera_fov_deg=[0.0, 0.0],
    ),
    "fov_56deg": DomainRandomization(
        camera=True,
        camera_shift_m=[0.0, 0.0],
        camera_turn_deg=[0.0, 0.0],
        camera_fov_deg=[6.0, 6.0],
    ),
    "warm_dim_light_dark_table": DomainRandomization(
        lighting=True,
        light_intensity=[0.6, 0.6],
        light_warmth=[0.2, 0.2],
        light_tilt_deg=[0.0, 0.0],
        colors=True,
        table_brightness=[0.6, 0.6],
        table_tint=[1.0, 1.0],
        object_color_jitter=[0.0, 0.0],
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=Path("outputs/cotrain"), help="where everything goes"
    )
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {STAGES}")
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma list of {POLICIES}")
    p.add_argument("--sim-episodes", type=int, default=800, help="sim demos per sim dataset")
    p.add_argument("--steps", type=int, default=10000, help="optimizer steps of every policy")
    p.add_argument("--real-weight", type=float, default=0.5, help="real share of mixed samples")
    p.add_argument(
        "--mixed-weights",
        default="",
        help="the mixed policy's weight per dataset, overriding --real-weight: a comma list of "
        f"name=weight with names 'sim' and {list(REAL_DEMOS)} (each name once, weights > 0 are "
        "normalized to sum 1; a name left out gets weight 0 and is not trained on), e.g. "
        "'sim=0.42,PickColorCube-v1=0.03,RopeToMark-v1=0.2,TowelLiftCorner-v1=0.15,"
        "TowelToMark-v1=0.2'",
    )
    p.add_argument(
        "--mixed-name",
        default="mixed",
        help="folder (under --out/train) and result key of the mixed policy, so a mixture "
        "with other weights or statistics trains and reports beside the default one",
    )
    p.add_argument(
        "--mixed-normalization",
        choices=("shared", "per_source"),
        default="per_source",
        help="mixed policy's state/action statistics: per source (sim, real) or pooled over both",
    )
    p.add_argument("--episodes", type=int, default=50, help="eval episodes per family and domain")
    p.add_argument("--seed-start", type=int, default=3_000_000, help="first eval seed")
    p.add_argument("--workers", type=int, default=0, help="eval/generate workers (0: per core)")
    p.add_argument("--perturbations", action="store_true", help="also eval mixed under them")
    p.add_argument("--reset-time-s", type=float, default=3.0, help="time between recorded episodes")
    p.add_argument(
        "--real-scale", type=float, default=1.0, help="factor on the real demo counts (smoke runs)"
    )
    args = p.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    args.policies = [s for s in args.policies.split(",") if s]
    for name, allowed, given in (
        ("stage", STAGES, args.stages),
        ("policy", POLICIES, args.policies),
    ):
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            p.error(f"unknown {name} {unknown}; choose from {allowed}")
    if not 0 < args.real_weight < 1:
        p.error("--real-weight must be in (0, 1)")
    try:
        args.mixed_weights = parse_weights(args.mixed_weights)
    except ValueError as e:
        p.error(f"--mixed-weights: {e}")
    return args


def parse_weights(text: str) -> dict[str, float] | None:
    """'sim=0.4,RopeToMark-v1=0.2' -> {'sim': 0.4, 'RopeToMark-v1': 0.2}; '' -> None."""
    if not text.strip():
        return None
    names = ("sim", *REAL_DEMOS)
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise ValueError(f"{item!r} is not name=weight with a name from {list(names)}")
        if name in weights:
            raise ValueError(f"{name!r} is given twice")
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: the weight is not a number") from None
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"{item!r}: a weight must be a finite number >= 0")
        weights[name] = w
    if weights.get("sim", 0) <= 0 or not any(weights.get(f, 0) > 0 for f in REAL_DEMOS):
        raise ValueError("the mixed policy needs weight > 0 on 'sim' and on a real dataset")
    return weights


# ---------------------------------------------------------------------------- data
def _episodes(root: Path) -> int:
    info = root / "meta" / "info.json"
    return json.loads(info.read_text())["total_episodes"] if info.is_file() else 0


def real_root(out: Path, family: str) -> Path:
    return out / "real" / family


def record_real(out: Path, family: str, n: int, reset_time_s: float, idle: int = 3) -> dict:
    """Records demos of ``family`` through the twin until ``n`` are there, in sessions: a
    session the supervisor stops (loop overruns on a busy machine stop the arm, as they should)
    is followed by a fresh twin and another session, until ``idle`` sessions in a row saved
    nothing."""
    result: dict = {"family": family, "sessions": []}
    fruitless = 0
    while fruitless < idle and _episodes(real_root(out, family)) < n:
        session = _record_session(out, family, n, reset_time_s)
        result["sessions"].append(session)
        fruitless = 0 if session["recorded"] else fruitless + 1
    result["episodes"] = _episodes(real_root(out, family))
    return result


def _record_session(out: Path, family: str, n: int, reset_time_s: float) -> dict:
    """One `armvla record` session on a fresh twin, appending to what is there."""
    from lerobot.robots.so_follower import SO101FollowerConfig

    from real.feetech_twin.process import TwinProcess
    from real.operator import TwinOperatorConfig
    from real.record import RecordConfig, RecordDatasetConfig, record
    from sim.registry import resolve_task

    root = real_root(out, family)
    have = _episodes(root)
    if root.exists() and have == 0:
        import shutil

        shutil.rmtree(root)  # a session killed before its first episode committed
    logs = out / "record_logs" / family
    earlier = len([d for d in logs.iterdir() if d.is_dir()]) if logs.is_dir() else 0
    robot_id = "cotrain_twin"
    twin = TwinProcess(out / "calib", robot_id=robot_id, extra_args=[f"--task={family}"])
    try:
        t0 = time.monotonic()
        summary = record(
            RecordConfig(
                robot=SO101FollowerConfig(
                    port=twin.port, id=robot_id, calibration_dir=twin.calibration_dir
                ),
                # Scene seeds from 0, each episode its own (a later session starts 10 000
                # further on per earlier session, past any seed a re-record used), never the
                # eval's (3 000 000+).
                teleop=TwinOperatorConfig(port=twin.port, seed=have + 10_000 * earlier),
                dataset=RecordDatasetConfig(
                    root=root,
                    num_episodes=n - have,
                    episode_time_s=resolve_task(family).max_episode_steps / 30 + 3,
                    reset_time_s=reset_time_s,
                ),
                resume=have > 0,
                out=logs,
            )
        )
    finally:
        twin.close()
    return {
        "end": summary.get("end"),
        "recorded": summary.get("episodes_saved", 0),
        "rerecorded": summary.get("episodes_rerecorded", 0),
        "wall_s": round(time.monotonic() - t0, 1),
        "protective_ticks": summary.get("safety", {}).get("protective"),
        "ticks": summary.get("ticks"),
    }


def sim_root(out: Path, randomized: bool) -> Path:
    return out / "sim" / ("pick_randomized" if randomized else "pick")


def generate_sim(out: Path, randomized: bool, n: int, workers: int) -> dict:
    from sim.generate import GenerateConfig, TaskConfig, generate

    root = sim_root(out, randomized)
    have = _episodes(root)
    if have >= 0.95 * n:  # the expert solves ~99 % of the scenes it runs
        return {"root": str(root), "episodes": have, "generated": 0}
    task = TaskConfig(name=PICK, randomize=RANDOMIZE if randomized else DomainRandomization())
    t0 = time.monotonic()
    generate(
        GenerateConfig(
            task=task,
            episodes=n - have,
            out=root,
            workers=workers,
            recovery_prob=0.2,
            resume=have > 0,
            overwrite=have == 0,
        )
    )
    return {"root": str(root), "episodes": _episodes(root), "wall_s": round(time.monotonic() - t0)}


# ---------------------------------------------------------------------------- training
def mixture(
    out: Path, policy: str, real_weight: float, weights: dict[str, float] | None = None
) -> tuple[list[Path], list[float]]:
    reals = [real_root(out, f) for f in REAL_DEMOS]
    if policy == "real_only":
        return reals, [1.0] * len(reals)
    if policy == "sim_only":
        return [sim_root(out, False)], [1.0]
    if policy == "sim_rand":
        return [sim_root(out, True)], [1.0]
    if weights is None:
        share = real_weight / len(reals)
        return [sim_root(out, True), *reals], [1.0 - real_weight, *([share] * len(reals))]
    named = [("sim", sim_root(out, True)), *zip(REAL_DEMOS, reals, strict=True)]
    kept = [(root, weights[n]) for n, root in named if weights.get(n, 0) > 0]
    total = sum(w for _, w in kept)
    return [r for r, _ in kept], [w / total for _, w in kept]


def checkpoint(out: Path, policy: str) -> Path:
    return out / "train" / policy / "checkpoints" / "last"


def trained_steps(out: Path, policy: str) -> int:
    cfg = checkpoint(out, policy) / "config.json"
    if not cfg.is_file():
        return 0
    return int(json.loads(cfg.read_text()).get("_extra", {}).get("step", 0))


def run_name(args, policy: str) -> str:
    """The folder and result key of ``policy``: ``--mixed-name`` for the mixed one."""
    return args.mixed_name if policy == "mixed" else policy


def train_policy(out: Path, policy: str, args) -> dict:
    from policy.train import DataConfig, TrainConfig, train

    name, steps = run_name(args, policy), args.steps
    done = trained_steps(out, name)
    if done >= steps:
        return {"policy": name, "steps": done, "trained": 0}
    roots, weights = mixture(out, policy, args.real_weight, args.mixed_weights)
    # The same either way for one source.
    normalization = args.mixed_normalization if policy == "mixed" else "per_source"
    t0 = time.monotonic()
    train(
        TrainConfig(
            data=DataConfig(
                roots=roots,
                weights=weights,
                normalization=normalization,
            ),
            out=out / "train" / name,
            steps=steps,
            resume=done > 0,
        )
    )
    return {
        "policy": name,
        "weights": dict(zip(map(str, roots), weights, strict=True)),
        "steps": trained_steps(out, name),
        "wall_s": round(time.monotonic() - t0),
    }


# ---------------------------------------------------------------------------- evaluation
def eval_policy(
    out: Path, policy: str, family: str, domain: str, args, perturbation: str | None = None
) -> dict:
    from policy.eval import EvalConfig, evaluate
    from sim.generate import TaskConfig

    cache = out / "results.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    steps = trained_steps(out, policy)
    # Kept per step budget, so a policy trained further keeps its earlier figures beside.
    key = f"{policy}|{family}|{domain}|{perturbation or 'none'}|{steps}"
    want = {"episodes": args.episodes, "seed": args.seed_start, "steps": steps}
    if key in results and all(results[key].get(k) == v for k, v in want.items()):
        return results[key]
    randomize = PERTURBATIONS[perturbation] if perturbation else DomainRandomization()
    report = evaluate(
        EvalConfig(
            policy=str(checkpoint(out, policy)),
            task=TaskConfig(name=family, domain=domain, randomize=randomize),
            episodes=args.episodes,
            seed=args.seed_start,
            workers=args.workers,
            out=out / "eval" / key.replace("|", "_"),
            record_first=0,
            record_failures=3,
        )
    )
    results[key] = {
        **want,
        "successes": report["successes"],
        "success_rate": report["success_rate"],
        "ci95": [round(report["ci_low"], 3), round(report["ci_high"], 3)],  # Wilson, 95 %
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(results, indent=2))
    return results[key]


def _cell(c: dict | None) -> str:
    if c is None:
        return f"{'-':>22}"
    lo, hi = c["ci95"]
    return f"{c['successes']:>4}/{c['episodes']:<3} [{lo:.2f}, {hi:.2f}]"


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"config": {k: str(v) for k, v in vars(args).items()}}
    if "record" in args.stages:
        log["record"] = [
            record_real(out, family, max(1, round(n * args.real_scale)), args.reset_time_s)
            for family, n in REAL_DEMOS.items()
        ]
        print(json.dumps(log["record"]), flush=True)
    if "generate" in args.stages:
        log["generate"] = [
            generate_sim(out, randomized, args.sim_episodes, args.workers)
            for randomized in (False, True)
        ]
        print(json.dumps(log["generate"]), flush=True)
    if "train" in args.stages:
        log["train"] = [train_policy(out, p, args) for p in args.policies]
        print(json.dumps(log["train"]), flush=True)
    table: dict = {}
    if "eval" in args.stages:
        for p in args.policies:
            name = run_name(args, p)
            if trained_steps(out, name) == 0:
                continue
            cells = {f"real/{f}": eval_policy(out, name, f, "real", args) for f in REAL_DEMOS}
            cells[f"sim/{PICK}"] = eval_policy(out, name, PICK, "sim", args)
            if args.perturbations and p == "mixed":
                for pert in PERTURBATIONS:
                    cells[f"sim/{PICK}/{pert}"] = eval_policy(out, name, PICK, "sim", args, pert)
            table[name] = cells
        rows = sorted({c for cells in table.values() for c in cells})
        print(f"\n{'domain/family (95% CI)':<52}" + "".join(f"{p:>24}" for p in table))
        for r in rows:
            print(f"{r:<52}" + "".join(f"{_cell(cells.get(r)):>24}" for cells in table.values()))
        log["success"] = {
            p: {
                c: {"k": v["successes"], "n": v["episodes"], "ci95": v["ci95"]}
                for c, v in cells.items()
            }
            for p, cells in table.items()
        }
    (out / "cotrain_report.json").write_text(json.dumps(log, indent=2, default=str))
    result = {"bench": "cotrain", "steps": args.steps, "episodes": args.episodes}
    result["success_rate"] = {
        p: {c: round(v["success_rate"], 3) for c, v in cells.items()} for p, cells in table.items()
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
