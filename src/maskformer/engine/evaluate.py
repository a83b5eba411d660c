"""Scoring a model, or prediction files, on a data folder: ``maskformer evaluate``.

Two data layouts are read:

* ``ade20k``: ``DIR/images/*.jpg`` and ``DIR/annotations/*.png`` (semantic label maps; with
  ``reduce_labels`` 0 = "other" is ignored and k becomes class k - 1). Task: semantic.
* ``coco-panoptic``: a COCO panoptic json (``--annotations``, default the one json in ``DIR`` with
  ``annotations``), the images (``DIR/images``) and the panoptic PNGs (``DIR/panoptic``, or the
  folder named after the json). Tasks: panoptic (PQ), semantic (mIoU over the categories) and
  instance (mask AP of the thing categories; crowd segments are crowd regions).

A model's class ``k`` is matched to a COCO category by name (``id2label[k]`` equals the
category's ``name``) when every name is found, else by position (class k = k-th category).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskformer.engine.predict import (
    TASKS,
    instance_result_to_arrays,
    load_rgb_image,
    panoptic_result_to_coco,
    segment_batch,
)

FORMATS = ("ade20k", "coco-panoptic", "coco-instances")


@dataclass
class EvaluateOptions:
    """Where the data is and how predictions are made (thresholds as in ``predict``)."""

    task: str = "semantic"
    data_format: str = "ade20k"
    batch_size: int = 2
    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8
    reduce_labels: bool = True
    max_images: int | None = None
    annotations: Path | None = None
    image_dir: Path | None = None
    panoptic_dir: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.data_format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.data_format!r}")
        if self.data_format == "ade20k" and self.task != "semantic":
            raise ValueError(
                f"--format ade20k holds semantic label maps only; --task {self.task} needs "
                "--format coco-panoptic"
            )
        if self.data_format == "coco-instances" and self.task != "instance":
            raise ValueError("--format coco-instances is scored with --task instance (mask AP)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# ------------------------------------------------------------------------------- COCO layout
@dataclass
class CocoPanopticFiles:
    json_file: Path
    image_dir: Path
    panoptic_dir: Path
    data: dict[str, Any]
    categories: list[dict[str, Any]]


def find_coco_panoptic_files(data_dir: Path, options: EvaluateOptions) -> CocoPanopticFiles:
    """Locate the json, image folder and PNG folder of a COCO panoptic data folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    if options.annotations is not None:
        json_file = Path(options.annotations)
        if not json_file.is_file():
            raise FileNotFoundError(f"annotation file {json_file} does not exist")
        data = _read_json(json_file)
    else:
        found = [
            (p, d) for p in sorted(data_dir.glob("*.json")) if "annotations" in (d := _read_json(p))
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
    categories = data.get("categories")
    if not categories:
        fallback = data_dir / "panoptic_coco_categories.json"
        if not fallback.is_file():
            raise ValueError(f"{json_file} has no 'categories' and {fallback} does not exist")
        categories = _read_json(fallback)
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


# -------------------------------------------------------------------------------- model runs
def evaluate_model(
    model: Any, processor: Any, data_dir: Path, options: EvaluateOptions
) -> dict[str, Any]:
    """Run ``model`` over the data folder and return the task's metric figures."""
    if options.data_format == "coco-instances":
        from maskformer.engine.evaluate_instances import evaluate_model_on_coco_instances

        return evaluate_model_on_coco_instances(model, processor, Path(data_dir), options)
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    if options.data_format == "ade20k":
        return _evaluate_ade20k(model, processor, Path(data_dir), id2label, options)
    return _evaluate_coco(model, processor, Path(data_dir), id2label, options)


def _evaluate_ade20k(
    model: Any, processor: Any, data_dir: Path, id2label: dict[int, str], options: EvaluateOptions
) -> dict[str, Any]:
    from maskformer.data.ade20k import ADE20KDataset
    from maskformer.evaluation import SemanticSegmentationMetric

    dataset = ADE20KDataset(  # FileNotFoundError naming the folder when it is missing
        data_dir, reduce_labels=options.reduce_labels, num_labels=len(id2label), id2label=id2label
    )
    metric = SemanticSegmentationMetric(
        len(id2label), class_names=[id2label[k] for k in sorted(id2label)]
    )
    indices = list(range(len(dataset)))[: options.max_images]
    for batch in _batched(indices, options.batch_size, options.progress):
        examples = [dataset.load_example(i) for i in batch]
        images = [Image.fromarray(example.image) for example in examples]
        results = _segment(model, processor, images, options)
        for example, result in zip(examples, results):
            metric.update(result["semantic"].cpu().numpy(), example.label_map)
    figures = metric.compute()
    figures["num_images"] = len(indices)
    return figures


def _evaluate_coco(
    model: Any, processor: Any, data_dir: Path, id2label: dict[int, str], options: EvaluateOptions
) -> dict[str, Any]:
    from maskformer.evaluation import (
        InstanceSegmentationMetric,
        PanopticQualityMetric,
        SemanticSegmentationMetric,
        read_panoptic_png,
    )

    files = find_coco_panoptic_files(data_dir, options)
    to_category = label_to_category(id2label, files.categories)
    isthing = {int(c["id"]): bool(c.get("isthing", 1)) for c in files.categories}
    to_label = {category: label for label, category in to_category.items()}
    stuff_labels = {label for label, category in to_category.items() if not isthing.get(category)}
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in files.categories}

    if options.task == "panoptic":
        metric: Any = PanopticQualityMetric(files.categories)
    elif options.task == "semantic":
        metric = SemanticSegmentationMetric(
            len(id2label), class_names=[id2label[k] for k in sorted(id2label)]
        )
    else:
        things = {c: names[c] for c in to_category.values() if isthing.get(c)}
        metric = InstanceSegmentationMetric(things)

    images = {image["id"]: image for image in files.data.get("images", [])}
    annotations = files.data["annotations"][: options.max_images]
    for batch in _batched(annotations, options.batch_size, options.progress):
        pictures = []
        for annotation in batch:
            info = images.get(annotation["image_id"])
            file_name = info["file_name"] if info else Path(annotation["file_name"]).stem + ".jpg"
            pictures.append(load_rgb_image(files.image_dir / file_name))
        results = _segment(model, processor, pictures, options, fuse=stuff_labels)
        for annotation, picture, result in zip(batch, pictures, results):
            gt_ids = read_panoptic_png(files.panoptic_dir / annotation["file_name"])
            if gt_ids.shape != (picture.height, picture.width):
                raise ValueError(
                    f"panoptic PNG {annotation['file_name']} and its image differ in size"
                )
            segments = annotation.get("segments_info", [])
            if options.task == "panoptic":
                pred_ids, pred_segments = panoptic_result_to_coco(result)
                for segment in pred_segments:
                    segment["category_id"] = to_category[segment["category_id"]]
                metric.update(pred_ids, pred_segments, gt_ids, segments)
            elif options.task == "semantic":
                metric.update(
                    result["semantic"].cpu().numpy(), _semantic_target(gt_ids, segments, to_label)
                )
            else:
                masks, labels, scores = instance_result_to_arrays(
                    result, picture.height, picture.width
                )
                categories = np.array([to_category[int(k)] for k in labels], dtype=np.int64)
                gt_things = [s for s in segments if isthing.get(int(s["category_id"]))]
                gt_masks = np.stack(
                    [gt_ids == s["id"] for s in gt_things] or [np.zeros(gt_ids.shape, dtype=bool)]
                )[: len(gt_things)]
                metric.update(
                    masks,
                    scores,
                    categories,
                    gt_masks,
                    [int(s["category_id"]) for s in gt_things],
                    [int(s.get("iscrowd", 0)) for s in gt_things],
                    image_id=annotation["image_id"],
                )
    figures = metric.compute()
    figures["num_images"] = len(annotations)
    return figures


