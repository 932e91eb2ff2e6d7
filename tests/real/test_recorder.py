"""EpisodeRecorder: lerobot round trip, a never-blocking add_frame, writer errors, SIGKILLs.

The SIGKILL test needs many short-lived recording processes; importing lerobot takes seconds,
so this file doubles as a fork server (``python test_recorder.py zygote``): it imports once and
forks one recorder child per round, which the test kills.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from data.dataset import SOURCE, so101_features
from data.keys import ACTION, OBS_STATE, SOURCE_REAL, image_key
from real import recorder as rec_mod
from real.recorder import (
    RECORDER_DIR,
    EpisodeRecorder,
    RecorderConfig,
    read_journal,
    repair,
)

CAMERAS = ("front", "wrist")
SIZE = 32
FPS = 30
REPO = "test/so101_real"
FEATURES = so101_features(CAMERAS, SIZE, SIZE)


def code_of(task: str) -> int:
    return zlib.crc32(task.encode()) % 1000


def shade(code: int, cam: int) -> int:
    return (code * 7 + cam * 90) % 200 + 20


def make_frame(code: int, t: int) -> dict:
    """Frame ``t`` of the episode tagged ``code``: state = [t, code, 0...], flat-colour images."""
    state = np.array([t, code, 0, 0, 0, 0], np.float32)
    frame = {OBS_STATE: state, ACTION: state + 0.5}
    for i, cam in enumerate(CAMERAS):
        frame[image_key(cam)] = np.full((SIZE, SIZE, 3), shade(code, i), np.uint8)
    return frame


def record(rec: EpisodeRecorder, task: str, n: int) -> bool:
    rec.start_episode(task)
    for t in range(n):
        assert rec.add_frame(make_frame(code_of(task), t))
    return rec.save_episode()


def load(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(REPO, root=root)


def check_episodes(ds, expected: dict[int, tuple[int, str]]) -> None:
    """Every expected episode (index -> (frames, task)) is in ``ds`` with its exact content."""
    episodes = ds.meta.episodes
    table = ds.hf_dataset.with_format("numpy")
    state = np.stack(table[OBS_STATE])
    ep_index = np.asarray(table["episode_index"])
    for idx, (n, task) in expected.items():
        row = episodes[idx]
        assert row["length"] == n and list(row["tasks"]) == [task], (idx, row)
        rows = state[ep_index == idx]
        assert len(rows) == n, (idx, len(rows), n)
        np.testing.assert_array_equal(rows[:, 0], np.arange(n))
        assert np.all(rows[:, 1] == code_of(task))


def check_last_frame_decodes(ds, idx: int, task: str) -> None:
    item = ds[int(ds.meta.episodes[idx]["dataset_to_index"]) - 1]
    assert item["task"] == task and item[SOURCE] == SOURCE_REAL
    for i, cam in enumerate(CAMERAS):
        mean = float(item[image_key(cam)].mean()) * 255
        assert abs(mean - shade(code_of(task), i)) < 8, (cam, mean)


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """Keeps HF datasets' parquet cache (one per loaded file set) out of the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a broken dataset must fail, not be downloaded


