"""RopeToMark-v1: its layouts, its success detector on constructed vertex states, its expert."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import sim
from safety.gated_env import SafetyGateWrapper
from sim.envs.flex import MARK_COLORS
from sim.envs.rope import ENDS, ROPE_RADIUS, ROPE_SEGMENT, RopeLayout
from sim.envs.tabletop import reach
from sim.flex_expert import RopeExpert
from sim.generate import expert_motion_limits

TASK = "RopeToMark-v1"


@pytest.fixture(scope="module")
def env(make_task_env):
    return make_task_env(TASK)


def lay_rope(env, end_xy, direction, end: str = "left") -> None:
    """A straight rope at rest with the named end's vertex at ``end_xy``, the rest of it along
    ``direction`` from there; the named end stays the one ``env`` calls ``end``."""
    base = env.unwrapped
    n = base.rope.n
    direction = np.asarray(direction, float) / np.linalg.norm(direction)
    xy = np.asarray(end_xy) + np.outer(np.arange(n) * ROPE_SEGMENT, direction)
    order = np.arange(n) if base.end_vertex(end) == 0 else np.arange(n)[::-1]
    xyz = np.zeros((n, 3))
    xyz[order] = np.column_stack([xy, np.full(n, ROPE_RADIUS)])
    base.rope.set_positions(base.data, xyz)
    mujoco.mj_forward(base.model, base.data)


def test_every_layout_is_in_reach_with_clear_ends_and_nothing_done(env):
    lay = RopeLayout()
    for seed in range(60):
        env.reset(seed=seed)
        base = env.unwrapped
        pos = base.rope.positions(base.data)
        left, right = base.rope_end("left"), base.rope_end("right")
        assert left[1] - right[1] >= lay.min_end_gap  # left is the arm's left, +y
        assert all(lay.min_reach - 1e-3 <= reach(p) <= lay.max_reach + 1e-3 for p in pos)
        marks = base.marks.positions(base.data)
        assert np.hypot(*(marks["red"] - marks["blue"])) >= lay.min_mark_separation
        for color in MARK_COLORS:
            for e in ENDS:
                assert base.end_to_mark(e, color) >= lay.min_end_to_mark - 0.005
        # Edges keep their rest length: the drawn shape is one the constraints accept.
        edges = np.linalg.norm(np.diff(pos, axis=0), axis=1)
        assert np.allclose(edges, ROPE_SEGMENT, atol=1e-3)


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("mark", MARK_COLORS)
def test_options_choose_the_end_and_mark(env, end, mark):
    _, info = env.reset(seed=1, options={"end": end, "mark": mark})
    assert (info["end"], info["mark"]) == (end, mark)
    assert env.unwrapped.instruction == f"drag the {end} end of the rope to the {mark} mark"


def test_unknown_end_or_mark_is_rejected(env):
    with pytest.raises(ValueError, match="unknown rope end 'middle'"):
        env.reset(seed=0, options={"end": "middle"})
    with pytest.raises(ValueError, match="unknown mark 'green'.*red"):
        env.reset(seed=0, options={"mark": "green"})


@pytest.mark.parametrize(
    ("offset", "succeeds"), [(0.0, True), (0.025, True), (0.035, False), (0.10, False)]
)
def test_success_is_the_named_end_within_3_cm_of_the_named_mark_held(
    env, offset, succeeds, hold_still
):
    env.reset(seed=2, options={"end": "left", "mark": "red"})
    base = env.unwrapped
    red = base.marks.positions(base.data)["red"]
    lay_rope(env, red + np.array([0.0, offset]), direction=(0.0, 1.0), end="left")
    info = hold_still(env, base.hold_steps + 2)
    assert info["success"] is succeeds, base.end_to_mark()
    assert base.success_condition() is succeeds  # what the twin's status line reports


def test_the_other_end_or_mark_does_not_count(env, hold_still):
    env.reset(seed=2, options={"end": "left", "mark": "red"})
    base = env.unwrapped
    marks = base.marks.positions(base.data)
    # The right end on the red mark: the wrong end.
    lay_rope(env, marks["red"], direction=(0.0, -1.0), end="right")
    assert base.end_to_mark("right", "red") < 0.01
    assert not hold_still(env, base.hold_steps + 2)["success"]
    # The left end on the blue mark: the wrong mark.
    env.reset(seed=2, options={"end": "left", "mark": "red"})
    lay_rope(env, base.marks.positions(base.data)["blue"], direction=(0.0, 1.0), end="left")
    assert not hold_still(env, base.hold_steps + 2)["success"]


def test_success_needs_hold_steps_ticks(env, hold_still):
    env.reset(seed=2, options={"end": "left", "mark": "red"})
    base = env.unwrapped
    lay_rope(env, base.marks.positions(base.data)["red"], direction=(0.0, 1.0))
    info = hold_still(env, base.hold_steps - 1)
    assert not info["success"]
    info = hold_still(env, 1)
    assert info["success"]


def run_gated_expert(gated, seed: int) -> dict:
    """One episode of the expert, planning inside the gate's limits, through the gate."""
    obs, info = gated.reset(seed=seed)
    expert = RopeExpert(gated.unwrapped, seed=seed, limits=expert_motion_limits())
    while True:
        obs, _, terminated, truncated, info = gated.step(expert.act(obs))
        if terminated or truncated:
            return info


def test_the_expert_plans_inside_the_gate_and_drags_the_named_end(env):
    gated = SafetyGateWrapper(env)
    for seed in range(3):
        info = run_gated_expert(gated, seed)
        assert info["success"], gated.unwrapped.instruction
        stats = gated.episode_stats.as_dict()
        assert stats["protective"] == 0


@pytest.mark.slow
def test_the_expert_succeeds_on_at_least_90_of_100_seeds():
    env = SafetyGateWrapper(sim.make_env(TASK, image_size=32, cameras=("front",)))
    wins = sum(bool(run_gated_expert(env, seed)["success"]) for seed in range(100))
    assert wins >= 90, f"{wins}/100"
