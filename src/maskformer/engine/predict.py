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

``image_id`` is the file name's stem, as an integer when the stem is ASCII digits (the COCO
convention, ``000000142238.jpg`` -> 142238). An image that cannot be read or segmented
(corrupt, too thin to resize, ...) is reported in :attr:`PredictionReport.failed` and skipped;
the others are written. Every file appears atomically, the json files are merged with what an
earlier run left (see :mod:`maskformer.engine.prediction_files`), and a lock file keeps a
second run out of the folder while one is writing.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from maskformer.engine.prediction_files import (  # noqa: F401 - re-exported, the public names
    check_output_name,
    image_id_of,
    instance_records,
    instance_result_to_arrays,
    label_png,
    merge_records,
    output_lock,
    panoptic_png,
    panoptic_result_to_coco,
    prepare_output_dir,
    read_records,
    save_png,
    write_records,
)
from maskformer.engine.segment import (  # noqa: F401 - re-exported
    TASKS,
    load_rgb_image,
    segment_batch,
    segment_each,
)
from maskformer.visualize import overlay_instances, overlay_panoptic, overlay_semantic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def check_probability(name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite number in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_positive_int(name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


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
        check_positive_int("batch_size", self.batch_size)
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            check_probability(name, getattr(self, name))
        fuse = self.label_ids_to_fuse or ()
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in fuse):
            raise ValueError(f"label_ids_to_fuse must hold class ids >= 0, got {sorted(fuse)}")
        self.output_dir = Path(self.output_dir)


@dataclass
class PredictionReport:
    """Files written and inputs that could not be read or segmented (path, reason)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    num_images: int = 0


# --------------------------------------------------------------------------------------- inputs
def collect_image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (their image files, sorted, not recursive) and glob patterns.

    Raises:
        FileNotFoundError: an input that is neither a file, a folder nor a matching pattern.
        ValueError: no inputs, or two inputs whose output names or image ids would collide.
    """
    if not inputs:
        raise ValueError("no input images given")
    paths: list[Path] = []
    for entry in inputs:
        entry_path = Path(entry)
        if entry_path.is_dir():
            paths.extend(
                sorted(
                    p
                    for p in entry_path.iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                )
            )
        elif entry_path.is_file():
            paths.append(entry_path)
        elif entry_path.exists():
            raise ValueError(f"input {entry} is neither a file nor a folder")
        elif glob.has_magic(str(entry)):
            matches = sorted(Path(p) for p in glob.glob(str(entry)) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"input pattern {entry} matches no files")
            paths.extend(matches)
        else:
            raise FileNotFoundError(f"input {entry} does not exist")
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise ValueError(f"no image files found in {', '.join(map(str, inputs))}")
    stems: dict[str, Path] = {}
    ids: dict[int | str, Path] = {}
    for path in unique:
        if path.stem in stems:
            raise ValueError(
                f"inputs {stems[path.stem]} and {path} would write outputs of the same name "
                f"{path.stem!r}; predict them into different --output-dir folders"
            )
        image_id = image_id_of(path)
        if image_id in ids:
            raise ValueError(
                f"inputs {ids[image_id]} and {path} would get the same image_id {image_id!r}; "
                "predict them into different --output-dir folders"
            )
        stems[path.stem] = ids[image_id] = path
    return unique


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


def check_outputs(paths: Sequence[Path], options: PredictOptions) -> None:
    """Everything about the output folder that can fail, checked before a model is loaded:
    existing outputs (without ``overwrite``), a folder that cannot be created or written, an
    existing json that cannot be merged, another run holding the folder's lock."""
    check_no_overwrite(paths, options)
    prepare_output_dir(options.output_dir, [])  # the lock file lives here
    for folder in _output_folders(paths, options):  # created when the run starts
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"output folder {folder} is a file, not a folder")
    target = _json_target(options)
    if target is not None and target.exists():
        read_records(target, options.task)
    with output_lock(options.output_dir):
        pass


