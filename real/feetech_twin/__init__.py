"""Serial-bus twin of the SO-101: Feetech STS3215 servos emulated on a pseudo-terminal and backed
by the MuJoCo pick scene, so lerobot's unmodified follower drives simulated joints
(``--robot.port=<twin.port>``) in hardware-in-the-loop tests.
"""

from real.feetech_twin.emulator import BusStats, FaultConfig, FeetechBus, PtyServer
from real.feetech_twin.protocol import ErrorBit, Instruction, PacketParser
from real.feetech_twin.servo import Servo, ThermalConfig
from real.feetech_twin.twin import SO101Twin, TwinConfig, twin_calibration

__all__ = [
    "BusStats",
    "ErrorBit",
    "FaultConfig",
    "FeetechBus",
    "Instruction",
    "PacketParser",
    "PtyServer",
    "SO101Twin",
    "Servo",
    "ThermalConfig",
    "TwinConfig",
    "twin_calibration",
]
