"""Instance segmentation of one photo: a binary mask, class and score per object.

    python examples/instance_segmentation.py --model facebook/maskformer-swin-base-coco photo.jpg

Prints one line per detected instance and decodes its COCO RLE with pycocotools.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from pycocotools import mask as mask_utils

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument("image", type=Path)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()

    processor = MaskFormerImageProcessor.from_pretrained(args.model)
    model = MaskFormerForInstanceSegmentation.from_pretrained(args.model).eval()

    image = Image.open(args.image).convert("RGB")
    inputs = processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)

    result = processor.post_process_instance_segmentation(
        outputs,
        threshold=args.threshold,
        target_sizes=[image.size[::-1]],
        return_coco_annotation=True,  # one COCO RLE per segment, in segments_info order
    )[0]
    for segment, rle in zip(result["segments_info"], result["segmentation"]):
        area = int(mask_utils.decode(rle).sum())
        label = model.config.id2label[segment["label_id"]]
        print(f"id {segment['id']:3d}  {label:>20}  score {segment['score']:.3f}  area {area}")
    print(f"{len(result['segments_info'])} instances")


if __name__ == "__main__":
    main()
