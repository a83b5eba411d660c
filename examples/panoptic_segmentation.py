"""Panoptic segmentation of one photo: every pixel gets a segment, every segment a class.

    python examples/panoptic_segmentation.py --model facebook/maskformer-swin-base-coco photo.jpg

Writes ``NAME_panoptic.png`` (an overlay with class colours, outlines and a legend).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from maskformer.visualize import overlay_panoptic


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

    result = processor.post_process_panoptic_segmentation(
        outputs, target_sizes=[image.size[::-1]], label_ids_to_fuse=set()
    )[0]
    segmentation = result["segmentation"]  # (height, width) int32 segment ids, 0 = no segment
    for segment in result["segments_info"]:
        label = model.config.id2label[segment["label_id"]]
        area = int((segmentation == segment["id"]).sum())
        print(f"segment {segment['id']:3d}  {label:>20}  score {segment['score']:.3f}  area {area}")

    overlay = overlay_panoptic(
        np.asarray(image), segmentation.numpy(), result["segments_info"], model.config.id2label
    )
    out = args.output_dir / f"{args.image.stem}_panoptic.png"
    overlay.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
