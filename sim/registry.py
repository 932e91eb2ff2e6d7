"""The task registry: one entry per versioned task id, registered with gymnasium."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

NAMESPACE = "armvla"


@dataclass(frozen=True)
class TaskSpec:
    name: str  # versioned id without namespace, e.g. "PickColorCube-v1"
    entry_point: str
    max_episode_steps: int
    expert: str  # "module:Class" of the scripted expert
    description: str


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="PickColorCube-v1",
            entry_point="sim.envs.pick_color_cube:PickColorCubeEnv",
            max_episode_steps=300,
            expert="sim.expert:PickCubeExpert",
            description="pick up the cube whose color the instruction names (red, green, blue)",
        ),
        TaskSpec(
            name="RopeToMark-v1",
            entry_point="sim.envs.rope:RopeToMarkEnv",
            max_episode_steps=400,
            expert="sim.flex_expert:RopeExpert",
            description="drag the named end of a rope (left, right) to the named mark (red, blue)",
        ),
        TaskSpec(
            name="TowelLiftCorner-v1",
            entry_point="sim.envs.towel:TowelLiftCornerEnv",
            max_episode_steps=300,
            expert="sim.flex_expert:TowelLiftExpert",
            description="lift a towel by its named corner (left, right) 3 cm off the table",
        ),
        TaskSpec(
            name="TowelToMark-v1",
            entry_point="sim.envs.towel:TowelToMarkEnv",
            max_episode_steps=450,
            expert="sim.flex_expert:TowelDragExpert",
            description="drag a towel onto the named mark (red, blue), keeping it spread out",
        ),
        TaskSpec(
            name="TowelFold-v1",
            entry_point="sim.envs.towel:TowelFoldEnv",
            max_episode_steps=450,
            expert="sim.flex_expert:TowelFoldExpert",
            description="fold a towel in half, the named corner (left, right) onto the other",
        ),
    )
}


def resolve_task(name: str) -> TaskSpec:
    """The task for ``name`` (with or without the ``armvla/`` namespace) or a clear error."""
    short = name.removeprefix(f"{NAMESPACE}/")
    if short not in TASKS:
        raise ValueError(
            f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))} "
            f"(pass one with --task.name=...)"
        )
    return TASKS[short]


def register_all() -> None:
    for spec in TASKS.values():
        env_id = f"{NAMESPACE}/{spec.name}"
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=spec.entry_point,
                max_episode_steps=spec.max_episode_steps,
            )


def make_env(name: str, **kwargs) -> gym.Env:
    """``gymnasium.make`` for a task of the suite, accepting the short or namespaced id."""
    spec = resolve_task(name)
    return gym.make(f"{NAMESPACE}/{spec.name}", **kwargs)
