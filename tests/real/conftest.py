"""Shared helpers for the arm-runtime tests: small action datasets to replay as a teleoperator."""

from __future__ import annotations

import numpy as np
import pytest

from data.dataset import SOURCE, so101_features
from data.keys import ACTION, OBS_STATE, TASK

# Modules whose tests run lerobot's driver against a live twin in real time (a 30 Hz loop, the
# bus's ~35 ms reply timeout): on a shared 2-core VM a stall of the machine (measured here:
# twin replies missing for a second while nothing else ran) fails them now and then. Each gets
# two more tries; a regression fails all three, and every rerun is reported (`R` in the
# summary line, "rerun" in the report).
LIVE_TWIN_MODULES = {"test_record.py", "test_operator.py", "test_run.py", "test_twin_lerobot.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in LIVE_TWIN_MODULES and item.path.parent.name == "real":
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=2))


def write_action_dataset(root, episodes: list[np.ndarray]) -> None:
    """A LeRobotDataset with state and action only, one episode per array [T, 6]."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset.create(
        "test/actions", fps=30, features=so101_features((), 8, 8), root=root, use_videos=False
    )
    for actions in episodes:
        for a in np.asarray(actions, dtype=np.float32):
            ds.add_frame({OBS_STATE: a, ACTION: a, SOURCE: "sim", TASK: "move"})
        ds.save_episode()
    ds.finalize()


def expert_actions(seed: int, ticks: int, limits=None) -> np.ndarray:
    """The scripted expert's first ``ticks`` actions [ticks, 6] on PickColorCube seed ``seed``."""
    import sim
    from sim.expert import PickCubeExpert

    env = sim.make_env("PickColorCube-v1", image_size=16, cameras=("front",))
    try:
        obs, _ = env.reset(seed=seed)
        expert = PickCubeExpert(env.unwrapped, seed=seed, limits=limits)
        out = []
        for _ in range(ticks):
            action = expert.act(obs)
            out.append(action)
            obs, *_ = env.step(action)
        return np.array(out)
    finally:
        env.close()


@pytest.fixture
def action_dataset():
    """``action_dataset(root, episodes)`` writes a replayable dataset (write_action_dataset)."""
    return write_action_dataset


# The replay demos below come from this scene, which record tests start their twin with.
REPLAY_SEED = 1_000_006
REPLAY_TICKS = 45


@pytest.fixture(scope="module")
def replay_demos(tmp_path_factory):
    """A dataset of two episodes to replay as a teleoperator: the expert's first motions on the
    REPLAY_SEED scene, forwards and backwards (REPLAY_TICKS each)."""
    root = tmp_path_factory.mktemp("demos") / "ds"
    actions = expert_actions(REPLAY_SEED, REPLAY_TICKS)
    write_action_dataset(root, [actions, actions[::-1]])
    return root
