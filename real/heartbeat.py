"""Self-check of every command before it reaches a motor, and the heartbeat an external relay
watches (SAFETY.md 17).

:class:`SelfCheck` re-checks each command the gate decided, before it is written, with the
independent :class:`~real.safety_check.InvariantChecker` (joint range, step, acceleration,
workspace, table, keep-out, tool speed over the last three commands) and re-hashes the safety
config now and then, so limits changed in memory after start show up. A command that fails is
never written: the arm holds its last checked command and the self-check stays failed.

:class:`Heartbeat` sends one beat per control tick while the loop runs, the supervisor sees a
live bus and the self-check passes; after any failure it stays silent for good (and says so
once, so a listener need not wait for its timeout). Silence is the signal: an external
watchdog (``armvla heartbeat``, a microcontroller, a PLC) cuts the arm's power when beats
stop, which also covers a hung or killed process. Targets:

- ``udp://HOST:PORT``: a datagram ``armvla-heartbeat <seq> <time>`` per beat;
- ``file:PATH``: ``<seq> <time>`` rewritten in place per beat (put it on a tmpfs; a watcher
  checks that it changes).

``armvla heartbeat --listen=udp://0.0.0.0:9750 --timeout_s=0.25 --on_lost="<command>"`` is
the watcher: it runs the command (e.g. one that opens a USB relay) once when beats stop.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from real.safety_check import InvariantChecker
from real.safety_config import SafetyConfig
from real.safety_gate import GateDecision, Reason

logger = logging.getLogger(__name__)

MAGIC = b"armvla-heartbeat"
STOP_WORD = b"STOP"
# Reasons under which the gate may stop harder than the acceleration limit (a hold, or a
# harder-than-allowed stop when braking itself fails a check), if the step only slows down.
_HARD_STOP = Reason.HOLD | Reason.ACCEL_OVERRIDE
# Joints engaged outside their soft range may move back in (the checker's Cartesian invariants
# take the engaged pose's depths as their allowance instead).
_WHERE = {"joint_limit"}


class SelfCheck:
    """Independent re-check of each gate decision before it is written.

    Args:
        config: the limits the gate enforces.
        calibration: the lerobot calibration the gate's joint ranges come from.
        rehash_every: re-hash the config every this many checks (a changed hash fails).
    """

    def __init__(
        self, config: SafetyConfig, calibration: dict | None = None, rehash_every: int = 30
    ):
        self.config = config
        self.config_hash = config.hash()
        self.checker = InvariantChecker(config, calibration)
        self.rehash_every = rehash_every
        self.failure: str | None = None
        self._window: deque[tuple[np.ndarray, bool]] = deque(maxlen=3)
        self._allowance: np.ndarray | None = None  # depths of the engaged pose [P, C]
        self._count = 0

    @property
    def ok(self) -> bool:
        return self.failure is None

    def restart(self, command_rad: np.ndarray) -> None:
        """The gate engaged at ``command_rad`` (the measured pose): a new sequence starts."""
        self._window.clear()
        self._window.append((np.asarray(command_rad, dtype=np.float64).copy(), True))
        self._allowance = self.checker.depths(self._window[0][0])[0]

    def check(self, decision: GateDecision) -> bool:
        """Whether ``decision`` may be written. A failure latches: later ones fail too."""
        if self.failure is not None:
            return False
        self._count += 1
        if self._count % self.rehash_every == 0 and self.config.hash() != self.config_hash:
            return self._fail("the safety config changed in memory since start")
        if not self._window:  # nothing to compare with: only the pose itself is checked
            self.restart(decision.command_rad)
        hard_stop = bool(decision.reasons & _HARD_STOP) and self._slows_down(decision.command_rad)
        window = [*self._window, (decision.command_rad, hard_stop)]
        commands = np.array([c for c, _ in window])
        holds = np.array([h for _, h in window])
        last = len(window) - 1
        checked = self.checker.check(commands, holds, allowance=self._allowance)
        violations = [v for v in checked if v.tick == last]
        if any(v.invariant in _WHERE for v in violations) and self._not_worse(commands[-2:]):
            # Started outside a joint's range: moving back is what the gate does, one limited
            # step at a time, so a pose no farther out than the last passes.
            violations = [v for v in violations if v.invariant not in _WHERE]
        if violations:
            v = violations[0]
            return self._fail(f"gate command {decision.seq} fails {v.invariant}: {v.detail}")
        self._window.append((decision.command_rad.copy(), hard_stop))
        return True

    def _slows_down(self, command: np.ndarray) -> bool:
        """A stop may brake harder than the acceleration limit, but only brake: every joint's
        step is no larger than its last one and in the same direction (or zero)."""
        if len(self._window) < 2:
            return True
        last = self._window[-1][0] - self._window[-2][0]
        step = np.asarray(command) - self._window[-1][0]
        return bool(np.all((step * last >= 0) & (np.abs(step) <= np.abs(last) + 1e-12)))

    def _not_worse(self, pair: np.ndarray) -> bool:
        """Whether the new command [1] is no further outside the joint ranges (per joint) than
        the previous one [0]."""
        c = self.checker
        excess = np.maximum(c.low - pair, 0.0) + np.maximum(pair - c.high, 0.0)
        return not np.any(excess[1] > excess[0] + 1e-9)

    def _fail(self, why: str) -> bool:
        self.failure = why
        logger.error("safety self-check failed: %s", why)
        return False


def parse_target(url: str | None, flag: str) -> tuple[str, int] | Path | None:
    """``udp://HOST:PORT`` -> (host, port); ``file:PATH`` -> Path (its folder must exist);
    None -> None. Anything else is a ValueError naming ``flag`` and the accepted forms."""
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.scheme == "udp":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or not port:
            raise ValueError(f"{flag}={url!r}: give udp://HOST:PORT, e.g. udp://127.0.0.1:9750")
        return parsed.hostname, port
    if parsed.scheme == "file":
        path = Path(parsed.netloc + parsed.path)
        if not path.parent.is_dir():
            raise ValueError(f"{flag}={url!r}: folder {path.parent} does not exist")
        return path
    raise ValueError(f"{flag}={url!r}: use udp://HOST:PORT or file:/path (e.g. on a tmpfs)")


class Heartbeat:
    """Beats to an external watchdog; silent for good after :meth:`stop`.

    Args:
        url: ``udp://host:port`` or ``file:/path``; None = no output (the checks still run).
    """

    def __init__(self, url: str | None):
        self.url = url
        self.seq = 0
        self.stopped: str | None = None
        self._sock = self._addr = self._fd = None
        target = parse_target(url, "--heartbeat")
        if target is None:
            return
        if isinstance(target, tuple):
            self._addr = target
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        else:
            self._fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def beat(self) -> None:
        if self.stopped is not None:
            return
        self.seq += 1
        self._emit(b"%d %.6f" % (self.seq, time.time()))

    def stop(self, why: str, fault: bool = True) -> None:
        """No more beats, ever (a deliberate restart makes a new Heartbeat). ``fault=False``
        for an orderly end (torque off after a park): logged as information, not an error."""
        if self.stopped is not None:
            return
        self.stopped = why
        logger.log(logging.ERROR if fault else logging.INFO, "heartbeat stopped: %s", why)
        self._emit(STOP_WORD + b" " + why.encode()[:400])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _emit(self, body: bytes) -> None:
        try:
            if self._sock is not None:
                self._sock.sendto(MAGIC + b" " + body, self._addr)
            elif self._fd is not None:
                line = body + b"\n"
                os.pwrite(self._fd, line.ljust(64), 0)  # fixed width: no stale tail
        except OSError as exc:  # a full socket buffer or a dead watcher: the watcher decides
            logger.warning("heartbeat not sent: %s", exc)


# ---------------------------------------------------------------------------- the watcher
@dataclass
class HeartbeatWatchConfig:
    # What to watch: udp://HOST:PORT to listen on (e.g. udp://0.0.0.0:9750), or file:/path that
    # armvla run/record rewrites every tick.
    listen: str = "udp://127.0.0.1:9750"
    # Beats missing for this long (s) count as lost; keep it a few control ticks (0.25 s is
    # 7 ticks at 30 Hz).
    timeout_s: float = 0.25
    # Shell command run once when beats are lost or the sender reports a failed self-check
    # (e.g. one that opens the relay in the arm's power line). None only prints.
    on_lost: str | None = None
    # Give up waiting for the first beat after this long (s); 0 waits for ever.
    wait_first_s: float = 0.0

    def __post_init__(self):
        if not self.timeout_s > 0:
            raise ValueError(f"--timeout_s must be > 0, got {self.timeout_s}")
        if self.wait_first_s < 0:
            raise ValueError(f"--wait_first_s must be >= 0, got {self.wait_first_s}")
        parse_target(self.listen, "--listen")


def watch(cfg: HeartbeatWatchConfig) -> dict:
    """Waits for beats, then returns (after running ``on_lost``) when they stop.

    Returns ``{"beats", "lost_after_s", "reason"}``; reason is ``"timeout"``, ``"stop: ..."``
    (the sender's self-check or supervisor stopped it) or ``"no first beat"``.
    """
    target = parse_target(cfg.listen, "--listen")
    source = _UdpSource(target) if isinstance(target, tuple) else _FileSource(target)
    beats, first, last, reason = 0, None, None, None
    started = time.monotonic()
    print(f"watching {cfg.listen} (lost after {cfg.timeout_s:g} s without a beat)", flush=True)
    try:
        while reason is None:
            got = source.poll(0.01)
            now = time.monotonic()
            if got is not None and got.startswith(STOP_WORD):
                reason = "stop: " + got[len(STOP_WORD) :].decode(errors="replace").strip()
            elif got is not None:
                beats += 1
                first = first or now
                last = now
            elif last is not None and now - last > cfg.timeout_s:
                reason = "timeout"
            elif last is None and cfg.wait_first_s and now - started > cfg.wait_first_s:
                reason = "no first beat"
    finally:
        source.close()
    lost_after = (time.monotonic() - last) if last is not None else None
    print(f"heartbeat lost ({reason}) after {beats} beats", flush=True)
    if cfg.on_lost:
        done = subprocess.run(cfg.on_lost, shell=True, check=False)
        if done.returncode:
            print(f"--on_lost exited with {done.returncode}", file=sys.stderr)
    return {"beats": beats, "lost_after_s": lost_after, "reason": reason}


class _UdpSource:
    def __init__(self, addr: tuple[str, int]):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(addr)

    def poll(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(1024)
        except TimeoutError:
            return None
        if not data.startswith(MAGIC + b" "):
            return None  # not ours
        return data[len(MAGIC) + 1 :]

    def close(self) -> None:
        self.sock.close()


class _FileSource:
    def __init__(self, path: Path):
        self.path = path
        self.last: bytes | None = None

    def poll(self, timeout: float) -> bytes | None:
        time.sleep(timeout)
        try:
            text = self.path.read_bytes().strip()
        except FileNotFoundError:
            return None
        if not text or text == self.last:
            return None
        self.last = text
        return text

    def close(self) -> None:
        pass
