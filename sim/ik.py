"""Inverse kinematics of the SO-101 for a top-down grasp: the jaws point straight down.

Shared by the scripted expert (grasp poses) and the keyboard end-effector teleoperator (a tool
target moved by keys). mink solves a damped least-squares QP on the twin's MJCF, inside the
joint limits, with a small posture cost so the solution stays near where the arm is.
"""

from __future__ import annotations

import mink
import mujoco
import numpy as np

from safety import so101


class TopDownIK:
    """Joint radians putting the grasp site at a position, jaws down, rotated by a yaw.

    Args:
        model: the arm's MjModel (default: the twin's ``so101.xml``).
    """

    def __init__(self, model: mujoco.MjModel | None = None):
        self.model = model or mujoco.MjModel.from_xml_path(str(so101.ARM_XML))
        self._cfg = mink.Configuration(self.model)
        self._grasp_task = mink.FrameTask(
            "grasp", "site", position_cost=1.0, orientation_cost=0.1, lm_damping=1e-3
        )
        self._posture = mink.PostureTask(self.model, cost=1e-3)
        self._limits = [mink.ConfigurationLimit(self.model)]

    def solve(
        self, pos: np.ndarray, yaw: float, q_init: np.ndarray, iterations: int = 200
    ) -> np.ndarray:
        """Joint radians [6] from ``q_init`` [6] (the gripper joint barely moves: only the
        posture task acts on it).

        Args:
            pos: grasp-site target [3] in the base frame (m).
            yaw: rotation of the jaws about the vertical (rad).
            q_init: starting joint radians [6].
            iterations: most solver steps; stops earlier within 0.5 mm.
        """
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        target = mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(rot), pos)
        q0 = np.array(q_init, dtype=np.float64).copy()
        self._cfg.update(q0)
        self._grasp_task.set_target(target)
        self._posture.set_target(q0)
        tasks = [self._grasp_task, self._posture]
        for _ in range(iterations):
            vel = mink.solve_ik(self._cfg, tasks, 0.05, "daqp", damping=1e-3, limits=self._limits)
            self._cfg.integrate_inplace(vel, 0.05)
            err = self._grasp_task.compute_error(self._cfg)
            if np.linalg.norm(err[:3]) < 5e-4 and np.linalg.norm(vel) < 1e-3:
                break
        return self._cfg.q.copy()

    def grasp_position(self, q: np.ndarray) -> np.ndarray:
        """Forward kinematics: the grasp site [3] at joint radians ``q`` [6]."""
        data = mujoco.MjData(self.model)
        data.qpos[:] = q
        mujoco.mj_kinematics(self.model, data)
        return data.site("grasp").xpos.copy()
