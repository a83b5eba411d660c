"""Batched inference over image files: ``maskformer predict``.

Images are read with PIL, prepared by the image processor, run through the model under
``torch.inference_mode()`` and post-processed per task at their original size. What is written
under ``output_dir`` for an input ``NAME.jpg``:

=========  ==================================================================================
task       files
=========  ==================================================================================
semantic   ``semantic/NAME.png``: class ids, mode "L" (8-bit) or "I;16" when ids reach 256
panoptic   ``panoptic/NAME.png``: COCO panoptic RGB ids (id = R + 256 G + 256^2 B, 0 = void),
           and ``panoptic.json``: ``{"annotations": [{"image_id", "file_name",
           "segments_info": [{"id", "category_id", "score"}]}], "categories": [...]}``
instance   ``instances.json``: COCO results ``[{"image_id", "category_id", "segmentation":
           {"size", "counts" (str)}, "score"}]``; ``category_id`` is the original COCO
           category id when the config has ``label_category_ids``, else the class index
all        ``overlays/NAME.png``: the photo with class colours, outlines and a legend
=========  ==================================================================================

``image_id`` is the file name's stem, as an integer when the stem is all digits (the COCO
convention, ``000000142238.jpg`` -> 142238). Unreadable images are reported by name and skipped;
the caller decides the exit status from :attr:`PredictionReport.failed`.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from maskformer.visualize import overlay_instances, overlay_panoptic, overlay_semantic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TASKS = ("semantic", "instance", "panoptic")


@dataclass
class PredictOptions:
    """What ``predict_images`` does; the thresholds are the post-processors' arguments."""

    task: str = "panoptic"
    output_dir: Path = Path("predictions")
    batch_size: int = 2
    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_mask_area_threshold: float = 0.8
    label_ids_to_fuse: set[int] | None = None
    overlay: bool = True
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.output_dir = Path(self.output_dir)


