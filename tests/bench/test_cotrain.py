"""bench/cotrain.py: the mixture weights and run names (fast; the bench itself runs for hours)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def cotrain():
    spec = importlib.util.spec_from_file_location("cotrain_bench", BENCH / "cotrain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cotrain_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_default_mixture_splits_the_real_share_equally(cotrain, tmp_path):
    roots, weights = cotrain.mixture(tmp_path, "mixed", 0.5)
    assert roots[0] == cotrain.sim_root(tmp_path, True)
    assert roots[1:] == [cotrain.real_root(tmp_path, f) for f in cotrain.REAL_DEMOS]
    assert weights == [0.5, 0.125, 0.125, 0.125, 0.125]


def test_named_weights_are_normalized_and_a_zero_weight_drops_the_dataset(cotrain, tmp_path):
    weights = cotrain.parse_weights("sim=2, RopeToMark-v1=1,TowelToMark-v1=1,PickColorCube-v1=0")
    roots, w = cotrain.mixture(tmp_path, "mixed", 0.5, weights)
    assert roots == [
        cotrain.sim_root(tmp_path, True),
        cotrain.real_root(tmp_path, "RopeToMark-v1"),
        cotrain.real_root(tmp_path, "TowelToMark-v1"),
    ]
    assert w == [0.5, 0.25, 0.25]
    # The single-source policies ignore the mixed weights.
    assert cotrain.mixture(tmp_path, "sim_rand", 0.5, weights) == (
        [cotrain.sim_root(tmp_path, True)],
        [1.0],
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sim=1,rope=1", "not name=weight"),
        ("sim=1,RopeToMark-v1", "not name=weight"),
        ("sim=1,RopeToMark-v1=x", "not a number"),
        ("sim=1,RopeToMark-v1=-1", ">= 0"),
        ("sim=1,RopeToMark-v1=nan", ">= 0"),
        ("sim=1,sim=2,RopeToMark-v1=1", "twice"),
        ("RopeToMark-v1=1", "needs weight > 0 on 'sim'"),
        ("sim=1,PickColorCube-v1=0", "needs weight > 0 on 'sim' and on a real dataset"),
    ],
)
def test_bad_weights_name_the_problem(cotrain, text, message):
    with pytest.raises(ValueError, match=message):
        cotrain.parse_weights(text)


def test_cli_rejects_bad_weights_and_names_the_run(cotrain, capsys):
    with pytest.raises(SystemExit):
        cotrain.parse_args(["--mixed-weights=sim=1"])
    assert "--mixed-weights" in capsys.readouterr().err
    args = cotrain.parse_args(["--mixed-name=mixed_w2", "--mixed-weights=sim=1,TowelToMark-v1=1"])
    assert cotrain.run_name(args, "mixed") == "mixed_w2"
    assert cotrain.run_name(args, "real_only") == "real_only"
    assert cotrain.parse_args([]).mixed_weights is None


def test_an_eval_cell_keeps_the_reports_wilson_interval_and_is_cached(
    cotrain, tmp_path, monkeypatch
):
    import policy.eval

    ckpt = cotrain.checkpoint(tmp_path, "mixed")
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text('{"_extra": {"step": 10000}}')
    calls = []

    def fake_evaluate(cfg):
        calls.append(cfg)
        return {
            "episodes": 50,
            "successes": 30,
            "success_rate": 0.6,
            "ci_low": 0.4618,
            "ci_high": 0.7239,
        }

    monkeypatch.setattr(policy.eval, "evaluate", fake_evaluate)
    args = cotrain.parse_args(["--episodes=50"])
    cell = cotrain.eval_policy(tmp_path, "mixed", "PickColorCube-v1", "real", args)
    assert cell == {
        "episodes": 50,
        "seed": 3_000_000,
        "steps": 10_000,
        "successes": 30,
        "success_rate": 0.6,
        "ci95": [0.462, 0.724],
    }
    assert calls[0].task.domain == "real" and calls[0].seed == 3_000_000
    assert cotrain.eval_policy(tmp_path, "mixed", "PickColorCube-v1", "real", args) == cell
    assert len(calls) == 1  # the cached cell is not evaluated again
    (ckpt / "config.json").write_text('{"_extra": {"step": 20000}}')
    cotrain.eval_policy(tmp_path, "mixed", "PickColorCube-v1", "real", args)
    assert len(calls) == 2  # trained further: a new cell beside the old one
