"""The Feetech twin's protocol, register map, calibration and bus dispatch, without a serial port.

These pin the twin to what lerobot 0.6.1 and scservo_sdk expect: lerobot's own tables and
sign-magnitude helpers are the reference.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from lerobot.motors import Motor, MotorCalibration, MotorNormMode
from lerobot.motors.encoding_utils import decode_sign_magnitude as lr_decode
from lerobot.motors.encoding_utils import encode_sign_magnitude as lr_encode
from lerobot.motors.feetech import FeetechMotorsBus
from lerobot.motors.feetech.tables import (
    MODEL_NUMBER_TABLE,
    STS_SMS_SERIES_CONTROL_TABLE,
    STS_SMS_SERIES_ENCODINGS_TABLE,
)

from real.feetech_twin import control_table as ct
from real.feetech_twin.emulator import FaultConfig, FeetechBus
from real.feetech_twin.protocol import (
    ErrorBit,
    Instruction,
    PacketParser,
    checksum,
    decode_sign_magnitude,
    encode_instruction,
    encode_sign_magnitude,
    encode_status,
    sync_read_params,
    sync_write_params,
)
from real.feetech_twin.servo import Servo, ThermalConfig
from real.feetech_twin.twin import joint_encoder, twin_calibration
from safety import so101


# ---------------------------------------------------------------------------- protocol
def test_checksum_of_a_known_ping():
    # Feetech manual example: ping id 1 is FF FF 01 02 01 FB.
    assert encode_instruction(1, Instruction.PING) == bytes.fromhex("ffff010201fb")
    assert checksum(bytes([1, 2, 1])) == 0xFB


def test_status_packet_layout():
    pkt = encode_status(3, ErrorBit.OVERHEAT, bytes([0x34, 0x12]))
    assert pkt[:2] == b"\xff\xff" and pkt[2] == 3 and pkt[3] == 4 and pkt[4] == 4
    assert pkt[5:7] == bytes([0x34, 0x12])
    assert pkt[-1] == (~sum(pkt[2:-1]) & 0xFF)


@pytest.mark.parametrize("bit", [10, 11, 15])
def test_sign_magnitude_matches_lerobot(bit):
    for value in [0, 1, -1, 5, -5, 1000, -1000, (1 << bit) - 1, -((1 << bit) - 1)]:
        assert encode_sign_magnitude(value, bit) == lr_encode(value, bit)
        assert decode_sign_magnitude(lr_encode(value, bit), bit) == value
        assert lr_decode(encode_sign_magnitude(value, bit), bit) == value
    # Readings beyond the field saturate instead of raising (a sensor clips).
    assert decode_sign_magnitude(encode_sign_magnitude(-(1 << bit) - 7, bit), bit) == -(
        (1 << bit) - 1
    )


def test_control_table_matches_lerobot():
    for name, (address, size) in STS_SMS_SERIES_CONTROL_TABLE.items():
        assert name in ct.BY_NAME, name
        assert (ct.BY_NAME[name].address, ct.BY_NAME[name].size) == (address, size), name
    for name, bit in STS_SMS_SERIES_ENCODINGS_TABLE.items():
        if name in ct.BY_NAME:
            assert ct.BY_NAME[name].sign_bit == bit, name
    assert MODEL_NUMBER_TABLE["sts3215"] == ct.MODEL_NUMBER_STS3215


def test_parser_handles_split_reads_and_several_packets():
    stream = encode_instruction(1, Instruction.READ, [56, 2]) + encode_instruction(
        0xFE, Instruction.SYNC_READ, sync_read_params(56, 2, [1, 2, 3])
    )
    parser = PacketParser()
    packets = []
    for i in range(len(stream)):  # worst case: one byte per read
        packets += parser.feed(stream[i : i + 1])
    assert [(p.servo_id, p.code) for p in packets] == [(1, 2), (0xFE, 0x82)]
    assert packets[1].params == bytes([56, 2, 1, 2, 3])
    assert parser.dropped_bytes == 0 and parser.pending() == 0


def test_parser_resyncs_after_garbage_and_bad_checksums():
    good = encode_instruction(2, Instruction.WRITE, [42, 0x00, 0x08])
    bad = bytearray(encode_instruction(3, Instruction.WRITE, [42, 0x00, 0x08]))
    bad[-2] ^= 0x40  # corrupt a data byte: checksum no longer matches
    noise = bytes([0x00, 0xFF, 0x13, 0xFF, 0xFF, 0xFF, 0x01])
    parser = PacketParser()
    packets = parser.feed(noise + bytes(bad) + good + b"\xff")
    assert [(p.servo_id, p.params) for p in packets] == [(2, bytes([42, 0x00, 0x08]))]
    assert parser.bad_checksums >= 1 and parser.dropped_bytes >= len(noise)
    assert parser.pending() == 1  # a trailing FF may start the next header


def test_sync_write_params_layout():
    params = sync_write_params(42, 2, {1: b"\x00\x08", 6: b"\xff\x07"})
    assert params == bytes([42, 2, 1, 0x00, 0x08, 6, 0xFF, 0x07])


# ---------------------------------------------------------------------------- calibration
def _lerobot_bus() -> FeetechMotorsBus:
    """A lerobot bus holding the twin's calibration; never opened, used for its normalization."""
    calib = twin_calibration()
    motors = {
        name: Motor(
            c["id"],
            "sts3215",
            MotorNormMode.RANGE_0_100 if name == "gripper" else MotorNormMode.DEGREES,
        )
        for name, c in calib.items()
    }
    return FeetechMotorsBus(
        "/dev/null", motors, {n: MotorCalibration(**c) for n, c in calib.items()}
    )


