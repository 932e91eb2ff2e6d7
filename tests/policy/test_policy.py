"""The policy contract over every registered type and preset, checkpoints and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_batch

from data.keys import ACTION, OBS_STATE, TASK, image_key
from policy.checkpoint import (
    CONFIG_FILE,
    STATS_FILE,
    WEIGHTS_FILE,
    build_policy,
    load_policy,
    save_policy,
)
from policy.chunking import ActionChunkQueue
from policy.config import POLICY_TYPES, PolicyConfig, preset

PRESETS = ["default", "debug", "flow"]
CONFIGS = [(t, p) for t in POLICY_TYPES for p in PRESETS]


def _build(name: str, stats: dict, seed: int = 0):
    torch.manual_seed(seed)
    return build_policy(preset(name), stats)


@pytest.mark.parametrize(("policy_type", "name"), CONFIGS)
def test_contract(policy_type, name, sim_stats):
    cfg = preset(name)
    assert cfg.type == policy_type
    policy = _build(name, sim_stats)
    batch = make_batch(cfg)
    policy.train()
    loss, metrics = policy(batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and "loss" in metrics
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every trainable weight gets a gradient"

    policy.eval()
    obs = make_batch(cfg, with_actions=False)
    chunk = policy.predict_action_chunk(obs)
    assert chunk.shape == (3, cfg.chunk_size, cfg.action_dim)
    assert torch.isfinite(chunk).all()

    policy.reset()
    actions = [policy.select_action(obs) for _ in range(cfg.replan_every + 2)]
    assert all(a.shape == (3, cfg.action_dim) for a in actions)


@pytest.mark.parametrize("name", PRESETS)
def test_uint8_hwc_images_match_float_chw(name, sim_stats):
    """Env observations (uint8 HWC) and dataset frames (float CHW) are the same input."""
    cfg = preset(name)
    policy = _build(name, sim_stats).eval()
    obs = make_batch(cfg, with_actions=False)
    as_uint8 = dict(obs)
    for cam in cfg.cameras:
        u8 = (obs[image_key(cam)] * 255).round().to(torch.uint8)
        as_uint8[image_key(cam)] = u8.permute(0, 2, 3, 1)
        obs[image_key(cam)] = u8.float() / 255
    torch.manual_seed(1)
    a = policy.predict_action_chunk(obs)
    torch.manual_seed(1)
    b = policy.predict_action_chunk(as_uint8)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", PRESETS)
def test_language_conditions_actions(name, sim_stats):
    """Same observation, different instruction -> different actions."""
    cfg = preset(name)
    policy = _build(name, sim_stats).eval()
    obs = make_batch(cfg, batch_size=1, with_actions=False)
    chunks = {}
    for color in ("red", "green", "blue"):
        obs[TASK] = [f"pick up the {color} cube"]
        torch.manual_seed(0)  # same flow noise for every instruction
        chunks[color] = policy.predict_action_chunk(obs)
    assert not torch.allclose(chunks["red"], chunks["green"], atol=1e-4)
    assert not torch.allclose(chunks["green"], chunks["blue"], atol=1e-4)


@pytest.mark.parametrize("name", PRESETS)
def test_save_load_round_trip_is_bit_exact(name, sim_stats, tmp_path):
    cfg = preset(name)
    policy = _build(name, sim_stats, seed=3).eval()
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.config == policy.config
    assert loaded.normalizer.stats == policy.normalizer.stats
    for (k1, v1), (k2, v2) in zip(
        policy.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2), k1
    obs = make_batch(cfg, with_actions=False)
    torch.manual_seed(7)
    a = policy.predict_action_chunk(obs)
    torch.manual_seed(7)
    b = loaded.predict_action_chunk(obs)
    assert torch.equal(a, b)
    # Only safetensors and JSON: nothing a user loads is a pickle.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        CONFIG_FILE,
        WEIGHTS_FILE,
        STATS_FILE,
    ]


def test_checkpoint_of_another_format_is_refused(sim_stats, tmp_path):
    save_policy(_build("debug", sim_stats), tmp_path)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    cfg["format"] = 999
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format 999"):
        load_policy(tmp_path)


def test_checkpoint_without_stats_is_refused(sim_stats, tmp_path):
    save_policy(_build("debug", sim_stats), tmp_path)
    (tmp_path / STATS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="normalization stats"):
        load_policy(tmp_path)


def test_checkpoint_with_broken_stats_is_refused(sim_stats, tmp_path):
    save_policy(_build("debug", sim_stats), tmp_path)
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    del stats["sim"][ACTION]
    (tmp_path / STATS_FILE).write_text(json.dumps(stats))
    with pytest.raises(ValueError, match="lack 'action'"):
        load_policy(tmp_path)


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="armvla train"):
        load_policy(tmp_path / "nowhere")


@pytest.mark.parametrize("key", [OBS_STATE, ACTION, "observation.images.front"])
def test_nan_in_batch_is_an_error_not_a_nan_loss(key, sim_stats):
    cfg = preset("debug")
    policy = _build("debug", sim_stats).train()
    batch = make_batch(cfg)
    batch[key] = batch[key].clone()
    batch[key].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        policy(batch)


def test_wrong_shapes_and_missing_inputs(sim_stats):
    cfg = preset("debug")
    policy = _build("debug", sim_stats)
    batch = make_batch(cfg)
    bad = dict(batch, **{OBS_STATE: batch[OBS_STATE][:, :4]})
    with pytest.raises(ValueError, match="observation.state"):
        policy(bad)
    bad = dict(batch, **{ACTION: batch[ACTION][:, :3]})
    with pytest.raises(ValueError, match="action"):
        policy(bad)
    bad = {k: v for k, v in batch.items() if k != image_key("wrist")}
    with pytest.raises(ValueError, match="wrist"):
        policy(bad)
    bad = dict(batch, source=["real"] * 3)
    with pytest.raises(ValueError, match="unknown data source"):
        policy(bad)


def test_config_validation_names_the_flag():
    with pytest.raises(ValueError, match="--policy.head"):
        PolicyConfig(head="diffusion")
    with pytest.raises(ValueError, match="replan_every"):
        PolicyConfig(replan_every=0)
    with pytest.raises(ValueError, match="unknown policy type"):
        PolicyConfig(type="act")
    with pytest.raises(ValueError, match="unknown policy preset"):
        preset("huge")


def test_chunk_queue_joins_chunks_without_jumps():
    queue = ActionChunkQueue(replan_every=4, blend_steps=3)
    old = torch.zeros(1, 10, 1)
    new = torch.full((1, 10, 1), 8.0)
    queue.push(old)
    served = [queue.pop() for _ in range(4)]
    assert queue.needs_chunk()
    queue.push(new)
    served += [queue.pop() for _ in range(4)]
    values = torch.cat(served).flatten()
    # Without blending the command would jump 0 -> 8 in one tick; with it, in steps of 2.
    assert values.diff().abs().max() <= 2.0 + 1e-6
    assert values[-1] == 8.0
    queue.reset()
    with pytest.raises(RuntimeError):
        queue.pop()


def test_spatial_softmax_keypoints_follow_a_bright_spot():
    from policy.config import VisionConfig
    from policy.vision import FiLMConvEncoder, SpatialSoftmax

    kp = SpatialSoftmax(channels=1, k=1, d_model=2)
    with torch.no_grad():
        kp.maps.weight.fill_(20.0)
        kp.maps.bias.zero_()
        kp.proj.weight.copy_(torch.eye(2))
        kp.proj.bias.zero_()
    fmap = torch.zeros(2, 1, 8, 8)
    fmap[0, 0, 1, 6] = 1.0  # row 1, column 6: right, near the top
    fmap[1, 0, 6, 1] = 1.0  # row 6, column 1: left, near the bottom
    xy = kp(fmap)
    assert xy[0, 0] > 0.5 and xy[0, 1] < -0.5
    assert xy[1, 0] < -0.5 and xy[1, 1] > 0.5

    # As an option of the film_cnn encoder: one extra token per camera, trained end to end.
    enc = FiLMConvEncoder(VisionConfig(channels=(8, 16), keypoints=4), 32, cond_dim=8, d_model=16)
    assert enc.n_tokens == 8 * 8 + 1
    tokens = enc(torch.rand(3, 3, 32, 32), torch.randn(3, 8))
    assert tokens.shape == (3, enc.n_tokens, 16)
    tokens.sum().backward()
    assert enc.keypoints.maps.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="keypoints"):
        VisionConfig(channels=(8,), keypoints=4)


def test_state_noise_is_training_only(sim_stats):
    import dataclasses

    cfg = preset("debug")
    assert cfg.state_noise > 0
    noisy = _build("debug", sim_stats)
    clean = build_policy(dataclasses.replace(cfg, state_noise=0.0), sim_stats)
    clean.load_state_dict(noisy.state_dict())
    batch = make_batch(cfg)
    noisy.train(), clean.train()
    torch.manual_seed(1)
    loss_noisy, _ = noisy(batch)
    torch.manual_seed(1)
    loss_clean, _ = clean(batch)
    assert loss_noisy != loss_clean
    noisy.eval(), clean.eval()
    obs = make_batch(cfg, with_actions=False)
    assert torch.equal(noisy.predict_action_chunk(obs), clean.predict_action_chunk(obs))


def test_configs_saved_before_new_fields_keep_their_meaning():
    data = preset("default").to_dict()
    del data["state_noise"], data["vision"]["keypoints"], data["backbone"]
    old = PolicyConfig.from_dict(data)
    assert old.state_noise == 0.0 and old.vision.keypoints == 0
    assert old.backbone.type == "armvla"
    assert PolicyConfig.from_dict(preset("default").to_dict()) == preset("default")
