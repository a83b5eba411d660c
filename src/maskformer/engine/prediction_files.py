"""The files ``maskformer predict`` writes: label and panoptic PNGs, the COCO json records, and
the lock that keeps two runs out of one output folder.

Every file appears atomically (:mod:`maskformer.utils.atomic`): a killed run leaves either the
old file or the new one, never a truncated one. ``panoptic.json`` / ``instances.json`` are
*merged*: a run replaces the records of its own images and keeps those of other images, so a
second run into the same folder (with ``--overwrite``) never drops the first run's annotations.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskformer.utils.atomic import atomic_save_image, atomic_write_json
from maskformer.utils.coco import encode_rle, panoptic_ids_to_rgb

LOCK_NAME = ".maskformer-predict.lock"
NAME_MAX_BYTES = 255
"""The longest file name most file systems take (ext4, xfs, btrfs, APFS, NTFS in UTF-16)."""


# ------------------------------------------------------------------------------------ image ids
def image_id_of(path: Path) -> int | str:
    """COCO-style image id of a file: its stem, as an int when it is ASCII digits only.

    ``str.isdigit`` alone also accepts other scripts' digits and superscripts ("١٢٣", "²"),
    which ``int`` turns into a number that collides with an ASCII name, or rejects.
    """
    stem = Path(path).stem
    return int(stem) if stem.isascii() and stem.isdigit() else stem


def check_output_name(path: Path) -> None:
    """``ValueError`` naming ``path`` when the outputs named after it (``STEM.png`` and the
    temporary ``.STEM.png.XXXXXXXX.tmp`` it is first written to) would exceed the file system's
    name limit: that image is skipped instead of failing the run at its first write."""
    temporary = f".{Path(path).stem}.png.XXXXXXXX.tmp"
    length = len(os.fsencode(temporary))
    if length > NAME_MAX_BYTES:
        raise ValueError(
            f"file name of {path} is too long for its outputs ({length - 14} bytes with .png; "
            f"at most {NAME_MAX_BYTES - 14})"
        )


# ------------------------------------------------------------------------------------- encoding
def label_png(classes: np.ndarray, num_labels: int) -> Image.Image:
    """Class-id map ``(H, W)`` as an 8-bit PNG image, or 16-bit when ids can reach 256."""
    if classes.size and classes.min() < 0:
        raise ValueError(f"class id {int(classes.min())} is negative; a label PNG holds ids >= 0")
    if num_labels <= 256 and (classes.size == 0 or classes.max() < 256):
        return Image.fromarray(classes.astype(np.uint8))
    if classes.size and classes.max() >= 65536:
        raise ValueError(f"class id {int(classes.max())} does not fit a 16-bit label PNG")
    return Image.fromarray(classes.astype(np.uint16))


def panoptic_png(ids: np.ndarray) -> Image.Image:
    """COCO panoptic RGB image of segment ids ``(H, W)``: id = R + 256 G + 256^2 B."""
    return Image.fromarray(panoptic_ids_to_rgb(ids))


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
    """Binary masks ``(N, H, W)`` bool, labels ``(N,)`` and scores ``(N,)`` of an instance
    result."""
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
    return [
        {"image_id": image_id, "category_id": int(label), "segmentation": rle, "score": float(s)}
        for rle, label, s in zip(encode_rle(np.asarray(masks)), labels, scores)
    ]


def save_png(image: Image.Image, target: Path) -> Path:
    """``image`` as a PNG at ``target``, atomically (``OSError`` naming ``target``)."""
    return atomic_save_image(image, target)


# ------------------------------------------------------------------------- the merged json files
def read_records(target: Path, task: str) -> tuple[list[dict[str, Any]], list[dict] | None]:
    """The records (annotations / results) and categories of an existing json output.

    Raises ``ValueError`` naming the file when it is not what ``predict`` writes, so a merge
    never silently discards a file it cannot read.
    """
    try:
        data = json.loads(Path(target).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"cannot merge into {target}: it is not readable JSON ({error}); move it away"
        ) from None
    if task == "panoptic":
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise ValueError(f"cannot merge into {target}: it has no 'annotations' list")
        records, categories = data["annotations"], data.get("categories")
    else:
        if not isinstance(data, list):
            raise ValueError(f"cannot merge into {target}: expected a list of COCO results")
        records, categories = data, None
    if not all(isinstance(r, dict) and "image_id" in r for r in records):
        raise ValueError(f"cannot merge into {target}: a record has no 'image_id'")
    return records, categories


def merge_records(
    old: Sequence[dict[str, Any]],
    new: Sequence[dict[str, Any]],
    replaced: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """``old`` without the images that ``new`` has records for (and those of ``replaced``, image
    ids predicted again that now have no record, e.g. no instance found), then ``new``."""
    dropped = {_id_key(r["image_id"]) for r in new} | {_id_key(i) for i in replaced}
    return [r for r in old if _id_key(r["image_id"]) not in dropped] + list(new)


def write_records(
    target: Path, task: str, records: list[dict[str, Any]], categories: list[dict] | None
) -> Path:
    """Write ``panoptic.json`` (``{"annotations", "categories"}``) or ``instances.json``."""
    payload: Any = (
        {"annotations": records, "categories": categories} if task == "panoptic" else records
    )
    return atomic_write_json(target, payload, indent=1)


def _id_key(image_id: Any) -> str:
    return str(image_id)


# ------------------------------------------------------------------------------------------ lock
@contextlib.contextmanager
def output_lock(folder: Path) -> Iterator[Path]:
    """Hold ``folder/.maskformer-predict.lock`` (an exclusive ``fcntl`` lock) for the block.

    A second process that tries while the first holds it gets ``OSError`` naming the lock file
    at once (no waiting). The lock goes with the process, however it ends; the empty file
    stays (removing it would let a third run lock a new file while a second holds the old).
    Where ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield lock_path
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise OSError(
            f"cannot write to output folder {folder}: {error.strerror or error}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OSError(
                f"another `maskformer predict` is writing into {folder} (it holds {lock_path}); "
                "wait for it or use another --output-dir"
            ) from None
        yield lock_path
    finally:
        os.close(fd)  # closing releases the lock


def prepare_output_dir(folder: Path, subfolders: Sequence[Path]) -> None:
    """Create ``folder`` and ``subfolders``; one ``OSError`` naming the path when it cannot be
    (a file in the way, a read-only parent)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--output-dir {folder} is a file, not a folder")
    for path in (folder, *subfolders):
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"output folder {path} is a file, not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(
                f"cannot create output folder {path}: {error.strerror or error}"
            ) from None
