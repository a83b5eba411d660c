"""What a ``maskformer predict`` output folder remembers between runs: the run manifest and the
per-process journals that make ``--resume`` and runs over many processes safe.

* ``OUT/predict_manifest.json`` says what produced the folder: the model (its name and a SHA-256
  of its configuration), the task, the thresholds, the sliding-window and test-time-augmentation
  settings, whether overlays are drawn, the panoptic categories, and the images finished
  (``"completed"``, file stems). ``--resume`` refuses a folder whose manifest names another
  model or other settings.
* ``OUT/.maskformer-predict/journal.rankR.jsonl``: each process appends one line per finished
  image, ``{"image": STEM, "records": [...]}`` (its ``panoptic.json`` / ``instances.json``
  records), after that image's PNGs are in place. A line is written with one ``write`` and
  flushed to disk; a process killed in the middle of one leaves a torn last line, which is
  ignored (that image counts as unfinished and is redone). The journal is the commit point: an
  image is finished when its line is there.
* :func:`fold_journals` moves the journals' records into the json file (merged, atomically) and
  their stems into the manifest's ``"completed"``, then removes the journals. It runs at the
  end of a run, when a single process stops early, and at the start of the next run (a killed
  run's journals are never lost).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskformer.engine.prediction_files import (
    image_id_of,
    merge_records,
    read_records,
    write_records,
)
from maskformer.utils.atomic import atomic_write_json

MANIFEST_NAME = "predict_manifest.json"
STATE_DIR = ".maskformer-predict"
MANIFEST_FORMAT = 1
JSON_NAMES = {"panoptic": "panoptic.json", "instance": "instances.json"}


def config_sha256(config: Any) -> str:
    """SHA-256 of a model configuration's JSON form (keys sorted; private keys such as
    ``_name_or_path`` and the writer's version left out, so a copied checkpoint matches)."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    kept = {k: v for k, v in data.items() if not k.startswith("_") and k != "transformers_version"}
    text = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_identity(model: Any, model_name: str | None, options: Any) -> dict[str, Any]:
    """The settings that decide a folder's outputs; ``--resume`` needs all of them equal."""
    tta = getattr(options, "tta", None)
    window = getattr(options, "sliding_window", None)
    return {
        "model": model_name or str(getattr(model.config, "_name_or_path", "") or "<in memory>"),
        "config_sha256": config_sha256(model.config),
        "task": options.task,
        "threshold": options.threshold,
        "mask_threshold": options.mask_threshold,
        "overlap_mask_area_threshold": options.overlap_mask_area_threshold,
        "label_ids_to_fuse": sorted(options.label_ids_to_fuse or ()),
        "sliding_window": None if window is None else [list(window[0]), window[1]],
        "tta": None if not tta else {"scales": list(tta.scales), "flip": tta.flip},
        "overlay": options.overlay,
    }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, None when there is none; ``ValueError`` naming a broken one."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read run manifest {path}: {error}; move it away") from None
    if not isinstance(data, dict) or not isinstance(data.get("completed", []), list):
        raise ValueError(f"run manifest {path} is not what `maskformer predict` writes")
    return data


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    return atomic_write_json(Path(folder) / MANIFEST_NAME, manifest, indent=1)


def identity_difference(
    manifest: dict[str, Any], identity: dict[str, Any], folder: Path
) -> str | None:
    """One line saying how ``manifest`` (an earlier run) differs from this run, or None."""
    names = {"model": "model", "config_sha256": "model configuration"}
    for key, value in identity.items():
        old = manifest.get(key)
        if old == value:
            continue
        if key == "config_sha256" and manifest.get("model") != identity["model"]:
            continue  # the model line below says it
        what = names.get(key, key.replace("_", "-"))
        shown_old = "a different one" if key == "config_sha256" else json.dumps(old)
        shown_new = "" if key == "config_sha256" else f", this run {json.dumps(value)}"
        return (
            f"--resume: {folder} was predicted with {what} {shown_old}{shown_new} (see "
            f"{Path(folder) / MANIFEST_NAME}); use the same settings or another --output-dir"
        )
    return None


# --------------------------------------------------------------------------------------- journals
class Journal:
    """One process's append-only list of finished images (see the module docstring)."""

    def __init__(self, folder: Path, rank: int) -> None:
        state = Path(folder) / STATE_DIR
        try:
            state.mkdir(parents=True, exist_ok=True)
            self.path = state / f"journal.rank{rank}.jsonl"
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as error:
            raise OSError(f"cannot write the journal in {state}: {error.strerror}") from None

    def add(self, stem: str, records: Sequence[dict[str, Any]]) -> None:
        line = json.dumps({"image": stem, "records": list(records)}, separators=(",", ":"))
        data = (line + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(self._fd)
        except OSError as error:
            raise OSError(f"cannot append to {self.path}: {error}") from None

    def close(self) -> None:
        os.close(self._fd)


def journal_files(folder: Path) -> list[Path]:
    return sorted((Path(folder) / STATE_DIR).glob("journal.rank*.jsonl"))


def read_journals(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Finished image stem -> its records, over every journal of ``folder`` (torn or
    unreadable lines skipped)."""
    finished: dict[str, list[dict[str, Any]]] = {}
    for path in journal_files(folder):
        for line in path.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(entry, dict) and isinstance(entry.get("records"), list):
                finished[str(entry.get("image"))] = entry["records"]
    return finished


def fold_journals(folder: Path, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """Move the journals' records into the json of the manifest's task and their stems into
    its ``"completed"``; remove the journals. Returns the manifest as written (None when there
    is none and nothing to fold)."""
    folder = Path(folder)
    finished = read_journals(folder)
    if manifest is None:
        return None
    if finished:
        task = manifest.get("task")
        if task in JSON_NAMES:
            target = folder / JSON_NAMES[task]
            old: list[dict[str, Any]] = []
            if target.exists():
                old, _ = read_records(target, task)
            replaced = [image_id_of(Path(stem)) for stem in finished]
            new = [record for records in finished.values() for record in records]
            write_records(
                target, task, merge_records(old, new, replaced), manifest.get("categories")
            )
        manifest = dict(manifest)
        manifest["completed"] = sorted(set(manifest.get("completed", [])) | set(finished))
        write_manifest(folder, manifest)
    for path in journal_files(folder):
        path.unlink()
    return manifest


def completed_stems(folder: Path, manifest: dict[str, Any] | None) -> set[str]:
    """Stems finished according to the manifest and the journals not yet folded."""
    done = set(manifest.get("completed", [])) if manifest else set()
    return done | set(read_journals(folder))


def recorded_ids(folder: Path, task: str) -> set[str]:
    """Image ids (as str) with a record in the folder's json (panoptic: one per image)."""
    target = Path(folder) / JSON_NAMES[task]
    if not target.exists():
        return set()
    records, _ = read_records(target, task)
    return {str(r["image_id"]) for r in records}