# -------------------------------------------------------------------------------------- running
def predict_images(
    model: torch.nn.Module,
    processor: Any,
    paths: Sequence[Path],
    options: PredictOptions,
) -> PredictionReport:
    """Segment every image of ``paths`` and write the files described in the module docstring.

    ``model`` must already be on its device and in eval mode; inputs follow its first parameter's
    device and dtype. Images that cannot be read or segmented are skipped and listed in the
    report; whatever was finished is kept when the run stops early (an error, Ctrl-C).
    """
    check_no_overwrite(paths, options)
    prepare_output_dir(options.output_dir, _output_folders(paths, options))
    with output_lock(options.output_dir):
        return _predict_locked(model, processor, paths, options)


def _predict_locked(
    model: torch.nn.Module, processor: Any, paths: Sequence[Path], options: PredictOptions
) -> PredictionReport:
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    categories = [{"id": k, "name": v} for k, v in sorted(id2label.items())]
    target = _json_target(options)
    old_records: list[dict[str, Any]] = []
    if target is not None and target.exists():  # only with overwrite: merged, not replaced
        old_records, old_categories = read_records(target, options.task)
        if old_categories is not None and old_categories != categories:
            raise ValueError(
                f"{target} lists other categories (another model wrote it); remove it or use "
                "another --output-dir"
            )
    report = PredictionReport()
    records: list[dict[str, Any]] = []
    finished = False
    progress = _progress_bar(len(paths), options.progress)
    try:
        for batch in _batches(paths, options.batch_size):
            images, loaded = [], []
            for path in batch:
                try:
                    check_output_name(path)
                    images.append(load_rgb_image(path))
                    loaded.append(path)
                except (ValueError, OSError) as error:
                    report.failed.append((path, str(error)))
            progress.update(len(batch) - len(loaded))
            for path, image, result in segment_each(model, processor, loaded, images, options):
                if isinstance(result, str):
                    report.failed.append((path, result))
                else:
                    report.written += _write_result(path, image, result, options, id2label, records)
                    report.num_images += 1
                progress.update(1)
        finished = True
    finally:
        progress.close()
        if target is not None and (finished or records):  # finished outputs are never lost
            if options.task == "instance":
                records = _original_category_ids(model.config, records)
            merged = merge_records(old_records, records)
            report.written.append(write_records(target, options.task, merged, categories))
    return report


# -------------------------------------------------------------------------------------- writing
def _write_result(
    path: Path,
    image: Image.Image,
    result: dict[str, Any],
    options: PredictOptions,
    id2label: dict[int, str],
    records: list[dict[str, Any]],
) -> list[Path]:
    """Write the per-image files of ``result`` and append its json records to ``records``
    (only once its files are complete)."""
    out, name = options.output_dir, f"{path.stem}.png"
    written, new_records = [], []
    if options.task == "semantic":
        classes = result["semantic"].cpu().numpy()
        written.append(save_png(label_png(classes, len(id2label)), out / "semantic" / name))
        draw_overlay = partial(overlay_semantic, image, classes, id2label, ignore_index=None)
    elif options.task == "panoptic":
        ids, segments = panoptic_result_to_coco(result)
        written.append(save_png(panoptic_png(ids), out / "panoptic" / name))
        new_records.append(
            {"image_id": image_id_of(path), "file_name": name, "segments_info": segments}
        )
        draw_overlay = partial(overlay_panoptic, image, ids, segments, id2label)
    else:
        masks, labels, scores = instance_result_to_arrays(result, image.height, image.width)
        new_records += instance_records(image_id_of(path), masks, labels, scores)
        draw_overlay = partial(overlay_instances, image, masks, labels, id2label, scores=scores)
    if options.overlay:  # drawn only when it is written
        written.append(save_png(draw_overlay(), out / "overlays" / name))
    records += new_records
    return written


def _original_category_ids(config: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instance records with the training data's own category ids, when the config has them
    (``label_category_ids``, set from COCO instance data); unchanged otherwise."""
    from maskformer.data.coco_instances import original_category_ids

    category_ids = original_category_ids(config)
    if category_ids is None:
        return records
    return [{**r, "category_id": category_ids[r["category_id"]]} for r in records]


def _json_target(options: PredictOptions) -> Path | None:
    names = {"panoptic": "panoptic.json", "instance": "instances.json"}
    return options.output_dir / names[options.task] if options.task in names else None


def _output_folders(paths: Sequence[Path], options: PredictOptions) -> list[Path]:
    return sorted({p.parent for p in output_paths(paths, options)})


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="image", desc="predict", disable=not enabled)
