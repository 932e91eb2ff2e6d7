"""The ``armvla`` console script: one subcommand per capability, each a thin function taking one
typed config.

Flags follow lerobot/draccus conventions (``--task.name=PickColorCube-v1 --episodes=100``);
``armvla <command> --help`` lists every option with its explanation.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from data.workers import WorkerSetupError

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass(frozen=True)
class Subcommand:
    module: str
    function: str
    config: str
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "generate": Subcommand(
        "policy.takeover",
        "generate",
        "GenerateConfig",
        "run the scripted expert and write successful episodes as a LeRobotDataset v3",
    ),
    "replay": Subcommand(
        "data.replay",
        "replay",
        "ReplayConfig",
        "send an episode of a dataset to Rerun (viewer, or an .rrd file with --save)",
    ),
    "train": Subcommand(
        "policy.train",
        "train",
        "TrainConfig",
        "train a policy on LeRobotDataset(s); checkpoints, tensorboard, --resume",
    ),
    "eval": Subcommand(
        "policy.eval",
        "evaluate",
        "EvalConfig",
        "closed-loop success of a policy in sim: JSON report and Rerun recordings",
    ),
    "demo": Subcommand(
        "policy.demo",
        "demo",
        "DemoConfig",
        "the main job end to end on the built-in default task",
    ),
    "twin": Subcommand(
        "real.twin_cli",
        "serve",
        "TwinCommandConfig",
        "serve the SO-101 servo-bus twin (MuJoCo-backed) on a pty for lerobot's follower",
    ),
    "run": Subcommand(
        "real.run",
        "run",
        "RunConfig",
        "drive an SO-101 (or its twin) with a policy, through the safety gate",
    ),
    "record": Subcommand(
        "real.record",
        "record",
        "RecordConfig",
        "record teleoperated episodes on an SO-101 (or its twin) into a LeRobotDataset v3",
    ),
    "heartbeat": Subcommand(
        "real.heartbeat",
        "watch",
        "HeartbeatWatchConfig",
        "watch the heartbeat of armvla run/record; run a command (open a relay) when it stops",
    ),
}

# Errors a user can fix from the command line: printed as one clear line, no traceback.
USER_ERRORS = (
    ValueError,
    FileExistsError,
    FileNotFoundError,
    PermissionError,
    NotADirectoryError,
    WorkerSetupError,
)


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: armvla <command> [--option=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {sc.summary}" for name, sc in SUBCOMMANDS.items()]
    lines += ["", "Run 'armvla <command> --help' for the options of a command."]
    return "\n".join(lines)


def run(name: str, args: list[str]):
    """Parses ``args`` into the subcommand's config and runs it; returns its result."""
    import draccus

    sc = SUBCOMMANDS[name]
    module = importlib.import_module(sc.module)
    config_cls = getattr(module, sc.config)
    cfg = draccus.parse(config_class=config_cls, args=args, prog=f"armvla {name}")
    return getattr(module, sc.function)(cfg)


def _explain(err: BaseException) -> str:
    """The most useful message in an exception chain.

    draccus wraps a config's own validation error (raised in ``__post_init__``) in a generic
    "Couldn't instantiate class" error; the wrapped one names the flag and the fix.
    """
    messages = []
    wrapped_validation = "Couldn't instantiate class" in str(err)
    while err is not None:
        if wrapped_validation and isinstance(err, USER_ERRORS):
            return str(err)
        messages.append(str(err))
        err = err.__cause__ or err.__context__
    return ": ".join(dict.fromkeys(messages))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, args = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"armvla: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from draccus.utils import ParsingError

    try:
        run(name, args)
    except (ParsingError, *USER_ERRORS) as err:
        print(f"armvla {name}: error: {_explain(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"armvla {name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
