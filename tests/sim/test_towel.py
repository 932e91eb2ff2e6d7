"""TowelLiftCorner-v1 and TowelToMark-v1: layouts, success detectors on constructed vertex
states, and their experts through the safety gate."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import sim
from safety.gated_env import SafetyGateWrapper
from sim.envs.flex import footprint_area
from sim.envs.tabletop import reach
from sim.envs.towel import (
    CORNERS,
    FLAT_AREA,
    SIDES,
    TOWEL_GRID,
    TOWEL_RADIUS,
    TOWEL_SPACING,
    TowelLayout,
)
from sim.flex_expert import TowelDragExpert, TowelFoldExpert, TowelLiftExpert
from sim.generate import expert_motion_limits

LIFT, DRAG = "TowelLiftCorner-v1", "TowelToMark-v1"
EXPERTS = {LIFT: TowelLiftExpert, DRAG: TowelDragExpert, "TowelFold-v1": TowelFoldExpert}


@pytest.fixture(scope="module")
def lift_env(make_task_env):
    return make_task_env(LIFT)


@pytest.fixture(scope="module")
def drag_env(make_task_env):
    return make_task_env(DRAG)


def flat_towel(centre, turn_deg: float = 45.0) -> np.ndarray:
    """Vertex positions [N, 3] of the flat towel at rest, centred on ``centre``, turned."""
    grid = (np.arange(TOWEL_GRID) - (TOWEL_GRID - 1) / 2) * TOWEL_SPACING
    gx, gy = np.meshgrid(grid, grid, indexing="ij")
    a = np.deg2rad(turn_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    xy = np.column_stack([gx.ravel(), gy.ravel()]) @ rot.T + np.asarray(centre)
    return np.column_stack([xy, np.full(len(xy), TOWEL_RADIUS)])


def put(env, xyz: np.ndarray) -> None:
    base = env.unwrapped
    base.towel.set_positions(base.data, xyz)
    mujoco.mj_forward(base.model, base.data)


def holds(env) -> bool:
    """Whether this tick's success condition holds for the constructed state."""
    return env.unwrapped._evaluate()[0]


# ---------------------------------------------------------------------- layouts
@pytest.mark.parametrize("task", [LIFT, DRAG])
def test_every_layout_is_in_reach_with_clear_corners_and_nothing_done(task, lift_env, drag_env):
    env = {LIFT: lift_env, DRAG: drag_env}[task]
    lay = TowelLayout()
    for seed in range(40):
        _, info = env.reset(seed=seed)
        assert not info["success"]
        base = env.unwrapped
        pos = base.vertices()
        left, right = (pos[base.corner_vertex(s)] for s in SIDES)
        others = [pos[k, 1] for k in CORNERS if k not in (base.corner_vertex("left"),)]
        assert left[1] - max(others) >= lay.min_corner_gap - 1e-6  # the arm's left is +y
        assert right[1] < left[1]
        for corner in (left, right):
            assert lay.corner_reach[0] - 1e-3 <= reach(corner) <= lay.corner_reach[1] + 1e-3
        assert min(reach(p) for p in pos) >= lay.min_reach - 1e-3
        marks = base.marks.positions(base.data)
        assert np.hypot(*(marks["red"] - marks["blue"])) >= lay.min_mark_separation
        centre = base.centre()
        for xy in marks.values():
            assert np.min(np.hypot(*(pos[:, :2] - xy).T)) >= lay.mark_clearance - 2e-3
            assert lay.mark_distance[0] - 2e-3 <= np.hypot(*(xy - centre))
        # Laid flat and at rest: edges at their rest length, all of its area covered.
        assert base.coverage() == pytest.approx(1.0, abs=0.04)
        assert base.lying()


def test_footprint_of_a_flat_and_a_folded_cloth():
    xyz = flat_towel((0.0, 0.0), turn_deg=0.0)
    env = sim.make_env(LIFT, image_size=32)
    try:
        tri = env.unwrapped.triangles
    finally:
        env.close()
    assert footprint_area(xyz[:, :2], tri) == pytest.approx(FLAT_AREA, rel=0.03)
    # Folded in half along the middle row: the far half lies on the near half.
    folded = xyz[:, :2].copy()
    rows = np.arange(len(folded)) // TOWEL_GRID
    mid = (TOWEL_GRID - 1) // 2
    far = rows > mid
    folded[far, 0] = 2 * folded[rows == mid][0, 0] - folded[far, 0]
    assert footprint_area(folded, tri) == pytest.approx(FLAT_AREA / 2, rel=0.05)


