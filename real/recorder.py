"""Crash-safe episode recorder for teleoperated demos (``armvla record``; SAFETY.md 20 and 21).

The control loop hands frames to ``EpisodeRecorder.add_frame``, which only puts them on a queue:
a writer thread feeds them to lerobot's own ``LeRobotDataset`` writer, so the dataset stays a
plain LeRobotDataset v3. Encoding and disk I/O never block the loop; a full queue or a writer
error (disk full) aborts the episode and shows in ``status()``, never as an exception.

Why not append to the dataset directly: lerobot's writer keeps the data and episode parquet
files open across episodes (their footers are written at ``finalize``), concatenates each new
video onto the previous file, and rewrites ``info.json``, ``stats.json`` and ``tasks.parquet``
in place. A process killed in any of these leaves files that no longer load, taking earlier
episodes with them. So every episode is written in a staging folder and committed by renames:

1. ``start``: ``<root>/.armvla_recorder/staging-<id>/`` gets copies of ``meta/info.json``,
   ``stats.json``, ``tasks.parquet`` and the last episodes file; lerobot resumes on that copy,
   so it writes the episode into new files (a new data, video and episodes file each).
2. ``save``: lerobot saves and finalizes; the videos must hold every frame; the staged files
   are fsynced, then ``manifest.json`` (the ordered list of files to move) is written by
   rename. That rename is the commit point: from here on the episode is rolled forward.
3. The files move into ``<root>`` by rename, in an order that keeps ``<root>`` loadable by
   lerobot after every step: videos, data, tasks, episodes, stats, and ``info.json`` last (the
   episode count lerobot trusts). Then the manifest is deleted and the staging folder removed.

A new dataset's metadata waits in ``<root>/.armvla_recorder/base/`` until its first episode
commits: lerobot cannot open a dataset without episodes, so ``<root>/meta/info.json`` only
appears (last, as always) with the first episode, and a kill before that leaves no dataset
for anyone to fail to load; the next ``armvla record`` at that root starts from the base.

``repair`` (run when a recorder opens the dataset, and before each episode) finishes staging
folders that have a manifest and deletes those without one, listing them as aborted in
``meta/armvla_recorder.json``. A SIGKILL therefore loses at most the episode in flight.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.dataset import ROBOT_TYPE, SOURCE, quiet_encoders
from data.keys import SOURCE_REAL, TASK

logger = logging.getLogger(__name__)

RECORDER_DIR = ".armvla_recorder"  # lerobot only globs data/ and meta/episodes/: never looks here
JOURNAL = "meta/armvla_recorder.json"
MANIFEST = "manifest.json"
EPISODE_NOTE = "episode.json"
INFO = "meta/info.json"
BASE = f"{RECORDER_DIR}/base"  # a new dataset's metadata, until its first episode commits
COPIED_META = ("meta/info.json", "meta/stats.json", "meta/tasks.parquet")


@dataclass
class RecorderConfig:
    # Frames the control loop may hand over before the writer catches up (10 s at 30 Hz); past
    # it the episode is aborted, never the loop blocked.
    max_queued_frames: int = 300
    # Frames lerobot's video encoder buffers per camera. It drops a frame that waits > 0.1 s
    # (with only a log line); a commit refuses videos with missing frames.
    encoder_queue_frames: int = 300
    # fsync staged files, the manifest and folders, so a power cut (not only a killed process)
    # keeps committed episodes.
    fsync: bool = True
    # Copy arrays handed to add_frame: camera drivers may reuse their buffers.
    copy_frames: bool = True
    # Threads per camera encoder (None: the codec's choice, all cores). On a small computer,
    # fewer leave the control loop a core.
    encoder_threads: int | None = None
    robot_type: str = ROBOT_TYPE

    def __post_init__(self):
        if self.max_queued_frames < 1 or self.encoder_queue_frames < 1:
            raise ValueError("max_queued_frames and encoder_queue_frames must be >= 1")


@dataclass(frozen=True)
class RecorderStatus:
    """A snapshot of the recorder, safe to read from the control loop."""

    state: str  # "idle", "recording", "stopped" (episode aborted, frames dropped), "closed"
    episodes_committed: int  # episodes in the dataset
    committed_this_session: int
    pending_saves: int  # episodes saved by the caller whose commit has not finished
    frames_in_episode: int
    frames_dropped: int
    queued_frames: int
    episodes_aborted: int
    last_error: str | None


class _Episode:
    """The control loop's handle on one episode; flags are single assignments (GIL-atomic)."""

    def __init__(self, task: str, errors_at_start: int):
        self.id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.task = task
        self.errors_at_start = errors_at_start
        self.frames = 0
        self.saved = False
        self.abort_reason: str | None = None  # set by either thread; the writer then cleans up
        self.discarded = False
        self.finished = False  # writer side: committed or cleaned up


