"""One emulated STS3215: its register memory, its encoder, its thermal and overload models.

The servo knows nothing about serial ports or MuJoCo. The bus (emulator.py) reads and writes its
registers for the host; the physics thread (physics.py) reads its commands (goal, torque, gains,
limits) and feeds back the joint's measured state with :meth:`Servo.update_present`. Both run
under the twin's lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from real.feetech_twin.control_table import (
    BY_NAME,
    EEPROM_ADDRESSES,
    READ_ONLY_ADDRESSES,
    RESOLUTION,
    decode_value,
    encode_value,
    factory_memory,
)
from real.feetech_twin.protocol import ErrorBit

STEPS_PER_RAD = (RESOLUTION - 1) / (2 * math.pi)  # lerobot's degrees use 4095 steps per 360°
MILLIAMP_PER_CURRENT_UNIT = 6.5


@dataclass(frozen=True)
class JointEncoder:
    """Maps the MuJoCo joint angle to the servo's raw encoder reading (before the homing offset).

    ``actual = zero_actual + steps_per_rad * q`` and, as on the STS3215 (and in lerobot's
    ``_get_half_turn_homings``), ``Present_Position = actual - Homing_Offset`` modulo one turn.
    """

    zero_actual: float
    steps_per_rad: float = STEPS_PER_RAD

    def present(self, q: float, homing_offset: int) -> float:
        return (self.zero_actual + self.steps_per_rad * q - homing_offset) % RESOLUTION

    def angle(self, present: float, homing_offset: int) -> float:
        # Unwrap around the joint's zero: no SO-101 joint travels more than half a turn from it.
        delta = (present + homing_offset - self.zero_actual + RESOLUTION / 2) % RESOLUTION
        return (delta - RESOLUTION / 2) / self.steps_per_rad


@dataclass(frozen=True)
class ThermalConfig:
    """First-order thermal model: the winding heats with load squared and cools to ambient."""

    ambient_c: float = 25.0  # °C of the room; a resting servo settles here
    rise_at_stall_c: float = 60.0  # steady-state rise above ambient at full (stall) load
    time_constant_s: float = (
        300.0  # seconds; minutes-scale, as on the real servo (71 °C after ~110 min)
    )
    stall_current_a: float = (
        2.7  # amperes drawn at stall (STS3215 at 12 V); Present_Current scales with load
    )


class Servo:
    """Register state and slow dynamics of one STS3215 on the bus."""

    def __init__(self, servo_id: int, name: str, encoder: JointEncoder, eeprom: dict[str, int]):
        self.name = name
        self.encoder = encoder
        self.mem = factory_memory(servo_id)
        for reg_name, value in eeprom.items():
            self.set(reg_name, value)
        self.temperature_c = float(self.get("Present_Temperature"))
        self.extra_heat_c_per_s = 0.0  # fault injection: a servo that overheats regardless of load
        self.overload_s = 0.0  # how long the load has exceeded Overload_Torque
        self.overload_tripped = False
        self.injected_error = 0  # fault injection: ErrorBit flags added to every status reply
        # Goal writes while limp are kept; otherwise enabling torque holds the present position
        # (as the real servo does: lerobot's configure() re-enables torque without a goal).
        self._goal_written_while_limp = False

    # ------------------------------------------------------------------ registers
    @property
    def servo_id(self) -> int:
        return self.mem[BY_NAME["ID"].address]

    def get(self, name: str) -> int:
        reg = BY_NAME[name]
        return decode_value(reg, self.mem[reg.address : reg.address + reg.size])

    def set(self, name: str, value: int) -> None:
        """Internal write (no access check): the twin's own bookkeeping and fault injection."""
        reg = BY_NAME[name]
        self.mem[reg.address : reg.address + reg.size] = encode_value(reg, value)

    @property
    def torque_enabled(self) -> bool:
        return self.get("Torque_Enable") == 1

    def read(self, address: int, length: int) -> bytes:
        """A host READ: raw bytes, the way the servo would send them."""
        end = min(address + length, len(self.mem))
        return bytes(self.mem[address:end]).ljust(length, b"\x00")

    def write(self, address: int, data: bytes) -> None:
        """A host WRITE: read-only bytes are ignored, everything else lands in memory.

        EEPROM writes are accepted whatever ``Lock`` says: on the STS3215 the lock only stops the
        value being persisted across power cycles, which a twin that never powers off can't show.
        """
        was_enabled = self.torque_enabled
        goal = BY_NAME["Goal_Position"]
        for offset, byte in enumerate(data):
            addr = address + offset
            if addr >= len(self.mem) or addr in READ_ONLY_ADDRESSES:
                continue
            self.mem[addr] = byte
        touched = range(address, address + len(data))
        if goal.address in touched or goal.address + 1 in touched:
            self._clamp_goal()
            if not was_enabled:
                self._goal_written_while_limp = True
        torque = self.get("Torque_Enable")
        if torque == 128:
            # Feetech's "calibrate the present position to 2048": the offset that makes it so.
            actual = self.encoder.present(self.joint_q, 0)
            self.set("Homing_Offset", round(actual) - RESOLUTION // 2)
            self.set("Torque_Enable", 0)
        elif torque == 1 and not was_enabled:
            if not self._goal_written_while_limp:
                self.set("Goal_Position", self.get("Present_Position"))
            self._goal_written_while_limp = False
        elif torque == 0:
            self.overload_s, self.overload_tripped = 0.0, False

    def _clamp_goal(self) -> None:
        lo, hi = self.get("Min_Position_Limit"), self.get("Max_Position_Limit")
        if lo < hi:  # the servo's own angle limits; 0/0 would mean "multi-turn", unused here
            self.set("Goal_Position", min(max(self.get("Goal_Position"), lo), hi))

    def eeprom_bytes(self) -> bytes:
        return bytes(self.mem[a] for a in sorted(EEPROM_ADDRESSES))

    # ------------------------------------------------------------------ physics interface
    @property
    def joint_q(self) -> float:
        """Joint angle (rad) matching Present_Position under the current homing offset."""
        return self.encoder.angle(self.get("Present_Position"), self.get("Homing_Offset"))

    def goal_q(self) -> float:
        """Joint angle (rad) the servo drives to."""
        return self.encoder.angle(self.get("Goal_Position"), self.get("Homing_Offset"))

    def max_speed_rad_s(self, default: float) -> float:
        steps = abs(self.get("Goal_Velocity"))
        return steps / self.encoder.steps_per_rad if steps else default

    def torque_fraction(self) -> float:
        """Share of the stall torque the servo may use now (torque limits, overload protection)."""
        limit = min(self.get("Max_Torque_Limit"), self.get("Torque_Limit")) / 1000.0
        if self.overload_tripped:
            limit = min(limit, self.get("Protective_Torque") / 100.0)
        return max(0.0, min(limit, 1.0))

    def update_present(
        self, q: float, qd: float, torque_share: float, dt: float, thermal: ThermalConfig
    ) -> None:
        """Writes the measured joint state into the Present_* registers and advances the slow
        models (temperature, overload timer) by ``dt`` seconds.

        Args:
            q, qd: joint angle (rad) and velocity (rad/s) from the simulation.
            torque_share: actuator torque / stall torque, signed.
            dt: seconds of simulated time since the last update.
            thermal: thermal model parameters.
        """
        homing = self.get("Homing_Offset")
        self.set("Present_Position", round(self.encoder.present(q, homing)) % RESOLUTION)
        speed_steps = qd * self.encoder.steps_per_rad
        self.set("Present_Velocity", round(speed_steps))
        load = max(-1.0, min(torque_share, 1.0))
        self.set("Present_Load", round(load * 1000))
        current = abs(load) * thermal.stall_current_a * 1000 / MILLIAMP_PER_CURRENT_UNIT
        self.set("Present_Current", round(current))
        goal_error = abs(self.get("Goal_Position") - self.get("Present_Position"))
        moving = self.torque_enabled and (abs(speed_steps) > 20 or goal_error > 4)
        self.set("Moving", int(moving))

        # dT/dt = (T_ss(load) - T) / tau, plus any injected heating.
        target = thermal.ambient_c + thermal.rise_at_stall_c * load * load
        self.temperature_c += (target - self.temperature_c) * min(dt / thermal.time_constant_s, 1)
        self.temperature_c += self.extra_heat_c_per_s * dt
        self.set("Present_Temperature", max(0, min(round(self.temperature_c), 255)))

        # Overload protection: after Protection_Time above Overload_Torque, the output drops to
        # Protective_Torque until the obstruction is gone (goal reached) or torque goes off.
        if self.torque_enabled and abs(load) * 100 > self.get("Overload_Torque"):
            self.overload_s += dt
        elif not self.overload_tripped:
            self.overload_s = 0.0
        if self.overload_s > self.get("Protection_Time") * 0.01:
            self.overload_tripped = True
        if self.overload_tripped and (not self.torque_enabled or goal_error <= 10):
            self.overload_tripped, self.overload_s = False, 0.0
        self.set("Status", self.status_bits(current))

    def status_bits(self, current: float) -> int:
        bits = 0
        volts = self.get("Present_Voltage")
        if not self.get("Min_Voltage_Limit") <= volts <= self.get("Max_Voltage_Limit"):
            bits |= ErrorBit.VOLTAGE
        if self.get("Present_Temperature") >= self.get("Max_Temperature_Limit"):
            bits |= ErrorBit.OVERHEAT
        if current > self.get("Protection_Current"):
            bits |= ErrorBit.OVERCURRENT
        if self.overload_tripped:
            bits |= ErrorBit.OVERLOAD
        return bits

    def error_byte(self) -> int:
        """The error byte of this servo's status replies: its alarm bits plus injected ones."""
        return (self.get("Status") | self.injected_error) & 0x7F
