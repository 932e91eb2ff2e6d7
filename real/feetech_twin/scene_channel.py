"""The twin's scene side channel: what a person at the arm sees and does with their hands.

A person teleoperating a real arm sees where the rope lies and lays the towel out again between
episodes. The twin's scripted operator (``--teleop.type=armvla_twin_operator``) gets the same
from this channel: the scene's privileged state (the MuJoCo state and what the reset decided,
``TabletopEnv.scene_state``) and a reset of the objects for the next episode, which leaves the
arm where the servos hold it. It is a ZMQ REP socket on 127.0.0.1 speaking JSON:

* ``{"cmd": "state"}`` -> ``{"ok": true, "task": ..., "seed": ..., "state": {...}}``
* ``{"cmd": "reset", "seed": 7, "options": {...}}`` -> the same, after the reset
* anything else -> ``{"ok": false, "error": "..."}``

Only the operator uses it; a policy under ``armvla run`` sees the cameras and joints alone.
Its port is announced with the cameras' (:func:`real.feetech_twin.cameras.announce`).
"""

from __future__ import annotations

import json

from real.feetech_twin.service import TwinService

POLL_MS = 100


class SceneChannel(TwinService):
    """Serves a twin's scene over ZMQ REP (module docstring)."""

    socket_type = "REP"
    thread_name = "twin-scene"

    def __init__(self, twin, port: int = 0, host: str = "127.0.0.1"):
        super().__init__(twin, port, host)
        self.requests = 0

    def handle(self, request: dict) -> dict:
        """One request's reply (also callable directly, without the socket)."""
        cmd = request.get("cmd") if isinstance(request, dict) else None
        try:
            if cmd == "reset":
                seed = request.get("seed")
                if not isinstance(seed, int):
                    raise ValueError(f"reset needs an integer 'seed', got {seed!r}")
                self.twin.reset_scene(seed, request.get("options") or {})
            elif cmd != "state":
                raise ValueError(f"unknown command {cmd!r}; the channel knows 'state', 'reset'")
            with self.twin.lock:
                state = self.twin.env.scene_state()
            return {
                "ok": True,
                "task": self.twin.config.task,
                "seed": self.twin.scene_seed,
                "state": state,
            }
        except Exception as exc:  # a bad request must not end the channel
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def _serve(self, socket) -> None:
        while not self._stop.is_set():
            if not socket.poll(POLL_MS):
                continue
            raw = socket.recv()
            try:
                request = json.loads(raw)
            except ValueError as exc:
                reply = {"ok": False, "error": f"not JSON: {exc}"}
            else:
                reply = self.handle(request)
            self.requests += 1
            socket.send_string(json.dumps(reply))