@dataclass
class PredictionReport:
    """Files written and inputs that could not be read (path, reason)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    num_images: int = 0


# --------------------------------------------------------------------------------------- inputs
def collect_image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (their image files, sorted, not recursive) and glob patterns.

    Raises:
        FileNotFoundError: an input that is neither a file, a folder nor a matching pattern.
        ValueError: no inputs, or two inputs whose output names would collide.
    """
    if not inputs:
        raise ValueError("no input images given")
    paths: list[Path] = []
    for entry in inputs:
        entry_path = Path(entry)
        if entry_path.is_dir():
            paths.extend(
                sorted(p for p in entry_path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            )
        elif entry_path.is_file():
            paths.append(entry_path)
        elif glob.has_magic(str(entry)):
            matches = sorted(Path(p) for p in glob.glob(str(entry)) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"input pattern {entry} matches no files")
            paths.extend(matches)
        else:
            raise FileNotFoundError(f"input {entry} does not exist")
    unique = list(dict.fromkeys(paths))
    stems: dict[str, Path] = {}
    for path in unique:
        if path.stem in stems:
            raise ValueError(
                f"inputs {stems[path.stem]} and {path} would write outputs of the same name "
                f"{path.stem!r}; predict them into different --output-dir folders"
            )
        stems[path.stem] = path
    if not unique:
        raise ValueError(f"no image files found in {', '.join(map(str, inputs))}")
    return unique


def image_id_of(path: Path) -> int | str:
    """COCO-style image id of a file: its stem, as an int when it is all digits."""
    return int(path.stem) if path.stem.isdigit() else path.stem


def output_paths(paths: Sequence[Path], options: PredictOptions) -> list[Path]:
    """Every file ``predict_images`` will write for ``paths``."""
    out = options.output_dir
    files: list[Path] = []
    if options.task == "semantic":
        files += [out / "semantic" / f"{p.stem}.png" for p in paths]
    elif options.task == "panoptic":
        files += [out / "panoptic" / f"{p.stem}.png" for p in paths]
        files.append(out / "panoptic.json")
    else:
        files.append(out / "instances.json")
    if options.overlay:
        files += [out / "overlays" / f"{p.stem}.png" for p in paths]
    return files


def check_no_overwrite(paths: Sequence[Path], options: PredictOptions) -> None:
    """Raise ``FileExistsError`` naming the first output that exists, unless ``overwrite``."""
    if options.overwrite:
        return
    existing = [p for p in output_paths(paths, options) if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(
            f"output file {existing[0]} already exists{more}; pass --overwrite to replace it"
        )


# -------------------------------------------------------------------------------------- running
def predict_images(
    model: torch.nn.Module,
    processor: Any,
    paths: Sequence[Path],
    options: PredictOptions,
) -> PredictionReport:
    """Segment every image of ``paths`` and write the files described in the module docstring.

    ``model`` must already be on its device and in eval mode; inputs follow its first parameter's
    device and dtype.
    """
    check_no_overwrite(paths, options)
    out = options.output_dir
    for folder in {p.parent for p in output_paths(paths, options)}:
        folder.mkdir(parents=True, exist_ok=True)
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    report = PredictionReport()
    records: list[dict[str, Any]] = []

    progress = _progress_bar(len(paths), options.progress)
    for batch in _batches(paths, options.batch_size):
        images, loaded = [], []
        for path in batch:
            try:
                images.append(load_rgb_image(path))
                loaded.append(path)
            except ValueError as error:
                report.failed.append((path, str(error)))
                progress.write(f"skipped {path}: {error}")
        progress.update(len(batch) - len(loaded))
        if not images:
            continue
        results = segment_batch(
            model,
            processor,
            images,
            options.task,
            options.threshold,
            options.mask_threshold,
            options.overlap_mask_area_threshold,
            options.label_ids_to_fuse,
        )
        for path, image, result in zip(loaded, images, results):
            report.written += _write_result(path, image, result, options, id2label, records)
            report.num_images += 1
            progress.update(1)
    progress.close()

    if options.task == "panoptic":
        categories = [{"id": k, "name": v} for k, v in sorted(id2label.items())]
        payload = {"annotations": records, "categories": categories}
        report.written.append(_write_json(out / "panoptic.json", payload))
    elif options.task == "instance":
        from maskformer.data.coco_instances import original_category_ids

        category_ids = original_category_ids(model.config)  # the training data's own ids
        if category_ids is not None:
            records = [{**r, "category_id": category_ids[r["category_id"]]} for r in records]
        report.written.append(_write_json(out / "instances.json", records))
    return report


def load_rgb_image(path: Path) -> Image.Image:
    """The image at ``path`` as RGB; ``ValueError`` naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def segment_batch(
    model: torch.nn.Module,
    processor: Any,
    images: Sequence[Image.Image],
    task: str,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: set[int] | None = None,
) -> list[dict[str, Any]]:
    """Segment RGB ``images`` in one forward pass; one post-processed result per image, at the
    image's own ``(height, width)``.

    Results are the processor's: ``{"semantic": (H, W) class ids}`` for ``"semantic"``, and the
    ``{"segmentation", "segments_info"}`` dicts of the panoptic / instance post-processors
    (instance: ``segmentation`` holds ``(N, H, W)`` binary maps).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    parameter = next(model.parameters())
    inputs = processor(images=list(images), return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(parameter.device, parameter.dtype)
    pixel_mask = inputs.get("pixel_mask")
    if pixel_mask is not None:
        pixel_mask = pixel_mask.to(parameter.device)
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
    class_logits = outputs.class_queries_logits.float()
    mask_logits = outputs.masks_queries_logits.float()

    height, width = pixel_values.shape[-2:]
    results = []
    for index, image in enumerate(images):
        # Drop the batch padding before resizing to the original size, so padded images keep
        # their geometry: the valid region is the pixel mask's extent at mask resolution.
        if pixel_mask is not None:
            valid_rows = int(pixel_mask[index].any(dim=1).sum())
            valid_columns = int(pixel_mask[index].any(dim=0).sum())
        else:
            valid_rows, valid_columns = height, width
        mask_height = math.ceil(valid_rows * mask_logits.shape[-2] / height)
        mask_width = math.ceil(valid_columns * mask_logits.shape[-1] / width)
        single = SimpleNamespace(
            class_queries_logits=class_logits[index : index + 1],
            masks_queries_logits=mask_logits[index : index + 1, :, :mask_height, :mask_width],
        )
        target_sizes = [(image.height, image.width)]
        if task == "semantic":
            semantic = processor.post_process_semantic_segmentation(
                single, target_sizes=target_sizes
            )
            results.append({"semantic": semantic[0]})
        elif task == "panoptic":
            result = processor.post_process_panoptic_segmentation(
                single,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                label_ids_to_fuse=set(label_ids_to_fuse or ()),
                target_sizes=target_sizes,
            )
            results.append(result[0])
        else:
            result = processor.post_process_instance_segmentation(
                single,
                threshold=threshold,
                mask_threshold=mask_threshold,
                overlap_mask_area_threshold=overlap_mask_area_threshold,
                target_sizes=target_sizes,
                return_binary_maps=True,
            )
            results.append(result[0])
    return results


# -------------------------------------------------------------------------------------- writing
def _write_result(
    path: Path,
    image: Image.Image,
    result: dict[str, Any],
    options: PredictOptions,
    id2label: dict[int, str],
    records: list[dict[str, Any]],
) -> list[Path]:
    """Write the per-image files of ``result`` and append its json records to ``records``."""
    out = options.output_dir
    written = []
    if options.task == "semantic":
        classes = result["semantic"].cpu().numpy()
        written.append(_save_png(label_png(classes, len(id2label)), out / "semantic", path))
        draw_overlay = partial(overlay_semantic, image, classes, id2label, ignore_index=None)
    elif options.task == "panoptic":
        ids, segments = panoptic_result_to_coco(result)
        written.append(_save_png(panoptic_png(ids), out / "panoptic", path))
        records.append(
            {
                "image_id": image_id_of(path),
                "file_name": f"{path.stem}.png",
                "segments_info": segments,
            }
        )
        draw_overlay = partial(overlay_panoptic, image, ids, segments, id2label)
    else:
        masks, labels, scores = instance_result_to_arrays(result, image.height, image.width)
        records.extend(instance_records(image_id_of(path), masks, labels, scores))
        draw_overlay = partial(overlay_instances, image, masks, labels, id2label, scores=scores)
    if options.overlay:  # drawn only when it is written
        written.append(_save_png(draw_overlay(), out / "overlays", path))
    return written


def label_png(classes: np.ndarray, num_labels: int) -> Image.Image:
    """Class-id map ``(H, W)`` as an 8-bit PNG image, or 16-bit when ids can reach 256."""
    if num_labels <= 256 and (classes.size == 0 or classes.max() < 256):
        return Image.fromarray(classes.astype(np.uint8))
    if classes.size and classes.max() >= 65536:
        raise ValueError(f"class id {int(classes.max())} does not fit a 16-bit label PNG")
    return Image.fromarray(classes.astype(np.uint16))


def panoptic_png(ids: np.ndarray) -> Image.Image:
    """COCO panoptic RGB encoding of segment ids ``(H, W)``: id = R + 256 G + 256^2 B."""
    ids = ids.astype(np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def panoptic_result_to_coco(result: dict[str, Any]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Segment map ``(H, W)`` int64 (0 = void) and COCO ``segments_info`` of a panoptic result.

    Negative ids ("nothing found" in some versions) become 0; fused classes listed once per
    query become one entry with the highest score.
    """
    ids = result["segmentation"].cpu().numpy().astype(np.int64)
    ids[ids < 0] = 0
    segments: dict[int, dict[str, Any]] = {}
    for info in result["segments_info"]:
        segment_id = int(info["id"])
        entry = {
            "id": segment_id,
            "category_id": int(info["label_id"]),
            "score": float(info["score"]),
        }
        if segment_id not in segments or entry["score"] > segments[segment_id]["score"]:
            segments[segment_id] = entry
    present = set(np.unique(ids).tolist())
    return ids, [segments[k] for k in sorted(segments) if k in present]


def instance_result_to_arrays(
    result: dict[str, Any], height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary masks ``(N, H, W)`` bool, labels ``(N,)`` and scores ``(N,)`` of an instance result."""
    infos = result["segments_info"]
    if not infos:
        return np.zeros((0, height, width), dtype=bool), np.zeros(0, np.int64), np.zeros(0)
    masks = result["segmentation"].cpu().numpy() > 0.5
    labels = np.array([int(info["label_id"]) for info in infos], dtype=np.int64)
    scores = np.array([float(info["score"]) for info in infos], dtype=np.float64)
    return masks.reshape(len(infos), height, width), labels, scores


def instance_records(
    image_id: int | str, masks: np.ndarray, labels: np.ndarray, scores: np.ndarray
) -> list[dict[str, Any]]:
    """COCO results entries with compressed RLE (``counts`` as a str) for ``masks (N, H, W)``."""
    if len(masks) == 0:
        return []
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [
        {
            "image_id": image_id,
            "category_id": int(label),
            "segmentation": {
                "size": [int(s) for s in rle["size"]],
                "counts": rle["counts"].decode(),
            },
            "score": float(score),
        }
        for rle, label, score in zip(encoded, labels, scores)
    ]


def _save_png(image: Image.Image, folder: Path, source: Path) -> Path:
    target = folder / f"{source.stem}.png"
    image.save(target)
    return target


def _write_json(target: Path, payload: Any) -> Path:
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    temporary.replace(target)
    return target


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="image", desc="predict", disable=not enabled)
