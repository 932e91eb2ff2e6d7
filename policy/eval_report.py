"""What ``armvla eval`` makes of its episodes: statistics, the printed summary, Rerun recordings."""

from __future__ import annotations

import math
from pathlib import Path

from data import rerun_log


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (95% for ``z=1.96``).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0/n or n/n,
    which small evaluations hit often.

    Raises:
        ValueError: ``n < 1`` or ``successes`` outside ``0..n``.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes}/{n}")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clamped so rounding never puts the rate itself outside its interval.
    return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))


def rate_with_interval(successes: int, n: int) -> dict:
    """``{episodes, successes, success_rate, ci_low, ci_high}``; rates are null when n == 0."""
    if n == 0:  # an evaluation interrupted before its first episode finished
        return {
            "episodes": 0,
            "successes": 0,
            "success_rate": None,
            "ci_low": None,
            "ci_high": None,
        }
    low, high = wilson_interval(successes, n)
    return {
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n,
        "ci_low": low,
        "ci_high": high,
    }


def build_report(results: list[dict], language_probe: bool) -> dict:
    """Aggregate statistics of per-episode records (as returned by ``policy.rollout``)."""
    by_instruction: dict[str, list[bool]] = {}
    for r in results:
        by_instruction.setdefault(r["instruction"], []).append(r["success"])
    lengths = [r["length"] for r in results]
    success_lengths = [r["length"] for r in results if r["success"]]
    report = rate_with_interval(sum(r["success"] for r in results), len(results))
    report["per_instruction"] = {
        text: rate_with_interval(sum(wins), len(wins)) for text, wins in by_instruction.items()
    }
    report["mean_episode_length"] = _mean(lengths)
    report["mean_episode_length_success"] = _mean(success_lengths)
    report["wrong_cube_episodes"] = sum(r["wrong_cube"] for r in results)
    report["unstable_episodes"] = sum(r.get("unstable", False) for r in results)
    report["language_probe"] = None
    if language_probe:
        any_lifted = [r for r in results if r["lifted"]]
        named = sum(r["lifted"] == [r["target"]] for r in any_lifted)
        report["language_probe"] = {
            # Scenes where some cube rose above the lift threshold, and of those the ones where
            # the named cube, and only it, did: grasp skill separated from language grounding.
            "any_cube_lifted": len(any_lifted),
            "named_cube_lifted": named,
            "named_cube_lifted_rate": named / len(any_lifted) if any_lifted else None,
        }
    report.update(_safety_summary(results))
    return report


