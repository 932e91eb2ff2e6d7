"""Domain randomization (sim/randomize.py): off by default, drawn per episode within its ranges,
reproducible per seed, the expert still succeeds, and generate records it."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

import sim
from policy.cli import main as cli_main
from sim.envs.pick_color_cube import COLORS
from sim.expert import PickCubeExpert
from sim.generate import GENERATE_META, GenerateConfig, TaskConfig, generate
from sim.randomize import DomainRandomization

TASK = "PickColorCube-v1"
FRONT = "observation.images.front"
ALL_ON = DomainRandomization(camera=True, lighting=True, colors=True, objects=True, actuators=True)


def _env(randomization=None):
    return sim.make_env(TASK, image_size=48, randomization=randomization)


def test_off_by_default_renders_the_nominal_scene():
    plain, off = _env(), _env(asdict(DomainRandomization()))
    a, info = plain.reset(seed=4)
    b, info_off = off.reset(seed=4)
    assert np.array_equal(a[FRONT], b[FRONT])
    assert "domain" not in info and "domain" not in info_off
    plain.close(), off.close()


def test_draws_stay_in_range_are_reproducible_and_restore_the_scene():
    cfg = DomainRandomization(
        camera=True, camera_shift_m=[0.02, 0.02], camera_fov_deg=[6.0, 6.0], colors=True
    )
    env = _env(cfg)
    model = env.unwrapped.model
    front, wrist = model.camera("front").id, model.camera("wrist").id
    nominal_pos, nominal_fov = model.cam_pos[front].copy(), float(model.cam_fovy[front])
    wrist_pos = model.cam_pos[wrist].copy()
    first, info = env.reset(seed=1)
    assert np.linalg.norm(model.cam_pos[front] - nominal_pos) == pytest.approx(0.02)
    assert model.cam_fovy[front] == pytest.approx(nominal_fov + 6.0)  # not compounded
    assert np.array_equal(model.cam_pos[wrist], wrist_pos)  # the wrist camera rides the arm
    assert info["domain"]["camera_front"]["fovy_deg"] == pytest.approx(nominal_fov + 6.0)
    other, _ = env.reset(seed=2)
    assert np.linalg.norm(model.cam_pos[front] - nominal_pos) == pytest.approx(0.02)
    assert not np.array_equal(first[FRONT], other[FRONT])
    again, _ = env.reset(seed=1)
    assert np.array_equal(first[FRONT], again[FRONT])
    # Each cube keeps the channel its name says as its strongest.
    for color, channel in zip(COLORS, (0, 1, 2), strict=True):
        rgba = model.geom_rgba[model.geom(f"cube_{color}").id]
        assert np.argmax(rgba[:3]) == channel
    env.close()


@pytest.mark.parametrize("seed", [0, 5])
def test_the_expert_succeeds_under_every_randomization(seed):
    env = _env(ALL_ON)
    obs, info = env.reset(seed=seed)
    half = {
        c: env.unwrapped.model.geom_size[env.unwrapped.model.geom(f"cube_{c}").id, 2]
        for c in COLORS
    }
    for c, pos in env.unwrapped.cube_positions().items():
        assert pos[2] == pytest.approx(half[c], abs=2e-3)  # resting on the table at its size
    assert {"light", "gain", "gripper_torque", "object_cube_red"} <= set(info["domain"])
    plain = _env()
    _, plain_info = plain.reset(seed=seed)
    assert info["target"] == plain_info["target"]  # the same scene, perturbed
    for c, pos in plain.unwrapped.cube_positions().items():
        np.testing.assert_allclose(env.unwrapped.cube_positions()[c][:2], pos[:2], atol=2e-3)
    plain.close()
    expert = PickCubeExpert(env.unwrapped, seed=seed)
    for _ in range(300):
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            break
    assert info["success"]
    env.close()


def test_bad_ranges_name_the_option():
    with pytest.raises(ValueError, match=r"--task.randomize.camera_fov_deg must be \[low, high\]"):
        DomainRandomization(camera_fov_deg=[6.0, -6.0])
    with pytest.raises(ValueError, match="gain"):
        DomainRandomization(gain=[1.0, float("nan")])


def test_generate_records_the_randomization_and_help_lists_it(tmp_path, capsys):
    out = tmp_path / "rand"
    task = TaskConfig(image_size=32, cameras=["front"], randomize=DomainRandomization(camera=True))
    generate(GenerateConfig(task=task, episodes=1, out=out, workers=1))
    meta = json.loads((out / "meta" / GENERATE_META).read_text())
    recorded = meta["last_run"]["config"]["task"]["randomize"]
    assert recorded["camera"] is True and recorded["camera_shift_m"] == [0.0, 0.03]
    with pytest.raises(SystemExit):
        cli_main(["generate", "--help"])
    text = capsys.readouterr().out
    for option in ("--task.randomize.camera", "--task.randomize.gripper_torque"):
        assert option in text


def test_an_unstable_simulation_ends_the_episode_and_says_so(tmp_path, monkeypatch):
    """MuJoCo resets the state when it finds a NaN or huge velocity (the arm would teleport to
    its zero pose mid-episode): the env ends the episode there, truncated, flagged unstable."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warning to MUJOCO_LOG.TXT in the cwd
    env = _env(ALL_ON)
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    dof = u.model.joint("cube_green").dofadr[0]
    u.data.qvel[dof] = np.inf
    obs, reward, terminated, truncated, info = env.step(obs["observation.state"])
    assert info["unstable"] and truncated and not terminated and not info["success"]
    assert np.isfinite(obs["observation.state"]).all()
    env.close()


def test_a_fixed_camera_offset_moves_it_by_that_vector():
    cfg = DomainRandomization(
        camera=True,
        camera_offset_m=[-0.02, 0.0, 0.01],  # 2 cm closer to the arm, 1 cm up
        camera_shift_m=[0.0, 0.0],
        camera_turn_deg=[0.0, 0.0],
        camera_fov_deg=[0.0, 0.0],
    )
    env = _env(cfg)
    model = env.unwrapped.model
    front = model.camera("front").id
    nominal = model.cam_pos[front].copy()
    env.reset(seed=0)
    np.testing.assert_allclose(model.cam_pos[front] - nominal, [-0.02, 0.0, 0.01], atol=1e-12)
    env.reset(seed=1)  # not compounded over resets
    np.testing.assert_allclose(model.cam_pos[front] - nominal, [-0.02, 0.0, 0.01], atol=1e-12)
    with pytest.raises(ValueError, match=r"\[x, y, z\]"):
        DomainRandomization(camera_offset_m=[0.0, 0.01])
    env.close()