def _semantic_target(
    segment_ids: np.ndarray, segments: Sequence[dict[str, Any]], to_label: dict[int, int]
) -> np.ndarray:
    """Class-index map of a panoptic ground truth; void and unknown categories -> 255."""
    target = np.full(segment_ids.shape, 255, dtype=np.int64)
    for segment in segments:  # one vectorised comparison per segment
        label = to_label.get(int(segment["category_id"]))
        if label is not None:
            target[segment_ids == int(segment["id"])] = label
    return target


def _segment(
    model: Any,
    processor: Any,
    images: list[Image.Image],
    options: EvaluateOptions,
    fuse: set[int] | None = None,
) -> list[dict[str, Any]]:
    return segment_batch(
        model,
        processor,
        images,
        options.task,
        options.threshold,
        options.mask_threshold,
        options.overlap_mask_area_threshold,
        fuse,
    )


# ---------------------------------------------------------------------------- prediction files
def evaluate_prediction_files(
    predictions: Path, data_dir: Path, options: EvaluateOptions, num_labels: int | None = None
) -> dict[str, Any]:
    """Score files ``maskformer predict`` (or another system) wrote.

    * semantic (``--format ade20k``): ``predictions`` is a folder of label PNGs named like the
      annotations (or a ``predict`` output folder holding ``semantic/``).
    * panoptic (``--format coco-panoptic``): ``predictions`` is a COCO panoptic prediction json
      whose PNGs lie in the folder of the same stem beside it (or a ``predict`` output folder
      holding ``panoptic.json`` and ``panoptic/``). Category ids are mapped to the data's as
      for a model (by name, else by position) when the json lists ``categories``.
    """
    from maskformer.evaluation import evaluate_panoptic_folders, evaluate_semantic_folders

    predictions, data_dir = Path(predictions), Path(data_dir)
    if not predictions.exists():
        raise FileNotFoundError(f"predictions {predictions} do not exist")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    if options.data_format == "coco-instances":
        from maskformer.engine.evaluate_instances import evaluate_instance_predictions

        return evaluate_instance_predictions(predictions, data_dir, options)
    if options.task == "instance":
        raise ValueError(
            "--predictions scores instance files against --format coco-instances data; "
            "otherwise use --model"
        )
    if options.task == "semantic":
        if options.data_format != "ade20k":
            raise ValueError("semantic --predictions are scored against --format ade20k folders")
        pred_dir = predictions / "semantic" if (predictions / "semantic").is_dir() else predictions
        if num_labels is None:
            num_labels = _ade20k_num_labels(data_dir, options.reduce_labels)
        return evaluate_semantic_folders(
            data_dir / "annotations",
            pred_dir,
            num_labels,
            reduce_labels=options.reduce_labels,
            progress=options.progress,
        )
    if options.data_format != "coco-panoptic":
        raise ValueError("panoptic --predictions are scored against --format coco-panoptic data")
    pred_json = predictions / "panoptic.json" if predictions.is_dir() else predictions
    pred_dir = pred_json.with_suffix("")
    files = find_coco_panoptic_files(data_dir, options)
    pred_data = _read_json(pred_json)
    remapped = _remap_categories_by_name(pred_data, files.categories)
    with tempfile.TemporaryDirectory() as scratch:
        if remapped is not None:
            pred_json = Path(scratch) / "predictions.json"
            pred_json.write_text(json.dumps(remapped))
        return evaluate_panoptic_folders(
            files.json_file,
            files.panoptic_dir,
            pred_json,
            pred_dir,
            categories=files.categories,
            progress=options.progress,
        )


