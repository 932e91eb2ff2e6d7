"""ActionChunkQueue: serves a chunk policy's actions one tick at a time and joins chunks smoothly.

A new chunk is requested every ``replan_every`` ticks. Its first ``blend_steps`` actions are
cross-faded with the not-yet-executed tail of the previous chunk (weights rising linearly to the
new chunk), so switching chunks causes no jump in the commanded position.
"""

from __future__ import annotations

import torch


class ActionChunkQueue:
    def __init__(self, replan_every: int, blend_steps: int):
        self.replan_every = replan_every
        self.blend_steps = blend_steps
        self.reset()

    def reset(self) -> None:
        self._chunk: torch.Tensor | None = None  # [B, T, D]
        self._pos = 0

    def needs_chunk(self) -> bool:
        return self._chunk is None or self._pos >= self.replan_every

    def push(self, chunk: torch.Tensor) -> None:
        """Adopt a fresh chunk [B, T, D] predicted for the current tick."""
        chunk = chunk.clone()
        if self._chunk is not None and self.blend_steps > 0:
            tail = self._chunk[:, self._pos :]
            n = min(self.blend_steps, tail.shape[1], chunk.shape[1])
            w = torch.arange(1, n + 1, dtype=chunk.dtype, device=chunk.device) / (n + 1)
            chunk[:, :n] = w[None, :, None] * chunk[:, :n] + (1 - w[None, :, None]) * tail[:, :n]
        self._chunk = chunk
        self._pos = 0

    def pop(self) -> torch.Tensor:
        """The action [B, D] for this tick."""
        if self._chunk is None:
            raise RuntimeError("no action chunk queued; push() one first")
        action = self._chunk[:, min(self._pos, self._chunk.shape[1] - 1)]
        self._pos += 1
        return action