# ---------------------------------------------------------------------------- round trip
def test_round_trip_through_lerobot(tmp_path):
    root = tmp_path / "ds"
    lengths, tasks = (9, 5, 12), ("pick the red cube", "pick the blue cube", "pick the red cube")
    with EpisodeRecorder(root, REPO, FPS, FEATURES) as rec:
        assert rec.status().state == "idle"
        record(rec, tasks[0], lengths[0])
        rec.start_episode("a demo that went wrong")  # re-recorded: discarded, not committed
        for t in range(4):
            rec.add_frame(make_frame(1, t))
        assert rec.discard_episode()
        record(rec, tasks[1], lengths[1])
        record(rec, tasks[2], lengths[2])
        assert rec.wait(timeout=60)
        status = rec.status()
    assert (status.episodes_committed, status.committed_this_session) == (3, 3)
    assert (status.pending_saves, status.frames_dropped, status.last_error) == (0, 0, None)
    assert not (root / RECORDER_DIR).exists()

    ds = load(root)
    assert ds.num_episodes == 3 and ds.num_frames == sum(lengths) and ds.fps == FPS
    check_episodes(ds, {i: (n, t) for i, (n, t) in enumerate(zip(lengths, tasks, strict=True))})
    assert set(ds.hf_dataset.with_format(None)[SOURCE]) == {SOURCE_REAL}
    assert sorted(ds.meta.tasks.index) == sorted(set(tasks))
    check_last_frame_decodes(ds, 2, tasks[2])
    [entry] = read_journal(root)["aborted"]
    assert entry["kind"] == "discarded" and entry["task"] == "a demo that went wrong"

    with EpisodeRecorder(root, REPO, FPS, FEATURES, resume=True) as rec:
        assert rec.status().episodes_committed == 3
        record(rec, "stack the cubes", 6)
    ds = load(root)
    assert ds.num_episodes == 4
    check_episodes(ds, {0: (9, tasks[0]), 3: (6, "stack the cubes")})


def test_no_dataset_appears_at_root_before_its_first_episode_commits(tmp_path):
    """lerobot cannot open a dataset without episodes (it goes to the hub for one), so before
    the first commit there is no meta/info.json at root; a recorder that stopped there (here a
    close mid-episode, as a kill would) leaves a base the next one starts from."""
    root = tmp_path / "ds"
    with EpisodeRecorder(root, REPO, FPS, FEATURES) as rec:
        rec.start_episode("pick the red cube")
        for t in range(3):
            rec.add_frame(make_frame(1, t))
    assert not (root / "meta/info.json").exists()
    with EpisodeRecorder(root, REPO, FPS, FEATURES) as rec:
        assert not (root / "meta/info.json").exists()
        assert record(rec, "pick the red cube", 6) and rec.wait(timeout=60)
    ds = load(root)
    assert ds.meta.total_episodes == 1 and len(ds) == 6
    assert not (root / RECORDER_DIR).exists()  # the base is gone with the first commit


def test_refuses_to_clobber_share_or_mismatch(tmp_path):
    root = tmp_path / "ds"
    with EpisodeRecorder(root, REPO, FPS, FEATURES) as rec:
        with pytest.raises(RuntimeError, match="another process"):
            EpisodeRecorder(root, REPO, FPS, FEATURES, resume=True)
        with pytest.raises(RuntimeError, match="another process"):
            repair(root)
        record(rec, "pick", 3)
    with pytest.raises(FileExistsError, match="resume=True"):
        EpisodeRecorder(root, REPO, FPS, FEATURES)
    with pytest.raises(ValueError, match="fps"):
        EpisodeRecorder(root, REPO, 15, FEATURES, resume=True)
    with pytest.raises(ValueError, match="feature"):
        EpisodeRecorder(root, REPO, FPS, so101_features(CAMERAS, 64, 64), resume=True)
    with pytest.raises(FileNotFoundError):
        EpisodeRecorder(tmp_path / "missing", REPO, FPS, FEATURES, resume=True)


