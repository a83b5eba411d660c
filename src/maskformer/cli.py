"""The ``maskformer`` command: ``predict``, ``evaluate``, ``train``, ``plot``, ``export``,
``serve`` and ``demo``.

Exit codes: 0 = done; 1 = done, but some inputs could not be read or segmented (they are
listed, one line each); 2 = stopped by a bad argument, a missing or unreadable file or folder, an
output that cannot be written, or a model that cannot be loaded (one line on stderr;
``--traceback`` shows the full Python traceback instead); 130 = interrupted (Ctrl-C).
Numbers are checked when the command line is parsed (:mod:`maskformer.cli_types`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskformer import cli_export, cli_predict, cli_serve
from maskformer.cli_types import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    ArgumentParser,
    UsageError,
    non_negative_int,
    positive_int,
    probability,
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
        type=non_negative_int,
        nargs="*",
        default=None,
        metavar="ID",
        help="panoptic: class ids whose segments merge into one per image (stuff classes)",
    )
    predict.add_argument("--no-overlay", action="store_true", help="do not write overlay pictures")
    predict.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )
    cli_predict.add_scale_arguments(predict)
    predict.set_defaults(handler=cli_predict.run)

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
        "same name); instance: COCO results json; or a `maskformer predict` output folder",
    )
    evaluate.add_argument("--data", type=Path, required=True, help="data folder")
    evaluate.add_argument(
        "--format", choices=("ade20k", "coco-panoptic", "coco-instances"), required=True
    )
    evaluate.add_argument("--task", choices=("semantic", "instance", "panoptic"), required=True)
    evaluate.add_argument(
        "--annotations",
        "--coco-json",
        type=Path,
        help="coco-panoptic / coco-instances: the json (default: the one in --data)",
    )
    evaluate.add_argument("--image-dir", type=Path, help="coco-*: default DATA/images")
    evaluate.add_argument("--panoptic-dir", type=Path, help="coco-panoptic: default DATA/panoptic")
    evaluate.add_argument(
        "--no-reduce-labels",
        action="store_true",
        help="ade20k: label maps hold 0-based class ids (default: 0 = ignored, k -> k-1)",
    )
    evaluate.add_argument(
        "--num-labels", type=positive_int, help="--predictions semantic: number of classes"
    )
    evaluate.add_argument(
        "--max-images", type=positive_int, help="evaluate the first N images only"
    )
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
    cli_serve.add_parser(commands)
    cli_export.add_parser(commands)
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
        help="model weights' precision (bfloat16: fast on CPUs with avx512_bf16 / amx_bf16; "
        "post-processing stays float32)",
    )
    parser.add_argument(
        "--backend",
        choices=("pytorch", "onnxruntime"),
        default="pytorch",
        help="onnxruntime: --model is an .onnx file from `maskformer export` (needs "
        "maskformer[onnx]); images are fitted into its fixed size",
    )
    parser.add_argument("--batch-size", type=positive_int, default=2)
    parser.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="minimum segment score in [0, 1] (panoptic, instance)",
    )
    parser.add_argument(
        "--mask-threshold", type=probability, default=0.5, help="mask probability cut in [0, 1]"
    )
    parser.add_argument(
        "--overlap-mask-area-threshold",
        type=probability,
        default=0.8,
        help="kept share of a segment's mask in [0, 1]",
    )
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
def _load(args: argparse.Namespace, device_name: str | None = None):
    """The model and its processor; any failure to load them is one ``ModelLoadError`` line
    naming ``--model`` (a config of the wrong shape, corrupt weights, a bad processor file)."""
    import torch

    from maskformer.engine.loading import ModelLoadError, load_model, load_processor, resolve_device
    from maskformer.engine.segment import OUT_OF_MEMORY, first_line

    if getattr(args, "backend", "pytorch") == "onnxruntime":
        return _load_onnx(args)
    device = resolve_device(device_name or args.device)
    from maskformer.precision import precision_warning

    warning = precision_warning(args.dtype, device)
    if warning:
        _say(f"maskformer: warning: {warning}")
    try:
        model = load_model(args.model, device, getattr(torch, args.dtype))
    except (ModelLoadError, *OUT_OF_MEMORY):
        raise
    except Exception as error:
        raise ModelLoadError(
            f"cannot load model {args.model}: {type(error).__name__}: {first_line(error)}"
        ) from error
    try:
        processor = load_processor(args.model)
    except Exception as error:
        raise ModelLoadError(
            f"cannot load the image processor of {args.model} (preprocessor_config.json): "
            f"{type(error).__name__}: {first_line(error)}"
        ) from error
    return model, processor


def _load_onnx(args: argparse.Namespace):
    """``--backend onnxruntime``: the .onnx file and the processor stored in its metadata."""
    if args.dtype != "float32" or args.device not in ("auto", "cpu"):
        raise ValueError(
            "--backend onnxruntime runs the exported float32 graph on the CPU; leave --dtype "
            "and --device at their defaults"
        )
    from maskformer.onnx_backend import OnnxRuntimeModel

    model = OnnxRuntimeModel(args.model)
    return model, model.processor()


def _run_evaluate(args: argparse.Namespace) -> int:
    from maskformer.engine.evaluate import (
        EvaluateOptions,
        check_output_file,
        evaluate_model,
        evaluate_prediction_files,
        format_results,
        to_jsonable,
    )
    from maskformer.utils.atomic import atomic_write_json

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
    check_output_file(output, args.overwrite)  # before the (slow) evaluation
    if not args.data.is_dir():
        raise FileNotFoundError(f"data folder {args.data} does not exist")
    if args.predictions is not None:
        results = evaluate_prediction_files(args.predictions, args.data, options, args.num_labels)
    else:
        model, processor = _load(args)
        results = evaluate_model(model, processor, args.data, options)
    atomic_write_json(output, to_jsonable(results), indent=1)
    print(format_results(results, args.task), flush=True)
    for reason in results.get("skipped", []):  # each reason names its file
        _say(f"skipped: {reason}")
    _say(f"figures written to {output}")
    return EXIT_PARTIAL if results.get("skipped") else EXIT_OK


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
    except UsageError as error:  # argparse's complaint, as one line
        _say(str(error))
        return EXIT_USAGE
    except SystemExit as exit_:  # --help, --version and the train parser's own errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        if show_traceback:
            raise
        _say("maskformer: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `maskformer evaluate ... | head`: the reader left, say nothing
        _silence_stdout()
        return EXIT_OK
    except Exception as error:  # one readable line, the way a command-line tool should fail
        if show_traceback or not isinstance(error, _expected_errors()):
            raise
        _say(f"maskformer: error: {_describe(error)}")
        return EXIT_USAGE


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The faults a person can cause or fix: bad arguments and files, an unloadable model,
    running out of memory. Anything else is a bug and keeps its traceback."""
    from maskformer.engine.loading import ModelLoadError
    from maskformer.engine.segment import OUT_OF_MEMORY

    return (ModelLoadError, OSError, ValueError, TypeError, *OUT_OF_MEMORY)


def _describe(error: BaseException) -> str:
    """One line for ``error``: its message (all lines joined), or a hint for out-of-memory."""
    from maskformer.engine.segment import OUT_OF_MEMORY

    if isinstance(error, OUT_OF_MEMORY):
        return "out of memory; try a smaller --batch-size (or --dtype bfloat16 on a GPU)"
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if (
        isinstance(error, OSError)
        and error.filename is not None
        and str(error.filename) not in text
    ):
        text = f"{text}: {error.filename}"
    return text or type(error).__name__


def _say(message: str) -> None:
    """One line on stderr, control characters (a newline in a file name) shown escaped."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    with contextlib.suppress(BrokenPipeError, ValueError):  # stderr closed: nowhere to report
        print(line, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. captured in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
