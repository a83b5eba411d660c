"""Train on a COCO instance export and score it: the docs/own_data.md path at demo scale.

Writes the synthetic shapes (``maskformer.data.synthetic``) as COCO instance JSON the way an
annotation tool exports them (polygons, compressed and uncompressed RLE, a crowd region,
category ids 5 / 11 / 27), trains the demo's small model on that JSON with the project's trainer
(the demo's recipe: no augmentation, AdamW 1e-3, batch 8), then runs ``maskformer evaluate
--format coco-instances`` on held-out images. Prints the mask AP figures and the times.

    python benchmarks/own_data_training.py --steps 2500 --output own_data_run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--held-out", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("own_data_run"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from _coco_instances_support import write_synthetic_coco

    from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
    from maskformer.cli import main as cli
    from maskformer.data.coco_instances import CocoInstanceDataset
    from maskformer.demo import demo_config
    from maskformer.engine.train import TrainingArguments, train

    started = time.perf_counter()
    train_json, train_images = write_synthetic_coco(
        args.output / "train", num_images=args.train_images, image_size=64, seed=0
    )
    write_synthetic_coco(args.output / "val", num_images=args.held_out, image_size=64, seed=1)
    written = time.perf_counter()

    dataset = CocoInstanceDataset(train_json, train_images)
    config = demo_config()
    config.id2label = dict(dataset.id2label)
    config.label2id = {name: label for label, name in dataset.id2label.items()}
    config.label_category_ids = dataset.category_ids
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(config)
    steps = args.steps
    train(
        TrainingArguments(
            output_dir=str(args.output / "training"),
            batch_size=8,
            max_steps=steps,
            learning_rate=1e-3,
            backbone_lr_multiplier=1.0,
            warmup_steps=min(50, steps // 10),
            max_grad_norm=1.0,
            save_every=steps,
            keep_last=1,
            log_every=max(1, min(50, steps // 5)),
            num_workers=0,
            device="cpu",
            overwrite_output_dir=True,
            progress=False,
        ),
        model=model,
        train_dataset=dataset,
    )
    trained = time.perf_counter()
    model_dir = args.output / "training" / "final"
    MaskFormerImageProcessor(do_resize=False, size_divisor=32).save_pretrained(model_dir)

    figures_file = args.output / "evaluation.json"
    code = cli(
        ["evaluate", "--model", str(model_dir), "--data", str(args.output / "val")]
        + ["--format", "coco-instances", "--task", "instance", "--output", str(figures_file)]
        + ["--overwrite", "--no-progress", "--device", "cpu", "--batch-size", "8"]
    )
    if code:
        raise SystemExit(code)
    figures = json.loads(figures_file.read_text())
    print(
        json.dumps(
            {
                "steps": steps,
                "AP": figures["AP"],
                "AP50": figures["AP50"],
                "AP75": figures["AP75"],
                "per_class_AP": figures["per_class_AP"],
                "write_seconds": round(written - started, 1),
                "train_seconds": round(trained - written, 1),
                "evaluate_seconds": round(time.perf_counter() - trained, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