def test_calibration_makes_lerobot_units_equal_the_sim_convention():
    bus = _lerobot_bus()
    calib = twin_calibration()
    rng = np.random.default_rng(0)
    lo, hi = so101.JOINT_LIMITS_RAD[:, 0], so101.JOINT_LIMITS_RAD[:, 1]
    for q in rng.uniform(lo, hi, size=(200, 6)):
        present = {
            c["id"]: round(joint_encoder(n, c).present(q[i], c["homing_offset"]))
            for i, (n, c) in enumerate(calib.items())
        }
        lerobot = bus._normalize(present)
        got = np.array([lerobot[c["id"]] for c in calib.values()])
        want = so101.from_radians(q)
        # One encoder step is 0.088°; the gripper's 1251 steps span 100 %.
        np.testing.assert_allclose(got[:5], want[:5], atol=0.045)
        assert abs(got[5] - want[5]) <= 0.05
    # Ranges lie inside the encoder and the sim's joint limits map inside them.
    for c in calib.values():
        assert 0 <= c["range_min"] < c["range_max"] <= 4095
        assert abs(c["homing_offset"]) <= 2047


def test_goal_written_by_lerobot_maps_to_the_sim_angle():
    bus = _lerobot_bus()
    calib = twin_calibration()
    target = np.array([12.5, -40.0, 33.0, 70.0, -120.0, 42.0])  # lerobot units
    raw = bus._unnormalize({c["id"]: target[i] for i, c in enumerate(calib.values())})
    servos = _servos()
    for i, servo in enumerate(servos):
        servo.write(42, ct.encode_value("Goal_Position", raw[i + 1]))
    q = np.array([s.goal_q() for s in servos])
    # lerobot truncates to an integer step: within one step (0.088°, 0.08 %).
    np.testing.assert_allclose(so101.from_radians(q), target, atol=0.09)


# ---------------------------------------------------------------------------- bus dispatch
def _servos() -> list[Servo]:
    return [
        Servo(
            c["id"],
            n,
            joint_encoder(n, c),
            {
                "Homing_Offset": c["homing_offset"],
                "Min_Position_Limit": c["range_min"],
                "Max_Position_Limit": c["range_max"],
            },
        )
        for n, c in twin_calibration().items()
    ]


def _bus() -> FeetechBus:
    servos = _servos()
    for i, s in enumerate(servos):
        s.update_present(0.1 * i, 0.0, 0.0, 0.0, ThermalConfig())
    return FeetechBus(servos, random.Random(0))


def _one(bus, servo_id, instr, params=b""):
    packets = PacketParser().feed(encode_instruction(servo_id, instr, params))
    assert len(packets) == 1
    return [PacketParser().feed(r)[0] for r in bus.handle(packets[0])]


def test_ping_read_and_broadcast_ping():
    bus = _bus()
    (reply,) = _one(bus, 3, Instruction.PING)
    assert (reply.servo_id, reply.code, reply.params) == (3, 0, b"")
    (reply,) = _one(bus, 3, Instruction.READ, [3, 2])
    assert int.from_bytes(reply.params, "little") == 777
    assert [r.servo_id for r in _one(bus, 0xFE, Instruction.PING)] == [1, 2, 3, 4, 5, 6]
    assert _one(bus, 9, Instruction.PING) == []  # nobody at id 9