# ---------------------------------------------------------------------------- isolation
@pytest.mark.parametrize("stall_in", ["frame", "commit"])
def test_add_frame_never_blocks_on_a_stalled_writer(tmp_path, monkeypatch, stall_in):
    """The writer hangs (a slow disk); the loop keeps its timing, the episode is aborted."""
    release = threading.Event()
    name = {"frame": "add", "commit": "stage"}[stall_in]
    original = getattr(rec_mod._StagedEpisode, name)

    def stalled(self, *args):
        release.wait(timeout=60)
        return original(self, *args)

    root = tmp_path / "ds"
    rec = EpisodeRecorder(root, REPO, FPS, FEATURES, config=RecorderConfig(max_queued_frames=8))
    record(rec, "pick first", 4)
    rec.wait(timeout=60)
    monkeypatch.setattr(rec_mod._StagedEpisode, name, stalled)
    if stall_in == "commit":
        record(rec, "pick second", 4)  # its commit hangs while the next episode records
    rec.start_episode("pick third")
    took, accepted = [], []
    for t in range(40):
        frame = make_frame(3, t)
        start = time.perf_counter()
        accepted.append(rec.add_frame(frame))
        took.append(time.perf_counter() - start)
    status = rec.status()
    assert max(took) < 0.005, f"add_frame took {1000 * max(took):.1f} ms"
    assert 1 <= sum(accepted) <= 9 and not any(accepted[10:])
    assert status.state == "stopped" and status.frames_dropped == 40 - sum(accepted)
    assert "writer fell behind" in status.last_error
    assert rec.save_episode() is False  # nothing to commit: the episode was aborted

    release.set()
    assert rec.wait(timeout=60)
    status = rec.status()
    assert status.episodes_aborted == 1 and status.pending_saves == 0
    assert status.episodes_committed == (2 if stall_in == "commit" else 1)
    [entry] = read_journal(root)["aborted"]
    assert entry["task"] == "pick third" and "writer fell behind" in entry["reason"]
    record(rec, "pick again", 5)  # a new start records normally
    rec.close()
    assert rec.status().episodes_committed == status.episodes_committed + 1
    assert load(root).num_episodes == status.episodes_committed + 1


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# Where the disk fills: lerobot's frame intake, its parquet write, its video move, our manifest.
FAULTS = {
    "frame": ("lerobot.datasets.dataset_writer.DatasetWriter.add_frame", None),
    "parquet": ("lerobot.datasets.dataset_writer.DatasetWriter._save_episode_data", None),
    "video": ("lerobot.datasets.dataset_writer.DatasetWriter._save_episode_video", None),
    "manifest": ("real.recorder._write_json_atomic", rec_mod.MANIFEST),
}


