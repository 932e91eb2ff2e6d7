"""``armvla replay``: a tiny dataset goes in, an .rrd with every camera, joint and the task comes out."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from data import rerun_log
from data.dataset import ROBOT_TYPE, SOURCE, so101_features
from data.keys import ACTION, OBS_STATE, SO101_JOINTS, SOURCE_SIM, image_key
from data.replay import ReplayConfig, hwc_uint8, joint_names, replay
from data.rerun_log import rerun_executable
from policy.cli import main

CAMERAS = ("front", "wrist")
EPISODE_LENGTHS = (10, 12)  # different lengths, so a wrong episode shows up in row counts
TASKS = ("pick the red cube", "pick the blue cube")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """Two-episode SO-101 dataset (32x32 video cameras); returns its root and per-episode vectors."""
    from lerobot.datasets import LeRobotDataset

    root = tmp_path_factory.mktemp("replay") / "tiny_so101"
    ds = LeRobotDataset.create(
        "test/tiny_so101",
        fps=30,
        features=so101_features(CAMERAS, 32, 32),
        root=root,
        robot_type=ROBOT_TYPE,
    )
    rng = np.random.default_rng(0)
    episodes = []
    for length, task in zip(EPISODE_LENGTHS, TASKS, strict=True):
        state = rng.uniform(-90, 90, (length, 6)).astype(np.float32)
        action = rng.uniform(-90, 90, (length, 6)).astype(np.float32)
        for t in range(length):
            frame = {OBS_STATE: state[t], ACTION: action[t], SOURCE: SOURCE_SIM, "task": task}
            for cam in CAMERAS:
                frame[image_key(cam)] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            ds.add_frame(frame)
        # Serial encoding: lerobot's parallel path forks this multi-threaded process.
        ds.save_episode(parallel_encoding=False)
        episodes.append({"state": state, "action": action})
    ds.finalize()
    return root, episodes


def read_rrd(path: Path) -> dict[str, list]:
    """Temporal chunks of the first recording in an .rrd, as Arrow record batches per entity."""
    from rerun.experimental import RrdReader

    by_entity = defaultdict(list)
    with warnings.catch_warnings():
        # Files written by a gRPC server that was stopped have no footer; streaming reads them fine.
        warnings.filterwarnings("ignore", message="RRD file has no footer")
        for chunk in RrdReader(path).stream():
            if not chunk.is_static:
                by_entity[chunk.entity_path].append(chunk.to_record_batch())
    return by_entity


def column(batches: list, name: str) -> list:
    """One column over all batches, ordered by frame_index."""
    rows = [
        (f, v)
        for b in batches
        for f, v in zip(b["frame_index"].to_pylist(), b[name].to_pylist(), strict=True)
    ]
    return [v for _, v in sorted(rows, key=lambda r: r[0])]


def assert_episode_logged(path: Path, episode: int, episodes: list[dict]) -> None:
    entities = read_rrd(path)
    n = EPISODE_LENGTHS[episode]
    for cam in CAMERAS:
        assert sum(b.num_rows for b in entities[f"/camera/{cam}"]) == n, f"camera {cam}"
    for i, joint in enumerate(SO101_JOINTS):
        for kind in ("state", "action"):
            batches = entities[f"/{kind}/{joint}"]
            assert sum(b.num_rows for b in batches) == n, f"{kind}/{joint}"
            assert column(batches, "frame_index") == list(range(n))
            values = [v[0] for v in column(batches, "Scalars:scalars")]
            np.testing.assert_allclose(values, episodes[episode][kind][:, i], rtol=1e-6)
    for batch in entities[f"/camera/{CAMERAS[0]}"]:
        assert {"frame_index", "timestamp"} <= set(batch.schema.names)
        assert batch["EncodedImage:media_type"].to_pylist()[0] == ["image/jpeg"]
    text = " ".join(
        t for b in entities["/task"] for row in b["TextDocument:text"].to_pylist() for t in row
    )
    assert TASKS[episode] in text
    assert SOURCE_SIM in text


@pytest.fixture(scope="module")
def replayed_rrd(tiny_dataset, tmp_path_factory) -> Path:
    """Episode 1 of the tiny dataset, replayed through the ``armvla`` CLI into an .rrd."""
    root, _ = tiny_dataset
    out = tmp_path_factory.mktemp("rrd") / "sub" / "episode1.rrd"  # parent folder created by replay
    assert main(["replay", f"--root={root}", "--episode=1", f"--save={out}"]) == 0
    return out


def test_cli_replay_logs_cameras_joints_and_task(replayed_rrd, tiny_dataset):
    assert_episode_logged(replayed_rrd, 1, tiny_dataset[1])


def test_cli_replay_writes_default_layout(replayed_rrd):
    from rerun.experimental import RrdReader

    reader = RrdReader(replayed_rrd)
    (blueprint,) = reader.blueprints()
    props = defaultdict(dict)  # entity path -> component -> value
    for chunk in reader.stream(store=blueprint):
        batch = chunk.to_record_batch()
        for name in batch.schema.names:
            if ":" in name:
                props[chunk.entity_path][name] = batch[name].to_pylist()[-1]
    views = {
        path: (p["ViewBlueprint:class_identifier"][0], p["ViewBlueprint:space_origin"][0])
        for path, p in props.items()
        if "ViewBlueprint:class_identifier" in p
    }
    kinds = sorted(kind for kind, _ in views.values())
    assert kinds == ["2D", "2D"] + ["TextDocument"] + ["TimeSeries"] * 6
    assert {origin for kind, origin in views.values() if kind == "2D"} == {
        f"camera/{cam}" for cam in CAMERAS
    }
    plot_contents = sorted(
        props[f"{path}/ViewContents"]["ViewContents:query"]
        for path, (kind, _) in views.items()
        if kind == "TimeSeries"
    )
    assert plot_contents == sorted([f"/state/{j}", f"/action/{j}"] for j in SO101_JOINTS)
    assert props["/time_panel"]["TimePanelBlueprint:timeline"] == ["frame_index"]


def test_rrd_verifies_with_rerun_cli(replayed_rrd):
    exe = rerun_executable()
    # The binary ships with the pinned rerun-sdk: its absence is a broken install, not a skip.
    assert exe is not None, "the `rerun` binary from rerun-sdk is missing; run `make setup`"
    result = subprocess.run(
        [exe, "rrd", "verify", str(replayed_rrd)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_replay_function_returns_the_file(tiny_dataset, tmp_path):
    root, episodes = tiny_dataset
    out = tmp_path / "episode0.rrd"
    assert replay(ReplayConfig(root=root, episode=0, save=out, jpeg_quality=50)) == out
    assert_episode_logged(out, 0, episodes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stand_in_viewer(tmp_path):
    """A headless Rerun gRPC server (``rerun --save``) that writes what it receives to a file.

    Yields:
        (port, path of the file it writes).
    """
    exe = rerun_executable()
    # The binary ships with the pinned rerun-sdk: its absence is a broken install, not a skip.
    assert exe is not None, "the `rerun` binary from rerun-sdk is missing; run `make setup`"
    port, received = free_port(), tmp_path / "received.rrd"
    server = subprocess.Popen(
        [exe, "--port", str(port), "--save", str(received)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the wrapper script forks the real binary: stop them as a group
    )
    try:
        wait_for_port(port)
        yield port, received
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def test_replay_streams_to_viewer_given_by_connect(tiny_dataset, stand_in_viewer):
    root, episodes = tiny_dataset
    port, received = stand_in_viewer
    replay(ReplayConfig(root=root, episode=0, connect=f"rerun+http://127.0.0.1:{port}/proxy"))
    wait_until_stable(received)
    assert_episode_logged(received, 0, episodes)


def test_replay_without_sink_option_uses_the_running_local_viewer(
    tiny_dataset, stand_in_viewer, monkeypatch
):
    # The default (no --save, no --connect) spawns a viewer, or reuses one on the default port:
    # the reuse path is the one testable without a display.
    root, episodes = tiny_dataset
    port, received = stand_in_viewer
    monkeypatch.setattr(rerun_log, "VIEWER_PORT", port)
    replay(ReplayConfig(root=root, episode=1))
    wait_until_stable(received)
    assert_episode_logged(received, 1, episodes)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"rerun server did not listen on port {port} within {timeout} s")


def wait_until_stable(path: Path, timeout: float = 10.0) -> None:
    """Waits until the server has written ``path`` and stopped growing it."""
    deadline, last, still = time.monotonic() + timeout, -1, 0
    while time.monotonic() < deadline and still < 3:
        size = path.stat().st_size if path.exists() else -1
        still = still + 1 if size == last and size > 0 else 0
        last = size
        time.sleep(0.1)


# --- bad input: each error names the problem and the fix, and nothing is written ---


def test_missing_root_is_reported_and_not_created(tmp_path, capsys):
    root = tmp_path / "no_such_dataset"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        replay(ReplayConfig(root=root))
    assert not root.exists()  # lerobot would have created it
    assert main(["replay", f"--root={root}", f"--save={tmp_path / 'x.rrd'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no_such_dataset does not exist" in err
    assert not (tmp_path / "x.rrd").exists()


def test_folder_without_metadata_is_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"not a LeRobotDataset: .*meta/info\.json is missing"
    ):
        replay(ReplayConfig(root=tmp_path / "empty"))


def test_root_is_required():
    with pytest.raises(ValueError, match="--root is required"):
        ReplayConfig()


def test_episode_out_of_range_says_how_many_exist(tiny_dataset, tmp_path, capsys):
    root, _ = tiny_dataset
    out = tmp_path / "x.rrd"
    with pytest.raises(
        ValueError, match=r"--episode=5 is out of range: .* has 2 episode\(s\) \(valid: 0\.\.1\)"
    ):
        replay(ReplayConfig(root=root, episode=5, save=out))
    assert main(["replay", f"--root={root}", "--episode=2", f"--save={out}"]) == 2
    assert "has 2 episode(s)" in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_save_path_is_reported(tiny_dataset, tmp_path, capsys):
    root, _ = tiny_dataset
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "episode.rrd"  # its parent is a file: works as "unwritable" even as root
    with pytest.raises(PermissionError, match=r"--save=.*episode\.rrd is not writable"):
        replay(ReplayConfig(root=root, save=out))
    assert main(["replay", f"--root={root}", f"--save={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not writable" in err


def test_connect_to_no_viewer_is_reported(tiny_dataset, capsys):
    root, _ = tiny_dataset
    url = f"rerun+http://127.0.0.1:{free_port()}/proxy"
    with pytest.raises(rerun_log.ViewerUnavailableError, match="no Rerun viewer listens at"):
        replay(ReplayConfig(root=root, connect=url))
    assert main(["replay", f"--root={root}", "--connect=http://localhost:9876"]) == 2
    assert "is not a Rerun gRPC URL" in capsys.readouterr().err


def test_no_display_and_no_viewer_asks_for_save(tiny_dataset, monkeypatch):
    root, _ = tiny_dataset
    monkeypatch.setattr(rerun_log, "VIEWER_PORT", free_port())
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ValueError, match=r"no display .* pass --save=episode\.rrd"):
        replay(ReplayConfig(root=root))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"save": "episode.txt"}, "must name an .rrd file"),
        ({"save": "a.rrd", "connect": "rerun+http://127.0.0.1:9876/proxy"}, "exclude each other"),
        ({"jpeg_quality": 0}, "between 1 and 100"),
        ({"episode": -1}, "0 or more"),
    ],
)
def test_config_rejects_bad_options(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReplayConfig(root=tmp_path, **kwargs)


def test_save_path_that_is_a_folder_is_rejected(tiny_dataset, tmp_path):
    root, _ = tiny_dataset
    (tmp_path / "dir.rrd").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        replay(ReplayConfig(root=root, save=tmp_path / "dir.rrd"))


# --- small conversions ---


def test_hwc_uint8_accepts_chw_float_and_hwc_uint8():
    import torch

    chw = torch.rand(3, 8, 5)
    out = hwc_uint8(chw)
    assert out.shape == (8, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.rint(chw.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    hwc = np.arange(8 * 5 * 3, dtype=np.uint8).reshape(8, 5, 3)
    np.testing.assert_array_equal(hwc_uint8(hwc), hwc)


def test_joint_names_strip_pos_and_fall_back_to_indices():
    named = {"shape": (6,), "names": [f"{j}.pos" for j in SO101_JOINTS]}
    assert joint_names(named) == list(SO101_JOINTS)
    assert joint_names({"shape": (2,), "names": None}) == ["joint_0", "joint_1"]
