"""Teleoperators for ``armvla record`` besides lerobot's own (``--teleop.type=so101_leader``).

Both are lerobot ``Teleoperator`` classes registered under their ``--teleop.type`` name, so they
plug into the same code path as a leader arm: ``get_action()`` returns joint targets in the
SO-101 follower's convention (``<joint>.pos``: degrees, gripper 0-100 %), which the safety gate
then filters like any other command.

- ``armvla_keyboard_ee``: end-effector teleop from the terminal. Keys move a tool target in the
  arm's base frame (jaws pointing down) and open or close the gripper; inverse kinematics on the
  twin's MJCF turns the target into joint targets. For makers without a leader arm.
- ``armvla_replay``: plays back the ``action`` column of dataset episodes (for example sim demos
  from ``armvla generate``) as if a leader arm made them: re-recording sim motions on the arm,
  and driving hardware-in-the-loop tests of ``armvla record`` without a person.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lerobot.teleoperators.config import TeleoperatorConfig
from lerobot.teleoperators.teleoperator import Teleoperator

from data.keys import ACTION, SO101_JOINTS, SO101_MOTOR_FEATURES
from real.software_teleop import _joint_features, _SoftwareTeleop
from safety import so101

# Keys of the keyboard teleop: (tool step in base-frame axes, yaw steps, gripper steps). The
# recording controls (n, r, q and the arrow keys) are lerobot's and stay free.
KEYMAP: dict[str, tuple[tuple[int, int, int], int, int]] = {
    "w": ((1, 0, 0), 0, 0),  # away from the base
    "s": ((-1, 0, 0), 0, 0),  # towards it
    "a": ((0, 1, 0), 0, 0),  # left, seen from behind the arm
    "d": ((0, -1, 0), 0, 0),
    "u": ((0, 0, 1), 0, 0),  # up
    "j": ((0, 0, -1), 0, 0),  # down
    "z": ((0, 0, 0), 1, 0),  # turn the jaws counter-clockwise
    "x": ((0, 0, 0), -1, 0),
    "o": ((0, 0, 0), 0, 1),  # open the gripper
    "c": ((0, 0, 0), 0, -1),  # close it
}
KEY_HELP = "w/s a/d u/j move the tool, z/x turn the jaws, o/c open/close"


# ---------------------------------------------------------------------------- keyboard EE
@TeleoperatorConfig.register_subclass("armvla_keyboard_ee")
@dataclass(kw_only=True)
class KeyboardEETeleopConfig(TeleoperatorConfig):
    # Tool target step per key press (m).
    step_m: float = 0.01
    # Jaw yaw step per key press (degrees).
    yaw_step_deg: float = 10.0
    # Gripper opening step per key press (percent of its travel).
    gripper_step: float = 20.0
    # The tool target is kept inside this box of the base frame (m): [x, y, z] low and high.
    # The safety gate enforces the real workspace; this only keeps the IK target reachable.
    target_low: tuple[float, float, float] = (0.10, -0.30, 0.02)
    # Upper corner of that box (m).
    target_high: tuple[float, float, float] = (0.40, 0.30, 0.30)

    def __post_init__(self):
        if not (self.step_m > 0 and self.yaw_step_deg > 0 and self.gripper_step > 0):
            raise ValueError("step_m, yaw_step_deg and gripper_step must be > 0")
        if not all(lo < hi for lo, hi in zip(self.target_low, self.target_high, strict=True)):
            raise ValueError("target_low must be below target_high on every axis")


class KeyboardEETeleop(_SoftwareTeleop):
    """End-effector teleop: key presses (``press``) move a jaws-down tool target.

    The target starts where the arm is, read from the first ``send_feedback`` (the follower's
    observation); until then, and between presses, ``get_action`` holds the last joint targets.
    ``armvla record`` owns the terminal and forwards every key that is not a recording control.
    """

    config_class = KeyboardEETeleopConfig
    name = "armvla_keyboard_ee"

    def __init__(self, config: KeyboardEETeleopConfig):
        super().__init__(config)
        self._ik = None
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._q: np.ndarray | None = None  # joint radians [6] of the current target
        self._pos: np.ndarray | None = None  # tool target [3]
        self._yaw = 0.0

    @property
    def feedback_features(self) -> dict:
        return _joint_features()

    def connect(self, calibrate: bool = True) -> None:
        from sim.ik import TopDownIK

        self._ik = TopDownIK()
        self._connected = True

    def press(self, key: str) -> bool:
        """Queues a key (from any thread); returns whether it is one of this teleop's keys."""
        if key.lower() not in KEYMAP:
            return False
        with self._lock:
            self._pending.append(key.lower())
        return True

    def send_feedback(self, feedback: dict) -> None:
        """Takes the follower's observation; the first one sets where the target starts."""
        if self._q is not None:
            return
        q = so101.to_radians(np.array([float(feedback[k]) for k in SO101_MOTOR_FEATURES]))
        self._q = q
        self._pos = self._ik.grasp_position(q)
        self._pos = np.clip(self._pos, self.config.target_low, self.config.target_high)
        # Jaw yaw of the present pose: the wrist roll relative to the pan.
        self._yaw = float(q[0] + q[4])

    def get_action(self) -> dict[str, float]:
        if self._q is None:
            raise RuntimeError("send the follower's observation (send_feedback) before get_action")
        with self._lock:
            keys, self._pending = self._pending, []
        if keys:
            cfg = self.config
            grip = so101.from_radians(self._q)[5]
            for key in keys:
                move, turn, open_close = KEYMAP[key]
                self._pos = np.clip(
                    self._pos + cfg.step_m * np.asarray(move, float),
                    cfg.target_low,
                    cfg.target_high,
                )
                self._yaw += np.deg2rad(cfg.yaw_step_deg) * turn
                grip = float(np.clip(grip + cfg.gripper_step * open_close, 0.0, 100.0))
            q = self._ik.solve(self._pos, self._yaw, self._q)
            q[5] = so101.to_radians(np.r_[np.zeros(5), grip])[5]
            self._q = q
        values = so101.from_radians(self._q)
        return {name: float(v) for name, v in zip(SO101_MOTOR_FEATURES, values, strict=True)}


