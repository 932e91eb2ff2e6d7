"""Crash safety of recording: SIGKILL ``armvla record`` at random moments, reopen the dataset.

Ours: ``armvla record`` on the serial-bus twin (its own process) with the dataset-replay
teleoperator, episodes of ``--episode-s`` seconds, killed after a random 4-20 s, ``--rounds``
times, each round resuming the same dataset. Peer: lerobot's own writer as ``lerobot-record``
uses it (``LeRobotDataset.create/resume``, ``add_frame``, ``save_episode``) in a child process
writing the same frames at the same rate, killed the same way. After every kill the dataset is
opened with ``LeRobotDataset``; reported: rounds whose dataset loads, and episodes lost
(saved by the operator but not in the reopened dataset; the episode being recorded when the
kill came was never saved and is not counted). Target: every round loads, <= 1 lost per round.
The last line printed is one JSON object. ``MUJOCO_GL=egl``::

    MUJOCO_GL=egl python bench/record_kill.py --rounds 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

ROBOT_ID = "bench_record"
SEED = 1_000_006
FPS = 30
SIZE = 96


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=50, help="kills per writer")
    p.add_argument("--episode-s", type=float, default=2.0, help="episode length (s)")
    p.add_argument("--min-s", type=float, default=4.0, help="earliest kill after start (s)")
    p.add_argument("--max-s", type=float, default=20.0, help="latest kill after start (s)")
    p.add_argument("--seed", type=int, default=0, help="kill times")
    p.add_argument(
        "--peer-rounds", type=int, default=None, help="kills of the peer (default: --rounds)"
    )
    p.add_argument("--skip-peer", action="store_true", help="only armvla record")
    return p.parse_args(argv)


def _replay_dataset(root: Path, ticks: int) -> None:
    """The expert's first motions on the twin's scene, as a dataset to replay."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    import sim
    from data.dataset import SOURCE, so101_features
    from sim.expert import PickCubeExpert

    env = sim.make_env("PickColorCube-v1", image_size=16, cameras=("front",))
    obs, _ = env.reset(seed=SEED)
    expert = PickCubeExpert(env.unwrapped, seed=SEED)
    actions = []
    for _ in range(ticks):
        actions.append(expert.act(obs))
        obs, *_ = env.step(actions[-1])
    env.close()
    ds = LeRobotDataset.create(
        "bench/replay", fps=FPS, features=so101_features((), 8, 8), root=root
    )
    for a in np.asarray(actions, dtype=np.float32):
        ds.add_frame({"observation.state": a, "action": a, SOURCE: "sim", "task": "move"})
    ds.save_episode()
    ds.finalize()


