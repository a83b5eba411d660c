"""Side-by-side speed of maskformer and transformers 4.34.1 on the same checkpoint and inputs.

For each workload this script loads one checkpoint into both implementations, checks that their
outputs agree, and prints the median wall time of each, the ratio ours / reference, the peak
resident memory each needed on top of its loaded model, the FLOPs of the workload (counted once
with ``torch.utils.flop_counter``) and the achieved GFLOP/s as a fraction of this machine's fp32
matmul peak, measured in the same run with a large ``torch.mm``.

Every measurement runs in a fresh child process, so the peak-memory figures do not see each
other's allocations (Linux: the peak is reset through ``/proc/self/clear_refs`` before timing);
ours and the reference alternate for ``--rounds`` rounds and their timed runs are pooled, so
drifts in the machine's load hit both sides alike. ``cpu_ratio`` is the same ratio on the
process's CPU time, which other processes' load disturbs less than wall time.

Two end-to-end workloads (image files -> panoptic PNG + JSON): ``end-to-end`` with the tiny model
on 8 photos, where pre- and post-processing weigh most, and ``swin-tiny-end-to-end`` with the
swin-tiny configuration on 4 photos, where the forward pass does, as in a deployment.

On the swin-tiny forward and the end-to-end workloads, extra rows (``--variants``) time ours with
bfloat16 weights (skipped, with the reason, on a CPU without bfloat16 instructions) and ONNX
Runtime (float32) running the same checkpoint exported by ``maskformer.export``, with their
agreement with the reference (max abs logit difference; identical panoptic PNG pixels). ``--compile`` adds rows for ours under
``torch.compile`` (an opt-in path) on the forward workloads.

    python benchmarks/compare.py                      # all workloads, 2 threads
    python benchmarks/compare.py --threads 1 --workloads tiny-forward train-step
    python benchmarks/compare.py --markdown           # the README's Performance table
    python benchmarks/compare.py --markdown --compile --repeats 5 --rounds 2
    python benchmarks/compare.py --workloads swin-tiny-forward end-to-end swin-tiny-end-to-end \
        --repeats 3 --rounds 2 --warmup 1 --markdown   # the deploy rows

Requires the test extra (transformers==4.34.1 is the reference).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT.parent / "shared" / "data"

WORKLOADS = (
    "swin-tiny-forward",
    "tiny-forward",
    "train-step",
    "end-to-end",
    "swin-tiny-end-to-end",
)
FORWARD_WORKLOADS = ("swin-tiny-forward", "tiny-forward")
# Extra rows (``--variants``): ours with bfloat16 weights, and the same checkpoint exported to
# ONNX and run by ONNX Runtime (float32), on the workloads that a deployment runs.
VARIANTS = ("ours-bf16", "onnxruntime")
VARIANT_WORKLOADS = ("swin-tiny-forward", "end-to-end", "swin-tiny-end-to-end")
# The end-to-end ONNX file's fixed size: the default processor makes the landscape sample photos
# 800 x 1066, padded to 800 x 1088, so this size runs them exactly as PyTorch's batch does.
END_TO_END_ONNX_SIZE = (800, 1088)

# --------------------------------------------------------------------------------------------
# Configurations (as plain dicts in the reference's config.json layout, so both sides read them)
# --------------------------------------------------------------------------------------------


def swin_tiny_ade_config() -> dict[str, Any]:
    """The swin-tiny ADE20K configuration: embed 96, depths 2-2-6-2, window 7, 150 labels."""
    return {
        "backbone_config": {
            "model_type": "swin",
            "embed_dim": 96,
            "depths": [2, 2, 6, 2],
            "num_heads": [3, 6, 12, 24],
            "window_size": 7,
            "image_size": 224,
            "drop_path_rate": 0.3,
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
        "decoder_config": {"model_type": "detr"},
        "id2label": {str(i): f"class_{i}" for i in range(150)},
        "label2id": {f"class_{i}": i for i in range(150)},
    }


def tiny_config() -> dict[str, Any]:
    """A tiny Swin configuration (about 1.7 M parameters), the size used in the parity tests."""
    return {
        "backbone_config": {
            "model_type": "swin",
            "embed_dim": 32,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 1, 1],
            "window_size": 4,
            "image_size": 224,
            "drop_path_rate": 0.0,  # deterministic training step on both sides
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
        "decoder_config": {
            "model_type": "detr",
            "d_model": 64,
            "decoder_attention_heads": 4,
            "decoder_ffn_dim": 128,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "encoder_layers": 2,
            "num_queries": 10,
            "dropout": 0.0,  # deterministic training step on both sides
        },
        "fpn_feature_size": 64,
        "mask_feature_size": 64,
        "id2label": {str(i): f"class_{i}" for i in range(10)},
        "label2id": {f"class_{i}": i for i in range(10)},
    }


def write_reference_checkpoint(config: dict[str, Any], folder: Path, seed: int = 0) -> Path:
    """Build the reference model with random weights and save it in the Hugging Face format."""
    import torch
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation

    torch.manual_seed(seed)
    model = MaskFormerForInstanceSegmentation(MaskFormerConfig(**json.loads(json.dumps(config))))
    # Random init leaves the relative-position tables at zero; give them values so the
    # comparison exercises them.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                param.normal_(0.0, 0.02)
    model.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def matmul_peak_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of a large square ``torch.mm`` on this machine with ``threads`` threads: the
    best of ``repeats`` runs (a peak, so other processes' load lowers it as little as possible)."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    for _ in range(2):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# --------------------------------------------------------------------------------------------
# Workloads: each returns (callable to time, outputs for the agreement check)
# --------------------------------------------------------------------------------------------


def _load_model(impl: str, checkpoint: Path):
    import torch

    if impl == "ours-bf16":  # the library's reduced-precision path: bfloat16 weights
        from maskformer import MaskFormerForInstanceSegmentation

        return MaskFormerForInstanceSegmentation.from_pretrained(
            checkpoint, torch_dtype=torch.bfloat16
        )
    if impl.startswith("ours"):
        from maskformer import MaskFormerForInstanceSegmentation
    else:
        from transformers import MaskFormerForInstanceSegmentation
    return MaskFormerForInstanceSegmentation.from_pretrained(checkpoint)


def _onnx_model(path: Path, threads: int):
    from maskformer.onnx_backend import OnnxRuntimeModel

    return OnnxRuntimeModel(path, threads=threads)


def _forward_workload(impl: str, checkpoint: Path, size: int, batch: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator)
    if impl == "onnxruntime":
        session = _onnx_model(checkpoint, torch.get_num_threads())

        def run_onnx():
            out = session(pixel_values=pixel_values)
            return out.class_queries_logits, out.masks_queries_logits

        return run_onnx, None
    model = _load_model(impl, checkpoint).eval()
    if impl == "ours-bf16":
        pixel_values = pixel_values.to(torch.bfloat16)
    counted = model
    if impl == "ours-compiled":  # opt-in path; the first (untimed) run compiles
        model = torch.compile(model)

    def run():
        with torch.inference_mode():
            out = model(pixel_values=pixel_values)
        return out.class_queries_logits, out.masks_queries_logits

    def count():  # FlopCounterMode's module tracker needs autograd, so no inference mode here
        counted(pixel_values=pixel_values)

    return run, count


def _train_step_workload(impl: str, checkpoint: Path, size: int, batch: int):
    import torch

    model = _load_model(impl, checkpoint).train()  # tiny_config() has no dropout: deterministic
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator)
    mask_labels, class_labels = [], []
    for _ in range(batch):
        count = 3
        masks = (torch.rand(count, size, size, generator=generator) > 0.5).float()
        mask_labels.append(masks)
        class_labels.append(torch.randint(0, 10, (count,), generator=generator))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def run():
        optimizer.zero_grad(set_to_none=True)
        out = model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels)
        loss = out.loss.sum()
        loss.backward()
        optimizer.step()
        return (loss.detach().reshape(1),)

    return run, run


def _photo_paths(count: int) -> list[Path]:
    photos = sorted(SAMPLE_DATA.glob("*/images/*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no sample photos under {SAMPLE_DATA}")
    return [photos[i % len(photos)] for i in range(count)]


def _end_to_end_workload(impl: str, checkpoint: Path, count: int):
    """Image files on disk -> panoptic segments written as PNG + JSON, as a user would run it.

    Ours is the library's own prediction path (``maskformer.engine.predict.predict_images``, one
    image per batch like the reference loop below); the model is loaded once, outside the timed
    region, on both sides.
    """
    import numpy as np
    import torch
    from PIL import Image

    photos = _photo_paths(count)
    out_dir = Path(tempfile.mkdtemp(prefix=f"e2e-{impl}-"))
    if impl in ("ours", "ours-bf16", "onnxruntime"):
        from maskformer import MaskFormerImageProcessor
        from maskformer.engine.predict import PredictOptions, predict_images

        if impl == "onnxruntime":  # `maskformer predict --backend onnxruntime`
            model = _onnx_model(checkpoint, torch.get_num_threads())
            processor = model.processor()
        else:
            model = _load_model(impl, checkpoint).eval()
            processor = MaskFormerImageProcessor()
        options = PredictOptions(
            task="panoptic",
            output_dir=out_dir,
            batch_size=1,
            label_ids_to_fuse=set(),
            overlay=False,
            overwrite=True,
            progress=False,
        )

        def run():
            predict_images(model, processor, photos, options)
            return _panoptic_pngs(out_dir / "panoptic", photos)

        return run, None

    from transformers import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor

    model = MaskFormerForInstanceSegmentation.from_pretrained(checkpoint).eval()
    processor = MaskFormerImageProcessor()

    def run():
        results = []
        for path in photos:
            image = Image.open(path).convert("RGB")
            inputs = processor(images=image, return_tensors="pt")
            with torch.no_grad():
                outputs = model(**inputs)
            result = processor.post_process_panoptic_segmentation(
                outputs, target_sizes=[image.size[::-1]], label_ids_to_fuse=set()
            )[0]
            segmentation = result["segmentation"].to(torch.int64).clamp(min=0).numpy()
            rgb = np.stack(
                [segmentation % 256, segmentation // 256 % 256, segmentation // 65536], -1
            )
            Image.fromarray(rgb.astype(np.uint8)).save(out_dir / f"{path.stem}.png")
            results.append(
                {
                    "file_name": f"{path.stem}.png",
                    "segments_info": [
                        {
                            "id": s["id"],
                            "category_id": s["label_id"],
                            "score": round(float(s["score"]), 6),
                        }
                        for s in result["segments_info"]
                    ],
                }
            )
        (out_dir / "panoptic.json").write_text(json.dumps({"annotations": results}))
        return _panoptic_pngs(out_dir, photos)

    return run, None


def _panoptic_pngs(folder: Path, photos: list[Path]) -> tuple:
    """The written panoptic PNGs as ``(H, W, 3)`` uint8 arrays, for the agreement check."""
    import numpy as np
    from PIL import Image

    return tuple(np.asarray(Image.open(folder / f"{p.stem}.png").convert("RGB")) for p in photos)


def build_workload(name: str, impl: str, checkpoints: dict[str, Path]):
    if impl == "onnxruntime":
        if name == "swin-tiny-end-to-end":
            return _end_to_end_workload(impl, checkpoints["swin-tiny-e2e-onnx"], count=4)
        checkpoints = {k: checkpoints[f"{k}-onnx"] for k in ("swin-tiny", "tiny")}
    if name == "swin-tiny-forward":
        return _forward_workload(impl, checkpoints["swin-tiny"], size=512, batch=1)
    if name == "tiny-forward":
        return _forward_workload(impl, checkpoints["tiny"], size=384, batch=1)
    if name == "train-step":
        return _train_step_workload(impl, checkpoints["tiny"], size=384, batch=2)
    if name == "end-to-end":  # the tiny model: pre- and post-processing weigh most
        return _end_to_end_workload(impl, checkpoints["tiny"], count=8)
    if name == "swin-tiny-end-to-end":  # a deployable model: the forward pass weighs most
        return _end_to_end_workload(impl, checkpoints["swin-tiny"], count=4)
    raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")


def _measure_in_child(queue, name, impl, checkpoints, threads, repeats, warmup, count_flops):
    """Child-process body: build, time, and report one (workload, implementation) pair."""
    try:
        import numpy as np
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        run, count = build_workload(name, impl, checkpoints)
        result: dict[str, Any] = {}
        first_output = run()  # also a warm-up
        for _ in range(max(warmup - 1, 0)):
            run()
        rss_before = _rss_kib("VmRSS")
        peak_reset = _reset_peak_rss()
        times, cpu_times = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            run()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        if peak_reset:
            result["peak_mib"] = max(_rss_kib("VmHWM") - rss_before, 0) / 1024
        result["times"], result["cpu_times"] = times, cpu_times
        if count_flops and count is not None:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                count()
            result["flops"] = counter.get_total_flops()
        if isinstance(first_output, tuple):
            result["outputs"] = [
                t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
                for t in first_output
            ]
        queue.put(result)
    except BaseException as error:  # report instead of hanging the parent
        import traceback

        queue.put({"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"})


def measure(name, impl, checkpoints, threads, repeats, warmup, count_flops) -> dict[str, Any]:
    """Run one measurement in a fresh ``spawn`` child (clean memory peak, no shared caches)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(
        target=_measure_in_child,
        args=(queue, name, impl, checkpoints, threads, repeats, warmup, count_flops),
    )
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"{name} ({impl}) failed: {result['error']}")
    return result


