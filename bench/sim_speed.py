"""How fast the sim runs: env steps/s of PickColorCube-v1 with its cameras, next to its peers.

Measured in one process, side by side in the same run:

* env steps/s: the env as demos and evaluation use it (both cameras, CPU-tuned rendering);
* physics-only: the same env with no cameras (control ticks/s: physics substeps, reward,
  state observation), and raw ``mujoco.mj_step`` calls/s on the same model;
* default rendering: the same env with MuJoCo's default render settings (shadows, 4x MSAA),
  the reference the CPU tuning is judged against.

Actions are an expert demo (pick, then hold) recorded before timing and replayed, so the arm
moves as in real data but the expert's IK time is not counted. The last line printed is one
JSON object for scripts. Run with ``MUJOCO_GL=egl``.

    MUJOCO_GL=egl python bench/sim_speed.py --steps 300 --image-size 96
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import sim  # noqa: E402
from sim.expert import PickCubeExpert  # noqa: E402

TASK = "PickColorCube-v1"
CAMERAS = ("front", "wrist")
CONTROL_HZ = 30.0
TARGET_ENV_STEPS_PER_S = 150.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=300, help="timed env steps per configuration (default 300)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=96,
        help="square camera image size in pixels, for both cameras (default 96)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=30,
        help="untimed env steps before each measurement: first renders compile shaders and "
        "fill caches (default 30)",
    )
    parser.add_argument("--seed", type=int, default=0, help="env and expert seed (default 0)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.image_size < 16:
        parser.error("need --steps >= 1, --warmup >= 0 and --image-size >= 16")
    return args


def make(image_size: int, cameras=CAMERAS, fast_render: bool = True):
    return sim.make_env(
        TASK,
        image_size=image_size,
        cameras=cameras,
        control_hz=CONTROL_HZ,
        fast_render=fast_render,
    )


def record_expert_actions(n: int, seed: int) -> np.ndarray:
    """[n, 6] actions of one expert episode; after the pick the expert keeps holding the cube.

    Stepping continues past success and the time limit: only the action sequence matters here.
    """
    env = make(image_size=16, cameras=())  # physics only: images do not change the trajectory
    env_base = env.unwrapped
    obs, _ = env_base.reset(seed=seed)
    expert = PickCubeExpert(env_base, seed=seed)
    actions = []
    for _ in range(n):
        actions.append(expert.act(obs))
        obs, *_ = env_base.step(actions[-1])
    env.close()
    return np.array(actions)


def time_env(env, actions: np.ndarray, warmup: int, seed: int) -> float:
    """Env steps per second over ``actions[warmup:]`` after an untimed warm-up."""
    env.reset(seed=seed)
    for action in actions[:warmup]:
        env.step(action)
    timed = actions[warmup:]
    start = time.perf_counter()
    for action in timed:
        env.step(action)
    return len(timed) / (time.perf_counter() - start)


def time_mj_step(env, n_steps: int) -> float:
    """Raw ``mj_step`` calls per second on the env's model, with the arm holding its targets."""
    model, data = env.unwrapped.model, env.unwrapped.data
    for _ in range(100):
        mujoco.mj_step(model, data)
    start = time.perf_counter()
    for _ in range(n_steps):
        mujoco.mj_step(model, data)
    return n_steps / (time.perf_counter() - start)


def main(argv=None) -> dict:
    args = parse_args(argv)
    actions = record_expert_actions(args.warmup + args.steps, args.seed)

    env = make(args.image_size)
    env_sps = time_env(env, actions, args.warmup, args.seed)
    env.close()

    physics_env = make(args.image_size, cameras=())
    physics_sps = time_env(physics_env, actions, args.warmup, args.seed)
    n_substeps = physics_env.unwrapped.n_substeps
    mj_step_ps = time_mj_step(physics_env, args.steps * n_substeps)
    physics_env.close()

    default_env = make(args.image_size, fast_render=False)
    default_sps = time_env(default_env, actions, args.warmup, args.seed)
    default_env.close()

    ratio = env_sps / default_sps
    size = f"{args.image_size}x{args.image_size}"
    rows = [
        (f"env, {len(CAMERAS)} cameras {size}, CPU-tuned rendering", env_sps, "env steps/s"),
        ("env, no cameras (physics + reward only)", physics_sps, "control ticks/s"),
        (f"  raw mj_step ({n_substeps} per control tick)", mj_step_ps, "mj_step/s"),
        (
            f"env, {len(CAMERAS)} cameras {size}, MuJoCo default rendering",
            default_sps,
            "env steps/s",
        ),
    ]
    print(
        f"{TASK} at {CONTROL_HZ:g} Hz, {args.steps} timed steps after {args.warmup} warm-up, "
        f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}, mujoco {mujoco.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print("actions: a recorded expert episode (pick, then hold), replayed; expert IK not timed")
    width = max(len(r[0]) for r in rows)
    print(f"{'configuration':<{width}}  {'rate':>10}  unit")
    for label, value, unit in rows:
        print(f"{label:<{width}}  {value:>10.1f}  {unit}")
    print(f"CPU-tuned vs default rendering: {ratio:.1f}x faster")
    verdict = "meets" if env_sps >= TARGET_ENV_STEPS_PER_S else "MISSES"
    print(f"target {TARGET_ENV_STEPS_PER_S:g} env steps/s: {verdict}")

    result = {
        "task": TASK,
        "env_steps_per_s": round(env_sps, 1),
        "physics_steps_per_s": round(physics_sps, 1),
        "mj_step_per_s": round(mj_step_ps, 1),
        "default_render_env_steps_per_s": round(default_sps, 1),
        "fast_vs_default_render_ratio": round(ratio, 2),
        "image_size": [args.image_size, args.image_size],
        "cameras": list(CAMERAS),
        "control_hz": CONTROL_HZ,
        "substeps_per_control_tick": n_substeps,
        "timed_steps": args.steps,
        "actions": "replayed expert episode",
        "target_env_steps_per_s": TARGET_ENV_STEPS_PER_S,
        "meets_target": env_sps >= TARGET_ENV_STEPS_PER_S,
        # Importing torch costs seconds and memory: the sim path should not need it.
        "torch_free": "torch" not in sys.modules,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
