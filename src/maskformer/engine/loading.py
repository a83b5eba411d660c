"""Resolve a ``--model`` argument (local checkpoint folder or hub id) and a ``--device``.

Failures become :class:`ModelLoadError` with one readable line: a folder that does not exist, a
folder without ``config.json``, a hub id that cannot be fetched (typically: offline).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

# "name" or "owner/name", the shapes of Hugging Face hub ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


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


def is_local_reference(model: str) -> bool:
    """True when ``model`` names a local path (it exists, or cannot be a hub id)."""
    return Path(model).expanduser().exists() or not _HUB_ID.match(model)


def load_model(
    model: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """``MaskFormerForInstanceSegmentation.from_pretrained(model)`` in eval mode on ``device``."""
    from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation

    name = str(model)
    if is_local_reference(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            raise ModelLoadError(f"model folder {folder} does not exist")
        if not folder.is_dir():
            raise ModelLoadError(f"--model {folder} is a file; give the checkpoint folder")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"model folder {folder} has no config.json")
        try:
            network = MaskFormerForInstanceSegmentation.from_pretrained(folder, torch_dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ModelLoadError(f"cannot load model from {folder}: {_first_line(error)}") from None
    else:
        try:
            network = MaskFormerForInstanceSegmentation.from_pretrained(name, torch_dtype=dtype)
        except ImportError as error:
            raise ModelLoadError(
                f"{name!r} is not a local folder, and loading hub ids needs huggingface_hub: "
                f"{_first_line(error)}"
            ) from None
        except Exception as error:  # network, auth and missing-repo errors of huggingface_hub
            raise ModelLoadError(_hub_failure(name, error)) from None
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
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    kind = type(error).__name__
    if offline or "offline" in str(error).lower() or "connect" in f"{kind} {error}".lower():
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