def measure_pair(name, checkpoints, args, variants=()) -> tuple[dict[str, Any], ...]:
    """Alternate ours / reference (and ``variants``) children for ``args.rounds`` rounds, so slow
    drifts of the machine's load hit every side alike; pool the timed runs and keep the largest
    peak. Returns ours, the reference, then one entry per variant."""
    impls = ("ours", "ref", *variants)
    pooled: dict[str, dict[str, Any]] = {impl: {"times": [], "cpu_times": []} for impl in impls}
    for round_index in range(args.rounds):
        for impl in impls:
            count_flops = impl == "ours" and round_index == 0
            result = measure(
                name, impl, checkpoints, args.threads, args.repeats, args.warmup, count_flops
            )
            entry = pooled[impl]
            entry["times"] += result["times"]
            entry["cpu_times"] += result["cpu_times"]
            if "peak_mib" in result:
                entry["peak_mib"] = max(entry.get("peak_mib", 0.0), result["peak_mib"])
            for key in ("flops", "outputs"):
                if key in result and key not in entry:
                    entry[key] = result[key]
    for entry in pooled.values():
        entry["seconds"] = statistics.median(entry["times"])
        entry["cpu_seconds"] = statistics.median(entry["cpu_times"])
    return tuple(pooled[impl] for impl in impls)


