"""What ``maskformer evaluate`` prints and writes: the table, strict JSON, and an early check
that the output file can be written."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def check_output_file(output: Path, overwrite: bool = False) -> None:
    """Fail early, naming ``output``, when the figures could not be written there: a folder, an
    existing file (without ``overwrite``), a parent that is a file or cannot be written."""
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(f"--output {output} is a folder; give a file name (.json)")
    if output.exists() and not overwrite:
        raise FileExistsError(
            f"output file {output} already exists; pass --overwrite to replace it"
        )
    parent = output.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"--output {output}: {parent} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise OSError(f"cannot write --output {output}: {error.strerror or error}") from None


def format_results(results: dict[str, Any], task: str, max_rows: int = 30) -> str:
    """A plain-text table of the figures (percentages)."""
    lines: list[str] = []
    if task == "semantic":
        lines.append(f"{'metric':<22}{'value':>8}")
        for key in ("mIoU", "pixel_accuracy", "mean_class_accuracy"):
            lines.append(f"{key:<22}{_percent(results.get(key)):>8}")
        names = results.get("class_names") or [str(k) for k in range(len(results["per_class_IoU"]))]
        rows = [
            (name, iou, acc)
            for name, iou, acc in zip(
                names, results["per_class_IoU"], results["per_class_accuracy"]
            )
            if not math.isnan(iou)
        ]
        if rows:
            lines += ["", f"{'class':<22}{'IoU':>8}{'acc':>8}"]
            for name, iou, accuracy in rows[:max_rows]:
                lines.append(f"{name[:21]:<22}{_percent(iou):>8}{_percent(accuracy):>8}")
            if len(rows) > max_rows:
                lines.append(f"... {len(rows) - max_rows} more classes in the json")
    elif task == "panoptic":
        lines.append(f"{'':<8}{'PQ':>8}{'SQ':>8}{'RQ':>8}{'n':>6}")
        for group in ("All", "Things", "Stuff"):
            row = results[group]
            lines.append(
                f"{group:<8}{_percent(row['PQ']):>8}{_percent(row['SQ']):>8}"
                f"{_percent(row['RQ']):>8}{row['n']:>6}"
            )
    else:
        lines.append(f"{'metric':<8}{'value':>8}")
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            lines.append(f"{key:<8}{_percent(results.get(key)):>8}")
    if "num_images" in results:
        lines.append(f"({results['num_images']} images)")
    return "\n".join(lines)


def to_jsonable(value: Any) -> Any:
    """``value`` with NaN/inf as null and non-string keys as strings (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):.1f}"
