"""Mask AP on COCO instance json data: ``maskformer evaluate --format coco-instances``.

The data is a COCO instance json (``--coco-json``, default: the one json in the data folder that
holds ``images`` and ``annotations``) and its images (``--image-dir``, default ``DATA/images``,
else the data folder itself). Ground truth is read as for training
(:mod:`maskformer.data.coco_instances`: polygons, RLE, crowd regions); the figures are those of
pycocotools' COCOeval (``iouType="segm"``) through
:class:`maskformer.evaluation.InstanceSegmentationMetric`, with crowd regions as COCO crowd
annotations. Object areas for APs / APm / APl are the areas of the decoded masks.

Two sources of predictions:

* a model: its class ``k`` is category ``config.label_category_ids[k]`` when the config has
  them (models trained on such data do), else matched by name, else by position among the
  categories sorted by id;
* a COCO results json (what ``maskformer predict --task instance`` writes, or any system):
  ``[{"image_id", "category_id", "segmentation": RLE, "score"}]``. ``image_id`` is the data's
  image id, or the stem of the image's file name (``predict`` writes the stem). ``category_id``
  must be one of the data's categories.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maskformer.data.coco_instances import (
    CocoInstanceIndex,
    annotation_rle,
    image_size,
    original_category_ids,
    read_coco_instances,
)
from maskformer.utils.coco import encode_rle


def find_coco_instance_files(
    data_dir: Path, json_file: Path | None = None, image_dir: Path | None = None
) -> tuple[Path, Path]:
    """The json and image folder of a COCO instance data folder (explicit paths win)."""
    data_dir = Path(data_dir)
    if json_file is None:
        found = [p for p in sorted(data_dir.glob("*.json")) if _looks_like_instances(p)]
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise FileNotFoundError(
                f"need exactly one COCO instance json in {data_dir} (found: {names}); "
                "name it with --coco-json"
            )
        json_file = found[0]
    if image_dir is None:
        image_dir = data_dir / "images" if (data_dir / "images").is_dir() else data_dir
    if not Path(image_dir).is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    return Path(json_file), Path(image_dir)


def _looks_like_instances(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(data, dict) or "images" not in data:
        return False
    annotations = data.get("annotations")
    return isinstance(annotations, list) and not (
        annotations and isinstance(annotations[0], dict) and "segments_info" in annotations[0]
    )  # a COCO panoptic json lists segments_info instead


def label_category_ids(config: Any, index: CocoInstanceIndex) -> list[int]:
    """Model label -> data category id (``label_category_ids``, else by name, else by position)."""
    known = set(index.category_ids)
    ids = original_category_ids(config)
    id2label = {int(k): str(v) for k, v in config.id2label.items()}
    if ids is None:
        by_name = {str(c.get("name")): int(c["id"]) for c in index.categories}
        if all(name in by_name for name in id2label.values()):
            ids = [by_name[id2label[k]] for k in sorted(id2label)]
        elif sorted(id2label) == list(range(len(index.category_ids))):
            ids = list(index.category_ids)
        else:
            raise ValueError(
                f"the model's {len(id2label)} classes match neither the names nor the number of "
                f"the {len(known)} categories of {index.json_file}, and its config has no "
                "label_category_ids"
            )
    unknown = sorted(set(ids) - known)
    if unknown:
        raise ValueError(
            f"the model's label_category_ids {unknown} are not categories of {index.json_file}"
        )
    return ids


def _metric(index: CocoInstanceIndex) -> Any:
    from maskformer.evaluation import InstanceSegmentationMetric

    return InstanceSegmentationMetric({int(c["id"]): str(c.get("name")) for c in index.categories})


def _ground_truth(annotations: Sequence[Mapping[str, Any]], height: int, width: int) -> list:
    return [
        {
            "segmentation": annotation_rle(a, height, width),
            "category_id": int(a["category_id"]),
            "iscrowd": int(bool(a.get("iscrowd", 0))),
        }
        for a in annotations
    ]


def evaluate_model_on_coco_instances(
    model: Any, processor: Any, data_dir: Path, options: Any
) -> dict[str, Any]:
    """Run ``model`` over the images of the json and return mask AP figures."""
    from maskformer.engine.evaluate import _batched
    from maskformer.engine.predict import instance_result_to_arrays, load_rgb_image, segment_batch

    json_file, image_dir = find_coco_instance_files(
        data_dir, options.annotations, options.image_dir
    )
    index = read_coco_instances(json_file)
    to_category = label_category_ids(model.config, index)
    images = index.images[: options.max_images]
    metric = _metric(index)
    for batch in _batched(images, options.batch_size, options.progress):
        pictures = [load_rgb_image(image_dir / str(info["file_name"])) for info in batch]
        results = segment_batch(
            model,
            processor,
            pictures,
            "instance",
            options.threshold,
            options.mask_threshold,
            options.overlap_mask_area_threshold,
        )
        for info, picture, result in zip(batch, pictures, results):
            height, width = picture.height, picture.width
            masks, labels, scores = instance_result_to_arrays(result, height, width)
            detections = [
                {"segmentation": rle, "category_id": to_category[int(label)], "score": float(s)}
                for rle, label, s in zip(encode_rle(masks), labels, scores)
            ]
            gt = _ground_truth(index.annotations[int(info["id"])], height, width)
            metric.update_from_rle(height, width, gt, detections, image_id=int(info["id"]))
    return _figures(metric, index, len(images))


def evaluate_instance_predictions(
    predictions: Path, data_dir: Path, options: Any
) -> dict[str, Any]:
    """Score a COCO results json (or a ``predict`` output folder holding ``instances.json``)."""
    predictions = Path(predictions)
    results_file = predictions / "instances.json" if predictions.is_dir() else predictions
    if not results_file.is_file():
        raise FileNotFoundError(f"instance predictions {results_file} do not exist")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{results_file} is not valid JSON ({error})") from None
    if isinstance(results, dict) and isinstance(results.get("annotations"), list):
        results = results["annotations"]
    if not isinstance(results, list):
        raise ValueError(
            f"{results_file}: expected a COCO results list [{{image_id, category_id, "
            "segmentation, score}}]"
        )
    json_file, image_dir = find_coco_instance_files(
        data_dir, options.annotations, options.image_dir
    )
    index = read_coco_instances(json_file)
    images = index.images[: options.max_images]
    by_image = _group_by_image(results, results_file, index, {int(i["id"]) for i in images})
    metric = _metric(index)
    for info in images:
        height, width = image_size(info, image_dir)
        gt = _ground_truth(index.annotations[int(info["id"])], height, width)
        detections = by_image.get(int(info["id"]), [])
        metric.update_from_rle(height, width, gt, detections, image_id=int(info["id"]))
    return _figures(metric, index, len(images))


def _group_by_image(
    results: list[Any], results_file: Path, index: CocoInstanceIndex, evaluated: set[int]
) -> dict[int, list[dict[str, Any]]]:
    """Detections per data image id; ``ValueError`` naming a bad entry."""
    ids = {int(info["id"]) for info in index.images}
    stems: dict[str, int] = {}
    for info in index.images:
        stem = Path(str(info["file_name"])).stem
        stems[stem] = int(info["id"])
        if stem.isdigit():
            stems.setdefault(str(int(stem)), int(info["id"]))
    categories = set(index.category_ids)
    grouped: dict[int, list[dict[str, Any]]] = {}
    for position, entry in enumerate(results):
        where = f"{results_file}: prediction #{position}"
        if not isinstance(entry, dict) or any(
            key not in entry for key in ("image_id", "category_id", "segmentation", "score")
        ):
            raise ValueError(f"{where} needs image_id, category_id, segmentation and score")
        raw = entry["image_id"]
        image_id = raw if isinstance(raw, int) and raw in ids else stems.get(str(raw))
        if image_id is None:
            raise ValueError(
                f"{where} has image_id {raw!r}, which is neither an image id nor a file name "
                f"stem of {index.json_file}"
            )
        if int(entry["category_id"]) not in categories:
            raise ValueError(
                f"{where} has category_id {entry['category_id']}, which is not a category of "
                f"{index.json_file} (a model without label_category_ids writes its class "
                "indices; evaluate it with --model instead)"
            )
        if image_id in evaluated:
            grouped.setdefault(image_id, []).append(entry)
    return grouped


def _figures(metric: Any, index: CocoInstanceIndex, num_images: int) -> dict[str, Any]:
    figures = metric.compute()
    figures["category_names"] = {int(c["id"]): str(c.get("name")) for c in index.categories}
    figures["num_images"] = num_images
    return figures
