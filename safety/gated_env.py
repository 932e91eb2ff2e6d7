"""The safety gate in front of a simulated arm: evaluation and demo generation in sim send every
command through the same :class:`SafetyGate` the arm runtime uses, so sim measures the
interventions the arm will see and demos only contain commands the arm would execute.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from safety.config import SafetyConfig
from safety.gate import GateStats, SafetyGate


class SafetyGateWrapper(gym.Wrapper):
    """Gymnasium wrapper: ``step(action)`` sends ``gate.filter(action).command`` to the env.

    The gate engages on the arm's measured state at every reset (goal := present). ``info``
    gains ``"safety"``: the command sent, the reasons the gate acted and whether it intervened;
    :attr:`episode_stats` (a :class:`GateStats`) counts the episode's interventions: shaping and
    protective, by reason and joint.

    Args:
        env: an env whose observations carry the arm's joint state in lerobot units.
        config: the limits (default: SafetyConfig()).
        state_key: the observation key of that state (lerobot's; safety imports neither
            lerobot, which loads torch, nor data, which sits above it).
    """

    def __init__(
        self,
        env: gym.Env,
        config: SafetyConfig | None = None,
        state_key: str = "observation.state",
    ):
        super().__init__(env)
        self.gate = SafetyGate(config)
        self.state_key = state_key
        self.episode_stats = GateStats()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.gate.reset()
        self.gate.engage(obs[self.state_key])
        self.episode_stats = GateStats()
        info["safety"] = {"config_hash": self.gate.config_hash}
        return obs, info

    def step(self, action):
        decision = self.gate.filter(action)
        obs, reward, terminated, truncated, info = self.env.step(
            decision.command.astype(np.float32)
        )
        self.episode_stats.add(decision)
        info["safety"] = {
            "command": decision.command,
            "reasons": decision.reasons.names(),
            "intervened": decision.intervened,
            "seq": decision.seq,
        }
        return obs, reward, terminated, truncated, info