def agreement(name: str, ours: dict[str, Any], ref: dict[str, Any], tolerance: float | None) -> str:
    """Max abs difference of the outputs (forward workloads: must be <= ``tolerance``), the
    loss difference (train step) or the share of identical panoptic PNG pixels (end to end)."""
    import numpy as np

    if "outputs" not in ours or "outputs" not in ref:
        return "n/a"
    pairs = list(zip(ours["outputs"], ref["outputs"]))
    if name.endswith("end-to-end"):
        same = sum(int((a == b).all(-1).sum()) for a, b in pairs if a.shape == b.shape)
        total = sum(b.shape[0] * b.shape[1] for _, b in pairs)
        return f"{same / total:.2%} px"
    diff = max(float(np.abs(a - b).max()) for a, b in pairs)
    if tolerance is not None and diff > tolerance and name != "train-step":
        raise SystemExit(f"{name}: outputs differ by {diff:.3g} > {tolerance}")
    return f"{diff:.1e}"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor or machine string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_capability() -> str:
    """Which bfloat16 instructions this CPU has (``/proc/cpuinfo`` flags), or ``none``."""
    from maskformer.precision import cpu_flags

    found = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
    return ", ".join(found) or "none"


def usable_variants(wanted: list[str]) -> tuple[list[str], list[str]]:
    """The variants this machine can run, and one reason per skipped one."""
    import torch

    from maskformer.precision import cpu_supports

    variants, skipped = [], []
    for variant in wanted:
        if variant == "ours-bf16" and cpu_supports(torch.bfloat16) is not True:
            skipped.append(
                "ours-bf16 rows: this CPU has no bfloat16 instructions (avx512_bf16 / amx_bf16); "
                "bfloat16 would run emulated, which measures the emulation, not the path"
            )
            continue
        if variant == "onnxruntime":
            try:
                import onnxruntime  # noqa: F401
                import onnxscript  # noqa: F401
            except ImportError:
                skipped.append("onnxruntime rows: the onnx extra is not installed")
                continue
        variants.append(variant)
    return variants, skipped