# ---------------------------------------------------------------------- lift the corner
@pytest.mark.parametrize("side", SIDES)
def test_lift_options_choose_the_corner(lift_env, side):
    _, info = lift_env.reset(seed=1, options={"corner": side})
    assert info["corner"] == side and info["target"] == f"{side}_corner"
    assert lift_env.unwrapped.instruction == f"lift the towel by its {side} corner"


def test_unknown_corner_or_mark_is_rejected(lift_env, drag_env):
    with pytest.raises(ValueError, match="unknown towel corner 'top'"):
        lift_env.reset(seed=0, options={"corner": "top"})
    with pytest.raises(ValueError, match="unknown mark 'green'.*red"):
        drag_env.reset(seed=0, options={"mark": "green"})


@pytest.mark.parametrize(("height", "succeeds"), [(0.035, True), (0.031, True), (0.025, False)])
def test_lift_success_is_the_named_corner_3_cm_up(lift_env, height, succeeds):
    lift_env.reset(seed=2, options={"corner": "left"})
    base = lift_env.unwrapped
    xyz = base.vertices()
    xyz[base.corner_vertex("left"), 2] += height
    put(lift_env, xyz)
    assert holds(lift_env) is succeeds
    assert base.object_lifts()["left_corner"] == pytest.approx(height, abs=5e-4)


def test_lifting_the_other_corner_does_not_count(lift_env):
    lift_env.reset(seed=2, options={"corner": "left"})
    base = lift_env.unwrapped
    xyz = base.vertices()
    xyz[base.corner_vertex("right"), 2] += 0.05
    put(lift_env, xyz)
    assert not holds(lift_env)


def test_lift_success_needs_hold_steps_ticks(lift_env, hold_still):
    lift_env.reset(seed=2, options={"corner": "right"})
    base = lift_env.unwrapped
    assert not hold_still(lift_env, base.hold_steps + 2)["success"]  # at rest: nothing done


# ---------------------------------------------------------------------- drag onto the mark
@pytest.mark.parametrize(
    ("offset", "succeeds"), [(0.0, True), (0.025, True), (0.035, False), (0.10, False)]
)
def test_drag_success_is_the_centre_within_3_cm_of_the_named_mark(drag_env, offset, succeeds):
    drag_env.reset(seed=2, options={"mark": "red"})
    base = drag_env.unwrapped
    red = base.marks.positions(base.data)["red"]
    put(drag_env, flat_towel(red + np.array([offset, 0.0])))
    assert holds(drag_env) is succeeds, base.centre_to_mark()


def test_drag_success_is_held_for_hold_steps_on_a_towel_at_rest(drag_env, hold_still):
    drag_env.reset(seed=2, options={"mark": "blue"})
    base = drag_env.unwrapped
    put(drag_env, flat_towel(base.marks.positions(base.data)["blue"]))
    assert not hold_still(drag_env, base.hold_steps - 1)["success"]
    assert hold_still(drag_env, 1)["success"]


def test_the_other_mark_does_not_count(drag_env):
    drag_env.reset(seed=2, options={"mark": "red"})
    base = drag_env.unwrapped
    put(drag_env, flat_towel(base.marks.positions(base.data)["blue"]))
    assert not holds(drag_env)


def test_a_heaped_or_lifted_towel_on_the_mark_does_not_count(drag_env):
    drag_env.reset(seed=2, options={"mark": "red"})
    base = drag_env.unwrapped
    red = base.marks.positions(base.data)["red"]
    flat = flat_towel(red)
    # Bunched to 70 % of its size each way (49 % of its area), centred on the mark.
    heaped = flat.copy()
    heaped[:, :2] = red + 0.7 * (flat[:, :2] - red)
    put(drag_env, heaped)
    assert base.coverage() == pytest.approx(0.49, abs=0.04)
    assert not holds(drag_env)
    # Flat over the mark but held up in the air: not lying on the table.
    lifted = flat.copy()
    lifted[:, 2] += 0.03
    put(drag_env, lifted)
    assert not holds(drag_env)


