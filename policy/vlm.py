"""A local hub vision-language model as the observation encoder (``--policy.backbone.type=hf_vlm``).

SmolVLM / Idefics3-style models (e.g. HuggingFaceTB/SmolVLM2-256M-Video-Instruct) read every
camera and the instruction in one sequence, as the VLM prefix of SmolVLA does::

    <fake_token_around_image><global-img><image> x image_seq_len <fake_token_around_image>
    ... once per camera, then the instruction's tokens (at most max_text_tokens)

The VLM's final hidden states over that sequence (after its first ``num_layers`` decoder layers)
are projected to ``d_model`` and replace the armvla vision and language tokens in the trunk.
Images are prepared in torch, on the policy's device, as the model's processor prepares one
unsplit image: squared to the vision encoder's input size and standardized with the image
processor's mean and std (SmolVLM's tiling into sub-images is not used).

Nothing is downloaded: the folder must hold the model (safetensors), its tokenizer and its image
processor config. A frozen VLM (the default) is kept outside the module tree, as the frozen
sentence encoder in ``policy/language.py``: its weights are not in ``model.safetensors`` and the
checkpoint refers to ``model_path`` instead. With ``freeze=False`` it is a submodule: it trains
and is saved with the policy.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn

from policy.config import BackboneConfig

# config.json model_type of the VLMs whose inputs this module knows how to build.
SUPPORTED_MODEL_TYPES = ("smolvlm", "idefics3")
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
IMAGE_TOKEN = "<image>"
_EXPECTED = (
    "expected a local folder with a SmolVLM/Idefics3 transformers model (config.json, "
    "*.safetensors), its tokenizer and its image processor config, e.g. a download of "
    "HuggingFaceTB/SmolVLM2-256M-Video-Instruct, given as --policy.backbone.model_path"
)


class VLMObservationEncoder(nn.Module):
    """Camera images + instructions -> the VLM's tokens projected to the trunk width.

    ``forward(images, texts)``: ``images`` is one float [B, 3, H, W] tensor in [0, 1] per camera,
    ``texts`` B instruction strings. Returns tokens [B, N, d_model] and a padding mask [B, N]
    (True where a shorter instruction was padded; the trunk must ignore those tokens).
    """

    def __init__(self, cfg: BackboneConfig, n_cameras: int, d_model: int):
        super().__init__()
        model, self.tokenizer, image_processor = load_vlm(cfg.model_path)
        text_model = model.text_model
        if cfg.num_layers is not None:
            if cfg.num_layers > len(text_model.layers):
                raise ValueError(
                    f"--policy.backbone.num_layers={cfg.num_layers} but the VLM at "
                    f"{cfg.model_path} has {len(text_model.layers)} decoder layers"
                )
            text_model.layers = text_model.layers[: cfg.num_layers]
            text_model.config.num_hidden_layers = cfg.num_layers
        size = model.config.vision_config.image_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

        # Every sample starts with the same image placeholders; the model swaps in the features.
        block = FAKE_IMAGE_TOKEN + GLOBAL_IMAGE_TOKEN + IMAGE_TOKEN * model.image_seq_len
        self.prefix = (block + FAKE_IMAGE_TOKEN) * n_cameras
        prefix_ids = self.tokenizer(self.prefix)["input_ids"]
        n_image = sum(i == model.config.image_token_id for i in prefix_ids)
        if n_image != n_cameras * model.image_seq_len:
            raise ValueError(
                f"the tokenizer in {cfg.model_path} does not map {IMAGE_TOKEN} to the model's "
                f"image_token_id {model.config.image_token_id}; {_EXPECTED}"
            )
        self.max_tokens = len(prefix_ids) + cfg.max_text_tokens

        hidden = model.config.text_config.hidden_size
        self.proj = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, d_model))
        # Learned per-position embedding: tells the trunk which camera (or word) a token is.
        self.pos = nn.Parameter(torch.randn(self.max_tokens, d_model) * 0.02)
        self.frozen = cfg.freeze
        if cfg.freeze:
            for p in model.parameters():
                p.requires_grad_(False)
            # Outside the module tree on purpose: not in the policy's state dict (checkpoints
            # stay small and refer to model_path), never switched to train mode. forward moves
            # it to the device of the images, since .to() does not reach it.
            self.__dict__["vlm"] = model.eval()
        else:
            self.vlm = model

    def forward(
        self, images: list[torch.Tensor], texts: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = images[0].device
        if next(self.vlm.parameters()).device != device:
            self.vlm.to(device)
        s = self.image_size
        pixels = torch.stack(images, dim=1)  # [B, cameras, 3, H, W]
        b, n_cam = pixels.shape[:2]
        pixels = pixels.flatten(0, 1)
        if pixels.shape[-2:] != (s, s):
            pixels = nn.functional.interpolate(
                pixels, size=(s, s), mode="bilinear", antialias=True, align_corners=False
            )
        pixels = ((pixels - self.pixel_mean) / self.pixel_std).view(b, n_cam, 3, s, s)
        enc = self.tokenizer(
            [self.prefix + text for text in texts],
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.vlm(
                input_ids=ids, attention_mask=mask, pixel_values=pixels, use_cache=False
            ).last_hidden_state
        tokens = self.proj(hidden.float()) + self.pos[: hidden.shape[1]]
        return tokens, mask == 0


def load_vlm(model_path: str | Path):
    """(model, tokenizer, image processor) from a local folder; clear errors for anything else.

    The model is the VLM without its language-model head (``AutoModel``), in float32.
    """
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"VLM folder {path} does not exist; {_EXPECTED}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no config.json; {_EXPECTED}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except ValueError as err:
        raise ValueError(f"{config_file} is not valid JSON ({err}); {_EXPECTED}") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{path} holds a {model_type!r} model; --policy.backbone.type=hf_vlm reads "
            f"vision-language models of type {' or '.join(SUPPORTED_MODEL_TYPES)}; {_EXPECTED}"
        )
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"{path} has no *.safetensors weights; {_EXPECTED}")

    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    with _quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as err:
            raise FileNotFoundError(
                f"{path} has no usable tokenizer ({err}); {_EXPECTED}"
            ) from None
        try:
            image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as err:
            raise FileNotFoundError(
                f"{path} has no usable image processor config (preprocessor_config.json or "
                f"processor_config.json: {err}); {_EXPECTED}"
            ) from None
        model = AutoModel.from_pretrained(
            path, dtype=torch.float32, local_files_only=True, use_safetensors=True
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise ValueError(f"the tokenizer in {path} has no pad, eos or unk token to pad with")
    # Instructions are padded and truncated at the end, after the fixed image placeholders.
    tokenizer.padding_side = tokenizer.truncation_side = "right"
    return model, tokenizer, image_processor


@contextlib.contextmanager
def _quiet_transformers():
    """Silences the load report (the unused language-model head) and progress bars."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