def _safety_summary(results: list[dict]) -> dict:
    """The safety gate's work over the run: ticks where the command sent differs from the
    policy's request (``safety_interventions``), split into shaping (clamping into the soft
    range, step and acceleration smoothing, ramps) and protective (box, table, keep-out, tool
    speed, invalid input, holds), their rates, reasons and the joint each reason acted on most."""
    from safety.gate import intervention_summary

    ticks = sum(r["safety"]["ticks"] for r in results)
    totals = {
        k: sum(r["safety"].get(k, 0) for r in results)
        for k in ("interventions", "shaping", "protective")
    }
    by_reason: dict[str, int] = {}
    by_joint: dict[str, dict[str, int]] = {}
    for r in results:
        for reason, n in r["safety"]["by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + n
        for reason, joints in r["safety"].get("by_reason_joint", {}).items():
            for joint, n in joints.items():
                by_joint.setdefault(reason, {})[joint] = by_joint.get(reason, {}).get(joint, 0) + n

    def rate(n):
        return n / ticks if ticks else None

    return {
        "safety_interventions": totals["interventions"],
        "safety": {
            "ticks": ticks,
            "intervention_rate": rate(totals["interventions"]),
            "shaping": totals["shaping"],
            "shaping_rate": rate(totals["shaping"]),
            "protective": totals["protective"],
            "protective_rate": rate(totals["protective"]),
            "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
            "by_class": intervention_summary(by_reason, by_joint),
            "episodes_with_hold": sum("HOLD" in r["safety"]["by_reason"] for r in results),
        },
    }


def describe_classes(by_class: dict, top: int = 3) -> str:
    """ "JOINT_LIMIT 302 (gripper), ACCEL_LIMIT 263 (elbow_flex)" for one class's reasons."""
    return ", ".join(
        f"{name} {e['ticks']}" + (f" ({e['joint']})" if e["joint"] else "")
        for name, e in list(by_class.items())[:top]
    )


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def print_summary(report: dict, report_path: Path) -> None:
    """Prints the report in a few readable lines, with where to find the files."""

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def ci(entry):
        if not entry["episodes"]:
            return "no episode finished"
        return (
            f"{entry['successes']}/{entry['episodes']} = {pct(entry['success_rate'])}  "
            f"(95% CI {pct(entry['ci_low'])} - {pct(entry['ci_high'])})"
        )

    seeds = report["seeds"]
    state = "interrupted: " if report["interrupted"] else ""
    length, length_ok = report["mean_episode_length"], report["mean_episode_length_success"]
    lines = [
        f"{state}eval of {report['policy']} on {report['task']}: {report['episodes']} of "
        f"{report['episodes_planned']} episodes, seeds {seeds[0]}..{seeds[-1]}, "
        f"{report['wall_time_s']} s on {report['workers']} worker(s)",
        f"  success              {ci(report)}",
        "  mean episode length  "
        + ("n/a" if length is None else f"{length:.1f} steps")
        + ("" if length_ok is None else f" (successes only: {length_ok:.1f})"),
        f"  wrong cube lifted    in {report['wrong_cube_episodes']} episode(s)",
    ]
    if report.get("unstable_episodes"):
        lines.append(
            f"  physics unstable     in {report['unstable_episodes']} episode(s): MuJoCo reset a "
            "diverged state and the episode ended (counted as failures)"
        )
    probe = report["language_probe"]
    if probe is not None:
        lines.append(
            f"  language probe       named cube lifted in {probe['named_cube_lifted']} of "
            f"{probe['any_cube_lifted']} episodes that lifted a cube "
            f"({pct(probe['named_cube_lifted_rate'])})"
        )
    safety = report["safety"]
    if safety["ticks"]:
        classes = safety["by_class"]
        shaping, protective = (
            describe_classes(classes["shaping"]),
            describe_classes(classes["protective"]),
        )
        lines += [
            f"  safety gate          {safety['ticks']} ticks; holds in "
            f"{safety['episodes_with_hold']} episode(s)",
            f"    shaping            {safety['shaping']} ticks ({pct(safety['shaping_rate'])})"
            + (f": {shaping}" if shaping else ""),
            f"    protective         {safety['protective']} ticks "
            f"({pct(safety['protective_rate'])})" + (f": {protective}" if protective else ""),
        ]
    if report["per_instruction"]:
        lines.append("  per instruction:")
    width = max((len(t) for t in report["per_instruction"]), default=0)
    lines += [f"    {t:<{width}}  {ci(e)}" for t, e in report["per_instruction"].items()]
    lines.append(f"report:    {report_path}")
    recordings = report["recordings"]
    if recordings:
        failed = [
            r["recording"] for r in report["episode_results"] if r["recording"] and not r["success"]
        ]
        shown = failed[0] if failed else recordings[0]
        lines.append(
            f"recording: {shown}  (view with: rerun {shown}; {len(recordings)} in "
            f"{Path(shown).parent})"
        )
    print("\n".join(lines))


def write_recording(
    path: Path, frames: dict, result: dict, cameras: tuple[str, ...], policy: str
) -> None:
    """Writes one episode to an .rrd with the layout of :mod:`data.rerun_log`.

    Args:
        path: the .rrd file to write.
        frames: per-step lists from ``policy.rollout``: ``<camera>`` images [H, W, 3] uint8,
            ``state`` [D] and ``action`` [D] (``None`` on the final observation); and ``dt``,
            seconds per step.
        result: the episode's record (seed, instruction, success, ...), shown under the task.
        cameras: camera names, in display order.
        policy: checkpoint path, shown under the task.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = rerun_log.open_recording(f"eval seed {result['seed']}", cameras, save=path)
    details = {
        "policy": policy,
        "seed": result["seed"],
        "target": result["target"],
        "outcome": "success" if result["success"] else "failure",
        "steps": result["length"],
        "lifted cubes": ", ".join(result["lifted"]) or "none",
    }
    try:
        for i, (state, action) in enumerate(zip(frames["state"], frames["action"], strict=True)):
            rerun_log.log_frame(
                rec,
                i,
                i * frames["dt"],
                images={cam: frames[cam][i] for cam in cameras},
                state=state,
                action=action,
            )
            if i == 0:
                rerun_log.log_task(rec, result["instruction"], details)
    finally:
        rerun_log.close_recording(rec)
