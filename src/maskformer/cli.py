"""The ``maskformer`` command: ``predict``, ``evaluate``, ``train``, ``plot`` and ``demo``.

Exit codes: 0 = done; 1 = done, but some inputs could not be read (they are listed);
2 = nothing done because of a bad argument, a missing file or folder, or a model that cannot
be loaded (one line on stderr; ``--traceback`` shows the full Python traceback instead).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskformer",
        description="MaskFormer segmentation: predict, evaluate, train, or run the demo.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="segment image files and write label PNGs, JSON and overlays",
        description="Segment images (files, folders or glob patterns) and write, per image, a "
        "label PNG (semantic), a COCO panoptic PNG + panoptic.json (panoptic) or COCO results "
        "in instances.json (instance), plus an overlay picture in overlays/.",
    )
    _add_model_arguments(predict)
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs")
    predict.add_argument("--task", choices=("semantic", "instance", "panoptic"), default="panoptic")
    predict.add_argument("--output-dir", type=Path, default=Path("predictions"))
    predict.add_argument(
        "--fuse-labels",
        type=int,
        nargs="*",
        default=None,
        metavar="ID",
        help="panoptic: class ids whose segments merge into one per image (stuff classes)",
    )
    predict.add_argument("--no-overlay", action="store_true", help="do not write overlay pictures")
    predict.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )
    predict.set_defaults(handler=_run_predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="score a model (or existing prediction files) on a data folder",
        description="Print and save the metrics of a model run over a data folder, or of "
        "prediction files (--predictions) written by `maskformer predict` or another system.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="local checkpoint folder or Hugging Face hub id")
    source.add_argument(
        "--predictions",
        type=Path,
        help="semantic: folder of label PNGs; panoptic: COCO panoptic json (+ PNG folder of the "
        "same name) or a `maskformer predict` output folder",
    )
    evaluate.add_argument("--data", type=Path, required=True, help="data folder")
    evaluate.add_argument("--format", choices=("ade20k", "coco-panoptic"), required=True)
    evaluate.add_argument("--task", choices=("semantic", "instance", "panoptic"), required=True)
    evaluate.add_argument(
        "--annotations", type=Path, help="coco-panoptic: the json (default: the one in --data)"
    )
    evaluate.add_argument("--image-dir", type=Path, help="coco-panoptic: default DATA/images")
    evaluate.add_argument("--panoptic-dir", type=Path, help="coco-panoptic: default DATA/panoptic")
    evaluate.add_argument(
        "--no-reduce-labels",
        action="store_true",
        help="ade20k: label maps hold 0-based class ids (default: 0 = ignored, k -> k-1)",
    )
    evaluate.add_argument(
        "--num-labels", type=int, help="--predictions semantic: number of classes"
    )
    evaluate.add_argument("--max-images", type=int, help="evaluate the first N images only")
    evaluate.add_argument(
        "--output",
        type=Path,
        help="JSON file of the figures (default: evaluation_TASK.json)",
    )
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    _add_runtime_arguments(evaluate)
    evaluate.set_defaults(handler=_run_evaluate)

    train = commands.add_parser(
        "train",
        help="train or fine-tune a model (also under torchrun)",
        add_help=False,
    )
    train.set_defaults(handler=_run_train)
    plot = commands.add_parser(
        "plot", help="draw RUN_DIR/curves.png (loss and validation metrics) from a training log"
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a maskformer train --output-dir")
    plot.add_argument("--output", default=None, help="image path (default: RUN_DIR/curves.png)")
    plot.set_defaults(handler=_run_plot)

    demo = commands.add_parser(
        "demo",
        help="train a small model on built-in synthetic shapes, evaluate it, draw the results",
        description="Builds the synthetic shapes data set, trains a small MaskFormer on the CPU "
        "with the project's trainer, reports mIoU and PQ on held-out images and writes overlays "
        "and a contact sheet.",
    )
    from maskformer.demo import add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(handler=_run_demo)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="local checkpoint folder or Hugging Face hub id"
    )
    _add_runtime_arguments(parser)


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="model weights' precision",
    )
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="minimum segment score (panoptic, instance)"
    )
    parser.add_argument("--mask-threshold", type=float, default=0.5)
    parser.add_argument("--overlap-mask-area-threshold", type=float, default=0.8)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`_add_runtime_arguments` that ``predict`` and ``evaluate`` share
    (device and dtype are the model loader's)."""
    return {
        "batch_size": args.batch_size,
        "threshold": args.threshold,
        "mask_threshold": args.mask_threshold,
        "overlap_mask_area_threshold": args.overlap_mask_area_threshold,
        "progress": not args.no_progress,
    }


