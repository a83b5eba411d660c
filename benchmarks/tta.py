"""Test-time augmentation on a trained model: mIoU, PQ and mask AP with and without TTA.

Uses the demo's model (``maskformer demo`` writes it to ``demo_output/model``) on the demo's
held-out images (the same generator and seed as the demo's evaluation), and prints one row per
setting. Without TTA the plain post-processors run on one forward pass; with TTA, semantic maps
come from averaged class scores and panoptic / instance segments from matched and averaged
queries of the views at the scale nearest 1 (:mod:`maskformer.engine.tta`); for comparison,
the queries of all scales averaged (matched to the view nearest scale 1, and to the first view).
Each image's views run once for all three tasks (the s/image column counts every view).

    python benchmarks/tta.py --model demo_output/model --tta "scales=0.75,1.0,1.25,1.5 flip"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
from maskformer.data.synthetic import SyntheticShapesDataset
from maskformer.engine.predict import instance_result_to_arrays, panoptic_result_to_coco
from maskformer.engine.tta import (
    TestTimeAugmentation,
    combine_queries,
    combine_semantic,
    reference_view,
    run_views,
)
from maskformer.evaluation import (
    InstanceSegmentationMetric,
    PanopticQualityMetric,
    SemanticSegmentationMetric,
)

HELD_OUT_SEED_OFFSET = 1_000_003  # the demo's held-out seed: seed + 1_000_003


def evaluate(
    model, processor, dataset, tta: TestTimeAugmentation | None, variant: dict | None = None
) -> dict[str, float]:
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    semantic_metric = SemanticSegmentationMetric(len(id2label))
    panoptic_metric = PanopticQualityMetric(dataset.categories)
    instance_metric = InstanceSegmentationMetric({k: id2label[k] for k in dataset.thing_ids})
    stuff = set(dataset.stuff_ids)
    for index in range(len(dataset)):
        array, gt_semantic, gt_panoptic, gt_segments = dataset.get_ground_truth(index)
        image = Image.fromarray(array)
        size = [(image.height, image.width)]
        if tta is None:
            inputs = processor(images=[image], return_tensors="pt")
            with torch.inference_mode():
                outputs = model(pixel_values=inputs["pixel_values"])
            semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=size)[0]
        else:
            views = run_views(model, processor, image, tta)  # once for all three tasks
            outputs = combine_queries(views, tta, **(variant or {}))
            semantic = combine_semantic(views, size[0])
        outputs = SimpleNamespace(
            class_queries_logits=outputs.class_queries_logits,
            masks_queries_logits=outputs.masks_queries_logits,
        )
        panoptic = processor.post_process_panoptic_segmentation(
            outputs, label_ids_to_fuse=stuff, target_sizes=size
        )[0]
        instance = processor.post_process_instance_segmentation(
            outputs, target_sizes=size, return_binary_maps=True
        )[0]
        semantic_metric.update(semantic.numpy(), gt_semantic.astype(np.int64))
        ids, segments = panoptic_result_to_coco(panoptic)
        panoptic_metric.update(ids, segments, gt_panoptic, gt_segments)
        masks, labels, scores = instance_result_to_arrays(instance, image.height, image.width)
        things = [s for s in gt_segments if s["isthing"]]
        instance_metric.update(
            masks,
            scores,
            labels,
            np.stack([gt_panoptic == s["id"] for s in things]).reshape(-1, *gt_panoptic.shape),
            [s["category_id"] for s in things],
            image_id=index,
        )
    semantic_figures = semantic_metric.compute()
    panoptic_figures = panoptic_metric.compute()
    return {
        "mIoU": semantic_figures["mIoU"],
        "PQ": panoptic_figures["PQ"],
        "AP": instance_metric.compute()["AP"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("demo_output/model"))
    parser.add_argument("--tta", default="scales=0.75,1.0,1.25,1.5 flip")
    parser.add_argument("--held-out", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="the demo's seed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        print(f"skipped: no trained model at {args.model} (run `maskformer demo` first)")
        return 0
    torch.set_num_threads(args.threads)
    model = MaskFormerForInstanceSegmentation.from_pretrained(args.model).eval()
    processor = MaskFormerImageProcessor.from_pretrained(args.model)
    dataset = SyntheticShapesDataset(
        args.held_out, image_size=64, seed=args.seed + HELD_OUT_SEED_OFFSET
    )
    main = TestTimeAugmentation.parse(args.tta)
    settings = [("none", None, None), (args.tta, main, None)]
    settings.append((f"{args.tta} (queries of all scales)", main, {"all_scales": True}))
    if main.views()[0] != main.views()[reference_view(main)]:  # the first view as reference
        variant = {"all_scales": True, "reference": 0}
        settings.append((f"{args.tta} (all scales, matched to view 0)", main, variant))
    for flag in ("flip", "scales=0.75,1.0,1.25"):
        if flag != args.tta:
            settings.append((flag, TestTimeAugmentation.parse(flag), None))
    print(f"model {args.model}, {args.held_out} held-out images, {args.threads} threads")
    print(f"{'tta':52s} {'mIoU':>7s} {'PQ':>7s} {'AP':>7s} {'s/image':>8s}")
    for name, tta, variant in settings:
        started = time.perf_counter()
        figures = evaluate(model, processor, dataset, tta, variant)
        per_image = (time.perf_counter() - started) / len(dataset)
        print(
            f"{name:52s} {figures['mIoU']:7.4f} {figures['PQ']:7.4f} {figures['AP']:7.4f} "
            f"{per_image:8.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
