"""Values shared across the package, defined once."""

from __future__ import annotations

IGNORE_INDEX = 255
"""Label value that means "not annotated": ignored by the loss, the targets and the metrics."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
