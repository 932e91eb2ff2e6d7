"""The hub-VLM backbone (--policy.backbone.type=hf_vlm) on a tiny random SmolVLM built locally."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_batch
from safetensors.torch import load_file

from data.keys import TASK
from policy.checkpoint import (
    CONFIG_FILE,
    DEFAULT_CHECKPOINT,
    WEIGHTS_FILE,
    build_policy,
    load_config,
    load_policy,
    save_policy,
)
from policy.config import BackboneConfig, PolicyConfig, preset
from policy.vlm import FAKE_IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN, IMAGE_TOKEN

WORDS = ["[PAD]", "[UNK]", "pick", "up", "the", "red", "green", "blue", "cube", "and", "place"]


def save_tiny_vlm(folder: Path, kind: str = "smolvlm") -> Path:
    """A random SmolVLM (or Idefics3) with hidden size 32, its word-level tokenizer and image
    processor, saved as a local model folder (4 image tokens per 32x32 image)."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=words,
        unk_token="[UNK]",
        pad_token="[PAD]",
        additional_special_tokens=[
            FAKE_IMAGE_TOKEN,
            IMAGE_TOKEN,
            GLOBAL_IMAGE_TOKEN,
            "<end_of_utterance>",
        ],
    )
    sizes = {
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        "text_config": {
            "model_type": "llama",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "max_position_embeddings": 256,
        },
        "scale_factor": 2,
        "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    }
    image_kwargs = {
        "size": {"longest_edge": 32},
        "max_image_size": {"longest_edge": 32},
        "do_image_splitting": False,
    }
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if kind == "smolvlm":
            # As on the hub: tokenizer files and preprocessor_config.json beside the weights.
            model = tf.SmolVLMForConditionalGeneration(tf.SmolVLMConfig(**sizes))
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            tf.SmolVLMImageProcessor(**image_kwargs).save_pretrained(folder)
        else:
            # As transformers 5 saves a processor: the image processor in processor_config.json.
            model = tf.Idefics3ForConditionalGeneration(tf.Idefics3Config(**sizes))
            model.save_pretrained(folder)
            image_processor = tf.Idefics3ImageProcessor(**image_kwargs)
            tf.Idefics3Processor(image_processor, tokenizer, image_seq_len=4).save_pretrained(
                folder
            )
    return folder


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return save_tiny_vlm(tmp_path_factory.mktemp("tiny_smolvlm"))


def vlm_config(model_path: Path, **backbone) -> PolicyConfig:
    backbone = BackboneConfig(type="hf_vlm", model_path=str(model_path), **backbone)
    return dataclasses.replace(preset("debug"), backbone=backbone)


def build(cfg: PolicyConfig, stats: dict, seed: int = 0):
    torch.manual_seed(seed)
    return build_policy(cfg, stats)


def test_forward_trains_only_the_projection_trunk_and_head(tiny_vlm, sim_stats):
    cfg = vlm_config(tiny_vlm)
    policy = build(cfg, sim_stats).train()
    vlm = policy.backbone.vlm
    assert not any(p.requires_grad for p in vlm.parameters())
    trainable = {id(p) for p in policy.parameters()}
    assert not any(id(p) in trainable for p in vlm.parameters()), "frozen VLM is outside the tree"

    loss, metrics = policy(make_batch(cfg))
    assert loss.ndim == 0 and torch.isfinite(loss) and "loss" in metrics
    loss.backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None, name
    assert policy.backbone.proj[1].weight.grad.abs().sum() > 0
    assert policy.state_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in vlm.parameters())


def test_predict_action_chunk_and_select_action(tiny_vlm, sim_stats):
    cfg = vlm_config(tiny_vlm)
    policy = build(cfg, sim_stats).eval()
    obs = make_batch(cfg, with_actions=False)
    chunk = policy.predict_action_chunk(obs)
    assert chunk.shape == (3, cfg.chunk_size, cfg.action_dim)
    assert torch.isfinite(chunk).all()
    policy.reset()
    assert policy.select_action(obs).shape == (3, cfg.action_dim)


def test_language_conditions_actions(tiny_vlm, sim_stats):
    cfg = vlm_config(tiny_vlm)
    policy = build(cfg, sim_stats).eval()
    obs = make_batch(cfg, batch_size=1, with_actions=False)
    chunks = {}
    for color in ("red", "green", "blue"):
        obs[TASK] = [f"pick up the {color} cube"]
        chunks[color] = policy.predict_action_chunk(obs)
    assert not torch.allclose(chunks["red"], chunks["green"], atol=1e-4)
    assert not torch.allclose(chunks["green"], chunks["blue"], atol=1e-4)


def test_padding_of_shorter_instructions_is_ignored(tiny_vlm, sim_stats):
    """A sample's chunk does not depend on the longer instructions batched with it."""
    cfg = vlm_config(tiny_vlm)
    policy = build(cfg, sim_stats).eval()
    obs = make_batch(cfg, batch_size=2, with_actions=False)
    obs[TASK] = ["pick up the red cube", "pick up the blue cube and place the red cube"]
    batched = policy.predict_action_chunk(obs)
    alone = {k: v[:1] if torch.is_tensor(v) else v[:1] for k, v in obs.items()}
    torch.testing.assert_close(policy.predict_action_chunk(alone), batched[:1])


