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

Many images: files are decoded by background workers (:mod:`maskformer.engine.predict_inputs`)
while the model runs; images of one processed size share a forward pass, never padded
(:func:`~maskformer.engine.segment.segment_each`). Under ``torchrun`` each process takes a
disjoint shard of the sorted list and rank 0 merges the json files at the end
(:mod:`maskformer.engine.predict_distributed`). ``predict_manifest.json`` and the per-process
journals (:mod:`maskformer.engine.predict_state`) let ``resume`` skip finished images.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from maskformer.data.coco_instances import original_category_ids
from maskformer.engine.predict_distributed import rank_and_world, share_from_rank0
from maskformer.engine.predict_inputs import default_num_workers, read_images, shard
from maskformer.engine.predict_options import (  # noqa: F401 - re-exported
    PredictionReport,
    PredictOptions,
    check_positive_int,
    check_probability,
)
from maskformer.engine.predict_paths import (  # noqa: F401 - re-exported
    IMAGE_SUFFIXES,
    check_no_overwrite,
    check_outputs,
    check_window_fits,
    collect_image_paths,
    json_target,
    output_folders,
    output_paths,
)
from maskformer.engine.predict_state import (
    Journal,
    completed_stems,
    fold_journals,
    identity_difference,
    read_manifest,
    recorded_ids,
    run_identity,
    write_manifest,
)
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
from maskformer.utils.coco import encode_rle
from maskformer.visualize import overlay_instances, overlay_panoptic, overlay_semantic


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
    report; whatever was finished is kept when the run stops early (an error, Ctrl-C). Under a
    ``torch.distributed`` process group every rank calls this with the same ``paths`` and
    segments its own shard.
    """
    _check_fixed_size_window(model, options)
    rank, world = rank_and_world()
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    categories = [{"id": k, "name": v} for k, v in sorted(id2label.items())]
    identity = run_identity(model, options.model_name, options)
    with contextlib.ExitStack() as lock:
        todo, error = None, None
        if rank == 0:
            try:
                prepare_output_dir(options.output_dir, [])
                lock.enter_context(output_lock(options.output_dir))
                todo = _start_run(paths, options, identity, categories)
            except (ValueError, TypeError, OSError) as failure:
                error = failure
        todo = share_from_rank0(todo, error)
        if rank != 0:
            prepare_output_dir(options.output_dir, output_folders(todo, options))
        report = _run_shard(model, processor, shard(todo, rank, world), options, id2label)
        report.skipped_as_done = len(paths) - len(todo)
        return report


def _check_fixed_size_window(model: Any, options: PredictOptions) -> None:
    """A model of one fixed input size (an exported file) takes sliding-window tiles of that
    size only, and no test-time augmentation (its views are rescaled)."""
    size = getattr(model, "input_size", None)
    if size is None:
        return
    if options.tta is not None:
        raise ValueError(
            f"--tta rescales each image; this model takes one input size ({size[0]}x{size[1]})"
        )
    if options.sliding_window is not None and tuple(options.sliding_window[0]) != tuple(size):
        window = options.sliding_window[0]
        raise ValueError(
            f"--window {window[0]} {window[1]} differs from the model's fixed input size "
            f"{size[0]} {size[1]}; omit --window to use it"
        )


def _start_run(
    paths: Sequence[Path],
    options: PredictOptions,
    identity: dict[str, Any],
    categories: list[dict[str, Any]],
) -> list[Path]:
    """Rank 0, holding the lock: fold a stopped run's journals, check ``resume`` against the
    manifest and existing outputs against ``overwrite``, write this run's manifest. Returns
    the paths to segment."""
    out = options.output_dir
    manifest = fold_journals(out, read_manifest(out))
    todo = list(paths)
    same_run = manifest is not None and identity_difference(manifest, identity, out) is None
    if options.resume and manifest is not None:
        difference = identity_difference(manifest, identity, out)
        if difference is not None:
            raise ValueError(difference)
        done = completed_stems(out, manifest)
        recorded = recorded_ids(out, options.task) if options.task == "panoptic" else None
        todo = [p for p in paths if not _complete(p, options, done, recorded)]
    else:
        check_no_overwrite(paths, options)
    target = json_target(options)
    if target is not None and target.exists():  # only with overwrite: merged, not replaced
        _, old_categories = read_records(target, options.task)
        if old_categories is not None and old_categories != categories:
            raise ValueError(
                f"{target} lists other categories (another model wrote it); remove it or use "
                "another --output-dir"
            )
    prepare_output_dir(out, output_folders(todo, options))
    redone = {p.stem for p in todo}
    kept = [s for s in (manifest or {}).get("completed", []) if same_run and s not in redone]
    write_manifest(
        out,
        {
            "format": 1,
            **identity,
            "categories": categories if options.task == "panoptic" else None,
            "completed": kept,
        },
    )
    return todo


def _complete(
    path: Path, options: PredictOptions, done: set[str], recorded: set[str] | None
) -> bool:
    """Whether an earlier run finished ``path``: its journal line, its files, its record."""
    if path.stem not in done:
        return False
    if recorded is not None and str(image_id_of(path)) not in recorded:
        return False
    files = [p for p in output_paths([path], options) if p.suffix == ".png"]
    return all(p.is_file() for p in files)


def _model_threads(model: Any) -> int:
    """CPU threads the model's forward keeps busy: torch's (or ONNX Runtime's) intra-op threads
    on the CPU, one feeding thread for a model on a GPU."""
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if parameter is not None and parameter.device.type != "cpu":
        return 1
    return int(getattr(model, "threads", None) or torch.get_num_threads())


def _run_shard(
    model: torch.nn.Module,
    processor: Any,
    paths: Sequence[Path],
    options: PredictOptions,
    id2label: dict[int, str],
) -> PredictionReport:
    rank, world = rank_and_world()
    report = PredictionReport()
    workers = options.num_workers
    if workers is None:
        from maskformer.engine.predict_distributed import processes_per_machine

        workers = default_num_workers(processes_per_machine(), _model_threads(model))
    journal = Journal(options.output_dir, rank)
    # instance records carry the training data's own category ids when the config has them
    category_ids = original_category_ids(model.config)
    progress = _progress_bar(len(paths), options.progress and rank == 0)
    started = time.perf_counter()
    finished = False
    try:
        for batch in read_images(paths, options.batch_size, workers):
            loaded = [(path, item) for path, item in batch if not isinstance(item, str)]
            for path, item in batch:
                if isinstance(item, str):
                    report.failed.append((path, item))
                    progress.update(1)
            results = segment_each(
                model, processor, [p for p, _ in loaded], [i for _, i in loaded], options
            )
            for path, image, result in results:
                if isinstance(result, str):
                    report.failed.append((path, result))
                else:
                    files, records = _write_result(path, image, result, options, id2label)
                    if options.task == "instance" and category_ids is not None:
                        records = [
                            {**r, "category_id": category_ids[r["category_id"]]} for r in records
                        ]
                    journal.add(path.stem, records)  # the commit point of this image
                    report.written += files
                    report.num_images += 1
                progress.update(1)
        finished = True
    finally:
        progress.close()
        journal.close()
        if world == 1:  # one process: fold even when stopping early (finished work is kept)
            report.written += _finish(options, finished)
    if world > 1:
        shares = gather_reports(report)
        report.failed = [item for share in shares for item in share[0]]
        report.num_images = sum(share[1] for share in shares)
        if rank == 0:
            report.written += _finish(options, True)
        share_from_rank0(None)  # nobody leaves (and torchrun ends nobody) before the merge
    report.seconds = time.perf_counter() - started
    return report


def gather_reports(report: PredictionReport) -> list[tuple[list[tuple[Path, str]], int]]:
    from maskformer.engine.predict_distributed import gather_to_all

    return gather_to_all((report.failed, report.num_images))


def _finish(options: PredictOptions, finished: bool) -> list[Path]:
    """Fold the journals into the json and the manifest; the json paths written."""
    out = options.output_dir
    manifest = read_manifest(out)
    target = json_target(options)
    existed = target.stat().st_mtime_ns if target is not None and target.exists() else None
    manifest = fold_journals(out, manifest)
    if target is None:
        return []
    if finished and not target.exists():  # a run that found nothing still says so
        categories = manifest.get("categories") if manifest else None
        write_records(target, options.task, [], categories)
    if target.exists() and target.stat().st_mtime_ns != existed:
        return [target]
    return []


# -------------------------------------------------------------------------------------- writing
def _write_result(
    path: Path,
    image: Image.Image,
    result: dict[str, Any],
    options: PredictOptions,
    id2label: dict[int, str],
) -> tuple[list[Path], list[dict[str, Any]]]:
    """Write the per-image files of ``result``; return them and its json records."""
    out, name = options.output_dir, f"{path.stem}.png"
    written, records = [], []
    if options.task == "semantic":
        classes = result["semantic"].cpu().numpy()
        written.append(save_png(label_png(classes, len(id2label)), out / "semantic" / name))
        draw_overlay = partial(overlay_semantic, image, classes, id2label, ignore_index=None)
    elif options.task == "panoptic":
        ids, segments = panoptic_result_to_coco(result)
        written.append(save_png(panoptic_png(ids), out / "panoptic" / name))
        records.append(
            {"image_id": image_id_of(path), "file_name": name, "segments_info": segments}
        )
        draw_overlay = partial(overlay_panoptic, image, ids, segments, id2label)
    elif result["segmentation"].dim() == 2:  # sliding window: an id map, no overlaps
        ids, segments = panoptic_result_to_coco(result)
        records += _id_map_records(image_id_of(path), ids, segments)
        draw_overlay = partial(overlay_panoptic, image, ids, segments, id2label)
    else:
        masks, labels, scores = instance_result_to_arrays(result, image.height, image.width)
        records += instance_records(image_id_of(path), masks, labels, scores)
        draw_overlay = partial(overlay_instances, image, masks, labels, id2label, scores=scores)
    if options.overlay:  # drawn only when it is written
        written.append(save_png(draw_overlay(), out / "overlays" / name))
    return written, records


def _id_map_records(
    image_id: int | str, ids: Any, segments: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """COCO results of the segments of an id map ``(H, W)``, one mask in memory at a time."""
    return [
        {
            "image_id": image_id,
            "category_id": segment["category_id"],
            "segmentation": encode_rle((ids == segment["id"])[None])[0],
            "score": segment["score"],
        }
        for segment in segments
    ]


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="image", desc="predict", disable=not enabled)
