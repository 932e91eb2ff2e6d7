"""The STS3215 control table as lerobot 0.6.1 addresses it, with access rights and defaults.

Addresses and sizes mirror ``lerobot.motors.feetech.tables.STS_SMS_SERIES_CONTROL_TABLE`` (a
test checks them against lerobot's table); sign bits mirror its encoding table. Defaults are a
factory-fresh STS3215 as Feetech ships it, so a host that reads before writing (lerobot's
``configure_motors`` reads ``Phase``) sees plausible values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from real.feetech_twin.protocol import encode_sign_magnitude

MODEL_NUMBER_STS3215 = 777  # lerobot's MODEL_NUMBER_TABLE["sts3215"]
FIRMWARE = (3, 10)  # (major, minor): every servo reports the same, as lerobot's handshake requires
RESOLUTION = 4096  # steps per turn
MEMORY_SIZE = 256


class Access(Enum):
    EEPROM = "eeprom"  # persistent settings; lerobot writes them with torque off and Lock = 0
    RAM = "ram"  # runtime commands
    READ_ONLY = "read_only"  # identity and measurements; host writes are ignored


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int  # bytes, little-endian
    access: Access
    default: int = 0
    sign_bit: int | None = None  # sign-magnitude bit, when the value is signed


E, R, RO = Access.EEPROM, Access.RAM, Access.READ_ONLY

REGISTERS: tuple[Register, ...] = (
    Register("Firmware_Major_Version", 0, 1, RO, FIRMWARE[0]),
    Register("Firmware_Minor_Version", 1, 1, RO, FIRMWARE[1]),
    Register("Model_Number", 3, 2, RO, MODEL_NUMBER_STS3215),
    Register("ID", 5, 1, E, 1),
    Register("Baud_Rate", 6, 1, E, 0),  # 0 = 1 Mbaud
    Register("Return_Delay_Time", 7, 1, E, 250),  # 2 us units; lerobot writes 0
    Register("Response_Status_Level", 8, 1, E, 1),  # 0: only PING/READ reply
    Register("Min_Position_Limit", 9, 2, E, 0),
    Register("Max_Position_Limit", 11, 2, E, RESOLUTION - 1),
    Register("Max_Temperature_Limit", 13, 1, E, 70),
    Register("Max_Voltage_Limit", 14, 1, E, 140),
    Register("Min_Voltage_Limit", 15, 1, E, 40),
    Register("Max_Torque_Limit", 16, 2, E, 1000),  # 0.1 %
    Register("Phase", 18, 1, E, 12),
    Register("Unloading_Condition", 19, 1, E, 44),
    Register("LED_Alarm_Condition", 20, 1, E, 47),
    Register("P_Coefficient", 21, 1, E, 32),
    Register("D_Coefficient", 22, 1, E, 32),
    Register("I_Coefficient", 23, 1, E, 0),
    Register("Minimum_Startup_Force", 24, 2, E, 16),
    Register("CW_Dead_Zone", 26, 1, E, 1),
    Register("CCW_Dead_Zone", 27, 1, E, 1),
    Register("Protection_Current", 28, 2, E, 500),
    Register("Angular_Resolution", 30, 1, E, 1),
    Register("Homing_Offset", 31, 2, E, 0, sign_bit=11),
    Register("Operating_Mode", 33, 1, E, 0),  # 0 = position servo
    Register("Protective_Torque", 34, 1, E, 20),  # % output while overload protection is on
    Register("Protection_Time", 35, 1, E, 200),  # 10 ms units of overload before it trips
    Register("Overload_Torque", 36, 1, E, 80),  # % load that counts as overload
    Register("Velocity_closed_loop_P_proportional_coefficient", 37, 1, E, 10),
    Register("Over_Current_Protection_Time", 38, 1, E, 200),
    Register("Velocity_closed_loop_I_integral_coefficient", 39, 1, E, 200),
    Register("Torque_Enable", 40, 1, R, 0),
    Register("Acceleration", 41, 1, R, 0),  # 100 step/s^2 units; 0 = the servo's maximum
    Register("Goal_Position", 42, 2, R, 0, sign_bit=15),
    Register("Goal_Time", 44, 2, R, 0),
    Register("Goal_Velocity", 46, 2, R, 0, sign_bit=15),  # step/s; 0 = the servo's maximum
    Register("Torque_Limit", 48, 2, R, 1000),  # 0.1 %
    Register("Lock", 55, 1, R, 0),
    Register("Present_Position", 56, 2, RO, 0, sign_bit=15),
    Register("Present_Velocity", 58, 2, RO, 0, sign_bit=15),
    Register("Present_Load", 60, 2, RO, 0, sign_bit=10),
    Register("Present_Voltage", 62, 1, RO, 120),  # 0.1 V
    Register("Present_Temperature", 63, 1, RO, 25),
    Register("Status", 65, 1, RO, 0),
    Register("Moving", 66, 1, RO, 0),
    Register("Present_Current", 69, 2, RO, 0),  # ~6.5 mA units
    Register("Goal_Position_2", 71, 2, RO, 0),
    Register("Moving_Velocity", 80, 1, R, 0),
    Register("Moving_Velocity_Threshold", 80, 1, R, 0),  # lerobot's second name for address 80
    Register("DTs", 81, 1, R, 0),
    Register("Velocity_Unit_factor", 82, 1, R, 0),
    Register("Hts", 83, 1, R, 0),
    Register("Maximum_Velocity_Limit", 84, 1, R, 0),
    Register("Maximum_Acceleration", 85, 1, R, 0),
    Register("Acceleration_Multiplier ", 86, 1, R, 0),  # sic: lerobot's key has a trailing space
)

BY_NAME: dict[str, Register] = {r.name: r for r in REGISTERS}
# Measurements the twin refreshes from the simulation before answering a read that touches them.
PRESENT_BLOCK = range(56, 71)
READ_ONLY_ADDRESSES = frozenset(
    a
    for r in REGISTERS
    if r.access is Access.READ_ONLY
    for a in range(r.address, r.address + r.size)
)
EEPROM_ADDRESSES = frozenset(
    a for r in REGISTERS if r.access is Access.EEPROM for a in range(r.address, r.address + r.size)
)


def encode_value(register: Register | str, value: int) -> bytes:
    """A signed or unsigned value -> the register's little-endian bytes."""
    reg = BY_NAME[register] if isinstance(register, str) else register
    raw = encode_sign_magnitude(value, reg.sign_bit) if reg.sign_bit is not None else int(value)
    raw = max(0, min(raw, (1 << (8 * reg.size)) - 1))  # saturate like a sensor, never wrap
    return raw.to_bytes(reg.size, "little")


def decode_value(register: Register | str, data: bytes) -> int:
    reg = BY_NAME[register] if isinstance(register, str) else register
    raw = int.from_bytes(data[: reg.size], "little")
    if reg.sign_bit is None:
        return raw
    magnitude = raw & ((1 << reg.sign_bit) - 1)
    return -magnitude if (raw >> reg.sign_bit) & 1 else magnitude


def factory_memory(servo_id: int) -> bytearray:
    """A servo's 256-byte register memory as shipped, with its bus id set."""
    mem = bytearray(MEMORY_SIZE)
    for reg in REGISTERS:
        mem[reg.address : reg.address + reg.size] = encode_value(reg, reg.default)
    mem[BY_NAME["ID"].address] = servo_id
    return mem
