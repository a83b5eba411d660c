"""The settings of a training run, declared once: :class:`TrainingArguments`.

Every field carries its help text, command-line group and (where it needs one) flag shape in its
``metadata``; :func:`add_train_arguments` generates the ``maskformer train`` flags from them, so a
new setting is one field, not a field plus a hand-written flag.

Flag rules: ``field_name`` becomes ``--field-name``; a boolean that defaults to True becomes
``--no-field-name``, one that defaults to False a plain switch; ``choices`` come from the
metadata; a field with ``"flag": False`` has no flag (tuples and automatic settings).
:func:`run_train_from_args` runs parsed flags and turns failures into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_FORMATS = ("ade20k", "coco-panoptic", "coco-instances", "synthetic")
AMP_MODES = ("no", "bf16", "fp16")
METRICS = ("miou", "pq", "ap")
REPORT_TO = ("none", "tensorboard")
GROUPS = ("model", "data", "validation", "optimisation", "run")


def _setting(default: Any, help: str, group: str, **flag: Any) -> Any:
    """A dataclass field with its flag's help text, group and extra ``add_argument`` options."""
    metadata = {"help": help, "group": group, **flag}
    if isinstance(default, dict | list | tuple):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


def parse_id2label(value: str) -> dict[int, str]:
    """``--id2label``: a JSON object (``'{"0": "cat", ...}'``) or a path to a JSON file."""
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"--id2label: {value!r} is neither JSON nor a file")
        text = path.read_text()
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--id2label: invalid JSON ({error})") from error
    if isinstance(mapping, dict) and "id2label" in mapping:  # a config.json
        mapping = mapping["id2label"]
    if not isinstance(mapping, dict):
        raise argparse.ArgumentTypeError("--id2label must be a JSON object {index: name}")
    try:
        return {int(key): str(name) for key, name in mapping.items()}
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--id2label keys must be integers ({error})") from error


