"""Which files ``maskformer predict`` reads and writes, and what is checked about them before
a model is loaded: inputs expanded and their names checked for collisions, the output names of
each task, existing outputs, the output folder and its lock, images smaller than the window."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from maskformer.engine.predict_state import JSON_NAMES, read_manifest
from maskformer.engine.prediction_files import (
    image_id_of,
    output_lock,
    prepare_output_dir,
    read_records,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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


def output_paths(paths: Sequence[Path], options: Any) -> list[Path]:
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


def check_no_overwrite(paths: Sequence[Path], options: Any) -> None:
    """Raise ``FileExistsError`` naming the first output that exists, unless ``overwrite``."""
    if options.overwrite:
        return
    existing = [p for p in output_paths(paths, options) if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(
            f"output file {existing[0]} already exists{more}; pass --overwrite to replace it"
        )


def check_outputs(paths: Sequence[Path], options: Any) -> None:
    """Everything about the output folder that can fail, checked before a model is loaded:
    existing outputs (without ``overwrite`` or ``resume``), a folder that cannot be created or
    written, an existing json that cannot be merged, another run holding the folder's lock, and
    (``sliding_window``) an image smaller than the window."""
    if not options.resume:
        check_no_overwrite(paths, options)
    prepare_output_dir(options.output_dir, [])  # the lock file lives here
    for folder in output_folders(paths, options):  # created when the run starts
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"output folder {folder} is a file, not a folder")
    target = json_target(options)
    if target is not None and target.exists():
        read_records(target, options.task)
    read_manifest(options.output_dir)
    with output_lock(options.output_dir):
        pass
    if options.sliding_window is not None:
        check_window_fits(paths, options.sliding_window)


def check_window_fits(paths: Sequence[Path], sliding_window: tuple[Any, float]) -> None:
    """``ValueError`` naming the first image smaller than the window (read from the file
    headers; files that cannot be opened are left to the run, which skips them by name)."""
    window, overlap = sliding_window
    for path in paths:
        try:
            with Image.open(path) as image:
                size = (image.height, image.width)
        except Exception:  # noqa: BLE001 - unreadable: reported when the run reaches it
            continue
        if window[0] > size[0] or window[1] > size[1]:
            raise ValueError(
                f"--window {window[0]} {window[1]} is larger than image {path} "
                f"({size[0]}x{size[1]}, height x width); use a smaller --window"
            )


def json_target(options: Any) -> Path | None:
    name = JSON_NAMES.get(options.task)
    return options.output_dir / name if name else None


def output_folders(paths: Sequence[Path], options: Any) -> list[Path]:
    return sorted({p.parent for p in output_paths(paths, options)})