# ---------------------------------------------------------------------------- files
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, obj: dict, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        _fsync(path.parent)


def _move(src: Path, dst: Path, fsync: bool) -> None:
    """One commit step: a rename, atomic on one filesystem."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    if fsync:
        _fsync(dst.parent)


def read_journal(root: Path) -> dict:
    """The recorder's journal (``meta/armvla_recorder.json``): aborted and discarded episodes."""
    path = Path(root) / JOURNAL
    return json.loads(path.read_text()) if path.is_file() else {"aborted": []}


def _journal_add(root: Path, entry: dict, fsync: bool) -> None:
    journal = read_journal(root)
    if all(e.get("id") != entry["id"] for e in journal["aborted"]):  # repair may run twice
        journal["aborted"].append(entry)
        (Path(root) / JOURNAL).parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(Path(root) / JOURNAL, journal, fsync)


class _DatasetLock:
    """One recorder (or repair) per dataset; the kernel releases it when the process dies."""

    def __init__(self, root: Path):
        path = Path(root) / RECORDER_DIR / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RuntimeError(f"{root} is being recorded by another process") from None

    def release(self) -> None:
        with suppress(OSError):
            self.path.unlink()
            self.path.parent.rmdir()  # only when no staging folder is left
        os.close(self.fd)


# ---------------------------------------------------------------------------- commit protocol
def _commit_order(staging: Path, root: Path, copied_episodes: str | None) -> list[str]:
    """Staged files in the order whose every prefix leaves ``root`` loadable by lerobot."""

    def new(sub: str) -> list[str]:
        base = staging / sub
        files = sorted(p.relative_to(staging).as_posix() for p in base.rglob("*") if p.is_file())
        return [f for f in files if f != copied_episodes] if base.is_dir() else []

    # Videos are only reached through episode rows; data rows past info's total_frames are
    # ignored; tasks only grow; info.json (the episode count lerobot trusts) goes last.
    moves = new("videos") + new("data")
    moves += [r for r in ("meta/tasks.parquet",) if (staging / r).is_file()]
    moves += new("meta/episodes") + ["meta/stats.json", INFO]
    for rel in moves:
        if rel not in COPIED_META and (root / rel).exists():
            raise FileExistsError(f"staged {rel} would overwrite a committed file")
    return moves


def _apply(staging: Path, root: Path, moves: list[str], fsync: bool) -> None:
    """Moves a committed episode into ``root``; idempotent, so repair can redo it."""
    for rel in moves:
        src, dst = staging / rel, root / rel
        if src.exists():
            _move(src, dst, fsync)
        elif not dst.exists():
            raise FileNotFoundError(f"committed file {rel} is in neither {staging} nor {root}")
    (staging / MANIFEST).unlink(missing_ok=True)  # done: a later repair must not redo these moves
    shutil.rmtree(staging)
    if (root / INFO).is_file():  # the first episode is in: the base has served
        shutil.rmtree(root / BASE, ignore_errors=True)


