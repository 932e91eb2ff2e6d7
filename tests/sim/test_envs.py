"""Contract tests over every registered task, plus PickColorCube-specific behaviour.

Every entry of ``sim.registry.TASKS`` must pass gymnasium's ``check_env``, be bit-for-bit
deterministic under a seed (images included, since datasets and evaluation rely on replaying
episodes), keep observations finite, and reject bad input with a ``ValueError`` that says what
was expected.
"""

from __future__ import annotations

import importlib
from itertools import combinations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from data.keys import OBS_STATE, TASK, image_key
from sim.envs.pick_color_cube import COLORS, CUBE_HALF, CubeLayout
from sim.registry import NAMESPACE, TASKS

TASK_NAMES = sorted(TASKS)
EXPECTED_KEYS = {image_key("front"), image_key("wrist"), OBS_STATE, TASK}


def make_expert(task: str, env: gym.Env, seed: int):
    """The task's scripted expert, found through its registry entry."""
    module, cls = TASKS[task].expert.split(":")
    return getattr(importlib.import_module(module), cls)(env, seed=seed)


def rollout(env: gym.Env, seed: int, actions: np.ndarray) -> list:
    """[(obs, reward, terminated, truncated, info)] for a reset with ``seed`` and the actions."""
    steps = [env.reset(seed=seed)]
    for action in actions:
        steps.append(env.step(action))
    return steps


def assert_same(a, b, path: str = "") -> None:
    """Exact equality of nested dicts / tuples / arrays / scalars (no tolerance: same process)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    else:
        assert a == b, path


@pytest.fixture(scope="module", params=TASK_NAMES)
def task(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def env(task):
    """One env per task, shared by the tests that reset it themselves (construction is ~0.1 s)."""
    env = sim.make_env(task)
    yield env
    env.close()


# ---------------------------------------------------------------------- every registered task
# Lerobot units (degrees, gripper %) make the action box deliberately non-normalized.
@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")
@pytest.mark.filterwarnings("error")
def test_check_env(task):
    env = sim.make_env(task)
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


def test_registered_with_gymnasium(task):
    env = gym.make(f"{NAMESPACE}/{task}")
    try:
        assert env.spec.max_episode_steps == TASKS[task].max_episode_steps
    finally:
        env.close()


def test_seeded_rollouts_are_identical(task):
    """Two envs, same seed, same random actions: identical observations, rewards and infos."""
    space = sim.make_env(task).action_space
    space.seed(123)
    actions = np.stack([space.sample() for _ in range(20)])
    env_a, env_b = sim.make_env(task), sim.make_env(task)
    try:
        run_a, run_b = rollout(env_a, 7, actions), rollout(env_b, 7, actions)
    finally:
        env_a.close()
        env_b.close()
    assert_same(run_a, run_b)


def test_observations_are_finite_and_in_space(env):
    space = env.action_space
    space.seed(0)
    obs, _ = env.reset(seed=3)
    assert obs.keys() == EXPECTED_KEYS
    for _ in range(20):
        assert env.observation_space.contains(obs)
        assert np.all(np.isfinite(obs[OBS_STATE]))
        obs, reward, _, _, info = env.step(space.sample())
        assert np.isfinite(reward)
        assert all(np.isfinite(v) for v in info["reward_terms"].values())


def test_observation_layout(env):
    obs, _ = env.reset(seed=0)
    assert set(obs) == EXPECTED_KEYS
    for cam in ("front", "wrist"):
        assert obs[image_key(cam)].dtype == np.uint8
        assert obs[image_key(cam)].shape == (96, 96, 3)
        assert obs[image_key(cam)].std() > 1.0, f"{cam} image is blank"
    assert obs[OBS_STATE].dtype == np.float32 and obs[OBS_STATE].shape == (6,)
    assert isinstance(obs[TASK], str) and obs[TASK]
    np.testing.assert_array_equal(env.render(), obs[image_key("front")])


def test_reset_with_seed_is_reproducible(env):
    first, info_first = env.reset(seed=11)
    env.step(env.action_space.sample())  # state left behind must not leak into the next reset
    again, info_again = env.reset(seed=11)
    assert_same(first, again)
    assert_same(info_first, info_again)
    other, _ = env.reset(seed=12)
    assert not np.array_equal(first[image_key("front")], other[image_key("front")])


def test_unknown_task_name_lists_registered_tasks():
    with pytest.raises(ValueError, match="registered tasks") as err:
        sim.make_env("NoSuchTask-v0")
    for name in TASKS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "action",
    [np.zeros(5), np.zeros(7), np.zeros((1, 6)), np.zeros(()), [0.0] * 5],
    ids=["5", "7", "1x6", "scalar", "list5"],
)
def test_action_of_wrong_shape_is_rejected(env, action):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(action)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_action_is_rejected(env, bad):
    obs, _ = env.reset(seed=0)
    action = obs[OBS_STATE].copy()
    action[2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(action)


def test_truncated_at_max_episode_steps(task):
    env = sim.make_env(task, image_size=16)  # small images: this test is about step counting
    try:
        obs, _ = env.reset(seed=0)
        hold = obs[OBS_STATE]
        for i in range(TASKS[task].max_episode_steps):
            _, _, terminated, truncated, _ = env.step(hold)
            assert not terminated
            assert truncated == (i == TASKS[task].max_episode_steps - 1)
    finally:
        env.close()


def test_the_expert_solves_a_scene(task):
    """Every task's scripted expert solves a seeded scene, ending the episode as a success."""
    env = sim.make_env(task, image_size=32)
    try:
        obs, _ = env.reset(seed=4)
        expert = make_expert(task, env, seed=4)
        for _ in range(TASKS[task].max_episode_steps):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            if terminated or truncated:
                break
        assert terminated and info["success"], env.unwrapped.instruction
    finally:
        env.close()


