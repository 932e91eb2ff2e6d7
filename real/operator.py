"""``--teleop.type=armvla_twin_operator``: a scripted person at the twin's leader arm.

On a physical SO-101, ``armvla record --teleop.type=so101_leader`` records a person moving the
leader arm. On the twin (``armvla twin``), this teleoperator stands in for that person: it sees
the scene through the twin's scene side channel (real/feetech_twin/scene_channel.py; a person's
eyes), plans with the task's scripted expert on a mirror of that scene, and sends joint targets
through the same ``get_action`` path a leader arm uses, with a person's hand noise (a slowly
wandering offset on every arm joint) and no pauses. Everything after it is the arm's own
recording path: lerobot's driver over the bus, lerobot's ZMQ cameras, the supervisor, the
safety gate and the crash-safe recorder, writing ``source=real``.

Between episodes it does what a person does: lets go, brings the arm back to its start pose,
and lays the scene out again (the channel's reset, seed ``--teleop.seed`` + episode number).
Each episode's instruction is the scene's own ("drag the left end of the rope to the red
mark"), so ``--dataset.single_task`` is not needed. An episode ends once the task has been done
for ``hold_s``; one the expert gives up on is re-recorded with a fresh scene.

    armvla twin --task=RopeToMark-v1 --link=/tmp/so101-twin &
    armvla record --robot.type=so101_follower --robot.port=/tmp/so101-twin --robot.id=so101_twin \\
        --teleop.type=armvla_twin_operator --teleop.port=/tmp/so101-twin \\
        --dataset.root=outputs/datasets/rope_real --dataset.num_episodes=50 --dataset.reset_time_s=3
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from lerobot.teleoperators.config import TeleoperatorConfig

from data.keys import SO101_MOTOR_FEATURES
from real.software_teleop import _SoftwareTeleop
from sim.envs.tabletop import HOME_RAD
from sim.motion import ArmMotion

logger = logging.getLogger(__name__)


class _SceneWatcher:
    """The operator's eyes: a thread that asks the twin's scene channel for the scene's state
    on its own socket whenever :meth:`look` asks for a fresh view, and keeps the latest reply,
    so a tick reads what the operator last saw instead of waiting for the twin (a person at a
    leader arm does not stop moving to look). One request per tick at most, as before; each
    reply carries the time its request was sent."""

    def __init__(self, context, address: str, timeout_s: float):
        self._context, self._address, self._timeout_s = context, address, timeout_s
        self._guard = threading.Lock()
        self._latest: tuple[float, dict] | None = None
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._wanted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="operator-eyes", daemon=True)
        self._thread.start()

    def latest(self) -> tuple[float, dict] | None:
        """(request time on time.monotonic(), reply) of the newest answer, or None."""
        with self._guard:
            return self._latest

    def look(self) -> None:
        """Asks for a fresh view (returns at once; a request in flight counts)."""
        self._wanted.set()

    def _run(self) -> None:
        import zmq

        socket = None
        try:
            while not self._stop.is_set():
                if not self._wanted.wait(0.1):
                    continue
                self._wanted.clear()
                if socket is None:
                    socket = self._context.socket(zmq.REQ)
                    socket.setsockopt(zmq.LINGER, 0)
                    socket.setsockopt(zmq.RCVTIMEO, int(self._timeout_s * 1000))
                    socket.connect(self._address)
                asked = time.monotonic()
                socket.send_string('{"cmd": "state"}')
                try:
                    reply = json.loads(socket.recv())
                except zmq.Again:
                    socket.close()  # a REQ socket that missed its reply cannot send again
                    socket = None
                    self._wanted.set()  # look again
                    continue
                if reply.get("ok"):
                    with self._guard:
                        self._latest = (asked, reply)
        except Exception as exc:  # noqa: BLE001 - kept for the tick to raise
            if not self._stop.is_set():
                self.error = exc
        finally:
            if socket is not None:
                socket.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout_s + 1.0)


@TeleoperatorConfig.register_subclass("armvla_twin_operator")
@dataclass(kw_only=True)
class TwinOperatorConfig(TeleoperatorConfig):
    # The twin's serial port (the same path as --robot.port): its scene channel is found from
    # the twin's announcement.
    port: str | None = None
    # Or the scene channel's address itself, e.g. tcp://127.0.0.1:5556 (printed by armvla twin).
    scene_address: str | None = None
    # Scene seed of the first episode; episode k is laid out with seed + k.
    seed: int = 0
    # The hand's noise: standard deviation of a slowly wandering offset on each arm joint (deg).
    noise_deg: float = 0.3
    # How slowly it wanders: its time constant (s).
    noise_tau_s: float = 0.5
    # Once the task is done, keep it done this long, then end the episode (s).
    hold_s: float = 0.5
    # Seconds to wait for the scene channel's reply before the tick goes without an action.
    timeout_s: float = 1.0

    def __post_init__(self):
        if self.port is None and self.scene_address is None:
            raise ValueError(
                "--teleop.port (the twin's serial port, as --robot.port) or "
                "--teleop.scene_address (tcp://HOST:PORT, printed by armvla twin) is required"
            )
        if self.noise_deg < 0 or self.noise_tau_s <= 0 or self.hold_s < 0 or self.timeout_s <= 0:
            raise ValueError("noise_deg and hold_s must be >= 0, noise_tau_s and timeout_s > 0")


class _ReturnToStart(ArmMotion):
    """Between episodes: open the jaws, lift the upper arm back, go to the start pose, hold."""

    def __init__(self, env, limits):
        super().__init__(env, seed=0, variation=False, limits=limits)
        self._phase = 0
        self.done = False

    def _plan_next_phase(self) -> None:
        q_now = self._q_now()
        if self._phase == 0:  # let go
            self._gripper_pct = 50.0
            self._queue.extend([q_now] * 15)
        elif self._phase == 1:  # up and back, clear of what lies on the table
            up = q_now.copy()
            up[1] -= 0.3
            self._queue_segment(q_now, [up], speed=1.0, profile=self._from_rest)
        elif self._phase == 2:
            home = HOME_RAD.copy()
            self._queue_segment(q_now, [home], speed=1.2, profile=self._from_rest)
        else:
            self.done = True
            self._queue.append(q_now)
        self._phase += 1


class TwinOperator(_SoftwareTeleop):
    """The scripted operator (module docstring)."""

    config_class = TwinOperatorConfig
    name = "armvla_twin_operator"
    provides_tasks = True  # each episode's instruction comes from the scene

    def __init__(self, config: TwinOperatorConfig):
        super().__init__(config)
        self.task: str | None = None
        self.episode_task: str | None = None
        self.episode = 0
        self.gave_up = False
        self._context = self._socket = None
        self._mirror = None
        self._eyes: _SceneWatcher | None = None
        self._seen_at = 0.0  # request time (time.monotonic) of the state the mirror holds
        self._expert = None
        self._returning: _ReturnToStart | None = None
        self._scene_ready = False
        self._done_ticks = 0
        self._noise = np.zeros(5)
        self._drift = np.zeros(5)
        self._rng = np.random.default_rng(config.seed)

    @property
    def feedback_features(self) -> dict:
        return {}

    def send_feedback(self, feedback: dict) -> None:
        pass

    # ------------------------------------------------------------------ channel
    def _address(self) -> str:
        if self.config.scene_address:
            return self.config.scene_address
        from real.feetech_twin.cameras import find_announcement

        info = find_announcement(self.config.port)
        if info is None or not info.get("scene_port"):
            raise ConnectionError(
                f"no running armvla twin with a scene channel serves {self.config.port}; start "
                "`armvla twin --link=<port>` (scene channel on by default) or pass "
                "--teleop.scene_address=tcp://HOST:PORT"
            )
        return f"tcp://{info['host']}:{info['scene_port']}"

    def _open_socket(self) -> None:
        import zmq

        if self._socket is not None:
            self._socket.close()
        self._socket = self._context.socket(zmq.REQ)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVTIMEO, int(self.config.timeout_s * 1000))
        self._socket.connect(self._address_str)

    def _request(self, request: dict) -> dict:
        import zmq

        self._socket.send_string(json.dumps(request))
        try:
            reply = json.loads(self._socket.recv())
        except zmq.Again as exc:
            self._open_socket()  # a REQ socket that missed its reply cannot send again
            raise ConnectionError(
                f"the twin's scene channel at {self._address_str} did not answer within "
                f"{self.config.timeout_s} s"
            ) from exc
        if not reply.get("ok"):
            raise RuntimeError(f"the twin's scene channel refused {request}: {reply.get('error')}")
        return reply

    def _sync(self, reply: dict | None = None) -> None:
        """The mirror takes the scene's state now (from ``reply``, or asked and waited for)."""
        reply = reply or self._request({"cmd": "state"})
        self._mirror.set_scene_state(reply["state"])
        self._seen_at = time.monotonic()

    def _look(self) -> None:
        """The mirror takes the newest state the eyes saw since the mirror's last update,
        without waiting; raises ConnectionError when they have seen nothing for timeout_s."""
        if self._eyes.error is not None:
            raise ConnectionError(f"the operator lost the twin's scene channel: {self._eyes.error}")
        latest = self._eyes.latest()
        self._eyes.look()  # the next tick's view
        if latest is not None and latest[0] > self._seen_at:
            self._mirror.set_scene_state(latest[1]["state"])
            self._seen_at = latest[0]
        elif time.monotonic() - self._seen_at > self.config.timeout_s:
            raise ConnectionError(
                f"the twin's scene channel at {self._address_str} sent no state for "
                f"{self.config.timeout_s} s"
            )

    # ------------------------------------------------------------------ lifecycle
    def connect(self, calibrate: bool = True) -> None:
        import zmq

        from sim.generate import expert_motion_limits
        from sim.registry import make_env, resolve_task

        self._address_str = self._address()
        self._context = zmq.Context()
        self._open_socket()
        reply = self._request({"cmd": "state"})
        self.task = reply["task"]
        spec = resolve_task(self.task)
        module, cls = spec.expert.split(":")
        self._expert_cls = getattr(importlib.import_module(module), cls)
        self._limits = expert_motion_limits()
        # A mirror of the twin's scene for the expert to plan on; never rendered.
        self._mirror = make_env(self.task, image_size=16, cameras=("front",)).unwrapped
        self._eyes = _SceneWatcher(self._context, self._address_str, self.config.timeout_s)
        self._connected = True
        self._lay_out_scene()

    def disconnect(self) -> None:
        if self._eyes is not None:
            self._eyes.close()
            self._eyes = None
        if self._socket is not None:
            self._socket.close()
            self._context.term()
            self._socket = self._context = None
        if self._mirror is not None:
            self._mirror.close()
            self._mirror = None
        self._connected = False

    def _lay_out_scene(self) -> None:
        reply = self._request({"cmd": "reset", "seed": self.config.seed + self.episode})
        self._sync(reply)
        self._scene_ready = True

    def start_episode(self) -> None:
        """Plans this episode from the scene as it lies (laid out anew if the reset period was
        too short for the arm to get back first)."""
        if not self._scene_ready:
            logger.warning("the arm was not back at its start pose; laying the scene out now")
            self._lay_out_scene()
        self._sync()
        self._expert = self._expert_cls(
            self._mirror, seed=self.config.seed + self.episode, limits=self._limits
        )
        self._returning = None
        self._done_ticks = 0
        self.gave_up = False
        self.episode_task = self._mirror.instruction

    def cue_next_episode(self) -> None:
        """After an episode: let go and return to the start pose; then the scene is laid out."""
        self.episode += 1
        self._scene_ready = False
        self._expert = None
        self._sync()
        self._returning = _ReturnToStart(self._mirror, self._limits)

    @property
    def finished(self) -> bool:
        """The task has been done for ``hold_s``: the episode can end."""
        if self._expert is None:
            return False
        return self._done_ticks * self._mirror.control_dt >= self.config.hold_s + (
            self._mirror.hold_steps * self._mirror.control_dt
        )

    # ------------------------------------------------------------------ per tick
    def _hand_noise(self) -> np.ndarray:
        """This tick's offset [5] (degrees): white noise through two first-order lags of time
        constant ``noise_tau_s``, scaled to a standard deviation of ``noise_deg``; it drifts
        by hundredths of a degree per tick, as a hand on a leader arm does, not by jumps."""
        a = np.exp(-self._mirror.control_dt / self.config.noise_tau_s)
        # Two AR(1) stages y <- a y + x, x <- a x + s w have var(y) = s^2 (1+a^2) / (1-a^2)^3.
        s = self.config.noise_deg * np.sqrt((1.0 - a * a) ** 3 / (1.0 + a * a))
        self._drift = a * self._drift + s * self._rng.normal(size=5)
        self._noise = a * self._noise + self._drift
        return self._noise

    def get_action(self) -> dict[str, float]:
        self._look()
        if self._expert is not None:
            action = self._expert.act()
            holds = self._mirror._evaluate()[0]
            self._done_ticks = self._done_ticks + 1 if holds else 0
            self.gave_up = bool(getattr(self._expert, "gave_up", False))
        else:
            if self._returning is None:  # connected, no episode yet: hold where the arm is
                self._returning = _ReturnToStart(self._mirror, self._limits)
            action = self._returning.act()
            if self._returning.done and not self._scene_ready:
                self._lay_out_scene()
        action = np.asarray(action, dtype=np.float64).copy()
        action[:5] += self._hand_noise()
        return {name: float(v) for name, v in zip(SO101_MOTOR_FEATURES, action, strict=True)}