# ------------------------------------------------------------------------------------ handlers
def _load(args: argparse.Namespace):
    import torch

    from maskformer.engine.loading import load_model, load_processor, resolve_device

    device = resolve_device(args.device)
    model = load_model(args.model, device, getattr(torch, args.dtype))
    return model, load_processor(args.model)


def _run_predict(args: argparse.Namespace) -> int:
    from maskformer.engine.predict import (
        PredictOptions,
        check_no_overwrite,
        collect_image_paths,
        predict_images,
    )

    options = PredictOptions(
        task=args.task,
        output_dir=args.output_dir,
        label_ids_to_fuse=set(args.fuse_labels or ()),
        overlay=not args.no_overlay,
        overwrite=args.overwrite,
        **_runtime_options(args),
    )
    paths = collect_image_paths(args.inputs)
    check_no_overwrite(paths, options)  # before the (slow) model load
    model, processor = _load(args)
    report = predict_images(model, processor, paths, options)
    print(
        f"segmented {report.num_images} of {len(paths)} images; outputs in {options.output_dir}",
        file=sys.stderr,
    )
    if report.failed:
        print(f"{len(report.failed)} input(s) could not be read:", file=sys.stderr)
        for path, reason in report.failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def _run_evaluate(args: argparse.Namespace) -> int:
    from maskformer.engine.evaluate import (
        EvaluateOptions,
        evaluate_model,
        evaluate_prediction_files,
        format_results,
        to_jsonable,
    )

    options = EvaluateOptions(
        task=args.task,
        data_format=args.format,
        reduce_labels=not args.no_reduce_labels,
        max_images=args.max_images,
        annotations=args.annotations,
        image_dir=args.image_dir,
        panoptic_dir=args.panoptic_dir,
        **_runtime_options(args),
    )
    output = args.output or Path(f"evaluation_{args.task}.json")
    if output.exists() and not args.overwrite:
        raise FileExistsError(
            f"output file {output} already exists; pass --overwrite to replace it"
        )
    if not args.data.is_dir():
        raise FileNotFoundError(f"data folder {args.data} does not exist")
    if args.predictions is not None:
        results = evaluate_prediction_files(args.predictions, args.data, options, args.num_labels)
    else:
        model, processor = _load(args)
        results = evaluate_model(model, processor, args.data, options)
    print(format_results(results, args.task))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(to_jsonable(results), indent=1))
    print(f"figures written to {output}", file=sys.stderr)
    return EXIT_OK


def _run_train(args: argparse.Namespace) -> int:
    raise AssertionError("handled in main")  # pragma: no cover


def _train_main(argv: list[str]) -> int:
    from maskformer.engine.train import add_train_arguments, run_train_from_args

    parser = argparse.ArgumentParser(prog="maskformer train", description="Train MaskFormer.")
    add_train_arguments(parser)
    result = run_train_from_args(parser.parse_args(argv))
    return result if isinstance(result, int) else EXIT_OK


def _run_plot(args: argparse.Namespace) -> int:
    from maskformer.engine.curves import draw_curves

    print(f"curves: {draw_curves(args.run_dir, args.output)}", file=sys.stderr)
    return EXIT_OK


def _run_demo(args: argparse.Namespace) -> int:
    from maskformer.demo import run_demo_from_args

    return run_demo_from_args(args)


# ---------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maskformer`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in argv
    parser = build_parser()
    # `train` owns its flags (the trainer's parser): hand everything after it over untouched.
    command_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    try:
        if command_at is not None and argv[command_at] == "train":
            return _train_main(argv[command_at + 1 :])
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return args.handler(args)
    except KeyboardInterrupt:
        print("maskformer: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one readable line, the way a command-line tool should fail
        if show_traceback:
            raise
        from maskformer.engine.loading import ModelLoadError

        expected = (ModelLoadError, FileNotFoundError, FileExistsError, ValueError, TypeError)
        if not isinstance(error, expected):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"maskformer: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
