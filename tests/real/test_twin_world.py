"""The twin as another world: any task behind the bus, its frames through lerobot's ZMQ camera
equal to the `domain="real"` env's for the same state, and the scene side channel."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from lerobot.cameras.zmq import ZMQCameraConfig
from lerobot.cameras.zmq.camera_zmq import ZMQCamera
from lerobot.robots.so_follower import SO101Follower, SO101FollowerConfig

import sim
from data.keys import SO101_JOINTS, image_key
from real.feetech_twin import SO101Twin, TwinConfig
from real.feetech_twin.cameras import TwinCameraPublisher
from real.feetech_twin.scene_channel import SceneChannel
from sim.domain import RealWorld

SIZE = 64


def _published_frames(twin: SO101Twin) -> dict[str, np.ndarray]:
    """One frame per camera as lerobot's ZMQ camera reads it from the twin's publisher."""
    publisher = TwinCameraPublisher(twin, fps=20.0).start()
    cams = []
    try:
        frames = {}
        for name in twin.config.cameras:
            cam = ZMQCamera(
                ZMQCameraConfig(
                    server_address=publisher.host, port=publisher.port, camera_name=name
                )
            )
            cam.connect()
            cams.append(cam)
            frames[name] = np.asarray(cam.async_read(timeout_ms=5000))
        return frames
    finally:
        for cam in cams:
            cam.disconnect()
        publisher.stop()


@pytest.mark.parametrize("task", ["PickColorCube-v1", "TowelToMark-v1"])
def test_twin_frames_match_the_real_domain_env_for_the_same_state(task):
    # Physics not started: the scene stands still, so both sides see one state.
    twin = SO101Twin(TwinConfig(task=task, seed=5, image_size=SIZE))
    real = sim.make_env(task, image_size=SIZE, domain="real")
    plain = sim.make_env(task, image_size=SIZE)
    try:
        published = _published_frames(twin)
        for env in (real, plain):
            env.reset(seed=0)
            env.unwrapped.set_scene_state(twin.env.scene_state())
        obs_real = real.unwrapped._observe()
        obs_sim = plain.unwrapped._observe()
        for cam, frame in published.items():
            assert frame.shape == (SIZE, SIZE, 3)
            mine = obs_real[image_key(cam)].astype(int)
            # The same rendering and the same JPEG coding: equal up to JPEG's own rounding.
            assert np.abs(frame.astype(int) - mine).mean() < 1.0, cam
            # ... and another world than the sim's (camera pose, lens, light, table).
            assert np.abs(frame.astype(int) - obs_sim[image_key(cam)].astype(int)).mean() > 8
        assert twin.env.instruction == real.unwrapped.instruction
    finally:
        twin.close()
        real.close()
        plain.close()


def test_real_domain_caps_the_gripper_torque_and_each_setting_is_one_field():
    plain = sim.make_env("PickColorCube-v1", image_size=32).unwrapped
    real = sim.make_env("PickColorCube-v1", image_size=32, domain="real").unwrapped
    g = real.model.actuator("gripper").id
    ratio = real.model.actuator_forcerange[g, 1] / plain.model.actuator_forcerange[g, 1]
    assert ratio == pytest.approx(RealWorld().gripper_torque)
    front = real.model.camera("front").id
    assert real.model.cam_fovy[front] == pytest.approx(
        plain.model.cam_fovy[front] + RealWorld().camera_fov_deg
    )
    wide = sim.make_env(
        "PickColorCube-v1", image_size=32, domain="real", world={"camera_fov_deg": 6.0}
    ).unwrapped
    assert wide.model.cam_fovy[front] == pytest.approx(plain.model.cam_fovy[front] + 6.0)
    with pytest.raises(ValueError, match="unknown domain 'mars'"):
        sim.make_env("PickColorCube-v1", image_size=32, domain="mars")
    for env in (plain, real, wide):
        env.close()


def test_generate_refuses_the_real_domain():
    from sim.generate import GenerateConfig, TaskConfig

    with pytest.raises(ValueError, match="armvla record"):
        GenerateConfig(task=TaskConfig(domain="real"))


def test_the_twin_serves_a_rope_scene_to_lerobots_follower(tmp_path):
    cfg = TwinConfig(task="RopeToMark-v1", seed=4, robot_id="rope_twin", calibration_dir=tmp_path)
    with SO101Twin(cfg) as twin:
        twin.write_calibration()
        robot = SO101Follower(
            SO101FollowerConfig(port=twin.port, id="rope_twin", calibration_dir=tmp_path)
        )
        robot.connect()
        try:
            start = np.array([robot.get_observation()[f"{j}.pos"] for j in SO101_JOINTS])
            rope0 = twin.env.rope.positions(twin.env.data)
            goal = start + np.array([10.0, 0, 0, 0, 0, 0])
            robot.send_action(
                {f"{j}.pos": float(v) for j, v in zip(SO101_JOINTS, goal, strict=True)}
            )
            deadline = time.monotonic() + 5.0
            moved = 0.0
            while time.monotonic() < deadline and moved < 8.0:
                moved = robot.get_observation()["shoulder_pan.pos"] - start[0]
                time.sleep(0.05)
            assert moved >= 8.0  # the servos drive the rope scene's arm
            with twin.lock:
                rope = twin.env.rope.positions(twin.env.data)
            # The rope lies still where the seed put it (nothing touched it), in the same
            # layout as the sim env's for that seed.
            assert np.abs(rope - rope0).max() < 2e-3
            env = sim.make_env("RopeToMark-v1", image_size=16)
            env.reset(seed=4)
            assert (
                np.abs(env.unwrapped.rope.positions(env.unwrapped.data)[:, :2] - rope[:, :2]).max()
                < 2e-3
            )
            assert env.unwrapped.instruction == twin.env.instruction
            env.close()
        finally:
            robot.disconnect()


def test_the_scene_channel_serves_the_state_and_resets_the_objects_only():
    import zmq

    with SO101Twin(TwinConfig(task="TowelLiftCorner-v1", seed=2)) as twin:
        channel = SceneChannel(twin).start()
        context = zmq.Context()
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(f"tcp://127.0.0.1:{channel.port}")
        try:
            sock.send_string(json.dumps({"cmd": "state"}))
            reply = json.loads(sock.recv())
            assert reply["ok"] and reply["task"] == "TowelLiftCorner-v1" and reply["seed"] == 2
            towel0 = np.array(reply["state"]["qpos"])
            arm_before = twin.physics.joint_radians()
            sock.send_string(
                json.dumps({"cmd": "reset", "seed": 9, "options": {"corner": "right"}})
            )
            reply = json.loads(sock.recv())
            assert reply["ok"] and reply["seed"] == 9
            assert reply["state"]["task"]["side"] == "right"
            assert twin.env.instruction == "lift the towel by its right corner"
            # The towel moved to seed 9's layout; the arm stayed where the servos hold it.
            assert np.abs(np.array(reply["state"]["qpos"]) - towel0).max() > 0.01
            np.testing.assert_allclose(twin.physics.joint_radians(), arm_before, atol=0.02)
            mirror = sim.make_env("TowelLiftCorner-v1", image_size=16)
            mirror.reset(seed=0)
            mirror.unwrapped.set_scene_state(reply["state"])
            assert mirror.unwrapped.corner_vertex("right") == twin.env.corner_vertex("right")
            mirror.close()
            sock.send_string(json.dumps({"cmd": "launch"}))
            assert "unknown command 'launch'" in json.loads(sock.recv())["error"]
            sock.send_string(json.dumps({"cmd": "reset", "seed": "x"}))
            assert "integer 'seed'" in json.loads(sock.recv())["error"]
        finally:
            sock.close()
            context.term()
            channel.stop()


def test_scene_state_of_another_task_is_refused():
    rope = sim.make_env("RopeToMark-v1", image_size=16)
    towel = sim.make_env("TowelToMark-v1", image_size=16)
    try:
        rope.reset(seed=0)
        towel.reset(seed=0)
        with pytest.raises(ValueError, match="scene state of another task"):
            towel.unwrapped.set_scene_state(rope.unwrapped.scene_state())
    finally:
        rope.close()
        towel.close()


def test_twin_config_rejects_an_unknown_task_or_domain():
    with pytest.raises(ValueError, match="unknown task 'Fold-v9'"):
        TwinConfig(task="Fold-v9")
    with pytest.raises(ValueError, match="--domain must be one of"):
        TwinConfig(domain="moon")
