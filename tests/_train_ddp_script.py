"""Trains a tiny model for test_train_distributed.py: under torchrun, or as one process.

Usage: python _train_ddp_script.py OUTPUT_DIR BATCH_SIZE_PER_PROCESS

Writes OUTPUT_DIR/rank<R>.json (the num_masks the loss used at every step, with the local
target count, and the last losses) OUTPUT_DIR/weights_rank<R>.pt (the final state dict) and OUTPUT_DIR/gradients_rank<R>.pt (the
first step's gradients as the optimiser saw them).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_support import quick_args, synthetic_dataset  # noqa: E402

from maskformer import MaskFormerForInstanceSegmentation  # noqa: E402
from maskformer.data.synthetic import SYNTHETIC_ID2LABEL  # noqa: E402
from maskformer.engine.train import train  # noqa: E402
from maskformer.presets import get_preset  # noqa: E402

STEPS = 3
LEARNING_RATE = 1e-3  # quick_args' learning rate, named for the test's tolerances


def build_model() -> MaskFormerForInstanceSegmentation:
    """tiny-swin without any randomness in training mode (no dropout, no drop-path) and with
    no-object weight 1, so the class cross-entropy is a plain mean (see the test)."""
    torch.manual_seed(0)
    config = get_preset(
        "tiny-swin",
        id2label=SYNTHETIC_ID2LABEL,
        no_object_weight=1.0,
        decoder_config={"dropout": 0.0},
    )
    return MaskFormerForInstanceSegmentation(config)


def run(output_dir: Path, batch_size: int) -> None:
    model = build_model()
    seen: list[dict[str, float]] = []
    get_num_masks = model.criterion.get_num_masks

    def recording_get_num_masks(class_labels, device):
        value = get_num_masks(class_labels, device)
        seen.append({"local": float(sum(len(c) for c in class_labels)), "num_masks": float(value)})
        return value

    model.criterion.get_num_masks = recording_get_num_masks
    # The first step's gradients as the optimiser sees them (all-reduced over processes and
    # clipped): the one point where both runs hold the same weights, so they differ by
    # floating-point rounding only.
    names = {id(p): n for n, p in model.named_parameters()}
    first_gradients: dict[str, torch.Tensor] = {}

    def record_first_gradients(optimizer, *_):
        if not first_gradients:
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    if parameter.grad is not None:
                        first_gradients[names[id(parameter)]] = parameter.grad.detach().clone()

    hook = register_optimizer_step_pre_hook(record_first_gradients)
    args = quick_args(
        output_dir,
        model="tiny-swin",
        batch_size=batch_size,
        max_steps=STEPS,
        save_every=STEPS,
        learning_rate=LEARNING_RATE,
    )
    try:
        result = train(args, model=model, train_dataset=synthetic_dataset(8, 64, augment=True))
    finally:
        hook.remove()
    rank = int(os.environ.get("RANK", "0"))
    report = {"rank": rank, "steps": seen, "losses": result.losses, "step": result.step}
    (output_dir / f"rank{rank}.json").write_text(json.dumps(report))
    torch.save(model.state_dict(), output_dir / f"weights_rank{rank}.pt")
    torch.save(first_gradients, output_dir / f"gradients_rank{rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(Path(sys.argv[1]), int(sys.argv[2]))
