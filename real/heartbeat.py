"""The heartbeat an external relay watches (SAFETY.md 17), and its watcher ``armvla heartbeat``.

Before each write the arm runtime re-checks the gate's decision with
:class:`safety.check.SelfCheck`; a command that fails is never written and stops the heartbeat.

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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

MAGIC = b"armvla-heartbeat"
STOP_WORD = b"STOP"


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
