"""The COCO panoptic data layout ``maskformer evaluate`` reads: where the json, the images and
the panoptic PNGs are, and how a model's classes map onto the data's categories."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskformer.evaluation.label_files import check_panoptic_annotations


@dataclass
class CocoPanopticFiles:
    json_file: Path
    image_dir: Path
    panoptic_dir: Path
    data: dict[str, Any]
    categories: list[dict[str, Any]]


def find_coco_panoptic_files(data_dir: Path, options: Any) -> CocoPanopticFiles:
    """Locate the json, image folder and PNG folder of a COCO panoptic data folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    if options.annotations is not None:
        json_file = Path(options.annotations)
        if not json_file.is_file():
            raise FileNotFoundError(f"annotation file {json_file} does not exist")
        data = _read_json(json_file)
        if not isinstance(data, dict):
            raise ValueError(f"annotation file {json_file} is not a COCO panoptic json object")
    else:
        found = [
            (p, d)
            for p in sorted(data_dir.glob("*.json"))
            if isinstance(d := _read_json(p), dict) and "annotations" in d
        ]
        if len(found) != 1:
            names = ", ".join(p.name for p, _ in found) or "none"
            raise FileNotFoundError(
                f"need exactly one COCO panoptic json in {data_dir} (found: {names}); "
                "name it with --annotations"
            )
        json_file, data = found[0]
    image_dir = options.image_dir or _first_dir(data_dir / "images", data_dir / "val2017")
    panoptic_dir = options.panoptic_dir or _first_dir(
        data_dir / "panoptic", data_dir / json_file.stem
    )
    for folder, what in ((image_dir, "image folder"), (panoptic_dir, "panoptic PNG folder")):
        if folder is None or not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} {folder or data_dir / '?'} does not exist")
    check_panoptic_annotations(data, json_file)
    if not data["annotations"]:
        raise ValueError(f"annotation file {json_file} lists no images (empty 'annotations')")
    categories = data.get("categories")
    if not categories:
        fallback = data_dir / "panoptic_coco_categories.json"
        if not fallback.is_file():
            raise ValueError(f"{json_file} has no 'categories' and {fallback} does not exist")
        categories = _read_json(fallback)
        check_panoptic_annotations({"annotations": [], "categories": categories}, fallback)
    return CocoPanopticFiles(json_file, Path(image_dir), Path(panoptic_dir), data, categories)


def label_to_category(
    id2label: dict[int, str], categories: Sequence[dict[str, Any]]
) -> dict[int, int]:
    """Model class index -> COCO category id, by name when all names match, else by position."""
    mapping = _match_categories(id2label, categories)
    if mapping is None:
        raise ValueError(
            f"the model's {len(id2label)} classes match neither the names nor the number of the "
            f"{len(categories)} categories of the data"
        )
    return mapping


def _match_categories(
    names: dict[int, str], categories: Sequence[dict[str, Any]]
) -> dict[int, int] | None:
    """Class index -> category id: by name when every name is a category's, else by position
    when the indices are exactly ``0 .. K-1`` of the K categories; None when neither fits."""
    by_name = {str(c["name"]): int(c["id"]) for c in categories if "name" in c}
    if names and all(name in by_name for name in names.values()):
        return {int(k): by_name[name] for k, name in names.items()}
    if sorted(names) == list(range(len(categories))):
        return {k: int(categories[k]["id"]) for k in names}
    return None


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read json {path}: {error}") from None