# ---------------------------------------------------------------------------- dataset replay
@TeleoperatorConfig.register_subclass("armvla_replay")
@dataclass(kw_only=True)
class DatasetReplayTeleopConfig(TeleoperatorConfig):
    # LeRobotDataset folder whose `action` column is played back.
    root: Path | None = None
    # Episodes to play, one per recorded episode, in turn (empty: all of them).
    episodes: list[int] = field(default_factory=list)
    # Dataset id stored in its metadata (any id works with a local root).
    repo_id: str = "armvla/replay"

    def __post_init__(self):
        if self.root is None:
            raise ValueError("--teleop.root is required: the dataset whose actions to play")
        self.root = Path(self.root)
        if any(e < 0 for e in self.episodes):
            raise ValueError(f"--teleop.episodes must be >= 0, got {self.episodes}")


class DatasetReplayTeleop(_SoftwareTeleop):
    """Plays dataset episodes' actions, one row per ``get_action``.

    ``cue_next_episode`` loads the next listed episode (wrapping around) and holds its first
    row, so the arm goes to where it starts (between episodes, while the scene is reset);
    ``start_episode`` starts playing it. At its end the last row is held and ``finished`` is
    true. ``connect`` cues the first episode.
    """

    config_class = DatasetReplayTeleopConfig
    name = "armvla_replay"

    def __init__(self, config: DatasetReplayTeleopConfig):
        super().__init__(config)
        self._actions: dict[int, np.ndarray] = {}
        self._order: list[int] = []
        self._turn = -1
        self._rows = np.zeros((0, len(SO101_JOINTS)))
        self._i = 0
        self._playing = False

    @property
    def feedback_features(self) -> dict:
        return {}

    def connect(self, calibrate: bool = True) -> None:
        import pyarrow.parquet as pq

        root = self.config.root
        files = sorted((root / "data").glob("*/*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"{root} holds no dataset (no data/*/*.parquet); --teleop.root must be a "
                "LeRobotDataset folder, e.g. one written by `armvla generate`"
            )
        # The parquet columns only: no video decoding is needed to replay actions.
        for path in files:
            table = pq.read_table(path, columns=["episode_index", ACTION])
            index = table.column("episode_index").to_numpy()
            action = np.stack(table.column(ACTION).to_numpy(zero_copy_only=False))
            for ep in np.unique(index):
                self._actions[int(ep)] = action[index == ep].astype(np.float64)
        missing = [e for e in self.config.episodes if e not in self._actions]
        if missing:
            raise ValueError(
                f"{root} has episodes {sorted(self._actions)[:5]}... (total "
                f"{len(self._actions)}), not {missing}"
            )
        self._order = list(self.config.episodes) or sorted(self._actions)
        self._connected = True
        self.cue_next_episode()

    def cue_next_episode(self) -> int:
        """Loads the next listed episode and holds its first row; returns its index."""
        self._turn += 1
        ep = self._order[self._turn % len(self._order)]
        self._rows, self._i, self._playing = self._actions[ep], 0, False
        return ep

    def start_episode(self) -> None:
        """Plays the cued episode from its first row."""
        self._i, self._playing = 0, True

    @property
    def finished(self) -> bool:
        return self._playing and self._i >= len(self._rows)

    def get_action(self) -> dict[str, float]:
        row = self._rows[min(self._i, len(self._rows) - 1)]
        if self._playing:
            self._i += 1
        return {name: float(v) for name, v in zip(SO101_MOTOR_FEATURES, row, strict=True)}

    def send_feedback(self, feedback: dict) -> None:
        pass


def make_teleoperator(config: TeleoperatorConfig) -> Teleoperator:
    """lerobot's factory, plus the teleoperators of this module."""
    if isinstance(config, KeyboardEETeleopConfig):
        return KeyboardEETeleop(config)
    if isinstance(config, DatasetReplayTeleopConfig):
        return DatasetReplayTeleop(config)
    from real.operator import TwinOperator, TwinOperatorConfig

    if isinstance(config, TwinOperatorConfig):
        return TwinOperator(config)
    from lerobot.teleoperators import make_teleoperator_from_config

    return make_teleoperator_from_config(config)
