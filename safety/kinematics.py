"""Forward kinematics of the SO-101 for the safety gate, read from the twin's MJCF.

The gate checks a dozen configurations per tick (the command, points between it and the last
one, and where the arm would come to rest if it braked), so FK is batched numpy over ``[N, 6]``
joint vectors instead of one ``mj_kinematics`` call each. The kinematic tree (body offsets,
orientations, hinge axes) comes from ``sim/assets/so101.xml`` through MuJoCo's compiled model,
so the gate and the simulator share one description of the arm; a test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from safety import so101

# Points the Cartesian checks watch: (name, body in the MJCF, offset in that body's frame, m).
# The elbow and wrist are the joint centres on the link axis; the tool is the grasp point
# between the jaws; the fingertips are the far ends of the two jaw pads.
CHECK_POINTS: tuple[tuple[str, str, tuple[float, float, float]], ...] = (
    ("elbow", "lower_arm", (0.0, 0.0, 0.0182)),
    ("wrist", "wrist", (0.0, 0.0, 0.0182)),
    ("tool", "gripper", (0.0095, 0.0, -0.08)),  # the "grasp" site
    ("fixed_tip", "gripper", (-0.0118, 0.0, -0.095)),
    ("moving_tip", "moving_jaw", (-0.0103, -0.077, 0.019)),
)
POINT_NAMES = tuple(name for name, _, _ in CHECK_POINTS)


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@dataclass(frozen=True)
class _Link:
    parent: int  # index into the chain, -1 for the world
    pos: np.ndarray  # [3] body origin in the parent frame
    rot: np.ndarray  # [3, 3] body orientation in the parent frame (at joint angle 0)
    axis: np.ndarray  # [3] hinge axis in the body frame (unit)
    joint: int  # index into the 6-vector of joint angles
    cross: np.ndarray  # [3, 3] cross-product matrix K of the axis (Rodrigues: I + sK + (1-c)K²)
    cross2: np.ndarray  # [3, 3] K @ K


class ArmKinematics:
    """Batched forward kinematics of the SO-101 arm (base frame = world frame of the MJCF).

    Args:
        xml_path: MJCF of the arm (default: the twin's ``so101.xml``).
    """

    def __init__(self, xml_path=so101.ARM_XML):
        model = mujoco.MjModel.from_xml_path(str(xml_path))
        self.links: list[_Link] = []
        body_to_link: dict[int, int] = {}
        for j, name in enumerate(so101.SO101_JOINTS):
            jnt = model.joint(name)
            if jnt.type[0] != mujoco.mjtJoint.mjJNT_HINGE or np.any(jnt.pos != 0):
                raise ValueError(
                    f"joint {name!r}: the gate's FK expects a hinge at its body origin"
                )
            body = int(jnt.bodyid[0])
            pos = model.body_pos[body].copy()
            rot = _quat_to_mat(model.body_quat[body])
            # Fold bodies without a joint (the base) into the offset to the nearest jointed one.
            parent_body = int(model.body_parentid[body])
            while parent_body != 0 and parent_body not in body_to_link:
                parent_rot = _quat_to_mat(model.body_quat[parent_body])
                pos = parent_rot @ pos + model.body_pos[parent_body]
                rot = parent_rot @ rot
                parent_body = int(model.body_parentid[parent_body])
            parent = body_to_link.get(parent_body, -1)
            axis = jnt.axis / np.linalg.norm(jnt.axis)
            x, y, z = axis
            cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
            self.links.append(_Link(parent, pos, rot, axis.copy(), j, cross, cross @ cross))
            body_to_link[body] = len(self.links) - 1
        self._point_link = []
        self._point_offset = []
        for name, body, offset in CHECK_POINTS:
            bid = model.body(body).id
            if bid not in body_to_link:
                raise ValueError(f"check point {name!r}: body {body!r} has no joint")
            self._point_link.append(body_to_link[bid])
            self._point_offset.append(np.asarray(offset, dtype=np.float64))
        self.point_names = POINT_NAMES
        # Each link's transform in its parent at angle a, as 4x4: A + sin(a) B + (1 - cos(a)) C
        # (Rodrigues: rot @ (I + sin K + (1 - cos) K²), the offset in A), for all links at once.
        n = len(self.links)
        self._a, self._b, self._c = np.zeros((n, 4, 4)), np.zeros((n, 4, 4)), np.zeros((n, 4, 4))
        for i, link in enumerate(self.links):
            if link.parent >= i:
                raise ValueError("the gate's FK expects every link after its parent")
            self._a[i, :3, :3], self._a[i, :3, 3], self._a[i, 3, 3] = link.rot, link.pos, 1.0
            self._b[i, :3, :3] = link.rot @ link.cross
            self._c[i, :3, :3] = link.rot @ link.cross2
        self._joints = np.array([link.joint for link in self.links])
        self._offsets = np.array([np.append(o, 1.0) for o in self._point_offset])  # [P, 4]

    def points(self, q: np.ndarray) -> np.ndarray:
        """Check-point positions for joint angles ``q`` [N, 6] (rad) -> [N, P, 3] (m), P points in
        ``POINT_NAMES`` order. A single ``[6]`` vector gives ``[P, 3]``."""
        q = np.asarray(q, dtype=np.float64)
        single = q.ndim == 1
        angle = np.atleast_2d(q)[:, self._joints, None, None]
        t = self._a + np.sin(angle) * self._b + (1.0 - np.cos(angle)) * self._c  # [N, L, 4, 4]
        for i, link in enumerate(self.links):
            if link.parent >= 0:
                t[:, i] = t[:, link.parent] @ t[:, i]  # now in the world frame
        out = np.einsum("nlij,lj->nli", t[:, self._point_link, :3], self._offsets)  # [N, P, 3]
        return out[0] if single else out
