"""The heartbeat output and its watcher (SAFETY.md 17): beats while all is well, silence for good
after a stop, and a watcher that acts on silence or on a reported failure."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from real.heartbeat import MAGIC, Heartbeat, HeartbeatWatchConfig, parse_target, watch


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_udp_beats_carry_a_sequence_and_stop_for_good():
    port = free_udp_port()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", port))
    rx.settimeout(1.0)
    hb = Heartbeat(f"udp://127.0.0.1:{port}")
    try:
        for _ in range(3):
            hb.beat()
        got = [rx.recvfrom(1024)[0] for _ in range(3)]
        assert [g.split()[1] for g in got] == [b"1", b"2", b"3"]
        assert all(g.startswith(MAGIC + b" ") for g in got)
        hb.stop("self-check failed: step")
        assert rx.recvfrom(1024)[0] == MAGIC + b" STOP self-check failed: step"
        hb.beat()  # silent after a stop
        hb.stop("again")  # reported once
        rx.settimeout(0.2)
        with pytest.raises(TimeoutError):
            rx.recvfrom(1024)
    finally:
        hb.close()
        rx.close()


def test_file_beats_rewrite_the_file_in_place(tmp_path):
    path = tmp_path / "beat"
    hb = Heartbeat(f"file:{path}")
    hb.beat()
    first = path.read_text().split()
    hb.beat()
    second = path.read_text().split()
    hb.close()
    assert first[0] == "1" and second[0] == "2"
    assert len(path.read_bytes()) == 64  # fixed width, no stale tail


@pytest.mark.parametrize(
    "url, message",
    [
        ("udp://127.0.0.1", "HOST:PORT"),
        ("udp://127.0.0.1:notaport", "HOST:PORT"),
        ("tcp://127.0.0.1:9750", "udp://HOST:PORT or file:/path"),
        ("file:/no/such/folder/beat", "does not exist"),
    ],
)
def test_bad_targets_are_refused_with_the_accepted_forms(url, message):
    with pytest.raises(ValueError, match=message):
        parse_target(url, "--heartbeat")


def _beat_then(port: int, beats: int, then) -> threading.Thread:
    def send():
        hb = Heartbeat(f"udp://127.0.0.1:{port}")
        time.sleep(0.3)  # the watcher binds first
        for _ in range(beats):
            hb.beat()
            time.sleep(1 / 30)
        then(hb)
        hb.close()

    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t


def test_watcher_runs_its_command_when_beats_stop(tmp_path):
    port = free_udp_port()
    flag = tmp_path / "relay_open"
    sender = _beat_then(port, 20, lambda hb: None)  # the process just goes quiet (a hang)
    t0 = time.monotonic()
    result = watch(
        HeartbeatWatchConfig(
            listen=f"udp://127.0.0.1:{port}", timeout_s=0.2, on_lost=f"touch {flag}"
        )
    )
    sender.join()
    assert result["reason"] == "timeout" and result["beats"] == 20
    assert 0.2 <= result["lost_after_s"] < 0.5
    assert flag.exists()
    assert time.monotonic() - t0 < 5


def test_watcher_acts_at_once_on_a_reported_failure(tmp_path):
    port = free_udp_port()
    sender = _beat_then(port, 5, lambda hb: hb.stop("self-check failed"))
    result = watch(HeartbeatWatchConfig(listen=f"udp://127.0.0.1:{port}", timeout_s=5.0))
    sender.join()
    assert result["reason"] == "stop: self-check failed"
    assert result["lost_after_s"] < 1.0  # not the 5 s timeout


def test_watcher_gives_up_without_a_first_beat():
    result = watch(
        HeartbeatWatchConfig(
            listen=f"udp://127.0.0.1:{free_udp_port()}", timeout_s=0.1, wait_first_s=0.3
        )
    )
    assert result == {"beats": 0, "lost_after_s": None, "reason": "no first beat"}


def test_watcher_config_checks_its_options():
    with pytest.raises(ValueError, match="timeout_s"):
        HeartbeatWatchConfig(timeout_s=0)
    with pytest.raises(ValueError, match="--listen"):
        HeartbeatWatchConfig(listen="serial:/dev/ttyUSB0")
