"""``armvla demo``: the main job end to end on the built-in default task.

Today that is: scripted demos of PickColorCube-v1 -> LeRobotDataset v3 -> a Rerun recording of
the first episode. Training and simulated evaluation of a policy join this pipeline when the
policy lands (`armvla train`, `armvla eval`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data.generate import GenerateConfig, TaskConfig, generate


@dataclass
class DemoConfig:
    # Folder for everything the demo writes (dataset, recordings); replaced on each run.
    out: Path = Path("outputs/demo")
    # Task and cameras of the demo.
    task: TaskConfig = field(default_factory=TaskConfig)
    # Expert episodes to generate.
    episodes: int = 100
    # Worker processes for generation (0 = one per CPU core).
    workers: int = 0
    # Seed of the first generated episode.
    seed: int = 0

    def __post_init__(self):
        self.out = Path(self.out)


def demo(cfg: DemoConfig) -> dict:
    """Generates demos, records the first episode to Rerun, and says what comes next."""
    from data.replay import ReplayConfig, replay

    dataset_dir = cfg.out / "dataset"
    print(f"[1/2] generating {cfg.episodes} expert episodes of {cfg.task.name} -> {dataset_dir}")
    summary = generate(
        GenerateConfig(
            task=cfg.task,
            episodes=cfg.episodes,
            out=dataset_dir,
            seed=cfg.seed,
            workers=cfg.workers,
            overwrite=True,
        )
    )
    rrd = cfg.out / "episode_0.rrd"
    print(f"[2/2] writing episode 0 to Rerun -> {rrd}")
    replay(ReplayConfig(root=dataset_dir, episode=0, save=rrd))
    print(
        "\ndemo finished.\n"
        f"  dataset:   {dataset_dir} ({summary['successes']} episodes, expert success "
        f"{100 * summary['success_rate']:.1f}%, {summary['wall_time_s']} s)\n"
        f"  recording: {rrd}  (view with: .venv/bin/rerun {rrd})\n"
        "  The policy stage (armvla train -> armvla eval) is not part of armvla yet; the demo "
        "stops after generate and replay."
    )
    return {"generate": summary, "recording": str(rrd)}
