"""Draws docs/images/overview.png, the picture at the top of the README.

Left: the front camera of PickColorCube-v1 as the scripted expert reaches for the named cube.
Right: the shipped checkpoint's evaluations (the eval_report*.json files beside it), success
per instruction with 95 % Wilson intervals. matplotlib is not a dependency, so the chart is
drawn with PIL.

Run from the repository root:

    MUJOCO_GL=egl .venv/bin/python docs/images/make_overview.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

import sim  # noqa: E402, F401  (registers the armvla/ environments)
from sim.expert import PickCubeExpert  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "policy" / "checkpoints" / "pick_color_cube"
OUT = Path(__file__).with_name("overview.png")

FRAME_W, FRAME_H = 480, 360
SUPERSAMPLE = 2  # render larger and downsample: the fast renderer has no anti-aliasing
SEED, TARGET, TICKS = 2, "red", 50  # a scene and the moment of the episode shown
CHART_W = 500
MARGIN, TITLE_H = 12, 30
BG, INK, GREY, ACCENT = (255, 255, 255), (30, 30, 30), (150, 150, 150), (31, 119, 180)
X_LOW, X_HIGH, GOAL = 0.70, 1.00, 0.95

# (heading, report file) in the order they are drawn.
REPORTS = [
    ("test seeds 1000000+", "eval_report.json"),
    ("validation seeds 2000000+", "eval_report_seeds_2000000-2000199.json"),
    ("language probe (each scene once per color)", "eval_report_language_probe.json"),
]


def font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(name, size)
    except OSError:
        path = Path("/usr/share/fonts/truetype/dejavu") / name
        return (
            ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size)
        )


def scene_frame() -> tuple[np.ndarray, str]:
    """The front camera [H, W, 3] after the expert's first TICKS ticks, and the instruction."""
    env = gym.make(
        "armvla/PickColorCube-v1",
        image_size=(FRAME_H * SUPERSAMPLE, FRAME_W * SUPERSAMPLE),
        cameras=("front",),
    )
    try:
        obs, _ = env.reset(seed=SEED, options={"target": TARGET})
        expert = PickCubeExpert(env, seed=SEED)
        for _ in range(TICKS):
            obs, *_ = env.step(expert.act(obs))
        image = obs["observation.images.front"]
        instruction = env.unwrapped.instruction
    finally:
        env.close()
    small = Image.fromarray(image).resize((FRAME_W, FRAME_H), Image.Resampling.LANCZOS)
    return np.asarray(small), instruction


def chart_rows() -> list[tuple[str, str, dict]]:
    """(kind, label, stats) rows: a heading per report, its total, then each instruction."""
    rows = []
    for heading, name in REPORTS:
        report = json.loads((CHECKPOINT / name).read_text())
        rows.append(("heading", heading, {}))
        rows.append(("total", "all instructions", report))
        for instruction, stats in sorted(report["per_instruction"].items()):
            rows.append(("instruction", instruction.removeprefix("pick up the "), stats))
    return rows


def draw_chart(draw: ImageDraw.ImageDraw, x0: int, y0: int, w: int, h: int) -> None:
    rows = chart_rows()
    label_w, count_w = 150, 62
    plot_x0, plot_x1 = x0 + label_w, x0 + w - count_w
    axis_h = 34
    row_h = (h - axis_h) / len(rows)

    def px(rate: float) -> float:
        return plot_x0 + (rate - X_LOW) / (X_HIGH - X_LOW) * (plot_x1 - plot_x0)

    small, normal, bold = font(12), font(13), font(13, bold=True)
    bottom = y0 + h - axis_h
    for tick in np.arange(X_LOW, X_HIGH + 1e-9, 0.05):
        x = px(tick)
        draw.line([(x, y0), (x, bottom)], fill=(232, 232, 232))
        draw.text((x, bottom + 4), f"{tick * 100:.0f}%", fill=GREY, font=small, anchor="mt")
    x = px(GOAL)
    for y in range(y0, int(bottom), 6):  # dashed line at the target
        draw.line([(x, y), (x, min(y + 3, bottom))], fill=(214, 39, 40))
    draw.text((x + 3, y0), "target", fill=(214, 39, 40), font=small, anchor="lt")
    draw.text(
        ((plot_x0 + plot_x1) / 2, bottom + 19),
        "success rate per instruction, 95 % Wilson interval",
        fill=INK,
        font=small,
        anchor="mt",
    )
    draw.line([(plot_x0, bottom), (plot_x1, bottom)], fill=GREY)

    for i, (kind, label, stats) in enumerate(rows):
        y = y0 + (i + 0.5) * row_h
        if kind == "heading":
            draw.text((x0, y), label, fill=INK, font=bold, anchor="lm")
            continue
        indent = 10 if kind == "total" else 22
        draw.text((x0 + indent, y), label, fill=INK, font=normal, anchor="lm")
        lo, hi, rate = stats["ci_low"], stats["ci_high"], stats["success_rate"]
        color = INK if kind == "total" else ACCENT
        draw.line([(px(max(lo, X_LOW)), y), (px(hi), y)], fill=color, width=2)
        for end in (lo, hi):
            if end >= X_LOW:
                draw.line([(px(end), y - 4), (px(end), y + 4)], fill=color, width=2)
        r = 5 if kind == "total" else 4
        draw.ellipse([px(rate) - r, y - r, px(rate) + r, y + r], fill=color)
        count = f"{stats['successes']}/{stats['episodes']}"
        draw.text((x0 + w, y), count, fill=INK, font=normal, anchor="rm")


def main() -> None:
    frame, instruction = scene_frame()
    width = MARGIN + FRAME_W + 2 * MARGIN + CHART_W + MARGIN
    height = TITLE_H + FRAME_H + MARGIN
    canvas = Image.new("RGB", (width, height), BG)
    canvas.paste(Image.fromarray(frame), (MARGIN, TITLE_H))
    draw = ImageDraw.Draw(canvas)
    title = font(14, bold=True)
    draw.text(
        (MARGIN, TITLE_H / 2),
        f'PickColorCube-v1, front camera: "{instruction}"',
        fill=INK,
        font=title,
        anchor="lm",
    )
    chart_x = MARGIN + FRAME_W + 2 * MARGIN
    draw.text(
        (chart_x, TITLE_H / 2),
        "Shipped checkpoint, every command through the gate",
        fill=INK,
        font=title,
        anchor="lm",
    )
    draw_chart(draw, chart_x, TITLE_H + 4, CHART_W, FRAME_H - 4)
    canvas.save(OUT, optimize=True)
    print(f"{OUT.relative_to(ROOT)}: {width}x{height}, {OUT.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
