"""The safety gate in front of a simulated arm: evaluation and demo generation in sim send every
command through the same :class:`SafetyGate` the arm runtime uses, so sim measures the
interventions the arm will see and demos only contain commands the arm would execute.
"""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
from lerobot.utils.constants import OBS_STATE

from safety.config import SafetyConfig
from safety.gate import SafetyGate


class SafetyGateWrapper(gym.Wrapper):
    """Gymnasium wrapper: ``step(action)`` sends ``gate.filter(action).command`` to the env.

    The gate engages on the arm's measured state at every reset (goal := present). ``info``
    gains ``"safety"``: the command sent, the reasons the gate acted and whether it intervened;
    :attr:`episode_stats` counts the episode's interventions by reason.
    """

    def __init__(self, env: gym.Env, config: SafetyConfig | None = None):
        super().__init__(env)
        self.gate = SafetyGate(config)
        self.episode_stats = _new_stats()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.gate.reset()
        self.gate.engage(obs[OBS_STATE])
        self.episode_stats = _new_stats()
        info["safety"] = {"config_hash": self.gate.config_hash}
        return obs, info

    def step(self, action):
        decision = self.gate.filter(action)
        obs, reward, terminated, truncated, info = self.env.step(
            decision.command.astype(np.float32)
        )
        stats = self.episode_stats
        stats["ticks"] += 1
        stats["interventions"] += int(decision.intervened)
        stats["by_reason"].update(decision.reasons.names())
        info["safety"] = {
            "command": decision.command,
            "reasons": decision.reasons.names(),
            "intervened": decision.intervened,
            "seq": decision.seq,
        }
        return obs, reward, terminated, truncated, info


def _new_stats() -> dict:
    return {"ticks": 0, "interventions": 0, "by_reason": Counter()}