@pytest.mark.parametrize("where", list(FAULTS))
def test_disk_full_aborts_the_episode_not_the_loop(tmp_path, monkeypatch, where):
    target, only_for = FAULTS[where]
    root = tmp_path / "ds"
    rec = EpisodeRecorder(root, REPO, FPS, FEATURES)
    record(rec, "pick one", 5)
    record(rec, "pick two", 6)
    rec.wait(timeout=60)
    if only_for is None:
        monkeypatch.setattr(target, _enospc)
    else:
        write_json = rec_mod._write_json_atomic

        def failing(path, *args, **kwargs):
            return _enospc() if path.name == only_for else write_json(path, *args, **kwargs)

        monkeypatch.setattr(target, failing)

    rec.start_episode("pick three")
    accepted = [rec.add_frame(make_frame(3, t)) for t in range(5)]
    if where == "frame":  # the writer fails on the first frame; the loop learns it and stops
        deadline = time.monotonic() + 30
        while rec.add_frame(make_frame(3, 99)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.status().state == "stopped"
        assert rec.save_episode() is False
    else:
        assert all(accepted) and rec.save_episode()
    assert rec.wait(timeout=60)
    status = rec.status()
    assert "disk full (ENOSPC)" in status.last_error
    assert (status.episodes_committed, status.episodes_aborted, status.pending_saves) == (2, 1, 0)
    [entry] = read_journal(root)["aborted"]
    assert entry["kind"] == "aborted" and entry["task"] == "pick three"
    assert "ENOSPC" in entry["reason"]
    assert not list((root / RECORDER_DIR).glob("staging-*"))

    monkeypatch.undo()  # space freed: the operator records again
    record(rec, "pick four", 4)
    rec.close()
    ds = load(root)
    assert ds.num_episodes == 3
    check_episodes(ds, {0: (5, "pick one"), 1: (6, "pick two"), 2: (4, "pick four")})


def test_failure_after_the_commit_point_keeps_the_episode(tmp_path, monkeypatch):
    """A move fails half-way: the manifest is written, so the next start rolls forward."""
    root = tmp_path / "ds"
    rec = EpisodeRecorder(root, REPO, FPS, FEATURES)
    record(rec, "pick one", 5)
    rec.wait(timeout=60)
    calls = itertools.count()
    move = rec_mod._move

    def flaky(src, dst, fsync):
        if next(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return move(src, dst, fsync)

    monkeypatch.setattr(rec_mod, "_move", flaky)
    record(rec, "pick two", 6)
    rec.wait(timeout=60)
    status = rec.status()
    assert "EIO" in status.last_error or "Input/output" in status.last_error
    assert (status.episodes_committed, status.episodes_aborted) == (1, 0)
    assert load(root).num_episodes == 1  # root stays loadable half-way through the moves
    monkeypatch.undo()
    record(rec, "pick three", 4)
    rec.close()
    assert rec.status().episodes_committed == 3
    ds = load(root)
    check_episodes(ds, {0: (5, "pick one"), 1: (6, "pick two"), 2: (4, "pick three")})
    assert read_journal(root)["aborted"] == []


# ---------------------------------------------------------------------------- crash safety
def test_a_kill_between_any_two_commit_steps_is_repaired(tmp_path):
    """Stops the commit after each of its steps (what a SIGKILL there leaves) and reopens."""
    root = tmp_path / "ds"
    with EpisodeRecorder(root, REPO, FPS, FEATURES) as rec:
        record(rec, "pick one", 5)
    lock = rec_mod._DatasetLock(root)
    ep = rec_mod._Episode("pick two", 0)
    staged = rec_mod._StagedEpisode(root, REPO, ep, RecorderConfig(fsync=False))
    for t in range(7):
        staged.add(make_frame(code_of("pick two"), t))
    moves = staged.stage()
    lock.release()
    pristine = tmp_path / "pristine"
    shutil.copytree(root, pristine)
    assert moves[-1] == "meta/info.json" and len(moves) >= 6

    for k in range(len(moves) + 1):
        shutil.rmtree(root)
        shutil.copytree(pristine, root)
        for rel in moves[:k]:
            rec_mod._move(staged.dir / rel, root / rel, fsync=False)
        ds = load(root)  # plain lerobot, before any repair
        assert ds.num_episodes == (2 if k == len(moves) else 1), k
        assert len(ds) == ds.meta.total_frames and ds[len(ds) - 1][SOURCE] == SOURCE_REAL
        assert repair(root) == {"rolled_forward": [ep.id], "rolled_back": []}
        ds = load(root)
        check_episodes(ds, {0: (5, "pick one"), 1: (7, "pick two")})
    check_last_frame_decodes(ds, 1, "pick two")

    # Killed before the manifest existed: rolled back, and the journal says so.
    shutil.rmtree(root)
    shutil.copytree(pristine, root)
    (staged.dir / rec_mod.MANIFEST).unlink()
    assert repair(root) == {"rolled_forward": [], "rolled_back": [ep.id]}
    assert load(root).num_episodes == 1
    [entry] = read_journal(root)["aborted"]
    assert entry["id"] == ep.id and "interrupted" in entry["reason"]


class Zygote:
    """The fork server: ``run`` starts a recording child; its lines arrive on ``lines``."""

    def __init__(self, env: dict):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), line.strip()))
                self._cond.notify_all()

    def expect(self, prefix: str, start: int, timeout: float = 120) -> int:
        """Index of the first line from ``start`` on that starts with ``prefix``."""

        def find():
            return next(
                (i for i in range(start, len(self.lines)) if self.lines[i][1].startswith(prefix)),
                None,
            )

        with self._cond:
            assert self._cond.wait_for(lambda: find() is not None, timeout), self.lines[start:]
            return find()

    def run(self, *args) -> None:
        self.proc.stdin.write(" ".join(map(str, args)) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def sigkill_rounds(tmp_path: Path, rounds: int, seed: int) -> None:
    """A child records in a loop; it is SIGKILLed at a random time, the dataset reopened."""
    root = tmp_path / "ds"
    rng = random.Random(seed)
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_cache"), "HF_HUB_OFFLINE": "1"}
    zygote = Zygote(env)
    expected: dict[int, tuple[int, str]] = {}  # committed as reported by the children
    try:
        for r in range(rounds):
            start = len(zygote.lines)
            zygote.run("run", root, int(r > 0), seed * 1000 + r)
            pid = int(zygote.lines[zygote.expect("PID", start)][1].split()[1])
            ready = zygote.expect("READY", start)
            first = zygote.expect("COMMITTED", start)
            cycle = zygote.lines[first][0] - zygote.lines[ready][0]
            time.sleep(rng.uniform(0, 1.5 * cycle))  # anywhere in the next episode's cycle
            os.kill(pid, signal.SIGKILL)
            zygote.expect(f"EXIT {pid}", start)
            for _, line in zygote.lines[start:]:
                assert not line.startswith("ERROR"), line
                if line.startswith("COMMITTED"):
                    _, idx, n, task = line.split(" ", 3)
                    expected[int(idx)] = (int(n), task)
            committed = len(expected)
            assert sorted(expected) == list(range(committed))

            ds = load(root)  # plain lerobot first: no repair has run
            assert committed <= ds.num_episodes <= committed + 1
            check_episodes(ds, expected)
            report = repair(root)
            assert len(report["rolled_forward"]) + len(report["rolled_back"]) <= 1, report
            ds = load(root)
            assert committed <= ds.num_episodes <= committed + 1  # at most the one in flight lost
            check_episodes(ds, expected)
            if ds.num_episodes == committed + 1:  # it committed just before the kill
                row = ds.meta.episodes[committed]
                expected[committed] = (int(row["length"]), row["tasks"][0])
                check_episodes(ds, expected)
        last = max(expected)
        check_last_frame_decodes(ds, last, expected[last][1])
    finally:
        zygote.close()

    with EpisodeRecorder(root, REPO, FPS, FEATURES, resume=True) as rec:
        record(rec, "after the crashes", 5)
    ds = load(root)
    expected[len(expected)] = (5, "after the crashes")
    check_episodes(ds, expected)
    assert ds.num_episodes == len(expected)


def test_sigkill_at_random_times_loses_at_most_the_episode_in_flight(tmp_path):
    sigkill_rounds(tmp_path, rounds=5, seed=1)


@pytest.mark.slow
def test_sigkill_at_random_times_many_rounds(tmp_path):
    sigkill_rounds(tmp_path, rounds=50, seed=2)


# ---------------------------------------------------------------------------- fork server
def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write: lines from zygote and child never interleave


def _child(root: str, resume: bool, seed: int) -> None:
    rng = random.Random(seed)
    rec = EpisodeRecorder(Path(root), REPO, FPS, FEATURES, resume=resume)
    _say(f"READY {rec.status().episodes_committed}")
    for k in itertools.count():
        task = f"demo {seed}-{k}"
        n = rng.randint(3, 12)
        rec.start_episode(task)
        for t in range(n):
            rec.add_frame(make_frame(code_of(task), t))
            time.sleep(rng.uniform(0, 0.01))
        rec.save_episode()
        rec.wait()
        status = rec.status()
        if status.last_error:
            _say(f"ERROR {status.last_error}")
        _say(f"COMMITTED {status.episodes_committed - 1} {n} {task}")


def _zygote() -> None:
    rec_mod._warm_up()
    rec_mod.quiet_encoders()
    for line in sys.stdin:
        _, root, resume, seed = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                _say(f"PID {os.getpid()}")
                _child(root, resume == "1", int(seed))
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        _say(f"EXIT {pid} {status}")


if __name__ == "__main__" and sys.argv[1:] == ["zygote"]:
    _zygote()
