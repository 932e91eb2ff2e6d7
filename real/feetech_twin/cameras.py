"""The twin's cameras, published the way lerobot's ZMQ camera reads them.

lerobot 0.6.1 ships a ``zmq`` camera type (``ZMQCamera``): a SUB socket that receives JSON
messages ``{"timestamps": {name: t}, "images": {name: <base64 JPEG>}}`` from a PUB socket. The
twin renders its MuJoCo cameras at a fixed rate and publishes them in that format, so a run on
the twin reads its images through lerobot's own camera class, exactly as it would read a remote
camera of a real arm::

    --robot.cameras="{front: {type: zmq, server_address: 127.0.0.1, port: 5555,
                              camera_name: front}, wrist: {...camera_name: wrist}}"

Where a twin publishes is announced in a small JSON file next to its pty (see
:func:`announce`), so ``armvla run`` can find the cameras of a twin from ``--robot.port`` alone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from pathlib import Path

from real.feetech_twin.service import TwinService
from sim.domain import jpeg_encode

ANNOUNCE_DIR = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "armvla-twins"


class TwinCameraPublisher(TwinService):
    """Renders the twin's cameras at ``fps`` and publishes them on a ZMQ PUB socket.

    Args:
        twin: a started :class:`~real.feetech_twin.SO101Twin`.
        port: TCP port on 127.0.0.1; 0 picks a free one (see :attr:`port` after start).
        fps: publishing rate.
    """

    socket_type = "PUB"
    thread_name = "twin-cameras"

    def __init__(self, twin, port: int = 0, fps: float = 30.0, host: str = "127.0.0.1"):
        super().__init__(twin, port, host)
        self.fps = fps
        self.frames_published = 0

    def _setup(self, socket) -> None:
        import zmq

        socket.setsockopt(zmq.SNDHWM, 2)
        self.twin.render()  # the GL context belongs to this thread from here on

    def _teardown(self) -> None:
        self.twin.close_renderer()  # on this thread: the GL context is current here

    def _serve(self, socket) -> None:
        import zmq

        period = 1.0 / self.fps
        quality = self.twin.config.world.jpeg_quality
        next_t = time.perf_counter()
        while not self._stop.is_set():
            images = self.twin.render()
            stamp = time.time()
            message = {"timestamps": {}, "images": {}}
            for name, rgb in images.items():
                # lerobot's image server encodes the RGB array as is and its camera decodes
                # it with cv2.imdecode, so the channels come back in RGB order.
                jpeg = jpeg_encode(rgb, quality)
                message["images"][name] = base64.b64encode(jpeg).decode("ascii")
                message["timestamps"][name] = stamp
            with contextlib.suppress(zmq.Again):
                socket.send_string(json.dumps(message), zmq.NOBLOCK)
            self.frames_published += 1
            next_t += period
            delay = next_t - time.perf_counter()
            if delay < -period:  # fell behind (busy machine): skip, don't burst
                next_t = time.perf_counter()
            self._stop.wait(max(0.0, delay))


def announcement_path(device: str) -> Path:
    """Where the twin serving pty ``device`` (e.g. /dev/pts/3) announces its cameras."""
    return ANNOUNCE_DIR / (Path(os.path.realpath(device)).name + ".json")


def announce(
    device: str,
    host: str,
    port: int,
    cameras: tuple[str, ...],
    image_size: int,
    scene_port: int | None = None,
    task: str | None = None,
) -> Path:
    """Writes how to reach a twin's cameras (and its scene channel), keyed by its pty; returns
    the file."""
    path = announcement_path(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "device": os.path.realpath(device),
        "host": host,
        "port": port,
        "cameras": list(cameras),
        "image_size": image_size,
        "scene_port": scene_port,
        "task": task,
        "pid": os.getpid(),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    return path


def find_announcement(port: str) -> dict | None:
    """The camera announcement of the twin serving the serial ``port``, if one is running."""
    path = announcement_path(port)
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    try:
        os.kill(info["pid"], 0)  # a stale file from a twin that died
    except (ProcessLookupError, PermissionError):
        return None
    return info