@dataclass
class TrainingArguments:
    """Everything a training run needs. ``batch_size`` is per process.

    Model: ``model`` is a preset name (:mod:`maskformer.presets`), a local checkpoint folder or a
    hub id. ``num_labels`` / ``id2label`` set a new label set; with a pretrained checkpoint add
    ``ignore_mismatched_sizes=True`` so the class head (and loss weights) start fresh.

    Data (when no data set object is passed to :func:`~maskformer.engine.train.train`):
    ``data_format`` is ``"ade20k"`` (``data_dir`` holds ``images/`` and ``annotations/``),
    ``"coco-panoptic"`` (``coco_json``, ``image_dir``, ``panoptic_dir``), ``"coco-instances"``
    (``coco_json``, ``image_dir``) or ``"synthetic"`` (``synthetic_images`` generated shapes of
    ``synthetic_size`` pixels). ``augment`` applies the recipe's random resize (short side
    ``crop_size * [min_scale, max_scale]``), crop to ``crop_size``, flip and colour jitter.

    Validation: every ``eval_every`` steps the model is scored on the validation set (the
    ``val_*`` paths, same format as the training data) with ``metric_for_best`` (default: mIoU
    for ADE20K and synthetic data, PQ for COCO panoptic, mask AP for COCO instances); the best
    model goes to ``output_dir/best``.

    Optimisation: AdamW, ``learning_rate`` for the heads and the pixel/transformer decoders,
    ``learning_rate * backbone_lr_multiplier`` for the backbone; no weight decay on the
    parameters the model lists in ``no_weight_decay()``. Linear warm-up from ``warmup_factor``
    over ``warmup_steps``, times the poly decay ``(1 - step/max_steps) ** poly_power``.
    ``max_grad_norm`` clips the norm of all gradients together (``0`` disables). ``amp``:
    ``"no"``, ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA only, with a GradScaler).

    Checkpoints: every ``save_every`` steps into ``output_dir/checkpoints`` (the newest
    ``keep_last`` are kept; ``0`` keeps all). ``resume``: a checkpoint file, or ``"auto"`` /
    ``True`` for the newest in ``output_dir`` (starting fresh when there is none). A fresh run
    refuses an ``output_dir`` that already holds checkpoints unless ``overwrite_output_dir``.
    """

    output_dir: str = _setting("runs/maskformer", "the run's folder", "run")
    model: str = _setting(
        "tiny-resnet",
        "preset name (swin-tiny-ade, swin-base-ade, tiny-swin, tiny-resnet), checkpoint folder "
        "or hub id",
        "model",
    )
    num_labels: int | None = _setting(
        None, "number of classes of a new label set", "model", type=int
    )
    id2label: dict[int, str] | None = _setting(
        None,
        "class names: JSON object {index: name} or a JSON file (a config.json works)",
        "model",
        type=parse_id2label,
    )
    ignore_mismatched_sizes: bool = _setting(
        False, "start layers whose shapes differ from the checkpoint (the class head) anew", "model"
    )
    backbone: str | None = _setting(
        None,
        "with a preset: replace its backbone by a timm model, 'timm:NAME' (e.g. timm:convnext_tiny; "
        "needs maskformer[timm])",
        "model",
    )
    # data
    data_format: str | None = _setting(
        None,
        "ade20k: --data-dir with images/ + annotations/; coco-panoptic: --coco-json, "
        "--image-dir, --panoptic-dir; coco-instances: --coco-json, --image-dir; synthetic: "
        "generated shapes",
        "data",
        choices=DATA_FORMATS,
    )
    data_dir: str | None = _setting(None, "ADE20K-style folder", "data")
    coco_json: str | None = _setting(None, "COCO panoptic or instances annotation json", "data")
    image_dir: str | None = _setting(None, "COCO image folder", "data")
    panoptic_dir: str | None = _setting(None, "COCO panoptic PNG folder", "data")
    reduce_labels: bool = _setting(
        True, "ADE20K: keep label 0 as a class (default: 0 -> ignored, k -> k-1)", "data"
    )
    synthetic_images: int = _setting(64, "number of generated training images", "data")
    synthetic_size: int = _setting(64, "side of the generated images (px)", "data")
    augment: bool = _setting(True, "no random resize/crop/flip/colour jitter", "data")
    crop_size: int = _setting(512, "training crop side (px)", "data")
    min_scale: float = _setting(0.5, "smallest random resize factor", "data")
    max_scale: float = _setting(2.0, "largest random resize factor", "data")
    num_workers: int = _setting(2, "data-loading worker processes", "data")
    # validation
    eval_every: int = _setting(
        0, "evaluate on the validation set every N steps (0 = off)", "validation"
    )
    val_data_dir: str | None = _setting(None, "validation ADE20K-style folder", "validation")
    val_coco_json: str | None = _setting(None, "validation COCO json", "validation")
    val_image_dir: str | None = _setting(None, "validation COCO image folder", "validation")
    val_panoptic_dir: str | None = _setting(
        None, "validation COCO panoptic PNG folder", "validation"
    )
    val_synthetic_images: int = _setting(
        16, "synthetic data: number of generated validation images", "validation"
    )
    metric_for_best: str | None = _setting(
        None,
        "metric that picks OUTPUT/best (default: miou for ade20k/synthetic, pq for "
        "coco-panoptic, ap for coco-instances)",
        "validation",
        choices=METRICS,
    )
    report_to: str = _setting(
        "none",
        "tensorboard: scalars and validation overlays under OUTPUT/tensorboard "
        "(pip install 'maskformer[tensorboard]')",
        "validation",
        choices=REPORT_TO,
    )
    # optimisation
    batch_size: int = _setting(2, "per process", "optimisation")
    max_steps: int = _setting(1000, "optimisation steps", "optimisation")
    learning_rate: float = _setting(1e-4, "peak learning rate", "optimisation", aliases=("--lr",))
    backbone_lr_multiplier: float = _setting(0.1, "backbone learning-rate factor", "optimisation")
    weight_decay: float = _setting(1e-4, "AdamW weight decay", "optimisation")
    adam_betas: tuple[float, float] = _setting(
        (0.9, 0.999), "AdamW betas", "optimisation", flag=False
    )
    adam_epsilon: float = _setting(1e-8, "AdamW epsilon", "optimisation", flag=False)
    warmup_steps: int = _setting(0, "linear warm-up steps", "optimisation")
    warmup_factor: float = _setting(1e-3, "learning-rate factor at step 0", "optimisation")
    poly_power: float = _setting(0.9, "exponent of the poly decay", "optimisation")
    max_grad_norm: float = _setting(
        0.01, "clip the full-model gradient norm (0 = off)", "optimisation"
    )
    gradient_accumulation_steps: int = _setting(1, "batches per optimisation step", "optimisation")
    amp: str = _setting(
        "no",
        "mixed precision: bf16 (CPU/CUDA) or fp16 (CUDA, loss scaling)",
        "optimisation",
        choices=AMP_MODES,
    )
    # bookkeeping
    save_every: int = _setting(500, "checkpoint every N steps", "run")
    keep_last: int = _setting(3, "checkpoints to keep (0 = all)", "run")
    log_every: int = _setting(10, "log record every N steps", "run")
    seed: int = _setting(42, "seed of weights, data order and augmentations", "optimisation")
    resume: str | bool | None = _setting(
        None,
        "continue from a checkpoint file, or (no value) the newest in --output-dir",
        "run",
        nargs="?",
        const="auto",
        type=str,
    )
    overwrite_output_dir: bool = _setting(
        False, "start a fresh run in an --output-dir that holds checkpoints", "run"
    )
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N", "run")
    find_unused_parameters: bool | None = _setting(
        None, "DDP's unused-parameter search (None: decided from the model)", "run", flag=False
    )
    progress: bool = _setting(True, "no progress bar", "run")

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "gradient_accumulation_steps", "save_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.log_every) < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if int(self.eval_every) < 0:
            raise ValueError(f"eval_every must be >= 0 (0 = off), got {self.eval_every}")
        for name, allowed in (
            ("amp", AMP_MODES),
            ("data_format", DATA_FORMATS),
            ("metric_for_best", METRICS),
            ("report_to", REPORT_TO),
        ):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.backbone_lr_multiplier < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError(
                "backbone_lr_multiplier, weight_decay and max_grad_norm must be >= 0, got "
                f"{self.backbone_lr_multiplier}, {self.weight_decay}, {self.max_grad_norm}"
            )
        if self.warmup_steps < 0 or not 0 < self.warmup_factor <= 1:
            raise ValueError(
                f"warmup_steps must be >= 0 and warmup_factor in (0, 1], got "
                f"{self.warmup_steps} and {self.warmup_factor}"
            )
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}"
            )
        if self.id2label is not None:
            self.id2label = {int(key): str(value) for key, value in self.id2label.items()}
            if self.num_labels is not None and self.num_labels != len(self.id2label):
                raise ValueError(
                    f"num_labels={self.num_labels} disagrees with id2label "
                    f"({len(self.id2label)} entries)"
                )
        self.adam_betas = tuple(float(beta) for beta in self.adam_betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (also what checkpoints store)."""
        values = dataclasses.asdict(self)
        values["adam_betas"] = list(self.adam_betas)
        if self.id2label is not None:
            values["id2label"] = {str(key): value for key, value in self.id2label.items()}
        return values


@dataclass
class TrainResult:
    """What :func:`~maskformer.engine.train.train` returns.

    Attributes:
        step: the last completed optimisation step.
        losses: the last step's loss and weighted loss terms (mean over processes).
        checkpoint: the last checkpoint written (None if none was).
        final_model_dir: ``<output_dir>/final`` once training reached ``max_steps``.
        interrupted: True when SIGTERM stopped the run before ``max_steps``.
        log_file: the JSONL log.
        best: ``{"metric", "value", "step"}`` of the best evaluation (None without one).
    """

    step: int
    losses: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    final_model_dir: Path | None = None
    interrupted: bool = False
    log_file: Path | None = None
    best: dict[str, Any] | None = None


# ------------------------------------------------------------------------------ command line


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``maskformer train`` flags, one per :class:`TrainingArguments` field."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for spec in dataclasses.fields(TrainingArguments):
        options = dict(spec.metadata)
        if not options.pop("flag", True):
            continue
        group = groups[options.pop("group")]
        aliases = options.pop("aliases", ())
        default = spec.default
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            name = f"--no-{spec.name.replace('_', '-')}" if default else _flag_name(spec.name)
            group.add_argument(name, dest=spec.name, action=action, help=options["help"])
            continue
        if "type" not in options and default is not None:
            options["type"] = type(default)
        if default is not None:
            options["help"] += " (default: %(default)s)"
        group.add_argument(
            _flag_name(spec.name), *aliases, dest=spec.name, default=default, **options
        )
    return parser


def training_arguments_from_namespace(namespace: argparse.Namespace) -> TrainingArguments:
    """The :class:`TrainingArguments` of parsed ``maskformer train`` flags."""
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return TrainingArguments(**{k: v for k, v in vars(namespace).items() if k in names})


# ------------------------------------------------------------------------------ command line
def run_train_from_args(namespace: argparse.Namespace) -> int:
    """``maskformer train``: run :func:`train`; 0 on success (SIGTERM included), 2 on bad input,
    bad data, a non-finite loss or a failed write (one line on stderr each)."""
    from maskformer.engine.train import train  # the loop imports this module

    try:
        args = training_arguments_from_namespace(namespace)
        result = train(args)
    except (OSError, ValueError, FloatingPointError, ImportError) as error:  # OSError: also hub
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"maskformer train: error: {message}", file=sys.stderr)
        return 2
    losses = ", ".join(f"{k}={v:.4f}" for k, v in result.losses.items() if k.startswith("loss"))
    state = "stopped by SIGTERM" if result.interrupted else "finished"
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{state} at step {result.step}: {losses}", file=sys.stderr)
    return 0
