"""``armvla generate``: sim/generate.py's demo generation, plus the policy for takeover demos.

With ``--takeover_policy`` a trained policy drives each episode first, through the safety gate,
and the scripted expert takes over from the state it left (DAgger-style demos). sim sits below
policy, so :func:`sim.generate.generate` takes the policy as a :class:`PolicyDriver`: a
picklable handle on the checkpoint folder that each worker process loads once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import sim.generate
from sim.generate import GenerateConfig

__all__ = ["GenerateConfig", "PolicyDriver", "generate"]


class PolicyDriver:
    """Drives a sim episode with a policy checkpoint until the expert takes over.

    Holds only the checkpoint folder until :meth:`load` (in the worker process), so it pickles
    into a process pool as a path.

    Args:
        checkpoint: a checkpoint folder written by ``armvla train`` (see :meth:`from_flag`).
    """

    def __init__(self, checkpoint: str | Path):
        self.checkpoint = Path(checkpoint).resolve()
        self._policy = None

    @classmethod
    def from_flag(cls, takeover_policy: str) -> PolicyDriver:
        """The driver for ``--takeover_policy`` (a checkpoint folder or "default"); fails here,
        with what to pass, rather than in every worker."""
        from policy.eval import checkpoint_path

        try:
            return cls(checkpoint_path(takeover_policy))
        except FileNotFoundError as err:
            raise FileNotFoundError(str(err).replace("--policy=", "--takeover_policy=")) from None

    def __getstate__(self) -> dict:
        return {"checkpoint": self.checkpoint, "_policy": None}  # a loaded policy stays put

    def load(self) -> None:
        """Loads the policy for this worker process (one CPU thread, as each worker has one)."""
        import torch
        from transformers.utils import logging as hf_logging

        from policy.checkpoint import load_policy

        torch.set_num_threads(1)  # one core per worker process
        hf_logging.disable_progress_bar()
        self._policy = load_policy(self.checkpoint)

    def reset(self) -> None:
        """A new episode: the policy's action queue starts empty."""
        self._policy.reset()

    def act(self, obs: dict) -> np.ndarray:
        """The policy's env action [6] (float32, lerobot units) for one env observation."""
        from policy.io import action_to_env, obs_to_batch

        return action_to_env(self._policy.select_action(obs_to_batch(obs)))


def generate(cfg: GenerateConfig) -> dict:
    """Runs :func:`sim.generate.generate`, with a :class:`PolicyDriver` for
    ``--takeover_policy`` when it is set; returns its summary."""
    driver = PolicyDriver.from_flag(cfg.takeover_policy) if cfg.takeover_policy else None
    return sim.generate.generate(cfg, driver=driver)