def export_onnx_files(checkpoints: dict[str, Path], folder: Path, workloads) -> dict[str, Path]:
    """The benchmark checkpoints exported to ONNX (parity-checked by ``export_model``): swin-tiny
    at 512 x 512 for the forward rows, both models at the end-to-end size."""
    from maskformer import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor
    from maskformer.export import export_model

    files = {}
    for name, key, size, workload in (
        ("swin-tiny", "swin-tiny", (512, 512), "swin-tiny-forward"),
        ("tiny", "tiny", END_TO_END_ONNX_SIZE, "end-to-end"),
        ("swin-tiny-e2e", "swin-tiny", END_TO_END_ONNX_SIZE, "swin-tiny-end-to-end"),
    ):
        path = folder / f"{name}.onnx"
        if workload in workloads:
            model = MaskFormerForInstanceSegmentation.from_pretrained(checkpoints[key]).eval()
            export_model(model, MaskFormerImageProcessor(), path, "onnx", size)
            print(f"  exported {key} to ONNX at {size[0]}x{size[1]}", file=sys.stderr, flush=True)
        files[f"{name}-onnx"] = path
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating ours/reference children per workload"
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs output difference")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time ours under torch.compile (opt-in path) for the forward workloads",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=list(VARIANTS),
        choices=VARIANTS,
        help=f"extra rows on {', '.join(VARIANT_WORKLOADS)} (default: all; none: no extra rows)",
    )
    args = parser.parse_args(argv)

    import torch

    variants, skipped = usable_variants(args.variants)
    for reason in skipped:
        print(f"  skipped: {reason}", file=sys.stderr, flush=True)

    peak = matmul_peak_gflops(args.threads)
    with tempfile.TemporaryDirectory(prefix="maskformer-bench-") as tmp:
        checkpoints = {
            "tiny": write_reference_checkpoint(tiny_config(), Path(tmp) / "tiny"),
            "swin-tiny": write_reference_checkpoint(
                swin_tiny_ade_config(), Path(tmp) / "swin-tiny"
            ),
        }
        if "onnxruntime" in variants:
            checkpoints.update(export_onnx_files(checkpoints, Path(tmp), args.workloads))
        rows = []
        for name in args.workloads:
            extra = [v for v in variants if name in VARIANT_WORKLOADS]
            ours, ref, *measured = measure_pair(name, checkpoints, args, extra)
            agree = agreement(name, ours, ref, args.tolerance)
            flops = ours.get("flops")
            gflops = flops / ours["seconds"] / 1e9 if flops else None
            rows.append(
                {
                    "workload": name,
                    "ours_ms": ours["seconds"] * 1e3,
                    "reference_ms": ref["seconds"] * 1e3,
                    "ratio": ours["seconds"] / ref["seconds"],
                    "ours_peak_mib": ours.get("peak_mib"),
                    "reference_peak_mib": ref.get("peak_mib"),
                    "gflop": flops / 1e9 if flops else None,
                    "gflops_per_s": gflops,
                    "fraction_of_peak": gflops / peak if gflops else None,
                    "cpu_ratio": ours["cpu_seconds"] / ref["cpu_seconds"],
                    "agreement": agree,
                }
            )
            base = rows[-1]
            for variant, entry in zip(extra, measured):
                seconds = entry["seconds"]
                rate = flops / seconds / 1e9 if flops else None
                rows.append(
                    {
                        **base,
                        "workload": f"{name} ({variant})",
                        "ours_ms": seconds * 1e3,
                        "ratio": seconds / ref["seconds"],
                        "cpu_ratio": entry["cpu_seconds"] / ref["cpu_seconds"],
                        "ours_peak_mib": entry.get("peak_mib"),
                        "gflops_per_s": rate,
                        "agreement": agreement(name, entry, ref, None),
                    }
                )
            print(f"  measured {name}", file=sys.stderr, flush=True)
            if args.compile and name in FORWARD_WORKLOADS:
                compiled = measure(
                    name,
                    "ours-compiled",
                    checkpoints,
                    args.threads,
                    args.repeats,
                    args.warmup,
                    False,
                )
                seconds = statistics.median(compiled["times"])
                gflops = flops / seconds / 1e9 if flops else None
                rows.append(
                    {
                        **rows[-1],
                        "workload": f"{name} (torch.compile)",
                        "ours_ms": seconds * 1e3,
                        "ratio": seconds / ref["seconds"],
                        "ours_peak_mib": compiled.get("peak_mib"),
                        "gflops_per_s": gflops,
                        "fraction_of_peak": gflops / peak if gflops else None,
                        "cpu_ratio": statistics.median(compiled["cpu_times"]) / ref["cpu_seconds"],
                        "agreement": agreement(name, compiled, ref, args.tolerance),
                    }
                )

    peak = max(peak, matmul_peak_gflops(args.threads))  # measured again after the workloads
    for row in rows:
        rate = row["gflops_per_s"]
        row["fraction_of_peak"] = rate / peak if rate else None
    header = (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads={args.threads}, "
        f"fp32 matmul peak {peak:.1f} GFLOP/s, CPU bfloat16 instructions: "
        f"{bf16_capability()}"
    )
    print(header)
    columns = [
        ("workload", "{}"),
        ("ours_ms", "{:.1f}"),
        ("reference_ms", "{:.1f}"),
        ("ratio", "{:.2f}"),
        ("ours_peak_mib", "{:.0f}"),
        ("reference_peak_mib", "{:.0f}"),
        ("gflop", "{:.2f}"),
        ("gflops_per_s", "{:.1f}"),
        ("fraction_of_peak", "{:.0%}"),
        ("cpu_ratio", "{:.2f}"),
        ("agreement", "{}"),
    ]

    def cell(row, key, fmt):
        value = row[key]
        return "-" if value is None else fmt.format(value)

    if args.markdown:
        print("| " + " | ".join(key for key, _ in columns) + " |")
        print("|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join(cell(row, k, f) for k, f in columns) + " |")
    else:
        widths = [max(len(k), 12) for k, _ in columns]
        print("  ".join(k.ljust(w) for (k, _), w in zip(columns, widths)))
        for row in rows:
            print("  ".join(cell(row, k, f).ljust(w) for (k, f), w in zip(columns, widths)))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
