"""Feetech STS (protocol 0) packets: checksums, framing, sign-magnitude values.

Instruction: ``FF FF ID LEN INSTR PARAMS... CHK``; status reply: ``FF FF ID LEN ERROR PARAMS... CHK``,
with ``LEN = len(PARAMS) + 2`` and ``CHK = ~(ID + LEN + INSTR|ERROR + sum(PARAMS)) & 0xFF``. Multi-byte
register values are little-endian (lerobot opens the SDK with protocol_end 0). This module is pure:
no I/O, no threads, so the host side of the tests can build packets with it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
# The SDK refuses packets longer than this (TXPACKET_MAX_LEN / RXPACKET_MAX_LEN).
MAX_PACKET_LEN = 250


class Instruction(IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class ErrorBit(IntEnum):
    """Bits of a status packet's error byte (scservo_sdk ERRBIT_*)."""

    VOLTAGE = 1
    ANGLE = 2
    OVERHEAT = 4
    OVERCURRENT = 8
    OVERLOAD = 32


def checksum(body: bytes | bytearray) -> int:
    """Checksum of the bytes between the header and the checksum (ID, LEN, INSTR/ERROR, params)."""
    return ~sum(body) & 0xFF


def encode_instruction(servo_id: int, instruction: int, params: bytes | list[int] = b"") -> bytes:
    """A host -> servo packet, e.g. ``encode_instruction(1, Instruction.READ, [56, 2])``."""
    body = bytes([servo_id, len(params) + 2, instruction, *params])
    return HEADER + body + bytes([checksum(body)])


def encode_status(servo_id: int, error: int, params: bytes | list[int] = b"") -> bytes:
    """A servo -> host status packet carrying ``error`` (ErrorBit flags) and read data."""
    body = bytes([servo_id, len(params) + 2, error & 0x7F, *params])
    return HEADER + body + bytes([checksum(body)])


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Signed int -> sign-magnitude, as lerobot encodes Homing_Offset (bit 11), positions (bit 15).

    Magnitudes beyond the field saturate instead of raising: the servo's readings clip, they
    don't crash.
    """
    magnitude = min(abs(int(value)), (1 << sign_bit) - 1)
    return ((1 << sign_bit) if value < 0 else 0) | magnitude


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if (raw >> sign_bit) & 1 else magnitude


def sync_read_params(address: int, length: int, ids: list[int]) -> bytes:
    return bytes([address, length, *ids])


def sync_write_params(address: int, length: int, data: dict[int, bytes]) -> bytes:
    out = bytearray([address, length])
    for servo_id, payload in data.items():
        if len(payload) != length:
            raise ValueError(f"id {servo_id}: {len(payload)} data bytes, expected {length}")
        out += bytes([servo_id]) + payload
    return bytes(out)


@dataclass(frozen=True)
class Packet:
    """One framed packet; ``code`` is the instruction (host side) or the error byte (replies)."""

    servo_id: int
    code: int
    params: bytes


class PacketParser:
    """Incremental framer for a byte stream that may be split, corrupted or padded with noise.

    Feed it whatever the serial port returned; it yields every complete packet with a valid
    checksum and drops bytes until the next plausible header otherwise (the servo firmware and
    the SDK's ``rxPacket`` resynchronise the same way: discard one byte, look for ``FF FF``).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.dropped_bytes = 0  # garbage and bad-checksum bytes skipped so far
        self.bad_checksums = 0

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        packets = []
        while True:
            start = self._buf.find(HEADER)
            if start < 0:
                # Keep a trailing 0xFF: it may be the first half of the next header.
                keep = 1 if self._buf.endswith(b"\xff") else 0
                self._drop(len(self._buf) - keep)
                return packets
            self._drop(start)
            if len(self._buf) < 4:
                return packets
            servo_id, length = self._buf[2], self._buf[3]
            # 0xFF as an id means we're looking at a run of header bytes; LEN < 2 can't hold
            # the instruction and checksum. Either way the first byte is noise.
            if servo_id == 0xFF or length < 2 or length + 4 > MAX_PACKET_LEN:
                self._drop(1)
                continue
            total = length + 4
            if len(self._buf) < total:
                return packets
            frame = bytes(self._buf[:total])
            if checksum(frame[2:-1]) != frame[-1]:
                self.bad_checksums += 1
                self._drop(1)
                continue
            del self._buf[:total]
            packets.append(Packet(servo_id, frame[4], frame[5:-1]))

    def expire(self) -> list[Packet]:
        """Gives up on a partial packet that stopped arriving and rescans what follows its
        first byte (a noise byte that looked like a header with a long LEN would otherwise
        swallow the next real packets). Returns any complete packets found in the rest."""
        packets = []
        while self._buf:
            self._drop(1)
            packets += self.feed(b"")
        return packets

    def pending(self) -> int:
        """Bytes buffered while waiting for the rest of a packet."""
        return len(self._buf)

    def _drop(self, n: int) -> None:
        if n > 0:
            del self._buf[:n]
            self.dropped_bytes += n
