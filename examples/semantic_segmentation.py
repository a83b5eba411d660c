"""Semantic segmentation of one photo: a class id per pixel.

    python examples/semantic_segmentation.py --model facebook/maskformer-swin-tiny-ade photo.jpg
    python examples/semantic_segmentation.py --model demo_output/model shapes.png

Writes ``NAME_semantic.png`` (class ids) beside nothing else and prints the classes found.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument("image", type=Path)
    parser.add_argument("--output-dir", type=Path, default=Path("."))
    args = parser.parse_args()

    processor = MaskFormerImageProcessor.from_pretrained(args.model)
    model = MaskFormerForInstanceSegmentation.from_pretrained(args.model).eval()

    image = Image.open(args.image).convert("RGB")
    inputs = processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)

    # (height, width) int64 class ids at the photo's own size
    semantic = processor.post_process_semantic_segmentation(
        outputs, target_sizes=[image.size[::-1]]
    )[0]
    classes, counts = torch.unique(semantic, return_counts=True)
    for class_id, count in zip(classes.tolist(), counts.tolist()):
        print(f"{model.config.id2label[class_id]:>20}: {count / semantic.numel():6.1%}")

    out = args.output_dir / f"{args.image.stem}_semantic.png"
    Image.fromarray(semantic.numpy().astype(np.uint8 if semantic.max() < 256 else np.uint16)).save(
        out
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
