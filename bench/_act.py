"""lerobot 0.6.1's ACT as armvla's benchmarks build and run it (shared by bench/*.py).

* :func:`act_config`: ``ACTConfig`` defaults (ResNet-18, chunk 100, VAE, dim 512) with our features
  (cameras as VISUAL ``[3, S, S]``, a 6-d ``observation.state``, a 6-d ``action``) and
  ``pretrained_backbone_weights=None`` (nothing can be downloaded); keyword overrides for tests.
* :func:`act_stats`: lerobot-style normalization stats: the given state/action stats, images with
  ImageNet mean/std.
* :func:`build_act`: ``ACTPolicy`` plus lerobot's own pre/post processors for it.
* :func:`data_stats`: mean/std/min/max of state and action computed from training frames.
* :func:`save_act` / :func:`load_act_weights`: ``state_dict`` as safetensors (plus lerobot's
  ``config.json``, so ``ACTPolicy.from_pretrained`` opens the folder too).
* :class:`ACTAdapter`: ACT behind the interface armvla's rollout loop drives (``reset()``,
  ``select_action(batch)`` on a :func:`policy.io.obs_to_batch` batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.act.configuration_act import ACTConfig
from lerobot.policies.act.modeling_act import ACTPolicy
from lerobot.policies.act.processor_act import make_act_pre_post_processors
from safetensors.torch import load_file, save_file

from data.keys import ACTION, OBS_STATE, TASK, image_key

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
WEIGHTS_FILE = "model.safetensors"  # lerobot's name, so the folder is a lerobot checkpoint


def act_config(
    cameras: Sequence[str], image_size: int, state_dim: int, action_dim: int, **overrides
) -> ACTConfig:
    """``ACTConfig`` defaults with our features; ``overrides`` are ACTConfig fields."""
    visual = PolicyFeature(type=FeatureType.VISUAL, shape=(3, image_size, image_size))
    return ACTConfig(
        input_features={
            **{image_key(cam): visual for cam in cameras},
            OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(state_dim,)),
        },
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))},
        pretrained_backbone_weights=None,
        device="cpu",
        **overrides,
    )


def act_stats(state: dict, action: dict, cameras: Sequence[str]) -> dict:
    """Stats for ACT's processors: ``state``/``action`` as given, every camera ImageNet mean/std."""
    image = {
        "mean": torch.tensor(IMAGENET_MEAN).view(3, 1, 1),
        "std": torch.tensor(IMAGENET_STD).view(3, 1, 1),
    }
    return {OBS_STATE: state, ACTION: action, **{image_key(cam): image for cam in cameras}}


def build_act(config: ACTConfig, stats: dict):
    """``(ACTPolicy(config), preprocessor, postprocessor)`` with lerobot's ACT processors."""
    policy = ACTPolicy(config)
    pre, post = make_act_pre_post_processors(config, stats)
    return policy, pre, post


def data_stats(values: torch.Tensor, min_std: float = 0.0) -> dict[str, list[float]]:
    """Per-dimension mean/std/min/max of ``values`` [N, D] as lists (JSON- and pickle-friendly).

    ``std`` is the population standard deviation, floored at ``min_std`` so a dimension that
    never moved in the data does not blow up its normalized value.
    """
    v = values.double()
    return {
        "mean": v.mean(0).tolist(),
        "std": v.std(0, correction=0).clamp(min=min_std).tolist(),
        "min": v.min(0).values.tolist(),
        "max": v.max(0).values.tolist(),
    }


def save_act(policy: ACTPolicy, folder: Path) -> Path:
    """Writes ``policy.state_dict()`` to ``<folder>/model.safetensors`` and lerobot's
    ``config.json`` next to it; returns the weights' path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_FILE
    # clone(): safetensors refuses tensors that share storage.
    save_file({k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}, str(path))
    policy.config._save_pretrained(folder)
    return path


def load_act_weights(policy: ACTPolicy, path: Path) -> ACTPolicy:
    """Loads safetensors weights written by :func:`save_act` (strict)."""
    policy.load_state_dict(load_file(str(path)), strict=True)
    return policy


class ACTAdapter:
    """lerobot's ACT driven like an armvla policy by a closed-loop rollout.

    ``select_action`` takes the batch :func:`policy.io.obs_to_batch` makes (images uint8
    ``[1, H, W, 3]``, ``observation.state`` ``[1, D]``, ``task``), converts images to float
    ``[1, 3, H, W]`` in [0, 1] (lerobot's dataset format, what ACT was trained on) and runs
    ``preprocessor -> ACTPolicy.select_action -> postprocessor``, returning the action ``[1, D]`` in
    lerobot units. ACT has no language input: the instruction is passed along and ignored.
    """

    def __init__(self, policy: ACTPolicy, pre, post):
        self.policy = policy.eval()
        self.pre = pre
        self.post = post
        self.image_shapes = {k: tuple(f.shape) for k, f in policy.config.image_features.items()}

    def reset(self) -> None:
        """Empties ACT's action queue; call at the start of every episode."""
        self.policy.reset()

    @torch.no_grad()
    def select_action(self, batch: dict) -> torch.Tensor:
        obs: dict = {}
        for key, shape in self.image_shapes.items():
            image = batch[key]
            if image.dtype == torch.uint8:  # env layout [B, H, W, 3]
                image = image.permute(0, 3, 1, 2).float() / 255.0
            if tuple(image.shape[1:]) != shape:
                raise ValueError(
                    f"ACT was built for {key} of shape {shape}, got {tuple(image.shape[1:])}; "
                    f"render the env at the training data's image size"
                )
            obs[key] = image
        obs[OBS_STATE] = batch[OBS_STATE].float()
        obs[TASK] = batch[TASK]
        return self.post(self.policy.select_action(self.pre(obs)))
