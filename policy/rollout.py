"""Closed-loop policy rollouts in worker processes, for ``armvla eval``.

Each worker process loads the policy once (one torch thread, so workers do not fight over
cores) and keeps one env; :func:`run_episode` then plays one episode per call and measures
what the report needs from the env's privileged state (which cubes got lifted).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import numpy as np

from data.keys import OBS_STATE, SOURCE_REAL, SOURCE_SIM, TASK, image_key
from data.workers import guarded_initializer, raise_if_setup_failed

# A cube counts as lifted above 2 cm: the threshold the task itself uses for "the other cubes
# stay on the table", well above the millimetre settling jitter of a resting cube.
LIFT_THRESHOLD_M = 0.02


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to play: scene seed, optional target/instruction override."""

    index: int  # position in the run, from 0
    seed: int
    target: str | None = None  # None = the env samples it from the seed
    instruction: str | None = None  # None = the env's instruction for the target
    record: bool = False  # return frames even if the episode succeeds (first episodes)


_env = None
_policy = None
_source = SOURCE_SIM  # whose normalization statistics the policy uses here
_failures_recorded = None  # shared counter: failure recordings the main process has kept
_record_failures = 0


def inference_source(policy, domain: str, requested: str | None = None) -> str:
    """The normalization statistics a policy uses in a domain: ``requested`` when given (a
    user's ``--source``), else the real data's in the real domain when it was trained on some
    (as `armvla run` on an arm or the twin does), else the sim data's.

    Raises:
        ValueError: the policy has no statistics for ``requested``.
    """
    sources = list(policy.normalizer.sources)
    if requested is not None:
        if requested not in sources:
            raise ValueError(
                f"--source={requested}: the policy has normalization statistics for {sources} "
                "only; pass one of those or leave --source out"
            )
        return requested
    if domain == SOURCE_REAL and SOURCE_REAL in sources:
        return SOURCE_REAL
    return SOURCE_SIM if SOURCE_SIM in sources else sources[0]


@guarded_initializer
def init_worker(
    policy_path: str,
    task_name: str,
    image_size: int,
    cameras: tuple[str, ...],
    max_steps: int,
    failures_recorded,
    record_failures: int,
    env_kwargs: dict | None = None,
    source: str | None = None,
) -> None:
    """Pool initializer: loads the policy and makes the env once per worker process; the policy
    normalizes with ``source``'s statistics (None: :func:`inference_source` for the domain)."""
    # The main process owns Ctrl-C: it stops the pool and writes the partial report.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers.utils import logging as hf_logging

    from policy.checkpoint import load_policy
    from safety.gated_env import SafetyGateWrapper
    from sim.registry import make_env

    torch.set_num_threads(1)
    # Each worker's "Loading weights" bar would garble the eval progress bar, and any tqdm bar
    # in a worker creates a multiprocessing lock that pool.terminate() on Ctrl-C leaks.
    hf_logging.disable_progress_bar()
    global _env, _policy, _failures_recorded, _record_failures, _source
    _policy = load_policy(policy_path)
    _source = source or inference_source(_policy, (env_kwargs or {}).get("domain", "sim"))
    # Every command passes the safety gate, as on the arm (DESIGN.md decision 7).
    _env = SafetyGateWrapper(
        make_env(
            task_name,
            image_size=image_size,
            cameras=cameras,
            max_episode_steps=max_steps,
            **(env_kwargs or {}),
        )
    )
    _failures_recorded = failures_recorded
    _record_failures = record_failures


def run_episode(job: EpisodeJob) -> dict:
    """Plays one episode in this worker's env with this worker's policy.

    Returns a per-episode record (seed, instruction, target, success, length, lifted cubes,
    wrong_cube, the safety gate's interventions) and, under ``"frames"``, the episode's frames when the main process may record
    it (``job.record``, or a failure while the failure cap is not reached), else ``None``.
    """
    from policy.io import action_to_env, obs_to_batch

    raise_if_setup_failed()
    env, policy = _env, _policy
    options = {k: v for k, v in (("target", job.target), ("instruction", job.instruction)) if v}
    obs, info = env.reset(seed=job.seed, options=options)
    unwrapped = env.unwrapped
    target = info.get("target", job.target)
    policy.reset()
    # Seconds per step, for the recording's time axis.
    frames: dict = {
        "dt": float(getattr(unwrapped, "control_dt", 1 / 30)),
        "state": [],
        "action": [],
    }
    max_lift = dict.fromkeys(unwrapped.object_lifts(), 0.0)
    instruction = None
    length = 0
    while True:
        batch = obs_to_batch(obs, source=_source)
        instruction = instruction or batch[TASK][0]  # what the policy was actually told
        action = action_to_env(policy.select_action(batch))
        _keep_frame(frames, obs, action, env)
        obs, _, terminated, truncated, info = env.step(action)
        length += 1
        for color, lift in unwrapped.object_lifts().items():
            max_lift[color] = max(max_lift[color], lift)
        if terminated or truncated:
            break
    _keep_frame(frames, obs, None, env)  # the final observation, with no command after it
    success = bool(info["success"])
    lifted = sorted(c for c, h in max_lift.items() if h > LIFT_THRESHOLD_M)
    keep = job.record or (not success and _failures_recorded.value < _record_failures)
    return {
        "index": job.index,
        "seed": job.seed,
        "instruction": instruction,
        "target": target,
        "success": success,
        "length": length,
        "lifted": lifted,
        "lifted_at_end": sorted(
            c for c, h in unwrapped.object_lifts().items() if h > LIFT_THRESHOLD_M
        ),
        "max_lift_m": {c: round(h, 4) for c, h in max_lift.items()},
        # Only where the instruction names one of the lifted objects (a cube to pick).
        "wrong_cube": target in max_lift and any(c != target for c in lifted),
        "unstable": bool(info.get("unstable", False)),  # MuJoCo reset a diverged state
        "safety": _episode_safety(env.episode_stats),
        "frames": frames if keep else None,
    }


def _episode_safety(stats) -> dict:
    """The gate's counts for one episode (shaping and protective ticks, reasons, joints)."""
    d = stats.as_dict()
    keys = ("ticks", "interventions", "shaping", "protective", "by_reason", "by_reason_joint")
    return {k: d[k] for k in keys}


def _keep_frame(frames: dict, obs: dict, action: np.ndarray | None, env) -> None:
    for cam in env.unwrapped.cameras:
        frames.setdefault(cam, []).append(obs[image_key(cam)])
    frames["state"].append(np.asarray(obs[OBS_STATE], dtype=np.float32))
    frames["action"].append(action)
