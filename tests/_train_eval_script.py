"""Trains a tiny model with evaluation for test_train_eval.py: under torchrun, or as one process.

Usage: python _train_eval_script.py OUTPUT_DIR

Trains 2 steps with an evaluation (mIoU) at step 2, then scores the final weights for PQ and mask
AP with the same evaluator on every process; rank 0 writes OUTPUT_DIR/figures.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_support import quick_args, synthetic_dataset  # noqa: E402

from maskformer.engine.distributed import cleanup, init_distributed  # noqa: E402
from maskformer.engine.evaluation_hook import ValidationEvaluator  # noqa: E402
from maskformer.engine.train import train  # noqa: E402
from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation  # noqa: E402

VALIDATION_IMAGES = 5  # uneven over 2 processes: 3 and 2


def validation_set():
    return synthetic_dataset(VALIDATION_IMAGES, 32, augment=False, seed=7)


def evaluate_all(model, rank: int, world_size: int) -> dict[str, dict]:
    """mIoU, PQ and mask AP of ``model`` on the validation set, this process's share."""
    dataset = validation_set()
    figures = {}
    for task in ("semantic", "panoptic", "instance"):
        evaluator = ValidationEvaluator(dataset, task, model.config.id2label, dataset.thing_ids)
        figures[task] = evaluator.evaluate(model, rank, world_size)[0]
    return figures


def run(output_dir: Path) -> None:
    # The process group is started here, so train() uses it and leaves it up for the rest.
    context = init_distributed("cpu")
    try:
        args = quick_args(output_dir, max_steps=2, eval_every=2, batch_size=2)
        train(args, train_dataset=synthetic_dataset(8, 32), eval_dataset=validation_set())
        model = MaskFormerForInstanceSegmentation.from_pretrained(output_dir / "final")
        figures = evaluate_all(model, context.rank, context.world_size)
    finally:
        cleanup(context)
    if context.rank == 0:
        (output_dir / "figures.json").write_text(json.dumps(figures))


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(Path(sys.argv[1]))
