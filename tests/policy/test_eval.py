"""``armvla eval``: an untrained debug policy goes in; a consistent report and valid recordings
come out, and bad inputs fail with one clear line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from data.keys import ACTION, OBS_STATE, SO101_JOINTS
from data.rerun_log import rerun_executable
from policy.checkpoint import SHIPPED, build_policy, save_policy
from policy.cli import main
from policy.config import preset
from policy.eval import EvalConfig, check_heldout, evaluate, wilson_interval
from policy.eval_report import build_report, write_recording
from policy.rollout import inference_source
from sim.envs.pick_color_cube import COLORS
from sim.generate import GENERATE_META, TaskConfig

# Made-up normalization stats around the arm's home pose (degrees, gripper 0-100).
STATS = {
    "sim": {
        OBS_STATE: {"mean": [0.0, -80.0, 60.0, 70.0, 0.0, 30.0], "std": [20.0] * 6},
        ACTION: {"mean": [0.0, -80.0, 60.0, 70.0, 0.0, 30.0], "std": [20.0] * 6},
    }
}
TASK = TaskConfig(image_size=48)  # the debug policy resizes to 32x32 anyway
RATE_KEYS = {"episodes", "successes", "success_rate", "ci_low", "ci_high"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "debug_policy"
    return save_policy(build_policy(preset("debug"), STATS), path)


def _eval(checkpoint: Path, out: Path, **kw) -> dict:
    kw = {
        "episodes": 1,
        "workers": 1,
        "max_steps": 8,
        "record_first": 0,
        "record_failures": 0,
        **kw,
    }
    return evaluate(EvalConfig(policy=str(checkpoint), task=TASK, out=out, **kw))


@pytest.fixture(scope="module")
def run(checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    """Three 15-step episodes; the first is recorded as a first episode, one more as a failure."""
    out = tmp_path_factory.mktemp("eval") / "out"
    report = _eval(checkpoint, out, episodes=3, max_steps=15, record_first=1, record_failures=1)
    return out, report


# ------------------------------------------------------------------ Wilson interval
@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score):
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_known_values(successes, n, low, high):
    got_low, got_high = wilson_interval(successes, n)
    assert got_low == pytest.approx(low, abs=1e-4)
    assert got_high == pytest.approx(high, abs=1e-4)
    assert 0.0 <= got_low <= successes / n <= got_high <= 1.0


def test_wilson_interval_narrows_with_more_episodes():
    small, large = wilson_interval(5, 10), wilson_interval(500, 1000)
    assert large[1] - large[0] < small[1] - small[0]


@pytest.mark.parametrize(("successes", "n"), [(0, 0), (3, 2), (-1, 5)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, n)


def _record(target, lifted, success=False, length=10, instruction=None, interventions=0):
    return {
        "instruction": instruction or f"pick up the {target} cube",
        "target": target,
        "success": success,
        "length": length,
        "lifted": lifted,
        "wrong_cube": any(c != target for c in lifted),
        "safety": {
            "ticks": length,
            "interventions": interventions,
            "shaping": interventions,
            "protective": 0,
            "by_reason": {"STEP_LIMIT": interventions} if interventions else {},
            "by_reason_joint": {"STEP_LIMIT": {"elbow_flex": interventions}}
            if interventions
            else {},
        },
    }


def test_report_statistics_from_episode_records():
    records = [
        _record("red", ["red"], success=True, length=40),  # named cube, alone
        _record("green", ["red"], interventions=4),  # wrong cube
        _record("blue", []),  # nothing lifted: not counted by the probe
        _record("red", ["green", "red"], length=30),  # named cube, but with another
    ]
    report = build_report(records, language_probe=True)
    assert (report["episodes"], report["successes"], report["success_rate"]) == (4, 1, 0.25)
    assert (report["ci_low"], report["ci_high"]) == wilson_interval(1, 4)
    assert report["per_instruction"]["pick up the red cube"]["episodes"] == 2
    assert report["per_instruction"]["pick up the red cube"]["success_rate"] == 0.5
    assert report["mean_episode_length"] == (40 + 10 + 10 + 30) / 4
    assert report["mean_episode_length_success"] == 40.0
    assert report["wrong_cube_episodes"] == 2
    assert report["safety_interventions"] == 4
    assert report["safety"]["ticks"] == 90 and report["safety"]["by_reason"] == {"STEP_LIMIT": 4}
    assert (report["safety"]["shaping"], report["safety"]["protective"]) == (4, 0)
    assert report["safety"]["shaping_rate"] == 4 / 90
    assert report["safety"]["by_class"] == {
        "shaping": {"STEP_LIMIT": {"ticks": 4, "joint": "elbow_flex", "joint_ticks": 4}},
        "protective": {},
    }
    assert report["language_probe"] == {
        "any_cube_lifted": 3,
        "named_cube_lifted": 1,
        "named_cube_lifted_rate": 1 / 3,
    }
    assert build_report(records, language_probe=False)["language_probe"] is None


# ------------------------------------------------------------------ a real evaluation
def test_report_is_consistent(run):
    out, report = run
    on_disk = json.loads((out / "eval_report.json").read_text())
    assert on_disk["episodes"] == report["episodes"] == 3
    assert report["seeds"] == [1_000_000, 1_000_001, 1_000_002]
    assert {"policy", "task", "seeds", "wall_time_s", "recordings", "mean_episode_length"} <= set(
        on_disk
    )
    assert 0.0 <= report["ci_low"] <= report["success_rate"] <= report["ci_high"] <= 1.0
    assert report["success_rate"] == report["successes"] / report["episodes"]
    # Every tick passed the safety gate; the counts add up.
    safety = report["safety"]
    assert safety["ticks"] == sum(r["length"] for r in report["episode_results"])
    assert 0 <= report["safety_interventions"] <= safety["ticks"]
    assert report["safety_interventions"] == sum(
        r["safety"]["interventions"] for r in report["episode_results"]
    )
    assert report["language_probe"] is None and report["interrupted"] is False
    assert report["source"] == "sim"  # the policy's only statistics

    per = report["per_instruction"]
    assert all(set(entry) == RATE_KEYS for entry in per.values())
    assert sum(e["episodes"] for e in per.values()) == report["episodes"]
    assert sum(e["successes"] for e in per.values()) == report["successes"]
    results = report["episode_results"]
    assert [r["seed"] for r in results] == report["seeds"]
    for r in results:
        assert r["instruction"] == f"pick up the {r['target']} cube"
        assert r["instruction"] in per
        # 15 steps cannot lift a cube 5 cm and hold it for 10 ticks.
        assert not r["success"] and r["length"] == 15
        assert r["wrong_cube"] == any(c != r["target"] for c in r["lifted"])
        assert set(r["lifted_at_end"]) <= set(r["lifted"]) <= set(COLORS)
    assert report["mean_episode_length"] == 15.0
    assert report["mean_episode_length_success"] is None
    assert report["wrong_cube_episodes"] == sum(r["wrong_cube"] for r in results)


def test_first_episodes_and_capped_failures_are_recorded(run):
    out, report = run
    expected = [str(out / "recordings" / f"episode_{s}.rrd") for s in (1_000_000, 1_000_001)]
    assert report["recordings"] == expected  # the first, then one failure; the cap stops there
    assert [r["recording"] for r in report["episode_results"]] == [*expected, None]
    assert sorted(p.name for p in (out / "recordings").iterdir()) == [
        Path(p).name for p in expected
    ]


def test_recording_has_cameras_joints_and_task(run):
    from rerun.experimental import RrdReader

    _, report = run
    rrd = report["recordings"][0]
    chunks = list(RrdReader(rrd).stream())
    entities = {chunk.entity_path for chunk in chunks}
    for joint in SO101_JOINTS:
        assert {f"/state/{joint}", f"/action/{joint}"} <= entities
    assert {"/camera/front", "/camera/wrist", "/task"} <= entities
    rows = {
        path: sum(c.num_rows for c in chunks if c.entity_path == path and not c.is_static)
        for path in ("/state/gripper", "/action/gripper", "/camera/front")
    }
    # 15 steps: 16 observations (the last one after the final step), 15 commands.
    assert rows == {"/state/gripper": 16, "/action/gripper": 15, "/camera/front": 16}

    exe = rerun_executable()
    # The binary ships with the pinned rerun-sdk: its absence is a broken install, not a skip.
    assert exe is not None, "the `rerun` binary from rerun-sdk is missing; run `make setup`"
    for path in report["recordings"]:
        done = subprocess.run(
            [exe, "rrd", "verify", path], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr


def test_language_probe_plays_each_scene_once_per_color(checkpoint, tmp_path):
    report = _eval(checkpoint, tmp_path, language_probe=True, record_first=3)
    results = report["episode_results"]
    assert report["episodes"] == 3 * 1
    assert [r["seed"] for r in results] == [1_000_000] * 3
    assert [r["target"] for r in results] == list(COLORS)
    assert set(report["per_instruction"]) == {f"pick up the {c} cube" for c in COLORS}
    # One recording per color of the same scene, not one overwriting the others.
    assert [Path(p).name for p in report["recordings"]] == [
        f"episode_1000000_{c}.rrd" for c in COLORS
    ]
    probe = report["language_probe"]
    assert probe["any_cube_lifted"] == sum(bool(r["lifted"]) for r in results)
    assert probe["named_cube_lifted"] <= probe["any_cube_lifted"]
    if probe["any_cube_lifted"] == 0:
        assert probe["named_cube_lifted_rate"] is None


def test_cli_instruction_override_reaches_the_policy(checkpoint, tmp_path, capsys):
    text = "grab the thing on the left"
    args = [f"--policy={checkpoint}", f"--out={tmp_path}", "--task.image_size=48", "--workers=1"]
    args += ["--episodes=2", "--max_steps=5", "--record_first=1", f"--instruction={text}"]
    assert main(["eval", *args]) == 0
    report = json.loads((tmp_path / "eval_report.json").read_text())
    assert list(report["per_instruction"]) == [text]
    assert report["per_instruction"][text]["episodes"] == 2
    printed = capsys.readouterr().out
    assert str(tmp_path / "eval_report.json") in printed
    assert str(tmp_path / "recordings" / "episode_1000000.rrd") in printed


def test_interrupt_still_writes_the_partial_report(checkpoint, tmp_path, monkeypatch):
    import policy.eval

    calls = []

    def record_then_interrupt(*args, **kwargs):  # Ctrl-C while the 2nd episode is recorded
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write_recording(*args, **kwargs)

    monkeypatch.setattr(policy.eval, "write_recording", record_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _eval(checkpoint, tmp_path, episodes=3, record_first=3)
    report = json.loads((tmp_path / "eval_report.json").read_text())
    assert report["interrupted"] is True
    assert report["episodes_planned"] == 3 and report["episodes"] == 1
    assert [r["seed"] for r in report["episode_results"]] == [1_000_000]
    assert sum(e["episodes"] for e in report["per_instruction"].values()) == 1
    assert report["recordings"] == [str(tmp_path / "recordings" / "episode_1000000.rrd")]


# ------------------------------------------------------------------ bad input
def _seeded_dataset(root: Path) -> Path:
    (root / "meta").mkdir(parents=True)
    meta = {"task": "PickColorCube-v1", "episode_seeds": [0, 1, 3], "failed_seeds": [2, 1_000_000]}
    (root / "meta" / GENERATE_META).write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--episodes=0"], "--episodes must be >= 1"),
        (["--policy={tmp}/nowhere"], "no checkpoint there"),
        (["--task.cameras=[front]"], "--task.cameras='[front,wrist]'"),
        (["--dataset={tmp}/data"], "seed(s) of the training data"),
        (["--dataset={tmp}"], "its seeds are unknown"),
        (["--instruction="], "--instruction must not be empty"),
        (["--source=lab"], "--source must be sim or real"),
        (["--source=real"], "statistics for ['sim'] only"),
    ],
)
def test_bad_input_is_one_clear_line(checkpoint, tmp_path, capsys, args, message):
    _seeded_dataset(tmp_path / "data")
    args = [a.format(tmp=tmp_path) for a in args]
    # Cheap settings first (later flags win), so a wrongly accepted input costs little.
    cheap = ["--episodes=1", "--max_steps=2", "--workers=1", "--record_first=0"]
    code = main(["eval", f"--policy={checkpoint}", f"--out={tmp_path}/out", *cheap, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("armvla eval: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked


@pytest.mark.parametrize(
    ("sources", "domain", "requested", "chosen"),
    [
        (("sim", "real"), "real", None, "real"),  # the twin / an arm: the real data's stats
        (("sim", "real"), "sim", None, "sim"),
        (("sim",), "real", None, "sim"),  # a sim-only policy on the arm
        (("real",), "sim", None, "real"),
        (("sim", "real"), "real", "sim", "sim"),  # --source wins
    ],
)
def test_the_inference_source_eval_and_run_share(sources, domain, requested, chosen):
    policy = SimpleNamespace(normalizer=SimpleNamespace(sources=sources))
    assert inference_source(policy, domain, requested) == chosen


def test_a_source_without_statistics_is_refused():
    policy = SimpleNamespace(normalizer=SimpleNamespace(sources=("sim",)))
    with pytest.raises(ValueError, match=r"--source=real: .*\['sim'\] only; pass one of those"):
        inference_source(policy, "real", "real")


def test_seeds_past_the_dataset_are_accepted(tmp_path):
    root = _seeded_dataset(tmp_path / "data")
    check_heldout([1_000_001, 1_000_002], root)
    with pytest.raises(ValueError, match="pass --seed=1000001 or higher"):
        check_heldout([999_999, 1_000_000], root)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_missing_shipped_checkpoint_says_what_to_pass(name, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(SHIPPED, name, tmp_path / "absent")
    assert main(["eval", f"--policy={name}", f"--out={tmp_path}/out"]) == 2
    err = capsys.readouterr().err
    assert f"shipped checkpoint {tmp_path / 'absent'} is missing" in err
    assert "pass --policy=<checkpoint folder>" in err


def test_an_unknown_policy_name_lists_the_shipped_ones(tmp_path, capsys):
    assert main(["eval", "--policy=cotrian", f"--out={tmp_path}/out"]) == 2
    assert "--policy=cotrian: no checkpoint there" in (err := capsys.readouterr().err)
    assert all(repr(name) in err for name in SHIPPED)


def test_source_defaults_to_the_domains_and_can_be_chosen(tmp_path):
    """A policy with sim and real statistics normalizes with the real ones in the real domain
    (as `armvla run` on an arm), unless --source says otherwise."""
    stats = {**STATS, "real": STATS["sim"]}
    two = save_policy(build_policy(preset("debug"), stats), tmp_path / "two_sources")
    real = TaskConfig(image_size=48, domain="real")
    kw = {"episodes": 1, "workers": 1, "max_steps": 2, "record_first": 0, "record_failures": 0}
    chosen = {
        source: evaluate(
            EvalConfig(policy=str(two), task=real, out=tmp_path / str(source), source=source, **kw)
        )["source"]
        for source in (None, "sim")
    }
    assert chosen == {None: "real", "sim": "sim"}
