"""The ``maskformer export`` subcommand: its flags and its handler (the shared pieces — model
loading, one-line messages — stay in :mod:`maskformer.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from maskformer.cli_types import EXIT_OK, positive_float, positive_int


def add_parser(commands: Any) -> None:
    from maskformer.export import DEFAULT_TOLERANCE, EXPORT_FORMATS

    export = commands.add_parser(
        "export",
        help="export a model to ONNX or torch.export, checked against PyTorch",
        description="Export a model at one fixed input size to ONNX (opset >= 17) or a "
        "torch.export ExportedProgram (.pt2). The file carries the input size, the label names "
        "and the processor configuration; it is written only when its logits match PyTorch's on "
        "the check images.",
    )
    export.add_argument("--model", required=True, help="local checkpoint folder or hub id")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    export.add_argument("--output", type=Path, required=True, help="the file to write")
    export.add_argument(
        "--height", type=positive_int, help="input height (default: the processor's size)"
    )
    export.add_argument("--width", type=positive_int, help="input width (default: --height)")
    export.add_argument(
        "--dynamic-batch", action="store_true", help="any batch size (default: batch 1)"
    )
    export.add_argument(
        "--check-images",
        nargs="+",
        metavar="PATH",
        help="photos for the parity check (default: one generated synthetic-shapes picture)",
    )
    export.add_argument(
        "--tolerance",
        type=positive_float,
        default=DEFAULT_TOLERANCE,
        help="largest logit difference allowed, relative to the logits' scale",
    )
    export.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (>= 17)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    export.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from maskformer import cli
    from maskformer.engine.segment import load_rgb_image
    from maskformer.export import export_model

    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"--output {args.output} already exists; pass --overwrite")
    if args.width is not None and args.height is None:
        raise ValueError("--width needs --height")
    size = None if args.height is None else (args.height, args.width or args.height)
    images = [load_rgb_image(Path(p)) for p in args.check_images or ()]
    model, processor = cli._load(
        argparse.Namespace(model=args.model, device="cpu", dtype="float32")
    )
    report = export_model(
        model,
        processor,
        args.output,
        args.format,
        size,
        dynamic_batch=args.dynamic_batch,
        check_images=images or None,
        tolerance=args.tolerance,
        opset=args.opset,
    )
    checked = f"{report.checked_images} image(s)" if images else "a generated picture"
    cli._say(
        f"exported {args.model} to {report.path} ({report.format}, input "
        f"{report.size[0]}x{report.size[1]}); logits match PyTorch on {checked} within "
        f"{report.max_difference:.2g} of their scale"
    )
    return EXIT_OK
