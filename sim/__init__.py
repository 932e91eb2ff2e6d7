"""MuJoCo twin of the SO-101, the language-conditioned task suite and scripted experts.

Importing this package registers every task with gymnasium under the ``armvla/`` namespace,
e.g. ``gymnasium.make("armvla/PickColorCube-v1")``.
"""

import os

# MuJoCo picks its GL backend when first imported: headless EGL unless the user chose one.
os.environ.setdefault("MUJOCO_GL", "egl")

from sim.registry import TASKS, make_env, register_all, resolve_task

register_all()

__all__ = ["TASKS", "make_env", "register_all", "resolve_task"]