# ---------------------------------------------------------------------- experts
def run_gated_expert(gated, task: str, seed: int) -> dict:
    obs, info = gated.reset(seed=seed)
    expert = EXPERTS[task](gated.unwrapped, seed=seed, limits=expert_motion_limits())
    while True:
        obs, _, terminated, truncated, info = gated.step(expert.act(obs))
        if terminated or truncated:
            return info


@pytest.mark.parametrize("task", [LIFT, DRAG])
def test_the_expert_plans_inside_the_gate_and_does_the_named_task(task, lift_env, drag_env):
    gated = SafetyGateWrapper({LIFT: lift_env, DRAG: drag_env}[task])
    for seed in range(2):
        info = run_gated_expert(gated, task, seed)
        assert info["success"], gated.unwrapped.instruction
        assert gated.episode_stats.as_dict()["protective"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("task", [LIFT, DRAG])
def test_the_expert_succeeds_on_at_least_90_of_100_seeds(task):
    env = SafetyGateWrapper(sim.make_env(task, image_size=32, cameras=("front",)))
    wins = sum(bool(run_gated_expert(env, task, seed)["success"]) for seed in range(100))
    assert wins >= 90, f"{wins}/100"


# ---------------------------------------------------------------------- fold in half
FOLD = "TowelFold-v1"


@pytest.fixture(scope="module")
def fold_env(make_task_env):
    return make_task_env(FOLD)


def folded(env, side: str, fraction: float = 1.0) -> np.ndarray:
    """The env's towel folded along the diagonal between its other two corners, the ``side``
    corner's half laid on the other half (``fraction`` < 1: only that far across)."""
    base = env.unwrapped
    v = base.vertices()
    centre = v[:, :2].mean(axis=0)
    corner = v[base.corner_vertex(side), :2]
    u = (corner - centre) / np.linalg.norm(corner - centre)
    depth = (v[:, :2] - centre) @ u
    out = v.copy()
    half = depth > 1e-6
    out[half, :2] -= 2 * fraction * depth[half, None] * u
    out[half, 2] = 3 * TOWEL_RADIUS  # one layer up
    return out


@pytest.mark.parametrize("side", SIDES)
def test_fold_success_is_the_named_corner_laid_on_the_other(fold_env, side):
    fold_env.reset(seed=3, options={"corner": side})
    other = SIDES[1 - SIDES.index(side)]
    assert fold_env.unwrapped.instruction == (
        f"fold the towel in half, {side} corner onto the {other} corner"
    )
    flat = fold_env.unwrapped.vertices()
    assert not holds(fold_env)  # laid flat: nothing done
    put(fold_env, folded(fold_env, side))
    base = fold_env.unwrapped
    assert base.corner_gap() < 0.005 and 0.4 <= base.coverage() <= 0.65
    assert holds(fold_env)
    put(fold_env, flat)
    # Folded the other way (the other corner on top): not what was asked.
    put(fold_env, folded(fold_env, other))
    assert not holds(fold_env)


def test_a_half_done_fold_does_not_count(fold_env):
    fold_env.reset(seed=3, options={"corner": "left"})
    put(fold_env, folded(fold_env, "left", fraction=0.6))
    assert fold_env.unwrapped.corner_gap() > 0.03
    assert not holds(fold_env)


def test_the_fold_scene_has_self_collision_and_the_others_not(fold_env, lift_env):
    assert int(fold_env.unwrapped.model.flex_selfcollide[0]) != 0
    assert int(lift_env.unwrapped.model.flex_selfcollide[0]) == 0


def test_the_fold_expert_folds_inside_the_gate(fold_env):
    gated = SafetyGateWrapper(fold_env)
    info = run_gated_expert(gated, FOLD, 0)
    assert info["success"], gated.unwrapped.instruction
    assert gated.episode_stats.as_dict()["protective"] == 0
    assert not gated.unwrapped.jaws_touch_towel()  # let go


@pytest.mark.slow
def test_the_fold_expert_succeeds_on_at_least_90_of_100_seeds():
    env = SafetyGateWrapper(sim.make_env(FOLD, image_size=32, cameras=("front",)))
    wins = sum(bool(run_gated_expert(env, FOLD, seed)["success"]) for seed in range(100))
    assert wins >= 90, f"{wins}/100"
