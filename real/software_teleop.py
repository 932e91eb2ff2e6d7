"""What a teleoperator without hardware of its own has in common (the keyboard, replay and
twin-operator teleoperators build on it)."""

from __future__ import annotations

from lerobot.teleoperators.config import TeleoperatorConfig
from lerobot.teleoperators.teleoperator import Teleoperator

from data.keys import SO101_MOTOR_FEATURES


def _joint_features() -> dict[str, type]:
    return {name: float for name in SO101_MOTOR_FEATURES}


class _SoftwareTeleop(Teleoperator):
    """What a teleoperator without hardware of its own has in common: nothing to calibrate or
    configure, joint targets as actions, connected once ``connect`` has run."""

    def __init__(self, config: TeleoperatorConfig):
        super().__init__(config)
        self.config = config
        self._connected = False

    @property
    def action_features(self) -> dict:
        return _joint_features()

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def disconnect(self) -> None:
        self._connected = False
