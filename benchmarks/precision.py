"""Accuracy and speed of reduced-precision inference on a trained model (the demo's).

Runs the model over the demo's held-out synthetic images (the same images ``maskformer demo``
scores: ``SyntheticShapesDataset(N, 64, seed + 1_000_003)``) in float32, with bfloat16 weights
(``from_pretrained(..., torch_dtype=torch.bfloat16)``, the library's path), under
``torch.autocast(bfloat16)`` on the float32 model, and optionally float16 weights; prints mIoU,
PQ and AP of each, the share of semantic pixels identical to float32's, and the median forward
time (wall and process CPU time, which a loaded machine disturbs less). Post-processing is float32
in every row.

    python benchmarks/precision.py --model /work/demo_output/model
    python benchmarks/precision.py --model demo_output/model --threads 2 --json precision.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from maskformer import MaskFormerForInstanceSegmentation
from maskformer.data.synthetic import SyntheticShapesDataset
from maskformer.demo import IMAGE_SIZE, evaluate_on_synthetic
from maskformer.precision import cpu_supports


class Inference(torch.nn.Module):
    """``model(pixel_values)`` with its inputs cast to ``input_dtype`` (optionally under
    autocast) and its logits returned in float32, the way ``maskformer predict`` runs it."""

    def __init__(self, model: torch.nn.Module, input_dtype: torch.dtype, autocast: bool) -> None:
        super().__init__()
        self.model, self.input_dtype, self.autocast = model, input_dtype, autocast
        self.config = model.config
        self.seconds: list[tuple[float, float]] = []

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        context = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else nullcontext()
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode(), context:
            outputs = self.model(pixel_values=pixel_values.to(self.input_dtype))
        self.seconds.append((time.perf_counter() - wall, time.process_time() - cpu))
        return SimpleNamespace(
            class_queries_logits=outputs.class_queries_logits.float(),
            masks_queries_logits=outputs.masks_queries_logits.float(),
        )


def variants(folder: Path, half: bool) -> dict[str, Inference]:
    float32 = MaskFormerForInstanceSegmentation.from_pretrained(folder).eval()
    bf16 = MaskFormerForInstanceSegmentation.from_pretrained(folder, torch_dtype=torch.bfloat16)
    rows = {
        "float32": Inference(float32, torch.float32, autocast=False),
        "bfloat16 weights": Inference(bf16.eval(), torch.bfloat16, autocast=False),
        "autocast bfloat16": Inference(float32, torch.float32, autocast=True),
    }
    if half:
        fp16 = MaskFormerForInstanceSegmentation.from_pretrained(folder, torch_dtype=torch.float16)
        rows["float16 weights"] = Inference(fp16.eval(), torch.float16, autocast=False)
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    dataset = SyntheticShapesDataset(
        args.held_out, image_size=IMAGE_SIZE, seed=args.seed + 1_000_003
    )
    models = variants(args.model, args.float16)
    results: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for _ in range(args.rounds):  # alternating rounds: the machine's drifts hit every row alike
        for name, model in models.items():
            results[name] = evaluate_on_synthetic(model, dataset, args.batch_size, progress=False)
    reference = [p["semantic"] for p in results["float32"][1]]
    rows = []
    for name, (figures, predictions) in results.items():
        same = sum(int((p["semantic"] == r).sum()) for p, r in zip(predictions, reference))
        total = sum(r.size for r in reference)
        times = models[name].seconds
        rows.append(
            {
                "variant": name,
                "mIoU": figures["mIoU"],
                "PQ": figures["PQ"],
                "AP": figures["AP"],
                "identical_semantic_pixels": same / total,
                "forward_ms": statistics.median(t[0] for t in times) * 1e3,
                "forward_cpu_ms": statistics.median(t[1] for t in times) * 1e3,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("demo_output/model"))
    parser.add_argument("--held-out", type=int, default=128, help="held-out images (demo: 128)")
    parser.add_argument("--seed", type=int, default=0, help="the demo's --seed")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the images per variant")
    parser.add_argument("--float16", action="store_true", help="also float16 weights")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if not (args.model / "config.json").is_file():
        print(f"precision.py: {args.model} is not a checkpoint folder", file=sys.stderr)
        return 2
    rows = run(args)
    print(
        f"model {args.model}, {args.held_out} held-out images, threads={args.threads}, CPU "
        f"bfloat16 instructions: {cpu_supports(torch.bfloat16)}"
    )
    print("| variant | mIoU | PQ | AP | identical semantic px | forward ms | forward CPU ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['mIoU']:.4f} | {r['PQ']:.4f} | {r['AP']:.4f} | "
            f"{r['identical_semantic_pixels']:.4%} | {r['forward_ms']:.1f} | "
            f"{r['forward_cpu_ms']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
