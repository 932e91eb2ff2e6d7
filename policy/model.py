"""ArmVLAPolicy: camera images + instruction + joint state -> a chunk of future joint targets.

    images ──FiLMConvEncoder(instruction)──▶ spatial tokens ┐
    instruction ──MiniLM (frozen, cached)──▶ language token ├─▶ transformer trunk ─▶ context
    joint state ──linear──────────────────▶ state token    ┘
    readout tokens ──▶ MLP action head (flow matching or L1 regression) ─▶ chunk [B, T, D]

With ``--policy.backbone.type=hf_vlm`` a local SmolVLM-style VLM reads the images and the
instruction together instead, and its projected hidden states replace the image and language
tokens (``policy/vlm.py``); the state and readout tokens, trunk and head are unchanged.

The flow head learns the velocity field from Gaussian noise to the normalized action chunk
(rectified flow, as pi0 and SmolVLA) and integrates it in ``flow_steps`` Euler steps at
inference; the regression head predicts the chunk in one pass.

Contract (as lerobot policies): ``forward(batch) -> (loss, metrics)``,
``predict_action_chunk(batch) -> [B, T, D]``, ``select_action(batch) -> [B, D]`` (owns the chunk
queue and blends consecutive chunks), ``reset()``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from data.dataset import SOURCE
from data.keys import ACTION, ACTION_IS_PAD, OBS_STATE, TASK, image_key
from policy.chunking import ActionChunkQueue
from policy.config import PolicyConfig
from policy.language import InstructionEncoder
from policy.normalize import Normalizer
from policy.vision import VISION_ENCODERS, random_shift
from policy.vlm import VLMObservationEncoder


class ArmVLAPolicy(nn.Module):
    """The armvla VLA policy. Batches use lerobot's keys:

    ``observation.images.<cam>``: float [B, 3, H, W] in [0, 1] (or uint8 [B, H, W, 3]);
    ``observation.state``: [B, state_dim] in lerobot units; ``task``: list of B strings;
    ``source`` (optional): list of B data-source names; for training also
    ``action``: [B, T, action_dim] and ``action_is_pad``: bool [B, T].
    """

    def __init__(self, config: PolicyConfig, stats: dict):
        super().__init__()
        self.config = cfg = config
        d = cfg.d_model
        self.normalizer = Normalizer(stats)
        if cfg.backbone.type == "hf_vlm":
            # One local VLM reads every camera and the instruction (policy/vlm.py).
            self.backbone = VLMObservationEncoder(cfg.backbone, len(cfg.cameras), d)
        else:
            self.language = InstructionEncoder(cfg.language.model_path, cfg.language.dim)
            self.lang_proj = nn.Sequential(
                nn.Linear(cfg.language.dim, d), nn.GELU(), nn.Linear(d, d)
            )
            encoder_cls = VISION_ENCODERS[cfg.vision.type]
            self.vision = nn.ModuleDict(
                {cam: encoder_cls(cfg.vision, cfg.image_size, d, d) for cam in cfg.cameras}
            )
            n_img = next(iter(self.vision.values())).n_tokens
            self.image_pos = nn.Parameter(torch.randn(len(cfg.cameras), n_img, d) * 0.02)
        self.state_proj = nn.Linear(cfg.state_dim, d)
        self.token_type = nn.Parameter(torch.randn(2, d) * 0.02)  # language, state
        self.trunk = nn.TransformerEncoder(
            _encoder_layer(cfg), cfg.trunk_layers, enable_nested_tensor=False
        )
        self.trunk_norm = nn.LayerNorm(d)

        # Readout tokens summarize the observation for the action head.
        self.readout = nn.Parameter(torch.randn(cfg.n_readout, d) * 0.02)
        self.head = ChunkMLPHead(cfg)
        self._queue = ActionChunkQueue(cfg.replan_every, cfg.blend_steps)

    # ------------------------------------------------------------------ contract
    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Training loss on a batch with ``action`` [B, T, D] and ``action_is_pad`` [B, T]."""
        src = self._sources(batch)
        context = self._encode(batch, src)
        actions = _check_finite(ACTION, batch[ACTION].float())
        if actions.shape[1:] != (self.config.chunk_size, self.config.action_dim):
            raise ValueError(
                f"batch[{ACTION!r}] has shape {tuple(actions.shape)}; expected "
                f"[B, {self.config.chunk_size}, {self.config.action_dim}]"
            )
        target = self.normalizer.normalize(ACTION, actions, src)
        pad = batch.get(ACTION_IS_PAD)
        weight = (~pad.bool()).float() if pad is not None else torch.ones(target.shape[:2])
        weight = weight.to(target.device).unsqueeze(-1)
        if self.config.head == "flow":
            noise = torch.randn_like(target)
            t = torch.rand(target.shape[0], device=target.device)
            x_t = (1 - t[:, None, None]) * noise + t[:, None, None] * target
            pred = self.head(self.head.condition(context), x_t, t)
            err = (pred - (target - noise)) ** 2
        else:
            pred = self.head(self.head.condition(context))
            err = (pred - target).abs()
        loss = (err * weight).sum() / (weight.sum() * err.shape[-1]).clamp(min=1.0)
        if not torch.isfinite(loss):
            raise FloatingPointError("training loss is not finite; check the data and the lr")
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict) -> torch.Tensor:
        """Action chunk [B, T, D] in lerobot units (degrees, gripper 0-100)."""
        src = self._sources(batch)
        context = self._encode(batch, src)
        b = context.shape[0]
        cond = self.head.condition(context)
        if self.config.head == "flow":
            shape = (b, self.config.chunk_size, self.config.action_dim)
            x = torch.randn(shape, device=context.device)
            n = self.config.flow_steps
            for k in range(n):
                t = torch.full((b,), k / n, device=context.device)
                x = x + self.head(cond, x, t) / n
        else:
            x = self.head(cond)
        return self.normalizer.unnormalize(ACTION, x, src)

    @torch.no_grad()
    def select_action(self, batch: dict) -> torch.Tensor:
        """The next action [B, D]; predicts a new chunk every ``replan_every`` calls."""
        if self._queue.needs_chunk():
            self._queue.push(self.predict_action_chunk(batch))
        return self._queue.pop()

    def reset(self) -> None:
        """Forget queued actions; call at the start of every episode."""
        self._queue.reset()

    # ------------------------------------------------------------------ internals
    def _sources(self, batch: dict) -> torch.Tensor:
        state = batch[OBS_STATE]
        return self.normalizer.source_index(batch.get(SOURCE), state.shape[0])

    def _encode(self, batch: dict, src: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        state = _check_finite(OBS_STATE, torch.as_tensor(batch[OBS_STATE]).float())
        if state.ndim != 2 or state.shape[1] != cfg.state_dim:
            raise ValueError(
                f"batch[{OBS_STATE!r}] has shape {tuple(state.shape)}; expected [B, {cfg.state_dim}]"
            )
        device = self.state_proj.weight.device
        state = state.to(device)
        tasks = batch.get(TASK)
        if tasks is None:
            raise ValueError(f"batch needs the instruction under {TASK!r}")
        tasks = [tasks] * state.shape[0] if isinstance(tasks, str) else list(tasks)
        if len(tasks) != state.shape[0]:
            raise ValueError(f"batch has {state.shape[0]} states but {len(tasks)} instructions")
        if cfg.backbone.type == "hf_vlm":
            return self._encode_vlm(batch, tasks, state, src, device)
        lang = self.lang_proj(self.normalizer.normalize_instruction(self.language(tasks, device)))
        tokens = [
            lang + self.token_type[0],
            self.state_proj(self._state(state, src)) + self.token_type[1],
        ]
        tokens = [t.unsqueeze(1) for t in tokens]
        for i, cam in enumerate(cfg.cameras):
            images = self._images(batch, cam, device)
            tokens.append(self.vision[cam](images, lang) + self.image_pos[i])
        tokens.append(self.readout.unsqueeze(0).expand(state.shape[0], -1, -1))
        return self.trunk_norm(self.trunk(torch.cat(tokens, dim=1)))

    def _encode_vlm(self, batch: dict, tasks: list[str], state, src, device) -> torch.Tensor:
        """The trunk over [state token, VLM tokens of all cameras + instruction, readout]."""
        images = [self._images(batch, cam, device) for cam in self.config.cameras]
        obs, pad = self.backbone(images, tasks)
        state_token = self.state_proj(self._state(state, src))
        b = state.shape[0]
        tokens = [
            (state_token + self.token_type[1]).unsqueeze(1),
            obs,
            self.readout.unsqueeze(0).expand(b, -1, -1),
        ]
        keep = pad.new_zeros(b, 1)
        pad = torch.cat([keep, pad, keep.expand(b, self.config.n_readout)], dim=1)
        return self.trunk_norm(self.trunk(torch.cat(tokens, dim=1), src_key_padding_mask=pad))

    def _state(self, state: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """Normalized joint state; noised in training when ``config.state_noise`` > 0."""
        state = self.normalizer.normalize(OBS_STATE, state, src)
        if self.training and self.config.state_noise > 0:
            state = state + self.config.state_noise * torch.randn_like(state)
        return state

    def _images(self, batch: dict, cam: str, device) -> torch.Tensor:
        key = image_key(cam)
        if key not in batch:
            raise ValueError(
                f"batch lacks {key!r}; this policy looks at cameras {self.config.cameras}"
            )
        images = torch.as_tensor(batch[key])
        if images.ndim != 4:
            raise ValueError(
                f"batch[{key!r}] must be [B, 3, H, W] or [B, H, W, 3], got {tuple(images.shape)}"
            )
        if images.dtype == torch.uint8:
            if images.shape[-1] == 3:
                images = images.permute(0, 3, 1, 2)
            images = images.float() / 255.0
        elif images.shape[1] != 3:
            raise ValueError(f"float images under {key!r} must be [B, 3, H, W] in [0, 1]")
        images = _check_finite(key, images.to(device))
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = nn.functional.interpolate(
                images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        if self.training:
            images = random_shift(images, self.config.augment_shift)
        return images


class ChunkMLPHead(nn.Module):
    """Residual MLP over the whole flattened chunk, conditioned on the trunk's readout tokens.

    Flow mode: (context, noisy chunk x_t [B, T, D], time t [B]) -> velocity [B, T, D].
    Regression mode: context -> chunk [B, T, D]. Treating the chunk as one vector keeps the head
    cheap enough to run ``flow_steps`` times per chunk on a CPU, where a per-step transformer
    decoder cost most of the training and inference time.
    """

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        h, flat = cfg.head_dim, cfg.chunk_size * cfg.action_dim
        self.cond = nn.Linear(cfg.n_readout * cfg.d_model, h)
        self.x_in = nn.Linear(flat, h) if cfg.head == "flow" else None
        self.t_in = (
            nn.Sequential(nn.Linear(cfg.d_model, h), nn.GELU()) if cfg.head == "flow" else None
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(h), nn.Linear(h, 2 * h), nn.GELU(), nn.Linear(2 * h, h))
            for _ in range(cfg.head_layers)
        )
        self.out = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, flat))

    def condition(self, context: torch.Tensor) -> torch.Tensor:
        """Per-sample conditioning [B, head_dim] from the trunk's readout tokens (once per chunk)."""
        return self.cond(context[:, -self.cfg.n_readout :].flatten(1))

    def forward(self, cond: torch.Tensor, x_t=None, t=None) -> torch.Tensor:
        cfg = self.cfg
        x = cond
        if self.x_in is not None:
            x = x + self.x_in(x_t.flatten(1)) + self.t_in(_timestep_embedding(t, cfg.d_model))
        for block in self.blocks:
            x = x + block(x)
        return self.out(x).view(-1, cfg.chunk_size, cfg.action_dim)


def _encoder_layer(cfg: PolicyConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        cfg.d_model,
        cfg.n_heads,
        4 * cfg.d_model,
        cfg.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
    args = t[:, None] * 100.0 * freqs[None]  # t in [0, 1] spread over ~100 periods
    return torch.cat([args.sin(), args.cos()], dim=-1)


def _check_finite(key: str, x: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise ValueError(f"batch[{key!r}] contains NaN or inf; refusing to use it")
    return x


def count_parameters(model: nn.Module) -> int:
    return int(sum(np.prod(p.shape) for p in model.parameters() if p.requires_grad))