# ---------------------------------------------------------------------- PickColorCube-v1
def test_gripper_holds_a_lifted_cube():
    """Physics: once the expert has lifted the cube, it stays up while the arm holds for 1 s."""
    env = sim.make_env("PickColorCube-v1")
    try:
        obs, _ = env.reset(seed=4)
        expert = make_expert("PickColorCube-v1", env, seed=4)
        for _ in range(TASKS["PickColorCube-v1"].max_episode_steps):
            obs, _, terminated, _, info = env.step(expert.act(obs))
            if terminated:
                break
        assert info["success"], "the expert did not lift the cube"
        base = env.unwrapped
        target = base.target
        hold_ticks = round(1.0 / base.control_dt)
        start_z = base.cube_positions()[target][2]
        for _ in range(hold_ticks):
            obs, _, _, _, info = env.step(expert.act(obs))
            lifts = base.cube_lifts()
            assert lifts[target] >= base.lift_height, "the cube slipped out of the gripper"
            assert all(lifts[c] < 0.005 for c in COLORS if c != target)
        assert abs(base.cube_positions()[target][2] - start_z) < 0.01
        assert info["success"]
    finally:
        env.close()


@pytest.fixture(scope="module")
def pick_env():
    env = sim.make_env("PickColorCube-v1")
    yield env
    env.close()


@pytest.mark.parametrize("color", COLORS)
def test_target_and_instruction_options_override(pick_env, color):
    obs, info = pick_env.reset(seed=0, options={"target": color})
    assert info["target"] == color == pick_env.unwrapped.target
    assert obs[TASK] == f"pick up the {color} cube"
    text = f"grab the {color} block, please"
    obs, info = pick_env.reset(seed=0, options={"target": color, "instruction": text})
    assert obs[TASK] == text and info["target"] == color


def test_sampled_targets_cover_every_color(pick_env):
    seen = {pick_env.reset(seed=s)[1]["target"] for s in range(30)}
    assert seen == set(COLORS)


def test_unknown_target_color_is_rejected(pick_env):
    with pytest.raises(ValueError, match="unknown target color 'purple'"):
        pick_env.reset(seed=0, options={"target": "purple"})


def test_cubes_are_placed_apart_and_in_reach(pick_env):
    """Centres further apart than a cube's diagonal cannot overlap, whatever the yaws."""
    layout, base = CubeLayout(), pick_env.unwrapped
    for seed in range(40):
        pick_env.reset(seed=seed)
        pos = base.cube_positions()
        for a, b in combinations(COLORS, 2):
            gap = np.linalg.norm(pos[a][:2] - pos[b][:2])
            assert gap >= layout.min_separation - 1e-3 > 2 * np.sqrt(2) * CUBE_HALF
        for color, p in pos.items():
            reach = np.hypot(p[0] - 0.0388353, p[1])
            assert layout.min_reach - 1e-3 <= reach <= layout.max_reach + 1e-3, color
            assert abs(p[2] - CUBE_HALF) < 1e-3, f"{color} cube is not resting on the table"


def test_default_render_reference_renders_the_same_scene():
    """fast_render=False (the speed benchmark's reference) shows the same state, with shadows."""
    fast, default = sim.make_env(TASK_NAMES[0]), sim.make_env(TASK_NAMES[0], fast_render=False)
    try:
        obs_fast, _ = fast.reset(seed=2)
        obs_default, _ = default.reset(seed=2)
        np.testing.assert_array_equal(obs_fast[OBS_STATE], obs_default[OBS_STATE])
        assert default.unwrapped.model.light_castshadow.all()
        for cam in ("front", "wrist"):
            a, b = obs_fast[image_key(cam)], obs_default[image_key(cam)]
            assert a.shape == b.shape
            diff = np.abs(a.astype(int) - b.astype(int)).mean()
            assert 0.0 < diff < 40.0, f"{cam}: mean pixel difference {diff:.1f}"
    finally:
        fast.close()
        default.close()
