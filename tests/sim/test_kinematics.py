"""The twin's kinematics against TheRobotStudio's official SO-101 URDF, and the lerobot boundary.

The reference is an independent numpy implementation of the URDF joint chain of
``Simulation/SO101/so101_new_calib.urdf`` in github.com/TheRobotStudio/SO-ARM100, not a reading
of our own MJCF. Two revisions of that file are used:

* ``URDF_2025_07`` (commit 385e8d7, "fix(urdf): fixing multiple issues related to the last URDF
  update", still the file's latest revision): the one MuJoCo Menagerie's ``robotstudio_so101``
  and therefore our twin follow. Its base frame is the MJCF base frame, so whole frames
  (position and orientation) are compared in the base frame.
* ``URDF_2025_05`` (commit bbb9734): an earlier revision with a different base link frame and
  a wrist_roll zero 0.0486795 rad away (the later revision folded that angle into the joint
  origin and shifted the limits by the same amount). It is compared relative to the shoulder
  frame with the roll re-zeroed, which checks the link offsets a second time and pins down that
  the two revisions differ only by that re-zeroing.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from data.keys import SO101_JOINTS
from safety import so101
from sim.envs.pick_color_cube import PickColorCubeEnv
from sim.expert import PAN_AXIS_XY

TOL_M = 1e-4  # positions, metres
TOL_ROT = 1e-4  # rotation-matrix entries; URDF angles are rounded to ~4e-6 rad (1.5708 vs pi/2)
N_CONFIGS = 200

# (joint, parent -> child origin xyz, rpy); every joint turns about z of its child frame.
URDF_2025_07 = (
    ("shoulder_pan", (0.0388353, -8.97657e-09, 0.0624), (3.14159, 4.18253e-17, -3.14159)),
    ("shoulder_lift", (-0.0303992, -0.0182778, -0.0542), (-1.5708, -1.5708, 0.0)),
    ("elbow_flex", (-0.11257, -0.028, 1.73763e-16), (-3.63608e-16, 8.74301e-16, 1.5708)),
    ("wrist_flex", (-0.1349, 0.0052, 3.62355e-17), (4.02456e-15, 8.67362e-16, -1.5708)),
    ("wrist_roll", (5.55112e-17, -0.0611, 0.0181), (1.5708, 0.0486795, 3.14159)),
    ("gripper", (0.0202, 0.0188, -0.0234), (1.5708, -5.24284e-08, -1.41553e-15)),
)
URDF_2025_05 = (
    ("shoulder_pan", (0.0207909, -0.0230745, 0.0948817), (-3.14159, 6.03684e-16, 1.5708)),
    ("shoulder_lift", (-0.0303992, -0.0182778, -0.0542), (-1.5708, -1.5708, 0.0)),
    ("elbow_flex", (-0.11257, -0.028, 2.46331e-16), (-1.22818e-15, 5.75928e-16, 1.5708)),
    ("wrist_flex", (-0.1349, 0.0052, 1.65232e-16), (3.2474e-15, 2.86219e-15, -1.5708)),
    ("wrist_roll", (0.0, -0.0611, 0.0181), (1.5708, -9.38083e-08, 3.14159)),
    ("gripper", (0.0202, 0.0188, -0.0234), (1.5708, -5.14108e-17, -1.38655e-14)),
)
# The 2025-07 revision's wrist_roll angle q corresponds to q - WRIST_ROLL_REZERO in 2025-05.
WRIST_ROLL_REZERO = 0.0486795
# Fixed frame "gripperframe" on the gripper link (same xyz in both revisions).
GRIPPERFRAME_XYZ = (-0.0079, -0.000218121, -0.0981274)

# Official joint limits (rad), SO101_JOINTS order, latest revision.
URDF_LIMITS = np.array(
    [
        [-1.91986, 1.91986],
        [-1.74533, 1.74533],
        [-1.69, 1.69],
        [-1.65806, 1.65806],
        [-2.74385, 2.84121],
        [-0.174533, 1.74533],
    ]
)
URDF_2025_05_WRIST_ROLL_LIMITS = (-2.79253, 2.79253)

# Child link of each joint = the MJCF body driven by it (the URDF names the last one
# "moving_jaw_so101_v1"; the twin calls it "moving_jaw").
CHILD_BODY = {
    "shoulder_pan": "shoulder",
    "shoulder_lift": "upper_arm",
    "elbow_flex": "lower_arm",
    "wrist_flex": "wrist",
    "wrist_roll": "gripper",
    "gripper": "moving_jaw",
}


# ---------------------------------------------------------------------- reference URDF chain
def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF fixed-axis rpy: R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def transform(rot: np.ndarray, xyz) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = xyz
    return out


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def urdf_fk(chain, q: np.ndarray) -> dict[str, np.ndarray]:
    """Homogeneous [4, 4] poses in the URDF base frame of each child link and of gripperframe."""
    pose = np.eye(4)
    frames = {}
    for (joint, xyz, rpy), angle in zip(chain, q, strict=True):
        pose = pose @ transform(rpy_matrix(*rpy), xyz) @ transform(rot_z(angle), (0, 0, 0))
        frames[CHILD_BODY[joint]] = pose
        if joint == "wrist_roll":
            frames["gripperframe"] = pose @ transform(np.eye(3), GRIPPERFRAME_XYZ)
    return frames


# ---------------------------------------------------------------------- the twin
@pytest.fixture(scope="module")
def arm():
    model = mujoco.MjModel.from_xml_path(str(so101.ARM_XML))
    return model, mujoco.MjData(model)


def mjcf_fk(arm, q: np.ndarray) -> dict[str, np.ndarray]:
    """Poses [4, 4] in the MJCF base frame of the bodies in CHILD_BODY and the gripperframe site."""
    model, data = arm
    data.qpos[:] = q
    mujoco.mj_kinematics(model, data)
    base = model.body("base").id
    world_from_base = transform(data.xmat[base].reshape(3, 3), data.xpos[base])
    base_from_world = np.linalg.inv(world_from_base)
    frames = {}
    for name in CHILD_BODY.values():
        b = model.body(name).id
        frames[name] = base_from_world @ transform(data.xmat[b].reshape(3, 3), data.xpos[b])
    s = model.site("gripperframe").id
    frames["gripperframe"] = base_from_world @ transform(
        data.site_xmat[s].reshape(3, 3), data.site_xpos[s]
    )
    return frames


def random_configs(n: int, seed: int = 0) -> np.ndarray:
    """[n, 6] joint radians uniform within the official limits."""
    rng = np.random.default_rng(seed)
    return rng.uniform(URDF_LIMITS[:, 0], URDF_LIMITS[:, 1], size=(n, len(SO101_JOINTS)))


# ---------------------------------------------------------------------- forward kinematics
def test_fk_matches_latest_urdf_in_base_frame(arm):
    """Every link frame and the gripperframe site, position and orientation, 200 configs."""
    worst_pos = worst_rot = 0.0
    for q in random_configs(N_CONFIGS):
        ours, ref = mjcf_fk(arm, q), urdf_fk(URDF_2025_07, q)
        for name, pose in ref.items():
            worst_pos = max(worst_pos, np.abs(ours[name][:3, 3] - pose[:3, 3]).max())
            # Only the gripperframe's origin is modelled: the twin's site keeps the gripper's axes.
            if name != "gripperframe":
                worst_rot = max(worst_rot, np.abs(ours[name][:3, :3] - pose[:3, :3]).max())
    assert worst_pos < TOL_M, f"position error {worst_pos:.2e} m"
    assert worst_rot < TOL_ROT, f"rotation error {worst_rot:.2e}"


def test_fk_matches_earlier_urdf_relative_to_shoulder(arm):
    """The 2025-05 revision (another base frame): positions relative to the shoulder frame."""
    worst = 0.0
    for q in random_configs(N_CONFIGS, seed=1):
        q_old = q.copy()
        q_old[4] -= WRIST_ROLL_REZERO
        ours, ref = mjcf_fk(arm, q), urdf_fk(URDF_2025_05, q_old)
        ours_inv, ref_inv = np.linalg.inv(ours["shoulder"]), np.linalg.inv(ref["shoulder"])
        for name in ("upper_arm", "lower_arm", "wrist", "gripper", "moving_jaw", "gripperframe"):
            err = (ours_inv @ ours[name])[:3, 3] - (ref_inv @ ref[name])[:3, 3]
            worst = max(worst, np.abs(err).max())
    assert worst < TOL_M, f"position error {worst:.2e} m"


def test_earlier_urdf_differs_from_twin_without_roll_rezero(arm):
    """Guards the comparison above: without the re-zeroing the moving jaw is >1 mm off (>10x
    the tolerance), so the two revisions really do disagree about the roll zero."""
    q = np.array([0.3, -0.5, 0.8, 0.4, 0.0, 0.2])
    ours, ref = mjcf_fk(arm, q), urdf_fk(URDF_2025_05, q)
    rel = {
        k: np.linalg.inv(f["shoulder"]) @ f["moving_jaw"] for k, f in (("ours", ours), ("ref", ref))
    }
    assert np.linalg.norm(rel["ours"][:3, 3] - rel["ref"][:3, 3]) > 1e-3


def test_shoulder_pan_axis_is_vertical_through_expected_point(arm):
    """The pan axis is the base's vertical line through PAN_AXIS_XY, which env and expert use."""
    model, data = arm
    mujoco.mj_resetData(model, data)
    mujoco.mj_kinematics(model, data)
    pan = model.joint("shoulder_pan")
    shoulder = model.body("shoulder").id
    axis = data.xmat[shoulder].reshape(3, 3) @ pan.axis
    # The arm sits at the world origin, so world coordinates are base coordinates here.
    np.testing.assert_allclose(np.abs(axis), [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(data.xanchor[pan.id][:2], PAN_AXIS_XY, atol=1e-6)
    ref = urdf_fk(URDF_2025_07, np.zeros(6))["shoulder"]
    np.testing.assert_allclose(ref[:2, 3], PAN_AXIS_XY, atol=1e-6)
    np.testing.assert_allclose(np.abs(ref[:3, 2]), [0, 0, 1], atol=1e-5)


def test_pan_only_rotates_the_rest_of_the_arm(arm):
    """Heights along and distances from the pan axis do not depend on pan, and agree between
    the twin and both URDF revisions (each measured about its own pan axis)."""
    fks = {
        "twin": lambda q: mjcf_fk(arm, q),
        "urdf_2025_07": lambda q: urdf_fk(URDF_2025_07, q),
        "urdf_2025_05": lambda q: urdf_fk(URDF_2025_05, q - WRIST_ROLL_REZERO * np.eye(6)[4]),
    }
    pans = np.linspace(URDF_LIMITS[0, 0], URDF_LIMITS[0, 1], 5)
    for config in random_configs(20, seed=2):
        signatures = {}
        for label, fk in fks.items():
            for pan in pans:
                frames = fk(np.r_[pan, config[1:]])
                origin, axis = frames["shoulder"][:3, 3], frames["shoulder"][:3, 2]
                sig = []
                for name in ("upper_arm", "lower_arm", "wrist", "gripper", "gripperframe"):
                    v = frames[name][:3, 3] - origin
                    along = v @ axis
                    sig += [along, np.linalg.norm(v - along * axis)]
                signatures[label, pan] = sig
        reference = signatures["twin", pans[0]]
        for key, sig in signatures.items():
            np.testing.assert_allclose(sig, reference, atol=TOL_M, err_msg=str(key))


# ---------------------------------------------------------------------- joints and limits
def test_joint_and_actuator_order_is_lerobot_order(arm):
    """State/action vectors map 1:1 onto qpos[:6] and ctrl[:6] only if the orders agree."""
    model, _ = arm
    assert tuple(model.joint(i).name for i in range(model.njnt)) == SO101_JOINTS
    assert tuple(model.actuator(i).name for i in range(model.nu)) == SO101_JOINTS
    for i, name in enumerate(SO101_JOINTS):
        assert model.jnt_qposadr[model.joint(name).id] == i
        assert model.actuator_trnid[i, 0] == model.joint(name).id


def test_joint_and_control_ranges_are_official(arm):
    model, _ = arm
    # MJCF values carry more digits than the URDF's six significant ones.
    np.testing.assert_allclose(model.jnt_range, URDF_LIMITS, atol=1e-5)
    np.testing.assert_allclose(model.actuator_ctrlrange, URDF_LIMITS, atol=1e-5)
    np.testing.assert_allclose(so101.JOINT_LIMITS_RAD, model.jnt_range, atol=1e-12)
    # The scene includes the same arm: same ranges there.
    scene = PickColorCubeEnv(render_mode=None, cameras=())
    try:
        arm_ids = [scene.model.joint(j).id for j in SO101_JOINTS]
        np.testing.assert_allclose(scene.model.jnt_range[arm_ids], model.jnt_range, atol=1e-12)
    finally:
        scene.close()


def test_earlier_wrist_roll_limits_are_the_same_travel():
    lo, hi = URDF_2025_05_WRIST_ROLL_LIMITS
    np.testing.assert_allclose(
        [lo + WRIST_ROLL_REZERO, hi + WRIST_ROLL_REZERO], URDF_LIMITS[4], atol=1e-5
    )


# ---------------------------------------------------------------------- lerobot units
lerobot_positions = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.just(6)),
    elements=st.floats(-400.0, 400.0, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(lerobot_positions)
def test_lerobot_units_round_trip(pos):
    np.testing.assert_allclose(so101.from_radians(so101.to_radians(pos)), pos, atol=1e-9)
    q = so101.to_radians(pos)
    np.testing.assert_allclose(so101.to_radians(so101.from_radians(q)), q, atol=1e-12)


def test_joints_are_degrees_and_gripper_is_percent_of_travel():
    q = so101.to_radians([90.0, -45.0, 180.0, 30.0, -90.0, 0.0])
    np.testing.assert_allclose(q[:5], [np.pi / 2, -np.pi / 4, np.pi, np.pi / 6, -np.pi / 2])
    closed, open_ = URDF_LIMITS[5]
    assert q[5] == pytest.approx(closed, abs=1e-6)
    assert so101.to_radians(np.r_[np.zeros(5), 100.0])[5] == pytest.approx(open_, abs=1e-6)
    assert so101.to_radians(np.r_[np.zeros(5), 50.0])[5] == pytest.approx(
        0.5 * (closed + open_), abs=1e-6
    )
    np.testing.assert_allclose(so101.from_radians(URDF_LIMITS[:, 0])[5], 0.0, atol=1e-4)
    np.testing.assert_allclose(so101.from_radians(URDF_LIMITS[:, 1])[5], 100.0, atol=1e-4)


def test_action_bounds_are_the_joint_limits_in_lerobot_units():
    np.testing.assert_allclose(so101.ACTION_LOW[:5], np.rad2deg(URDF_LIMITS[:5, 0]), atol=1e-3)
    np.testing.assert_allclose(so101.ACTION_HIGH[:5], np.rad2deg(URDF_LIMITS[:5, 1]), atol=1e-3)
    np.testing.assert_allclose([so101.ACTION_LOW[5], so101.ACTION_HIGH[5]], [0.0, 100.0], atol=1e-4)


@pytest.mark.parametrize("shape", [(), (5,), (7,), (6, 5), (0,)])
@pytest.mark.parametrize("convert", [so101.to_radians, so101.from_radians])
def test_conversions_reject_wrong_shapes(convert, shape):
    with pytest.raises(ValueError, match="6 values"):
        convert(np.zeros(shape))
