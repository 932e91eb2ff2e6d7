"""Rerun logging of SO-101 episodes: camera images, per-joint state and action, task text.

One small module shared by ``armvla replay`` (episodes read back from a dataset) and the
evaluation loop (sim episodes recorded live), so both produce recordings with the same layout:

- ``camera/<cam>``: JPEG-compressed images of each camera (raw frames make .rrd files ~300x
  larger);
- ``state/<joint>``: observed position of each joint, one scalar entity per joint;
- ``action/<joint>``: commanded position of each joint; the default layout plots
  ``state/<joint>`` and ``action/<joint>`` together;
- ``task``: the instruction, as a markdown document.

Every frame is stamped on two timelines: ``frame_index`` (sequence) and ``timestamp`` (time
since the episode started).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from data.keys import SO101_JOINTS

APPLICATION_ID = "armvla"
FRAME_TIMELINE = "frame_index"
TIME_TIMELINE = "timestamp"
TASK_ENTITY = "task"
DEFAULT_JPEG_QUALITY = 75
# Same colors in every joint plot, so the eye learns "blue = measured, orange = commanded".
STATE_COLOR = (31, 119, 180)
ACTION_COLOR = (255, 127, 14)
# rerun's default gRPC port; rr.spawn reuses a viewer already listening there.
VIEWER_PORT = 9876
# Bound on the final flush to a viewer, so a viewer that dies mid-episode ends in an error.
FLUSH_TIMEOUT_S = 60.0
GRPC_SCHEMES = ("rerun", "rerun+http", "rerun+https")


class ViewerUnavailableError(ValueError):
    """There is no Rerun viewer to send to: a usage problem, fixed by --save or --connect."""


def camera_entity(camera: str) -> str:
    """Entity path of a camera's images, e.g. ``camera/front``."""
    return f"camera/{camera}"


def state_entity(joint: str) -> str:
    """Entity path of a joint's observed position, e.g. ``state/shoulder_pan``."""
    return f"state/{joint}"


def action_entity(joint: str) -> str:
    """Entity path of a joint's commanded position, e.g. ``action/shoulder_pan``."""
    return f"action/{joint}"


def episode_blueprint(
    cameras: Sequence[str], joints: Sequence[str] = SO101_JOINTS
) -> rrb.Blueprint:
    """Default viewer layout: cameras and task on top, one state-vs-action plot per joint below.

    Args:
        cameras: camera names, shown side by side in this order.
        joints: joint names; each gets a plot holding ``state/<joint>`` and ``action/<joint>``.

    Returns:
        The blueprint, to pass as ``default_blueprint`` when opening a sink.
    """
    top = rrb.Horizontal(
        *(rrb.Spatial2DView(origin=camera_entity(cam), name=cam) for cam in cameras),
        rrb.TextDocumentView(origin=TASK_ENTITY, name="task"),
        # The task panel needs less room than a camera.
        column_shares=[2.0] * len(cameras) + [1.0],
    )
    plots = rrb.Grid(
        *(
            rrb.TimeSeriesView(
                origin="/",
                contents=[f"/{state_entity(j)}", f"/{action_entity(j)}"],
                name=j,
            )
            for j in joints
        ),
        # Three columns keep six joints in two rows, readable on a laptop screen.
        grid_columns=min(3, max(1, len(joints))),
    )
    return rrb.Blueprint(
        rrb.Vertical(top, plots, row_shares=[1.0, 1.0]),
        rrb.TimePanel(timeline=FRAME_TIMELINE),
    )


def rerun_executable() -> str | None:
    """Path of the ``rerun`` viewer binary, also when the venv's ``bin`` is not on PATH."""
    beside_python = Path(sys.executable).with_name("rerun")
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("rerun")


def check_viewer(connect: str | None = None) -> None:
    """Fails fast, before any work, when a recording could not reach a viewer.

    With ``connect``, checks that the URL is well formed and something listens there. Without
    it (a viewer is to be spawned), checks that a viewer already runs on the default port or
    that there is a display to open one on: a viewer spawned without a display exits at once
    and the logging would wait on it.

    Raises:
        ViewerUnavailableError: no viewer can be reached; the message says what to pass instead.
    """
    if connect is not None:
        url = urlsplit(connect)
        if url.scheme not in GRPC_SCHEMES or url.path != "/proxy" or not url.hostname:
            raise ViewerUnavailableError(
                f"--connect={connect} is not a Rerun gRPC URL; expected e.g. "
                f"rerun+http://127.0.0.1:{VIEWER_PORT}/proxy"
            )
        if not _listening(url.hostname, url.port or VIEWER_PORT):
            raise ViewerUnavailableError(
                f"no Rerun viewer listens at {connect}; start one with `rerun` (it prints its "
                f"URL), or pass --save=episode.rrd to write a file instead"
            )
        return
    if _listening("127.0.0.1", VIEWER_PORT):
        return
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if headless:
        raise ViewerUnavailableError(
            "no display to open a Rerun viewer on (DISPLAY and WAYLAND_DISPLAY are unset); pass "
            "--save=episode.rrd and open it with `rerun episode.rrd` where there is a screen, or "
            f"--connect=rerun+http://HOST:{VIEWER_PORT}/proxy to send to a running viewer"
        )