def test_long_instructions_are_truncated(tiny_vlm, sim_stats):
    cfg = vlm_config(tiny_vlm, max_text_tokens=3)
    policy = build(cfg, sim_stats).eval()
    obs = make_batch(cfg, batch_size=1, with_actions=False)
    obs[TASK] = ["pick up the red cube"]
    a = policy.predict_action_chunk(obs)
    obs[TASK] = ["pick up the blue cube"]
    torch.testing.assert_close(policy.predict_action_chunk(obs), a)


def test_save_load_round_trip_keeps_the_frozen_vlm_out(tiny_vlm, sim_stats, tmp_path):
    cfg = vlm_config(tiny_vlm)
    policy = build(cfg, sim_stats, seed=3).eval()
    save_policy(policy, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert saved["backbone"]["model_path"] == str(tiny_vlm)
    keys = load_file(str(tmp_path / "ckpt" / WEIGHTS_FILE)).keys()
    assert not any(k.startswith("backbone.vlm.") for k in keys)
    assert "backbone.proj.1.weight" in keys

    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.config == policy.config
    obs = make_batch(cfg, with_actions=False)
    assert torch.equal(policy.predict_action_chunk(obs), loaded.predict_action_chunk(obs))


def test_unfrozen_vlm_trains_and_is_saved(tiny_vlm, sim_stats, tmp_path):
    cfg = vlm_config(tiny_vlm, freeze=False, num_layers=1)
    policy = build(cfg, sim_stats, seed=3).train()
    vlm_params = dict(policy.backbone.vlm.named_parameters())
    assert len(policy.backbone.vlm.text_model.layers) == 1
    loss, _ = policy(make_batch(cfg))
    loss.backward()
    assert all(p.grad is not None for p in vlm_params.values())
    with torch.no_grad():  # stands in for fine-tuning: the weights now differ from model_path
        for p in vlm_params.values():
            p.add_(0.01 * torch.randn_like(p))

    policy.eval()
    save_policy(policy, tmp_path / "ckpt")
    keys = load_file(str(tmp_path / "ckpt" / WEIGHTS_FILE)).keys()
    assert {f"backbone.vlm.{k}" for k in vlm_params} <= set(keys)
    assert not any(".layers.1." in k for k in keys)
    loaded = load_policy(tmp_path / "ckpt")
    for (k1, v1), (k2, v2) in zip(
        policy.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2), k1
    obs = make_batch(cfg, with_actions=False)
    assert torch.equal(policy.predict_action_chunk(obs), loaded.predict_action_chunk(obs))


def test_idefics3_with_a_transformers5_processor_folder(tmp_path, sim_stats):
    cfg = vlm_config(save_tiny_vlm(tmp_path / "idefics3", kind="idefics3"))
    policy = build(cfg, sim_stats).eval()
    chunk = policy.predict_action_chunk(make_batch(cfg, with_actions=False))
    assert chunk.shape == (3, cfg.chunk_size, cfg.action_dim)


def test_config_round_trips_and_old_checkpoints_load():
    cfg = vlm_config(Path("/models/SmolVLM2-256M-Video-Instruct"), num_layers=16)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert PolicyConfig.from_dict(data) == cfg
    data.pop("backbone")  # a config.json written before the backbone option existed
    assert PolicyConfig.from_dict(data).backbone == BackboneConfig()
    shipped, _ = load_config(DEFAULT_CHECKPOINT)
    assert shipped.backbone.type == "armvla"


def test_config_validation_names_the_flag():
    with pytest.raises(ValueError, match="--policy.backbone.model_path"):
        BackboneConfig(type="hf_vlm")
    with pytest.raises(ValueError, match="--policy.backbone.type"):
        BackboneConfig(type="openvla")
    with pytest.raises(ValueError, match="only read with --policy.backbone.type=hf_vlm"):
        BackboneConfig(model_path="/models/smolvlm")
    with pytest.raises(ValueError, match="--policy.backbone.num_layers"):
        BackboneConfig(type="hf_vlm", model_path="/models/smolvlm", num_layers=0)
    with pytest.raises(ValueError, match="--policy.backbone.max_text_tokens"):
        BackboneConfig(type="hf_vlm", model_path="/models/smolvlm", max_text_tokens=0)


def test_bad_model_paths_name_the_path_and_what_is_expected(tiny_vlm, sim_stats, tmp_path):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"{nowhere}.*does not exist.*SmolVLM2"):
        build_policy(vlm_config(nowhere), sim_stats)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        build_policy(vlm_config(empty), sim_stats)
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="'llama' model.*smolvlm or idefics3"):
        build_policy(vlm_config(text_only), sim_stats)
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_vlm / name, partial / name)
    with pytest.raises(FileNotFoundError, match="no usable tokenizer"):
        build_policy(vlm_config(partial), sim_stats)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_vlm / name, partial / name)
    with pytest.raises(FileNotFoundError, match="no usable image processor"):
        build_policy(vlm_config(partial), sim_stats)
    (partial / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors weights"):
        build_policy(vlm_config(partial), sim_stats)
    with pytest.raises(ValueError, match="has 2 decoder layers"):
        build_policy(vlm_config(tiny_vlm, num_layers=5), sim_stats)
