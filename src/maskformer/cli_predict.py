"""The ``maskformer predict`` subcommand: its large-image and many-image flags and its handler
(sliding window, TTA, torchrun shards, resume). The shared pieces — model loading, runtime
flags, one-line messages — stay in :mod:`maskformer.cli`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from maskformer.cli_types import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    UsageError,
    finite_float,
    non_negative_int,
    positive_int,
)


def _cli() -> Any:
    from maskformer import cli

    return cli


def add_scale_arguments(predict: argparse.ArgumentParser) -> None:
    """predict's flags for large images and many images."""
    predict.set_defaults(batch_size=1)
    predict.add_argument(
        "--sliding-window",
        action="store_true",
        help="segment each image in overlapping tiles at its own resolution (large images)",
    )
    predict.add_argument(
        "--window",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="tile size in pixels, multiples of 32 (default: the processor's shortest edge; "
        "an exported .onnx: its input size)",
    )
    predict.add_argument(
        "--overlap",
        type=finite_float,
        default=1 / 3,
        help="share of a tile its neighbour overlaps, in [0, 1) (default 0.33)",
    )
    predict.add_argument(
        "--tta",
        nargs="+",
        metavar="OPTION",
        help="test-time augmentation: scales=S1,S2,... and/or flip",
    )
    predict.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=None,
        help="background image readers (default: up to 2, on the cores the model's threads "
        "leave free; 0 = none)",
    )
    predict.add_argument(
        "--resume",
        action="store_true",
        help="skip images an earlier run with the same model and settings finished",
    )


def run(args: argparse.Namespace) -> int:
    from maskformer.engine.predict_distributed import end_process_group, start_process_group

    started = start_process_group()  # under torchrun (WORLD_SIZE > 1) only
    try:
        with _sigterm_as_interrupt():
            return _predict(args)
    except (ValueError, TypeError, OSError) as error:
        if getattr(error, "from_rank0", False):  # rank 0 says it, once
            return EXIT_USAGE
        raise
    finally:
        if started:
            end_process_group()


def _predict(args: argparse.Namespace) -> int:
    from maskformer.engine.predict import (
        PredictOptions,
        check_outputs,
        check_window_fits,
        collect_image_paths,
        predict_images,
    )
    from maskformer.engine.predict_distributed import rank_and_world
    from maskformer.engine.tta import TestTimeAugmentation

    rank, _ = rank_and_world()
    if args.window is not None and not args.sliding_window:
        raise UsageError("maskformer predict: error: --window needs --sliding-window")
    if not 0.0 <= args.overlap < 1.0:
        raise UsageError(
            f"maskformer predict: error: argument --overlap: expected a number in [0, 1), "
            f"got {args.overlap}"
        )
    if args.sliding_window and args.tta:
        raise UsageError("maskformer predict: error: --sliding-window and --tta cannot be combined")
    if args.backend == "onnxruntime" and args.tta:
        raise UsageError(
            "maskformer predict: error: --tta rescales each image; an exported .onnx has one "
            "fixed input size (use --backend pytorch)"
        )
    tta = TestTimeAugmentation.parse(args.tta) if args.tta else None
    window = tuple(args.window) if args.window else None
    options = PredictOptions(
        task=args.task,
        output_dir=args.output_dir,
        label_ids_to_fuse=set(args.fuse_labels or ()),
        overlay=not args.no_overlay,
        overwrite=args.overwrite,
        sliding_window=(window, args.overlap) if args.sliding_window and window else None,
        tta=tta,
        num_workers=args.num_workers,
        resume=args.resume,
        model_name=_model_name(args.model),
        **_cli()._runtime_options(args),
    )
    paths = collect_image_paths(args.inputs)
    _on_rank0(rank, check_outputs, paths, options)  # before the (slow) model load
    model, processor = _cli()._load(args, _local_device(args.device))
    fixed_size = getattr(model, "input_size", None)  # an exported model: its tiles' size
    if args.sliding_window and None not in (window, fixed_size) and window != tuple(fixed_size):
        raise UsageError(
            f"maskformer predict: error: --window {window[0]} {window[1]} differs from "
            f"{args.model}'s exported size {fixed_size[0]} {fixed_size[1]}; omit --window"
        )
    if args.sliding_window and window is None:  # the model's training scale, or exported size
        default = tuple(fixed_size) if fixed_size is not None else _default_window(processor)
        options.sliding_window = (default, args.overlap)
        _on_rank0(rank, check_window_fits, paths, options.sliding_window)
    report = predict_images(model, processor, paths, options)
    if rank != 0:
        return _predict_status(report)
    for _path, reason in report.failed:  # each reason names its file
        _cli()._say(f"skipped: {reason}")
    skipped = f"; {len(report.failed)} skipped" if report.failed else ""
    done = f"; {report.skipped_as_done} already done (--resume)" if report.skipped_as_done else ""
    _cli()._say(
        f"segmented {report.num_images} of {len(paths)} images{skipped}{done} in "
        f"{report.seconds:.1f} s ({report.images_per_second:.2f} images/s); "
        f"outputs in {options.output_dir}"
    )
    return _predict_status(report)


def _on_rank0(rank: int, check: Any, *args: Any) -> None:
    """Run ``check`` on rank 0 only; every rank raises what it raised (one process: just run)."""
    from maskformer.engine.predict_distributed import share_from_rank0

    error = None
    if rank == 0:
        try:
            check(*args)
        except (ValueError, TypeError, OSError) as failure:
            error = failure
    share_from_rank0(None, error)


def _predict_status(report: Any) -> int:
    if report.failed:
        return EXIT_PARTIAL if report.num_images else EXIT_USAGE
    return EXIT_OK


def _model_name(model: str) -> str:
    """How the run manifest names ``--model``: a local folder by its absolute path."""
    from maskformer.utils.hub import is_local_reference

    return str(Path(model).expanduser().resolve()) if is_local_reference(model) else model


def _default_window(processor: Any) -> tuple[int, int]:
    """The processor's training scale as a square tile: its shortest edge (or height and
    width), rounded down to a multiple of 32."""
    size = dict(getattr(processor, "size", None) or {})
    if "height" in size and "width" in size:
        sides = (int(size["height"]), int(size["width"]))
    else:
        edge = int(size.get("shortest_edge", 512))
        sides = (edge, edge)
    return tuple(max(32, side // 32 * 32) for side in sides)


def _local_device(device: str) -> str:
    """Under torchrun, ``auto`` / ``cuda`` mean this process's GPU (``LOCAL_RANK``)."""
    import torch

    local = os.environ.get("LOCAL_RANK")
    if local is not None and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(local)}"
    return device


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Any:
    """SIGTERM (a scheduler or torchrun stopping the job) stops predict like Ctrl-C: the
    finished images' records are kept. Only in the main thread; the old handler comes back."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