def _ours(twin, replay: Path, root: Path, log: Path, episode_s: float) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "policy.cli",
        "record",
        "--robot.type=so101_follower",
        f"--robot.port={twin.port}",
        f"--robot.id={ROBOT_ID}",
        f"--robot.calibration_dir={twin.calibration_dir}",
        "--teleop.type=armvla_replay",
        f"--teleop.root={replay}",
        f"--dataset.root={root}",
        "--dataset.single_task=pick up the red cube",
        "--dataset.num_episodes=1000",
        f"--dataset.episode_time_s={episode_s}",
        "--dataset.reset_time_s=0.2",
        f"--resume={str((root / 'meta/info.json').exists()).lower()}",
        f"--out={log}",
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def _peer(root: Path, episode_s: float) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--peer-child", str(root), str(episode_s)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def peer_child(root: Path, episode_s: float) -> None:
    """lerobot-record's writer calls at the control rate, frames like the twin's."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from data.dataset import ROBOT_TYPE, SOURCE, so101_features

    features = so101_features(("front", "wrist"), SIZE, SIZE)
    if (root / "meta/info.json").exists():
        ds = LeRobotDataset.resume("bench/peer", root=root, streaming_encoding=True)
    else:
        ds = LeRobotDataset.create(
            "bench/peer",
            fps=FPS,
            features=features,
            root=root,
            robot_type=ROBOT_TYPE,
            use_videos=True,
            streaming_encoding=True,
        )
    rng = np.random.default_rng(0)
    print("ready", flush=True)
    while True:
        for t in range(int(episode_s * FPS)):
            frame = {
                "observation.state": np.full(6, t, np.float32),
                "action": np.full(6, t, np.float32),
                SOURCE: "real",
                "task": "pick up the red cube",
            }
            for cam in ("front", "wrist"):
                frame[f"observation.images.{cam}"] = rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8)
            ds.add_frame(frame)
            time.sleep(1 / FPS)
        ds.save_episode()
        print("episode: saved", flush=True)


def _reopen(root: Path) -> tuple[bool, int, str]:
    """(loads, episodes, error) for the dataset at root, opened by lerobot in a fresh process."""
    code = (
        "import sys; from lerobot.datasets.lerobot_dataset import LeRobotDataset as D; "
        f"d = D('bench/x', root={str(root)!r}); "
        "assert len(d) == sum(d.meta.episodes['length']); d[len(d) - 1]; "
        "print(d.meta.total_episodes)"
    )
    if not (root / "meta/info.json").exists():
        return True, 0, ""  # killed before the dataset existed: nothing to lose
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return False, 0, out.stderr.strip().splitlines()[-1] if out.stderr else "failed"
    return True, int(out.stdout.split()[-1]), ""


def kill_rounds(name: str, start, root: Path, args, rng: random.Random, rounds: int) -> dict:
    committed = lost = max_lost = loads = 0
    errors: list[str] = []
    for i in range(rounds):
        proc = start()
        time.sleep(rng.uniform(args.min_s, args.max_s))
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0].decode(errors="replace")
        saved = out.count(": saved")
        ok, episodes, err = _reopen(root)
        loads += ok
        if ok:
            round_lost = max(0, committed + saved - episodes)
            committed = episodes
        else:
            errors.append(err)
            round_lost = saved
            # lerobot cannot open it: start the next round on a new dataset.
            shutil.rmtree(root, ignore_errors=True)
            committed = 0
        lost += round_lost
        max_lost = max(max_lost, round_lost)
        print(
            f"{name} round {i + 1}/{rounds}: saved {saved}, dataset "
            f"{'loads' if ok else 'BROKEN'} ({episodes} episodes), lost {round_lost}",
            flush=True,
        )
    return {
        "rounds": rounds,
        "loads": loads,
        "episodes_lost": lost,
        "max_lost_per_round": max_lost,
        "errors": sorted(set(errors))[:3],
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    from real.feetech_twin.process import TwinProcess

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="armvla_record_kill_"))
    replay = tmp / "replay"
    _replay_dataset(replay, int(args.episode_s * FPS))
    twin = TwinProcess(tmp / "calib", robot_id=ROBOT_ID, seed=SEED)
    try:
        ours = kill_rounds(
            "armvla record",
            lambda: _ours(twin, replay, tmp / "ours", tmp / "log", args.episode_s),
            tmp / "ours",
            args,
            rng,
            args.rounds,
        )
    finally:
        twin.close()
    peer = None
    if not args.skip_peer:
        peer = kill_rounds(
            "lerobot writer",
            lambda: _peer(tmp / "peer", args.episode_s),
            tmp / "peer",
            args,
            random.Random(args.seed),
            args.peer_rounds or args.rounds,
        )
    print(
        f"armvla record: {ours['loads']}/{ours['rounds']} reopened datasets load, "
        f"{ours['episodes_lost']} saved episodes lost (max {ours['max_lost_per_round']} per kill)"
    )
    if peer:
        print(
            f"lerobot writer: {peer['loads']}/{peer['rounds']} load, {peer['episodes_lost']} "
            f"lost (max {peer['max_lost_per_round']}); errors: {peer['errors']}"
        )
    result = {
        "rounds": args.rounds,
        "armvla_loads": ours["loads"],
        "armvla_episodes_lost": ours["episodes_lost"],
        "armvla_max_lost_per_kill": ours["max_lost_per_round"],
        "lerobot_rounds": None if peer is None else peer["rounds"],
        "lerobot_loads": None if peer is None else peer["loads"],
        "lerobot_episodes_lost": None if peer is None else peer["episodes_lost"],
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--peer-child":
        peer_child(Path(sys.argv[2]), float(sys.argv[3]))
    else:
        main()
