"""The twin's MuJoCo backing stepped by hand (no threads): servo registers in, joint state out."""

from __future__ import annotations

import numpy as np
import pytest

from real.feetech_twin import ErrorBit, FaultConfig, SO101Twin, ThermalConfig, TwinConfig
from real.feetech_twin.servo import Servo


@pytest.fixture
def twin():
    twin = SO101Twin(TwinConfig(thermal=ThermalConfig(time_constant_s=2.0), seed=1))
    yield twin
    twin.close()


def _run(twin: SO101Twin, seconds: float) -> None:
    # In batches of 5, as the physics thread does: registers are re-read between batches.
    with twin.lock:
        for _ in range(max(1, round(seconds / twin.physics.dt / 5))):
            twin.physics.step(5)


def _enable(servo: Servo, goal_offset_deg: float = 0.0) -> None:
    servo.write(40, bytes([1]))  # torque on: holds the present position
    goal = servo.get("Goal_Position") + round(
        goal_offset_deg * servo.encoder.steps_per_rad / 57.2958
    )
    servo.set("Goal_Position", goal)


def test_goal_is_tracked_at_the_servo_speed_limit(twin):
    pan = twin.servo("shoulder_pan")
    _enable(pan, 30.0)
    start = twin.joint_positions()[0]
    _run(twin, 0.05)
    # 300 °/s: 15° at most in 50 ms, so a 30° goal is not reached yet...
    assert twin.joint_positions()[0] - start < 16.0
    _run(twin, 0.5)
    # ...but is after half a second, within a step or two.
    assert abs(twin.joint_positions()[0] - (start + 30.0)) < 0.5
    assert twin.read_register("shoulder_pan", "Moving") == 0


def test_torque_off_goes_limp(twin):
    for servo in twin.servos:
        _enable(servo)
    _run(twin, 0.3)
    held = twin.joint_positions()
    _run(twin, 0.3)
    np.testing.assert_allclose(twin.joint_positions(), held, atol=0.5)  # holding against gravity
    for servo in twin.servos:
        servo.write(40, bytes([0]))
    _run(twin, 0.5)
    assert np.max(np.abs(twin.joint_positions() - held)) > 5.0  # gravity wins without torque
    assert np.all(twin.env.data.actuator_force[:6] == 0.0)


def test_sustained_load_heats_and_trips_overload_protection(twin):
    lift = twin.servo("shoulder_lift")
    twin.set_faults(FaultConfig(blocked_joints=["shoulder_lift"]))
    _enable(lift, 40.0)
    _run(twin, 0.5)
    assert lift.get("Present_Load") > 800  # near stall torque against the jam
    t0 = lift.temperature_c
    _run(twin, 2.5)  # > Protection_Time (2 s) above Overload_Torque (80 %)
    assert lift.temperature_c > t0 + 10.0
    assert lift.get("Status") & ErrorBit.OVERLOAD
    assert lift.error_byte() & ErrorBit.OVERLOAD
    assert abs(lift.get("Present_Load")) <= 210  # output cut to Protective_Torque (20 %)
    # Torque off (the stall relief SAFETY.md asks for) clears the protection.
    twin.set_faults(FaultConfig())
    lift.write(40, bytes([0]))
    _run(twin, 0.05)
    assert not lift.get("Status") & ErrorBit.OVERLOAD


def test_p_coefficient_sets_stiffness(twin):
    elbow = twin.servo("elbow_flex")
    elbow.set("P_Coefficient", 16)  # what lerobot's configure() writes
    _enable(elbow)
    _run(twin, 0.05)
    gain16 = twin.env.model.actuator_gainprm[2, 0]
    elbow.set("P_Coefficient", 32)
    _run(twin, 0.01)
    assert twin.env.model.actuator_gainprm[2, 0] == pytest.approx(2 * gain16)


def test_unknown_fault_joint_is_rejected():
    with pytest.raises(ValueError, match="unknown joints"):
        TwinConfig(faults=FaultConfig(blocked_joints=["elbow"]))


def test_render_gives_camera_images_of_the_scene(twin):
    images = twin.render()
    assert set(images) == {"front", "wrist"}
    assert images["front"].shape == (96, 96, 3) and images["front"].dtype == np.uint8
    assert images["front"].std() > 5  # an actual scene, not a blank frame