def _remap_categories_by_name(
    pred_data: Any, categories: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """A copy of ``pred_data`` with the data's category ids, or None when nothing to remap.

    The prediction json's ``categories`` (what ``maskformer predict`` writes: the model's class
    ids and names) are matched to the data's by name, else by position when they are exactly
    the class indices ``0 .. K-1`` of K = the data's category count.
    """
    if not isinstance(pred_data, dict) or not pred_data.get("categories"):
        return None
    pred_names = {int(c["id"]): str(c.get("name")) for c in pred_data["categories"]}
    mapping = _match_categories(pred_names, categories)
    if mapping is None or all(k == v for k, v in mapping.items()):
        return None
    annotations = []
    for annotation in pred_data["annotations"]:
        segments = [
            {**s, "category_id": mapping.get(int(s["category_id"]), s["category_id"])}
            for s in annotation.get("segments_info", [])
        ]
        annotations.append({**annotation, "segments_info": segments})
    return {**pred_data, "annotations": annotations, "categories": list(categories)}


def _ade20k_num_labels(data_dir: Path, reduce_labels: bool) -> int:
    object_info = data_dir / "objectInfo150.csv"
    if object_info.is_file():
        rows = [line for line in object_info.read_text().splitlines()[1:] if line.strip()]
        return len(rows) + (0 if reduce_labels else 1)
    raise ValueError(f"{data_dir} has no objectInfo150.csv; pass --num-labels")


# -------------------------------------------------------------------------------------- output
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


def _batched(items: Sequence[Any], size: int, progress: bool) -> Iterator[Sequence[Any]]:
    from tqdm import tqdm

    with tqdm(total=len(items), unit="image", desc="evaluate", disable=not progress) as bar:
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            yield batch
            bar.update(len(batch))


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read json {path}: {error}") from None
