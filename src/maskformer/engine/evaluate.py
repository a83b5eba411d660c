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

An image that cannot be read or segmented, or whose ground truth cannot be read, is skipped:
the figures cover the others, and ``"skipped"`` in the results lists one reason per skipped
image (each naming its file). A data set with no images, or none that could be evaluated, is a
``ValueError``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from maskformer.engine.coco_layout import (  # noqa: F401 - re-exported
    CocoPanopticFiles,
    _match_categories,
    find_coco_panoptic_files,
    label_to_category,
)
from maskformer.engine.evaluate_report import (  # noqa: F401 - re-exported
    check_output_file,
    format_results,
    to_jsonable,
)
from maskformer.engine.predict import (
    TASKS,
    check_positive_int,
    check_probability,
    instance_result_to_arrays,
    load_rgb_image,
    panoptic_result_to_coco,
    segment_each,
)
from maskformer.engine.segment import first_line
from maskformer.utils.constants import IGNORE_INDEX

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
        check_positive_int("batch_size", self.batch_size)
        if self.max_images is not None:
            check_positive_int("max_images", self.max_images)
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            check_probability(name, getattr(self, name))


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
    skipped: list[str] = []
    evaluated = 0
    for batch in _batched(indices, options.batch_size, options.progress):
        paths, images, labels = [], [], []
        for index in batch:
            path = dataset.pairs[index][0]
            try:
                example = dataset.load_example(index)
            except (ValueError, OSError) as error:
                skipped.append(_reason(path, error))
                continue
            paths.append(path)
            images.append(Image.fromarray(example.image))
            labels.append(example.label_map)
        results = segment_each(model, processor, paths, images, _run_options(options))
        for (_, _, result), label_map in zip(results, labels):  # in input order
            if isinstance(result, str):
                skipped.append(result)
                continue
            metric.update(result["semantic"].cpu().numpy(), label_map)
            evaluated += 1
    return _finish(metric, evaluated, skipped, data_dir)


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

    listed = files.data.get("images")
    images = {
        image.get("id"): image
        for image in (listed if isinstance(listed, list) else [])
        if isinstance(image, dict) and isinstance(image.get("id"), (int, str))
    }
    annotations = files.data["annotations"][: options.max_images]
    run_options = _run_options(options, fuse=stuff_labels)
    skipped: list[str] = []
    evaluated = 0
    for batch in _batched(annotations, options.batch_size, options.progress):
        paths, pictures, truths = [], [], []
        for annotation in batch:
            info = images.get(annotation["image_id"])
            file_name = (info or {}).get("file_name")
            if not isinstance(file_name, str) or not file_name:  # the COCO convention: STEM.jpg
                file_name = Path(annotation["file_name"]).stem + ".jpg"
            path = files.image_dir / file_name
            try:
                picture = load_rgb_image(path)
                gt_ids = read_panoptic_png(files.panoptic_dir / annotation["file_name"])
                if gt_ids.shape != (picture.height, picture.width):
                    raise ValueError(
                        f"panoptic PNG {files.panoptic_dir / annotation['file_name']} is "
                        f"{gt_ids.shape[1]}x{gt_ids.shape[0]} but its image is "
                        f"{picture.width}x{picture.height}"
                    )
            except (ValueError, OSError) as error:
                skipped.append(_reason(path, error))
                continue
            paths.append(path)
            pictures.append(picture)
            truths.append((annotation, gt_ids))
        results = segment_each(model, processor, paths, pictures, run_options)
        for (_, picture, result), (annotation, gt_ids) in zip(results, truths):  # input order
            if isinstance(result, str):
                skipped.append(result)
                continue
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
            evaluated += 1
    return _finish(metric, evaluated, skipped, files.json_file)


def _run_options(options: EvaluateOptions, fuse: set[int] | None = None) -> SimpleNamespace:
    """What :func:`segment_each` reads: the task, the thresholds and the classes to fuse."""
    return SimpleNamespace(
        task=options.task,
        threshold=options.threshold,
        mask_threshold=options.mask_threshold,
        overlap_mask_area_threshold=options.overlap_mask_area_threshold,
        label_ids_to_fuse=fuse,
    )


def _reason(path: Path, error: BaseException) -> str:
    """Why ``path`` was skipped, naming it once."""
    message = first_line(error)
    return message if str(path) in message else f"{path}: {message}"


def _finish(metric: Any, evaluated: int, skipped: list[str], source: Path) -> dict[str, Any]:
    if not evaluated:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise ValueError(f"no image of {source} could be evaluated ({len(skipped)} skipped{first})")
    figures = metric.compute()
    figures["num_images"] = evaluated
    if skipped:
        figures["skipped"] = skipped
    return figures


def _semantic_target(
    segment_ids: np.ndarray, segments: Sequence[dict[str, Any]], to_label: dict[int, int]
) -> np.ndarray:
    """Class-index map of a panoptic ground truth; void and unknown categories -> IGNORE_INDEX."""
    target = np.full(segment_ids.shape, IGNORE_INDEX, dtype=np.int64)
    for segment in segments:  # one vectorised comparison per segment
        label = to_label.get(int(segment["category_id"]))
        if label is not None:
            target[segment_ids == int(segment["id"])] = label
    return target


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
    from maskformer.evaluation import (
        evaluate_panoptic_folders,
        evaluate_semantic_folders,
        load_panoptic_json,
    )

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
    pred_data = load_panoptic_json(pred_json)  # checked: every field scoring needs
    remapped = _remap_categories_by_name(pred_data, files.categories)
    with tempfile.TemporaryDirectory() as scratch:
        if remapped is not None:  # a scratch copy, removed with its folder
            pred_json = Path(scratch) / "predictions.json"
            pred_json.write_text(json.dumps(remapped), encoding="utf-8")
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
        try:
            text = object_info.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {object_info}: {error}") from None
        rows = [line for line in text.splitlines()[1:] if line.strip()]
        if not rows:
            raise ValueError(f"{object_info} lists no classes; pass --num-labels")
        return len(rows) + (0 if reduce_labels else 1)
    raise ValueError(f"{data_dir} has no objectInfo150.csv; pass --num-labels")


def _batched(items: Sequence[Any], size: int, progress: bool) -> Iterator[Sequence[Any]]:
    from tqdm import tqdm

    with tqdm(total=len(items), unit="image", desc="evaluate", disable=not progress) as bar:
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            yield batch
            bar.update(len(batch))
