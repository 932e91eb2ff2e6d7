"""The bus: instruction dispatch over the servos, fault injection, and the pseudo-terminal server.

The host opens the pty's slave side (``/dev/pts/N``) exactly like a USB serial adapter; the
server thread reads the master side, frames instruction packets, answers through the servos and
writes status packets back. Linux ptys accept ``B1000000`` (pyserial and scservo_sdk open them
at 1 Mbaud unchanged); the line settings have no effect on a pty, so nothing is slowed down.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from real.feetech_twin.lock import TwinLock
from real.feetech_twin.protocol import (
    BROADCAST_ID,
    Instruction,
    Packet,
    PacketParser,
    encode_status,
)
from real.feetech_twin.servo import Servo

# A partial packet that gets no new byte for this long is noise: a host writes a whole packet at
# once (~0.1 ms at 1 Mbaud), so the servo's framer gives up and resynchronises.
FRAME_TIMEOUT_S = 0.005


@dataclass
class FaultConfig:
    """Faults the twin injects; change them at run time with ``SO101Twin.set_faults``.

    Joint keys are lerobot motor names (``shoulder_pan`` ... ``gripper``).
    """

    # Probability that each byte of a status reply is lost on the wire.
    drop_byte_prob: float = 0.0
    # Probability that each byte of a status reply arrives with random bits flipped.
    corrupt_byte_prob: float = 0.0
    # Probability that a packet needing a reply gets none at all (every servo stays silent).
    no_reply_prob: float = 0.0
    # Probability that the replies to a packet arrive ``late_reply_s`` late, after the host has
    # given up on them (a busy USB adapter or host); they then precede the next reply.
    late_reply_prob: float = 0.0
    late_reply_s: float = 0.05
    # Servos whose replies never arrive (a broken return line); they still obey commands.
    silent_joints: list[str] = field(default_factory=list)
    # ErrorBit flags OR-ed into every status reply of a joint, e.g. {"elbow_flex": 4} (overheat).
    error_bits: dict[str, int] = field(default_factory=dict)
    # Extra heating in °C per simulated second, e.g. {"shoulder_lift": 0.5}: a servo overheating.
    heat_c_per_s: dict[str, float] = field(default_factory=dict)
    # Joints jammed where they are when the fault is applied; their actuators keep pushing.
    blocked_joints: list[str] = field(default_factory=list)

    def __post_init__(self):
        for name in ("drop_byte_prob", "corrupt_byte_prob", "no_reply_prob", "late_reply_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"faults.{name} must be a probability in [0, 1], got {p}")
        for bits in self.error_bits.values():
            if not 0 <= bits <= 0x7F:
                raise ValueError(f"faults.error_bits values must be in [0, 127], got {bits}")
        if not 0.0 < self.late_reply_s <= 5.0:
            raise ValueError(f"faults.late_reply_s must be in (0, 5] s, got {self.late_reply_s}")

    def joints(self) -> set[str]:
        """Every joint name the faults mention (for validation against the arm)."""
        return {
            *self.silent_joints,
            *self.error_bits,
            *self.heat_c_per_s,
            *self.blocked_joints,
        }


@dataclass
class BusStats:
    packets: int = 0  # valid instruction packets received
    replies: int = 0  # status packets sent (before byte faults)
    dropped_replies: int = 0  # replies suppressed by no_reply / silent faults
    late_replies: int = 0  # packets whose replies the late_reply fault held back
    garbage_bytes: int = 0  # bytes the framer discarded (noise, bad checksums)


class FeetechBus:
    """Dispatches instruction packets to the servos and returns the status packets they send.

    Call :meth:`handle` with the twin's lock held.
    """

    def __init__(self, servos: list[Servo], rng: random.Random):
        self.servos = servos
        self.rng = rng
        self.faults = FaultConfig()
        self.stats = BusStats()
        self._pending: dict[int, tuple[int, bytes]] = {}  # REG_WRITE (id -> address, data)

    def _by_id(self, servo_id: int) -> Servo | None:
        for servo in self.servos:  # ids can change at run time (lerobot's setup_motor)
            if servo.servo_id == servo_id:
                return servo
        return None

    def _targets(self, servo_id: int) -> list[Servo]:
        if servo_id == BROADCAST_ID:
            return sorted(self.servos, key=lambda s: s.servo_id)
        servo = self._by_id(servo_id)
        return [servo] if servo is not None else []

    def _status(self, servo: Servo, params: bytes = b"") -> bytes | None:
        if servo.name in self.faults.silent_joints:
            self.stats.dropped_replies += 1
            return None
        self.stats.replies += 1
        return encode_status(servo.servo_id, servo.error_byte(), params)

    def handle(self, packet: Packet) -> list[bytes]:
        """Executes one instruction; returns the status packets, in the order servos send them."""
        self.stats.packets += 1
        instr, params, broadcast = packet.code, packet.params, packet.servo_id == BROADCAST_ID
        replies: list[bytes | None] = []
        if instr == Instruction.PING:
            # A broadcast ping is answered by every servo in turn (lerobot's scan relies on it).
            replies = [self._status(s) for s in self._targets(packet.servo_id)]
        elif instr == Instruction.READ and len(params) == 2 and not broadcast:
            replies = [self._status(s, s.read(*params)) for s in self._targets(packet.servo_id)]
        elif instr in (Instruction.WRITE, Instruction.REG_WRITE) and params:
            for servo in self._targets(packet.servo_id):
                if instr == Instruction.WRITE:
                    servo.write(params[0], params[1:])
                else:
                    self._pending[servo.servo_id] = (params[0], params[1:])
                if not broadcast and self._replies_to_writes(servo):
                    replies.append(self._status(servo))
        elif instr == Instruction.ACTION:
            for servo in self._targets(packet.servo_id):
                if servo.servo_id in self._pending:
                    servo.write(*self._pending.pop(servo.servo_id))
                if not broadcast and self._replies_to_writes(servo):
                    replies.append(self._status(servo))
        elif instr == Instruction.SYNC_READ and len(params) >= 2:
            address, length = params[0], params[1]
            for servo_id in params[2:]:
                servo = self._by_id(servo_id)
                if servo is not None:
                    replies.append(self._status(servo, servo.read(address, length)))
        elif instr == Instruction.SYNC_WRITE and len(params) >= 2:
            address, length = params[0], params[1]
            body = params[2:]
            for start in range(0, len(body) - length, length + 1):
                servo = self._by_id(body[start])
                if servo is not None:
                    servo.write(address, body[start + 1 : start + 1 + length])
        # Unknown or malformed instructions get no answer, as on the real servo.
        out = [r for r in replies if r is not None]
        if out and self.rng.random() < self.faults.no_reply_prob:
            self.stats.dropped_replies += len(out)
            return []
        return out

    @staticmethod
    def _replies_to_writes(servo: Servo) -> bool:
        return servo.get("Response_Status_Level") != 0

    def garble(self, data: bytes) -> bytes:
        """Applies the byte-level faults (drops, flipped bits) to outgoing bytes."""
        f = self.faults
        if not (f.drop_byte_prob or f.corrupt_byte_prob):
            return data
        out = bytearray()
        for byte in data:
            if self.rng.random() < f.drop_byte_prob:
                continue
            if self.rng.random() < f.corrupt_byte_prob:
                byte ^= self.rng.randrange(1, 256)
            out.append(byte)
        return bytes(out)


class PtyServer:
    """Serves a :class:`FeetechBus` on a pseudo-terminal from a background thread.

    Args:
        bus: the bus to answer with.
        lock: held while the bus handles a packet (the physics thread shares the servos); the
            bus enters it first (:meth:`TwinLock.bus_first`), as servos answer whatever else runs.
        link: optional stable path to create as a symlink to the pty (removed on close).
    """

    def __init__(self, bus: FeetechBus, lock: TwinLock, link: str | None = None):
        self.bus = bus
        self.lock = lock
        self._master, self._slave = os.openpty()
        # Raw mode: no echo, no CR/LF translation, no line buffering - bytes pass untouched.
        # The twin keeps the slave open itself so the master never sees EIO between clients.
        tty.setraw(self._slave)
        attrs = termios.tcgetattr(self._slave)
        attrs[4] = attrs[5] = getattr(termios, "B1000000", attrs[4])
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        self.device = os.ttyname(self._slave)
        self.link = link
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(self.device, link)
        self.port = link or self.device
        self.parser = PacketParser()
        self.on_packet: Callable[[Packet], None] | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._late: list[tuple[float, bytes]] = []  # (monotonic time due, bytes) of late replies

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="feetech-twin-bus", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)

    def _serve(self) -> None:
        last_rx = 0.0
        while True:
            timeout = FRAME_TIMEOUT_S if self.parser.pending() else None
            if self._late:
                due = max(0.0, self._late[0][0] - time.monotonic())
                timeout = due if timeout is None else min(timeout, due)
            ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                return
            self._send_late()
            dropped = self.parser.dropped_bytes
            if not ready:  # a partial packet went stale, or only a late reply fell due
                stale = time.monotonic() - last_rx >= FRAME_TIMEOUT_S
                packets = self.parser.expire() if self.parser.pending() and stale else []
            else:
                try:
                    data = os.read(self._master, 4096)
                except OSError:  # EIO: the pty went away
                    return
                last_rx = time.monotonic()
                packets = self.parser.feed(data)
            out = bytearray()
            with self.lock.bus_first():
                self.bus.stats.garbage_bytes += self.parser.dropped_bytes - dropped
                for packet in packets:
                    replies = b"".join(self.bus.handle(packet))
                    if replies and self.bus.rng.random() < self.bus.faults.late_reply_prob:
                        self.bus.stats.late_replies += 1
                        due = time.monotonic() + self.bus.faults.late_reply_s
                        self._late.append((due, self.bus.garble(replies)))
                    else:
                        out += replies
                    if self.on_packet is not None:
                        self.on_packet(packet)
                out = bytearray(self.bus.garble(bytes(out)))
            if out:
                os.write(self._master, out)

    def late_pending(self) -> int:
        """How many held-back late replies have not been written yet."""
        return len(self._late)

    def _send_late(self) -> None:
        now = time.monotonic()
        while self._late and self._late[0][0] <= now:
            os.write(self._master, self._late[0][1])
            self._late.pop(0)  # counted as pending until written