def test_sync_read_replies_in_turn_and_sync_write_is_silent():
    bus = _bus()
    replies = _one(bus, 0xFE, Instruction.SYNC_READ, sync_read_params(56, 15, [6, 2, 4]))
    assert [r.servo_id for r in replies] == [6, 2, 4]  # the order the host asked for
    for r in replies:
        servo = bus._by_id(r.servo_id)
        assert len(r.params) == 15
        assert ct.decode_value("Present_Position", r.params[0:2]) == servo.get("Present_Position")
        assert r.params[63 - 56] == servo.get("Present_Temperature")
    data = {i: ct.encode_value("Goal_Position", 2000 + i) for i in range(1, 7)}
    assert _one(bus, 0xFE, Instruction.SYNC_WRITE, sync_write_params(42, 2, data)) == []
    assert [s.get("Goal_Position") for s in bus.servos] == [2001, 2002, 2003, 2004, 2005, 2006]


def test_write_rules_read_only_limits_and_status_level():
    bus = _bus()
    servo = bus._by_id(1)
    before = servo.get("Present_Position")
    (reply,) = _one(bus, 1, Instruction.WRITE, [56, 0, 0])
    assert reply.code == 0 and servo.get("Present_Position") == before  # read-only: ignored
    _one(bus, 1, Instruction.WRITE, [42, *ct.encode_value("Goal_Position", 10)])
    assert servo.get("Goal_Position") == servo.get("Min_Position_Limit")  # clamped by the servo
    assert _one(bus, 0xFE, Instruction.WRITE, [40, 1]) == []  # broadcast: applied, no reply
    assert all(s.torque_enabled for s in bus.servos)
    _one(bus, 1, Instruction.WRITE, [8, 0])  # Response_Status_Level 0: only PING/READ answer
    assert _one(bus, 1, Instruction.WRITE, [41, 10]) == []
    assert len(_one(bus, 1, Instruction.READ, [41, 1])) == 1


def test_reg_write_waits_for_action():
    bus = _bus()
    goal = ct.encode_value("Goal_Position", 2100)
    (reply,) = _one(bus, 2, Instruction.REG_WRITE, [42, *goal])
    assert reply.code == 0 and bus._by_id(2).get("Goal_Position") != 2100
    assert _one(bus, 0xFE, Instruction.ACTION) == []
    assert bus._by_id(2).get("Goal_Position") == 2100


def test_torque_enable_holds_present_unless_a_goal_was_written():
    bus = _bus()
    servo = bus._by_id(4)
    servo.set("Goal_Position", 1000)  # stale goal from an earlier session
    _one(bus, 4, Instruction.WRITE, [40, 1])
    assert servo.get("Goal_Position") == servo.get("Present_Position")  # no jump at enable
    _one(bus, 4, Instruction.WRITE, [40, 0])
    _one(bus, 4, Instruction.WRITE, [42, *ct.encode_value("Goal_Position", 2222)])
    _one(bus, 4, Instruction.WRITE, [40, 1])
    assert servo.get("Goal_Position") == 2222


def test_fault_error_bits_silence_and_no_reply():
    bus = _bus()
    bus.faults = FaultConfig(error_bits={"elbow_flex": ErrorBit.OVERHEAT})
    bus._by_id(3).injected_error = ErrorBit.OVERHEAT  # what SO101Twin.set_faults does
    (reply,) = _one(bus, 3, Instruction.READ, [56, 2])
    assert reply.code == ErrorBit.OVERHEAT
    bus.faults = FaultConfig(silent_joints=["wrist_flex"])
    replies = _one(bus, 0xFE, Instruction.SYNC_READ, sync_read_params(56, 2, [3, 4, 5]))
    assert [r.servo_id for r in replies] == [3, 5]
    bus.faults = FaultConfig(no_reply_prob=1.0)
    assert _one(bus, 1, Instruction.PING) == []


def test_garble_drops_and_corrupts_bytes():
    bus = _bus()
    data = bytes(range(200))
    bus.faults = FaultConfig(drop_byte_prob=0.5)
    assert 50 < len(bus.garble(data)) < 150
    bus.faults = FaultConfig(corrupt_byte_prob=1.0)
    out = bus.garble(data)
    assert len(out) == len(data) and all(a != b for a, b in zip(out, data, strict=True))


def test_fault_config_validates():
    with pytest.raises(ValueError, match="probability"):
        FaultConfig(no_reply_prob=1.5)
    with pytest.raises(ValueError, match="error_bits"):
        FaultConfig(error_bits={"gripper": 300})


def test_parser_expires_a_stale_partial_packet():
    # Noise that looks like a header with a long LEN must not swallow the next real packet.
    parser = PacketParser()
    assert parser.feed(bytes([0xFF, 0xFF, 0x07, 0x99, 0x01])) == []
    assert parser.pending() == 5
    good = encode_instruction(1, Instruction.PING)
    assert parser.feed(good) == []  # still inside the fake packet's 157 bytes
    packets = parser.expire()
    assert [(p.servo_id, p.code) for p in packets] == [(1, Instruction.PING)]
    assert parser.pending() == 0