def _listening(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def open_recording(
    name: str,
    cameras: Sequence[str],
    joints: Sequence[str] = SO101_JOINTS,
    *,
    save: str | Path | None = None,
    connect: str | None = None,
) -> rr.RecordingStream:
    """Opens a new recording with the episode layout and one sink.

    The sink is a file when ``save`` is given, else a running viewer at ``connect``, else a
    newly spawned local viewer. A fresh recording id per call keeps episodes recorded by one
    process apart in the viewer.

    Args:
        name: recording name shown in the viewer, e.g. ``"my/dataset episode 3"``.
        cameras: camera names, for the layout.
        joints: joint names, for the layout and the plot legends.
        save: path of an ``.rrd`` file to write.
        connect: gRPC URL of a running viewer, e.g. ``rerun+http://127.0.0.1:9876/proxy``.

    Returns:
        The recording stream; pass it to :func:`log_frame` and :func:`log_task`, and end it
        with :func:`close_recording`.
    """
    rec = rr.RecordingStream(APPLICATION_ID, recording_id=uuid.uuid4())
    blueprint = episode_blueprint(cameras, joints)
    if save is not None:
        rec.save(save, default_blueprint=blueprint)
    else:
        if connect is None:
            connect = spawn_viewer(rec)
        # rerun 0.33 blocks forever on flush and at exit once it has logged to an unreachable
        # viewer (rerun-io/rerun#12620, #12821): only connect to one that is listening.
        check_viewer(connect)
        rec.connect_grpc(connect, default_blueprint=blueprint)
    rec.send_recording_name(name)
    log_series_styles(rec, joints)
    return rec


def spawn_viewer(rec: rr.RecordingStream) -> str:
    """Starts a local viewer, or reuses one already on :data:`VIEWER_PORT`; returns its URL.

    Raises:
        ViewerUnavailableError: the viewer exited at start (no display, no GPU driver, ...).
    """
    # rr.spawn rather than rec.spawn: only the former names the binary, which is not on PATH
    # when armvla runs from an un-activated venv. Connecting is left to the caller, after the
    # viewer is known to listen.
    rr.spawn(port=VIEWER_PORT, connect=False, executable_path=rerun_executable(), recording=rec)
    if not _listening("127.0.0.1", VIEWER_PORT):
        raise ViewerUnavailableError(
            "the Rerun viewer did not start (its own error is printed above); pass "
            "--save=episode.rrd to write a file instead"
        )
    return f"rerun+http://127.0.0.1:{VIEWER_PORT}/proxy"


def log_series_styles(rec: rr.RecordingStream, joints: Sequence[str] = SO101_JOINTS) -> None:
    """Names and colors the state and action series once (static), for every joint plot."""
    for joint in joints:
        rec.log(
            state_entity(joint), rr.SeriesLines(names="state", colors=[STATE_COLOR]), static=True
        )
        rec.log(
            action_entity(joint), rr.SeriesLines(names="action", colors=[ACTION_COLOR]), static=True
        )


def log_task(
    rec: rr.RecordingStream, task: str, details: Mapping[str, object] | None = None
) -> None:
    """Logs the instruction as a markdown document at the current time.

    Logged on the timeline rather than static, so a task that changes mid-episode (a new voice
    command) shows up at the frame where it changed.

    Args:
        rec: the recording.
        task: instruction text.
        details: optional facts shown under the task (dataset, episode, source, ...).
    """
    lines = [f"## {task}"]
    if details:
        lines += ["", "| | |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in details.items()]
    rec.log(TASK_ENTITY, rr.TextDocument("\n".join(lines), media_type=rr.MediaType.MARKDOWN))


def log_frame(
    rec: rr.RecordingStream,
    frame_index: int,
    timestamp: float,
    *,
    images: Mapping[str, np.ndarray],
    state: Sequence[float] | np.ndarray,
    action: Sequence[float] | np.ndarray | None = None,
    joints: Sequence[str] = SO101_JOINTS,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> None:
    """Logs one frame: every camera image, and state and action per joint.

    Args:
        rec: the recording.
        frame_index: index of the frame within the episode.
        timestamp: seconds since the episode started.
        images: camera name -> ``[H, W, 3]`` uint8 RGB image.
        state: observed joint positions ``[D]``, in the order of ``joints``.
        action: commanded joint positions ``[D]``; ``None`` when there is none yet (live
            logging before the policy's first step).
        joints: joint names, ``D`` of them.
        jpeg_quality: JPEG quality of the logged images, 1-100.
    """
    rec.set_time(FRAME_TIMELINE, sequence=int(frame_index))
    # A duration, not an absolute timestamp: lerobot's timestamps count from the episode
    # start, and as absolute times the viewer would show them as dates in January 1970.
    rec.set_time(TIME_TIMELINE, duration=float(timestamp))
    for cam, image in images.items():
        rec.log(camera_entity(cam), rr.Image(image).compress(jpeg_quality=jpeg_quality))
    _log_joint_scalars(rec, state_entity, state, joints)
    if action is not None:
        _log_joint_scalars(rec, action_entity, action, joints)


def _log_joint_scalars(rec: rr.RecordingStream, entity, values, joints: Sequence[str]) -> None:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != len(joints):
        raise ValueError(f"got {len(values)} joint values for {len(joints)} joints {list(joints)}")
    for joint, value in zip(joints, values, strict=True):
        rec.log(entity(joint), rr.Scalars(value))


def close_recording(rec: rr.RecordingStream) -> None:
    """Sends everything still buffered and closes the sink (a file gets its footer here).

    Raises:
        ViewerUnavailableError: the viewer stopped accepting data before everything was sent.
    """
    try:
        rec.flush(timeout_sec=FLUSH_TIMEOUT_S)
    except RuntimeError as err:  # what rerun raises when the gRPC sink cannot deliver
        raise ViewerUnavailableError(
            f"the recording did not reach the Rerun viewer: {err}"
        ) from err
    finally:
        rec.disconnect()
