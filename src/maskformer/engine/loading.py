"""Resolve a ``--model`` argument (local checkpoint folder or hub id) and a ``--device``.

Failures become :class:`ModelLoadError` with one readable line: a folder that does not exist, a
folder without ``config.json``, a hub id that cannot be fetched (typically: offline). Weights
holding NaN / inf are a ``ValueError`` naming them: the command line refuses to predict with
them (the library's ``from_pretrained`` only warns, since training code may load anything).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from maskformer.utils.hub import hub_offline, is_local_reference

__all__ = ["ModelLoadError", "is_local_reference", "load_model", "load_processor", "resolve_device"]


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is one line meant for a person."""


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; otherwise the named device, checked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device!r} is not a device name ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine")
    return resolved


def load_model(
    model: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """``MaskFormerForInstanceSegmentation.from_pretrained(model)`` in eval mode on ``device``.

    Raises :class:`ModelLoadError` when it cannot be loaded, ``ValueError`` naming the tensors
    when its weights hold NaN or inf.
    """
    from maskformer.checkpoint import NonFiniteWeightsWarning
    from maskformer.checkpoint_files import describe_names, non_finite_tensors
    from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation

    name = str(model)
    local = is_local_reference(name)
    source: str | Path = name
    if local:
        source = Path(name).expanduser()
        if not source.exists():
            raise ModelLoadError(f"model folder {source} does not exist")
        if not source.is_dir():
            raise ModelLoadError(f"--model {source} is a file; give the checkpoint folder")
        if not (source / "config.json").is_file():
            raise ModelLoadError(f"model folder {source} has no config.json")
    try:
        with warnings.catch_warnings():  # checked below, and made an error
            warnings.simplefilter("ignore", NonFiniteWeightsWarning)
            network = MaskFormerForInstanceSegmentation.from_pretrained(source, torch_dtype=dtype)
    except ImportError as error:
        raise ModelLoadError(
            f"{name!r} is not a local folder, and loading hub ids needs huggingface_hub: "
            f"{_first_line(error)}"
        ) from None
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        if local:
            raise ModelLoadError(f"cannot load model from {source}: {_first_line(error)}") from None
        raise ModelLoadError(_hub_failure(name, error)) from None
    except Exception as error:  # anything else huggingface_hub raises for a hub id
        if local:
            raise
        raise ModelLoadError(_hub_failure(name, error)) from None
    non_finite = non_finite_tensors(network.state_dict())
    if non_finite:
        raise ValueError(
            f"{source}: the weights hold NaN or inf values ({describe_names(non_finite)}); "
            "predictions from them would be meaningless"
        )
    return network.to(device).eval()


def load_processor(model: str | os.PathLike) -> Any:
    """The image processor saved with ``model`` (``preprocessor_config.json``), else the default."""
    from maskformer.processing.image_processor import MaskFormerImageProcessor

    name = str(model)
    if is_local_reference(name):
        folder = Path(name).expanduser()
        if (folder / "preprocessor_config.json").is_file():
            return MaskFormerImageProcessor.from_pretrained(folder)
        return MaskFormerImageProcessor()
    try:
        return MaskFormerImageProcessor.from_pretrained(name)
    except Exception:  # the hub repo has no processor file: the defaults are the reference's
        return MaskFormerImageProcessor()


def _hub_failure(name: str, error: BaseException) -> str:
    if name in str(error):  # maskformer.utils.hub's errors already name the id and the cause
        return _first_line(error)
    kind = type(error).__name__
    if hub_offline() or "offline" in str(error).lower() or "connect" in f"{kind} {error}".lower():
        return (
            f"cannot download {name!r} from the Hugging Face hub: this machine looks offline "
            f"({kind}). Pass a local checkpoint folder, or connect and retry"
        )
    return (
        f"{name!r} is not a local folder, and loading it from the Hugging Face hub failed: "
        f"{kind}: {_first_line(error)}"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
