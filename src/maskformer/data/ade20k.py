"""ADE20K-style semantic segmentation folders: `root/images/*.jpg` + `root/annotations/*.png`.

Images and label maps pair by file stem. Label maps are 8-bit PNGs of class indices; with
``reduce_labels`` (the ADE20K convention) value 0 ("other") becomes ignored and k becomes k - 1.
Pairing is checked when the dataset is built; sizes and label ranges when an item is read, each
error naming the offending file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from maskformer.data.base import Example, PairTransform, SegmentationDataset
from maskformer.utils.constants import IGNORE_INDEX

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ADE20K_NUM_LABELS = 150


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return {
        path.stem: path
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix.lower() in suffixes
    }


def _names_from_object_info(csv_path: Path) -> list[str]:
    """Class names (first synonym) of an ADE20K `objectInfo150.csv`, in index order (1-based)."""
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows.sort(key=lambda row: int(row["Idx"]))
    return [row["Name"].split(";")[0].strip() for row in rows]


def read_rgb(path: Path) -> np.ndarray:
    """An image file as `(height, width, 3)` uint8 RGB; an unreadable file is an `OSError`
    naming it (PIL's own message for a truncated file does not)."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:  # SyntaxError: PIL's broken-header error
        raise OSError(f"image {path} could not be read: {_reason(error)}") from None


def _reason(error: BaseException) -> str:
    """PIL's message without a repeated file name."""
    return str(error).split(" '/")[0].split(' "/')[0] or type(error).__name__


class ADE20KDataset(SegmentationDataset):
    """Semantic segmentation folders in the ADE20K layout.

    Args:
        root: folder holding `images/` and `annotations/`.
        transform: `(image, label_map, generator) -> (pixel_values, label_map)`; default
            normalisation only.
        reduce_labels: map 0 to ignored and k to k - 1 (ADE20K's 0 = "other").
        ignore_index: label value of ignored pixels.
        num_labels: number of classes; a label map with a class index >= num_labels is an error.
        id2label: class names; default from `root/objectInfo150.csv` when present, else numbers.
        seed: base seed of the augmentation randomness.
    """

    def __init__(
        self,
        root: str | Path,
        transform: PairTransform | None = None,
        reduce_labels: bool = True,
        ignore_index: int = IGNORE_INDEX,
        num_labels: int = ADE20K_NUM_LABELS,
        id2label: dict[int, str] | None = None,
        seed: int = 0,
    ):
        super().__init__(transform, seed, ignore_index)
        self.root = Path(root)
        self.reduce_labels = reduce_labels
        image_dir, annotation_dir = self.root / "images", self.root / "annotations"
        for folder in (self.root, image_dir, annotation_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"ADE20K folder not found: {folder}")
        images = _files_by_stem(image_dir, IMAGE_SUFFIXES)
        annotations = _files_by_stem(annotation_dir, (".png",))
        if not images:
            raise FileNotFoundError(f"no images (*.jpg, *.jpeg, *.png) in {image_dir}")
        unpaired_images = sorted(set(images) - set(annotations))
        if unpaired_images:
            missing = ", ".join(str(images[stem]) for stem in unpaired_images[:5])
            raise FileNotFoundError(
                f"{len(unpaired_images)} image(s) without a label map in {annotation_dir}: {missing}"
            )
        unpaired_maps = sorted(set(annotations) - set(images))
        if unpaired_maps:
            extra = ", ".join(str(annotations[stem]) for stem in unpaired_maps[:5])
            raise FileNotFoundError(
                f"{len(unpaired_maps)} label map(s) without an image in {image_dir}: {extra}"
            )
        self.pairs = [(images[stem], annotations[stem]) for stem in sorted(images)]

        if id2label is None:
            object_info = self.root / "objectInfo150.csv"
            names = _names_from_object_info(object_info) if object_info.is_file() else []
            if not reduce_labels:
                names = ["other", *names]
            id2label = {
                index: names[index] if index < len(names) else str(index)
                for index in range(num_labels)
            }
        if len(id2label) != num_labels:
            raise ValueError(f"id2label has {len(id2label)} entries but num_labels is {num_labels}")
        self.id2label = {int(key): value for key, value in id2label.items()}

    def __len__(self) -> int:
        return len(self.pairs)

    def read_label_map(self, path: Path, expected_size: tuple[int, int]) -> np.ndarray:
        """The label map of `path` as int64 class indices (reduced if asked), validated."""
        try:
            return self._read_label_map(path, expected_size)
        except (OSError, SyntaxError) as error:
            raise OSError(f"label map {path} could not be read: {_reason(error)}") from None

    def _read_label_map(self, path: Path, expected_size: tuple[int, int]) -> np.ndarray:
        with Image.open(path) as annotation:
            if annotation.size != expected_size:
                raise ValueError(
                    f"label map {path} has size {annotation.size} (width, height) but its image "
                    f"has size {expected_size}"
                )
            if annotation.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(
                    f"label map {path} must be a single-channel PNG, got mode {annotation.mode}"
                )
            labels = np.asarray(annotation).astype(np.int64)
        if self.reduce_labels:
            ignored = (labels == 0) | (labels == self.ignore_index)
            labels = labels - 1
            labels[ignored] = self.ignore_index
        real = labels[labels != self.ignore_index]
        if real.size and (real.max() >= self.num_labels or real.min() < 0):
            raise ValueError(
                f"label map {path} holds class index {int(real.max())} but the dataset has "
                f"num_labels={self.num_labels} (reduce_labels={self.reduce_labels})"
            )
        return labels

    def load_example(self, index: int) -> Example:
        image_path, annotation_path = self.pairs[index]
        image = read_rgb(image_path)
        labels = self.read_label_map(annotation_path, (image.shape[1], image.shape[0]))
        return Example(image=image, label_map=labels, image_id=image_path.stem)
