"""Peak memory and time of sliding-window inference on a large image.

Builds a ``--size`` image (default 6000x4000) from a real photo of ``../shared/data`` (resized up),
loads the swin-tiny ADE configuration with random weights (the memory and time do not depend on
the weights), and runs :func:`maskformer.engine.sliding_window.sliding_window_semantic` (or the
panoptic variant) in this process. Prints the tile count, the wall time and the peak resident
memory: the whole process (``ru_maxrss``) and its growth over the model and image loaded.

    python benchmarks/large_images.py --task semantic --size 6000x4000 --window 512
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from maskformer.engine.sliding_window import (
    sliding_window_segments,
    sliding_window_semantic,
    tile_starts,
)
from maskformer.presets import get_preset

PHOTO = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/ade20k_sample/images/ADE_val_00000001.jpg"
)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("semantic", "panoptic"), default="semantic")
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=1 / 3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="swin-tiny-ade")
    args = parser.parse_args()
    if not PHOTO.is_file():
        print(f"skipped: {PHOTO} is absent", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = Image.open(PHOTO).convert("RGB").resize((width, height), Image.BILINEAR)
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(get_preset(args.preset)).eval()
    processor = MaskFormerImageProcessor()
    window = (args.window, args.window)
    tiles = len(tile_starts(height, args.window, args.overlap)) * len(
        tile_starts(width, args.window, args.overlap)
    )
    before = _peak_mib()
    started = time.perf_counter()
    if args.task == "semantic":
        result = sliding_window_semantic(
            model, processor, image, window, args.overlap, args.batch_size
        )
        shape = tuple(result.shape)
    else:
        result = sliding_window_segments(
            model, processor, image, "panoptic", window, args.overlap, args.batch_size
        )
        shape = tuple(result["segmentation"].shape)
    seconds = time.perf_counter() - started
    peak = _peak_mib()
    print(
        f"{args.task} {width}x{height}, window {args.window}, overlap {args.overlap:.2f}, "
        f"{tiles} tiles, batch {args.batch_size}, {args.threads} threads, {args.preset}: "
        f"{seconds:.1f} s, peak RSS {peak:.0f} MiB (model + image loaded: {before:.0f} MiB, "
        f"growth {peak - before:.0f} MiB), output {shape}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