def _repair_locked(root: Path, fsync: bool) -> dict[str, list[str]]:
    report: dict[str, list[str]] = {"rolled_forward": [], "rolled_back": []}
    for staging in sorted((root / RECORDER_DIR).glob("staging-*")):
        try:
            manifest = json.loads((staging / MANIFEST).read_text())
        except (OSError, ValueError):  # no manifest (or its tmp only): never committed
            manifest = None
        if manifest is not None:
            _apply(staging, root, manifest["moves"], fsync)
            report["rolled_forward"].append(manifest["id"])
            continue
        note = {"id": staging.name.removeprefix("staging-")}
        with suppress(OSError, ValueError):
            note = json.loads((staging / EPISODE_NOTE).read_text())
        reason = "interrupted: the recording process stopped before the episode committed"
        _journal_add(root, {**note, "kind": "aborted", "reason": reason}, fsync)
        shutil.rmtree(staging)
        report["rolled_back"].append(note["id"])
    return report


def repair(root: Path, fsync: bool = True) -> dict[str, list[str]]:
    """Finishes or rolls back episodes a killed recorder left; returns their ids by outcome."""
    lock = _DatasetLock(Path(root))
    try:
        return _repair_locked(Path(root), fsync)
    finally:
        lock.release()


class _StagedEpisode:
    """One episode written by lerobot into its own staging folder (writer thread only)."""

    def __init__(self, root: Path, repo_id: str, ep: _Episode, cfg: RecorderConfig):
        self.root, self.ep, self.cfg = root, ep, cfg
        self.dir = root / RECORDER_DIR / f"staging-{ep.id}"
        self.frames = 0
        self.ds = None
        self.copied_episodes: str | None = None
        try:
            self._open(repo_id)
        except BaseException:
            self.cancel()
            raise

    def _open(self, repo_id: str) -> None:
        root, ep = self.root, self.ep
        self.dir.mkdir(parents=True)
        note = {"id": ep.id, "task": ep.task, "started": time.time()}
        _write_json_atomic(self.dir / EPISODE_NOTE, note, fsync=False)
        meta = _meta_root(root)
        for rel in COPIED_META:
            if (meta / rel).is_file():
                (self.dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(meta / rel, self.dir / rel)
        # lerobot resumes from the last episode row only; a copy keeps its in-place writes
        # (should there be any) away from the committed file.
        episodes = sorted((root / "meta/episodes").glob("*/*.parquet"))
        if episodes:
            self.copied_episodes = episodes[-1].relative_to(root).as_posix()
            (self.dir / self.copied_episodes).parent.mkdir(parents=True)
            shutil.copyfile(episodes[-1], self.dir / self.copied_episodes)
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.ds = LeRobotDataset.resume(
            repo_id,
            root=self.dir,
            streaming_encoding=True,
            encoder_queue_maxsize=self.cfg.encoder_queue_frames,
            encoder_threads=self.cfg.encoder_threads,
        )
        self.index = self.ds.meta.total_episodes

    def add(self, frame: dict) -> None:
        self.ds.add_frame({**frame, TASK: self.ep.task, SOURCE: SOURCE_REAL})
        self.frames += 1

    def stage(self) -> list[str]:
        """Saves the episode into the staging folder and writes the manifest (commit point)."""
        import datasets

        datasets.disable_progress_bars()  # lerobot's loader turns them back on
        self.ds.save_episode()
        self.ds.finalize()
        moves = _commit_order(self.dir, self.root, self.copied_episodes)
        self._check(moves)
        if self.cfg.fsync:
            for rel in moves:
                _fsync(self.dir / rel)
        manifest = {"id": self.ep.id, "task": self.ep.task, "episode_index": self.index}
        manifest |= {"frames": self.frames, "moves": moves}
        _write_json_atomic(self.dir / MANIFEST, manifest, self.cfg.fsync)
        return moves

    def _check(self, moves: list[str]) -> None:
        import av
        import pyarrow.parquet as pq

        for rel in moves:
            if rel.startswith("videos/"):
                with av.open(str(self.dir / rel)) as container:
                    n = container.streams.video[0].frames
            elif rel.startswith("data/"):
                n = pq.read_metadata(self.dir / rel).num_rows
            else:
                continue
            if n != self.frames:
                raise RuntimeError(f"{rel} holds {n} frames, the episode {self.frames}")

    def cancel(self) -> None:
        """Best effort: stops lerobot's encoder threads and deletes the staging folder."""
        if self.ds is not None:
            with suppress(Exception):
                self.ds.writer.cancel_pending_videos()
            with suppress(Exception):
                self.ds.finalize()
            # Its __del__ would finalize again, recreating files in the deleted folder.
            self.ds._is_finalized = self.ds.writer._finalized = self.ds.meta._finalized = True
        shutil.rmtree(self.dir, ignore_errors=True)


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"disk full (ENOSPC): {err}"
    return f"{type(err).__name__}: {err}"


def _meta_root(root: Path) -> Path:
    """Where the dataset's committed metadata is: ``root``, or its base before a first episode."""
    return root if (root / INFO).is_file() else root / BASE


def _create(root: Path, repo_id: str, fps: int, features: dict, robot_type: str) -> None:
    if (root / BASE / INFO).is_file() and not (root / INFO).is_file():
        return  # an earlier recorder made it and stopped before its first episode committed
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists; pass resume=True to append episodes to it")
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

    # Made next to root and renamed into place, so a kill never leaves half a base behind.
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}.creating-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root.parent / f".{root.name}.creating-{uuid.uuid4().hex[:8]}"
    use_videos = any(feat["dtype"] == "video" for feat in features.values())
    LeRobotDatasetMetadata.create(
        repo_id, fps=fps, features=features, robot_type=robot_type, root=tmp, use_videos=use_videos
    )
    (root / RECORDER_DIR).mkdir(parents=True, exist_ok=True)
    os.replace(tmp, root / BASE)


