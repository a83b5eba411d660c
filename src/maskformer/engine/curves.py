"""``OUTPUT/curves.png``: the training loss and the validation metrics against the step.

Drawn with PIL from ``log.jsonl`` (no plotting library): two panels side by side, the loss on
the left (its own scale) and the evaluation figures on the right (0 to 1), each with axes, tick
labels and a legend. Written at the end of every run and by ``maskformer plot RUN_DIR``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from maskformer.engine.hooks import Hook, say
from maskformer.utils.atomic import atomic_save_image

if TYPE_CHECKING:
    from maskformer.engine.train import Trainer

CURVES_FILENAME = "curves.png"
PANEL = (560, 380)  # width, height of one panel in pixels
MARGIN = (64, 28, 30, 46)  # left, top, right, bottom: room for tick labels and titles
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]
BACKGROUND, INK, GRID = (255, 255, 255), (30, 30, 30), (225, 225, 225)


def read_log(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training records (with ``loss``) and evaluation records (``eval``) of a run folder."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (is {run_dir} a training run folder?)")
    train, evaluations = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path} line {number} is not JSON") from None
        if "eval" in record:
            evaluations.append(record)
        elif "loss" in record:
            train.append(record)
    return train, evaluations


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 5 x 10^k steps) covering ``[low, high]``."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if len(ticks) < 2:
        ticks.append(ticks[-1] + step)
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:g}"


def _panel(
    title: str,
    series: list[tuple[str, list[tuple[float, float]]]],
    x_range: tuple[float, float],
    y_range: tuple[float, float] | None,
    font: ImageFont.ImageFont,
) -> Image.Image:
    """One chart: axes, grid, tick labels, the lines (with dots) and a legend."""
    image = Image.new("RGB", PANEL, BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN
    x0, y0, x1, y1 = left, top, PANEL[0] - right, PANEL[1] - bottom
    draw.text((x0, 6), title, fill=INK, font=font)
    values = [y for _, points in series for _, y in points if math.isfinite(y)]
    if y_range is None:
        y_range = (min(values, default=0.0), max(values, default=1.0))
    y_ticks = nice_ticks(*y_range)
    x_ticks = nice_ticks(*x_range)
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x_low, x_high = x_ticks[0], x_ticks[-1]

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = x0 + (x - x_low) / max(x_high - x_low, 1e-12) * (x1 - x0)
        py = y1 - (y - y_low) / max(y_high - y_low, 1e-12) * (y1 - y0)
        return px, py

    for tick in y_ticks:
        _, py = to_pixel(x_low, tick)
        draw.line([(x0, py), (x1, py)], fill=GRID)
        text = _label(tick)
        draw.text((x0 - 6 - draw.textlength(text, font=font), py - 6), text, fill=INK, font=font)
    for tick in x_ticks:
        px, _ = to_pixel(tick, y_low)
        draw.line([(px, y0), (px, y1)], fill=GRID)
        text = _label(tick)
        draw.text((px - draw.textlength(text, font=font) / 2, y1 + 5), text, fill=INK, font=font)
    draw.rectangle([x0, y0, x1, y1], outline=INK)
    draw.text(((x0 + x1) / 2 - 12, y1 + 22), "step", fill=INK, font=font)

    for index, (name, points) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        pixels = [to_pixel(x, y) for x, y in points if math.isfinite(y)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            draw.ellipse([px - 2.5, py - 2.5, px + 2.5, py + 2.5], fill=colour)
        # Legend, top right inside the axes.
        ly = y0 + 8 + 16 * index
        lx = x1 - 8 - max(draw.textlength(n, font=font) for n, _ in series) - 26
        draw.line([(lx, ly + 6), (lx + 18, ly + 6)], fill=colour, width=3)
        draw.text((lx + 24, ly), name, fill=INK, font=font)
    if not series:
        draw.text(((x0 + x1) / 2 - 40, (y0 + y1) / 2), "no records", fill=INK, font=font)
    return image


def draw_curves(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Draw ``curves.png`` (default ``run_dir/curves.png``) from ``run_dir/log.jsonl``."""
    run_dir = Path(run_dir)
    train, evaluations = read_log(run_dir)
    if not train and not evaluations:
        raise ValueError(f"{run_dir / 'log.jsonl'} holds no records to draw")
    try:
        font: ImageFont.ImageFont = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    steps = [r["step"] for r in train] + [r["step"] for r in evaluations]
    x_range = (0.0, float(max(steps)))
    terms = (
        ["loss"] + sorted(k for k in train[0] if k.startswith("loss_") and not k[-1].isdigit())
        if train
        else []
    )
    loss_series = [(k, [(r["step"], float(r[k])) for r in train if k in r]) for k in terms]
    figure_names = sorted({k for r in evaluations for k in r["eval"]})
    eval_series = [
        (k, [(r["step"], float(r["eval"][k])) for r in evaluations if r["eval"].get(k) is not None])
        for k in figure_names
    ]
    panels = [_panel("training loss", loss_series, x_range, None, font)]
    if evaluations:
        panels.append(_panel("validation", eval_series, x_range, (0.0, 1.0), font))
    sheet = Image.new("RGB", (PANEL[0] * len(panels), PANEL[1]), BACKGROUND)
    for index, panel in enumerate(panels):
        sheet.paste(panel, (PANEL[0] * index, 0))
    target = Path(output) if output is not None else run_dir / CURVES_FILENAME
    atomic_save_image(sheet, target)
    return target


class CurvesHook(Hook):
    """At the end of a run (rank 0): ``OUTPUT/curves.png``."""

    name = "curves"

    def after_train(self, trainer: Trainer) -> None:
        if trainer.context.is_main and trainer.log_file.is_file():
            path = draw_curves(trainer.output_dir)
            say(trainer, f"curves: {path}")