def _warm_up() -> None:
    """Imports what the writer needs now: a first import on the writer thread (torchcodec's
    libraries: ~100 ms) would hold the GIL while the control loop runs."""
    import av  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401
    from lerobot.datasets.video_utils import get_safe_default_video_backend

    get_safe_default_video_backend()


def _check_compatible(info: dict, fps: int, features: dict, root: Path) -> None:
    if info["fps"] != fps:
        raise ValueError(f"cannot append to {root}: it is recorded at {info['fps']} fps, not {fps}")
    for key, feat in features.items():
        have = info["features"].get(key)
        if have is None or (have["dtype"], list(have["shape"])) != (
            feat["dtype"],
            list(feat["shape"]),
        ):
            raise ValueError(f"cannot append to {root}: its feature {key!r} is {have}, not {feat}")


class EpisodeRecorder:
    """Records episodes into a LeRobotDataset v3 without ever blocking the control loop.

    The loop calls ``start_episode``, ``add_frame`` every tick, then ``save_episode`` (or
    ``discard_episode`` to re-record); each returns at once and a writer thread does the work in
    order. A save commits atomically in the background (module docstring); ``wait`` blocks until
    the writer is idle; ``status`` reports progress and the last error.

    Args:
        root: Dataset folder; created unless ``resume`` (then it must not exist yet).
        repo_id: Dataset id stored in its metadata, e.g. ``armvla/so101_real``.
        fps: Control loop rate; lerobot timestamps frames by index / fps.
        features: lerobot features (``data.dataset.so101_features``). Frames carry these keys;
            the recorder adds ``task`` and ``source`` = ``"real"``.
        resume: Append to the dataset at ``root``, repairing what a killed session left.
        config: Queue sizes and durability.
    """

    def __init__(
        self,
        root: Path,
        repo_id: str,
        fps: int,
        features: dict,
        resume: bool = False,
        config: RecorderConfig | None = None,
    ):
        self.root, self.repo_id = Path(root), repo_id
        self.cfg = config or RecorderConfig()
        quiet_encoders()
        _warm_up()
        if not resume:
            _create(self.root, repo_id, fps, features, self.cfg.robot_type)
        elif not (_meta_root(self.root) / INFO).is_file():
            raise FileNotFoundError(f"cannot resume: {self.root / INFO} is missing")
        self._lock = _DatasetLock(self.root)
        try:
            report = _repair_locked(self.root, self.cfg.fsync)
            info = json.loads((_meta_root(self.root) / INFO).read_text())
            _check_compatible(info, fps, features, self.root)
        except BaseException:
            self._lock.release()
            raise
        if report["rolled_forward"] or report["rolled_back"]:
            logger.warning("recorder repaired %s after a crash: %s", self.root, report)
        self._committed = info["total_episodes"]
        # Producer (control loop) side; read by the writer only through _Episode flags.
        self._episode: _Episode | None = None
        self._closed = False
        self._dropped = self._frames_submitted = self._items_submitted = 0
        self._saves_requested = 0
        # Writer side; the loop only reads them.
        self._frames_done = self._items_done = self._saves_finished = 0
        self._committed_session = self._aborted = self._errors = 0
        self._last_error: str | None = None
        self._staged: _StagedEpisode | None = None
        self._unjournaled: list[dict] = []
        self._done = threading.Condition()
        # Unbounded and lock-free to put: frames are bounded by count, commands always fit.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="armvla-recorder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ control loop side
    def start_episode(self, task: str) -> None:
        """Begins an episode with its instruction; an episode still open is discarded."""
        if self._closed:
            raise RuntimeError("the recorder is closed")
        if not task:
            raise ValueError("task must be a non-empty instruction")
        if self._episode is not None:
            self._end(self._episode, "superseded by a new start_episode", discarded=True)
        # A start after a writer error is the operator's decision to try again.
        self._episode = _Episode(task, self._errors)
        self._put("start", self._episode)

    def add_frame(self, frame: dict) -> bool:
        """Queues one tick of the episode; never blocks and never raises.

        Args:
            frame: One value per feature: ``observation.state`` (6,) and ``action`` (6,)
                float32, camera images (H, W, 3) uint8.

        Returns:
            True when queued. False when no episode is open or it was aborted (writer error,
            or the writer fell ``max_queued_frames`` behind): the frame is counted as dropped.
        """
        ep = self._episode
        if ep is None:
            return False
        try:
            if ep.abort_reason is None and self._errors != ep.errors_at_start:
                self._abort(ep, f"recording stopped after a writer error: {self._last_error}")
            queued = self._frames_submitted - self._frames_done
            if ep.abort_reason is None and queued >= self.cfg.max_queued_frames:
                self._abort(ep, f"writer fell behind: {queued} frames queued, episode aborted")
            if ep.abort_reason is not None:
                self._dropped += 1
                return False
            if self.cfg.copy_frames:
                frame = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in frame.items()}
            ep.frames += 1
            self._frames_submitted += 1
            self._put("frame", ep, frame)
            return True
        except Exception as err:  # e.g. not a dict: the writer would reject it anyway
            self._abort(ep, _describe(err))
            self._dropped += 1
            return False

    def save_episode(self) -> bool:
        """Ends the episode; the writer commits it in the background.

        Returns:
            False when nothing will be committed: no episode open, no frames, or the episode
            was aborted (``status().last_error`` says why).
        """
        ep, self._episode = self._episode, None
        if ep is None or ep.abort_reason is not None:
            return False
        if ep.frames == 0:
            self._end(ep, "saved without frames", discarded=True)
            return False
        ep.saved = True
        self._saves_requested += 1
        self._put("save", ep)
        return True

    def discard_episode(self) -> bool:
        """Drops the open episode (to re-record it); returns False when none is open."""
        ep, self._episode = self._episode, None
        if ep is None:
            return False
        if ep.abort_reason is None:
            self._end(ep, "discarded by the operator", discarded=True)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the writer has handled everything queued so far (not for the loop)."""
        target = self._items_submitted
        with self._done:
            return self._done.wait_for(lambda: self._items_done >= target, timeout)

    def close(self, timeout: float = 120.0) -> None:
        """Aborts an unsaved episode, finishes pending commits and releases the dataset."""
        if self._closed:
            return
        ep, self._episode = self._episode, None
        if ep is not None and ep.abort_reason is None:
            self._end(ep, "recorder closed before the episode was saved", discarded=False)
        self._put("stop", None)
        self._thread.join(timeout)
        self._closed = True
        if self._thread.is_alive():  # keep the lock: repair must not run under a live writer
            logger.error("recorder writer did not stop within %.0f s", timeout)
        else:
            self._lock.release()

    def status(self) -> RecorderStatus:
        ep = self._episode
        if self._closed:
            state = "closed"
        elif ep is None:
            state = "idle"
        else:
            state = "stopped" if ep.abort_reason is not None else "recording"
        return RecorderStatus(
            state=state,
            episodes_committed=self._committed,
            committed_this_session=self._committed_session,
            pending_saves=self._saves_requested - self._saves_finished,
            frames_in_episode=ep.frames if ep is not None else 0,
            frames_dropped=self._dropped,
            queued_frames=self._frames_submitted - self._frames_done,
            episodes_aborted=self._aborted,
            last_error=self._last_error,
        )

    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _put(self, kind: str, ep: _Episode | None, payload: dict | None = None) -> None:
        self._items_submitted += 1
        self._queue.put((kind, ep, payload))

    def _abort(self, ep: _Episode, reason: str) -> None:
        ep.abort_reason = reason
        self._last_error = reason
        self._put("abort", ep)  # the writer cleans up (and logs: no I/O on the loop)

    def _end(self, ep: _Episode, reason: str, discarded: bool) -> None:
        ep.discarded = discarded
        ep.abort_reason = reason
        self._put("discard", ep)

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            kind, ep, payload = self._queue.get()
            if kind != "stop":
                try:
                    self._handle(kind, ep, payload)
                except (
                    Exception
                ) as err:  # every failure ends as an aborted episode, never a dead writer
                    self._fail(ep, err)
            if kind == "frame":
                self._frames_done += 1
            with self._done:
                self._items_done += 1
                self._done.notify_all()
            if kind == "stop":
                return

    def _handle(self, kind: str, ep: _Episode, frame: dict | None) -> None:
        if ep.finished:  # items of an episode already committed or cleaned up
            return
        if ep.abort_reason is not None:
            self._clean_up(ep, ep.abort_reason)
        elif kind == "start":
            self._flush_journal()
            if any(_repair_locked(self.root, self.cfg.fsync).values()):  # an earlier failed apply
                self._committed = json.loads((self.root / INFO).read_text())["total_episodes"]
            self._staged = _StagedEpisode(self.root, self.repo_id, ep, self.cfg)
        elif kind == "frame":
            self._staged.add(frame)
        elif kind == "save":
            staged = self._staged
            _apply(staged.dir, self.root, staged.stage(), self.cfg.fsync)
            self._staged, ep.finished = None, True
            self._committed = staged.index + 1
            self._committed_session += 1
            self._saves_finished += 1

    def _fail(self, ep: _Episode | None, err: Exception) -> None:
        reason = _describe(err)
        logger.error("recorder: %s", reason, exc_info=err)
        self._last_error = reason
        self._errors += 1
        if ep is None or ep.finished:
            return
        ep.abort_reason = ep.abort_reason or reason
        staged = self._staged
        if staged is not None and staged.ep is ep and (staged.dir / MANIFEST).is_file():
            # Past the commit point: the episode is kept; repair finishes the moves on the
            # next start or open.
            self._staged, ep.finished = None, True
            self._saves_finished += ep.saved
            return
        with suppress(Exception):
            self._clean_up(ep, reason)

    def _clean_up(self, ep: _Episode, reason: str) -> None:
        ep.finished = True
        staged = self._staged
        if staged is not None and staged.ep is ep:
            self._staged = None
            staged.cancel()  # first: on a full disk this frees the space the journal needs
        kind = "discarded" if ep.discarded else "aborted"
        entry = {"id": ep.id, "task": ep.task, "kind": kind, "reason": reason}
        self._unjournaled.append(entry | {"frames": ep.frames, "time": time.time()})
        if not ep.discarded:
            self._aborted += 1
            logger.warning("recorder: episode %s (%r) aborted: %s", ep.id, ep.task, reason)
        self._saves_finished += ep.saved
        self._flush_journal()

    def _flush_journal(self) -> None:
        try:
            while self._unjournaled:
                _journal_add(self.root, self._unjournaled[0], self.cfg.fsync)
                self._unjournaled.pop(0)
        except OSError as err:  # kept in memory and retried before the next episode
            self._last_error = f"{self._last_error}; journal not written: {_describe(err)}"
