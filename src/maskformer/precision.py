"""Reduced-precision inference: ``--dtype bfloat16|float16|float32``.

The path is the model's weights in the chosen dtype
(``MaskFormerForInstanceSegmentation.from_pretrained(..., torch_dtype=torch.bfloat16)``, or
``model.to(torch.bfloat16)``), inputs cast to it, and post-processing in float32 (the engine casts
the logits back before any softmax, threshold or resize). It was measured against
``torch.autocast`` on this project's models (``docs/deploy.md``): bf16 weights are faster on a
CPU (autocast re-casts every weight at every call) and agree as closely with float32.

Half-precision arithmetic is fast on a CPU only with the matching instructions: bfloat16 needs
``avx512_bf16`` or ``amx_bf16`` (x86) or ``bf16`` (Arm); float16 needs ``avx512_fp16`` /
``amx_fp16`` (x86) or ``fphp`` / ``asimdhp`` (Arm). Without them PyTorch emulates the type,
several times slower than float32: :func:`precision_warning` says so (the command line prints
it), rather than running slowly in silence.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_CPU_FLAGS = {
    torch.bfloat16: ("avx512_bf16", "amx_bf16", "bf16"),
    torch.float16: ("avx512_fp16", "amx_fp16", "fphp", "asimdhp"),
}

__all__ = ["DTYPES", "cpu_flags", "cpu_supports", "precision_warning", "resolve_dtype"]


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"bfloat16"`` / ``torch.bfloat16`` / ... as a ``torch.dtype`` (None: float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (Linux ``/proc/cpuinfo``; empty
    elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_supports(dtype: torch.dtype) -> bool | None:
    """Whether this CPU computes ``dtype`` natively: True / False, or None when it cannot be
    told (no ``/proc/cpuinfo``). float32 is always supported."""
    if dtype == torch.float32:
        return True
    flags = cpu_flags()
    if not flags:
        if platform.system() == "Darwin" and platform.machine() == "arm64":
            return True  # Apple silicon has both half types
        return None
    return any(flag in flags for flag in _CPU_FLAGS.get(dtype, ()))


def precision_warning(dtype: str | torch.dtype, device: torch.device | str = "cpu") -> str | None:
    """One line warning of the slowdown when ``dtype`` runs emulated on a CPU ``device``;
    None when it is fine (float32, a GPU, or a CPU with the instructions)."""
    dtype = resolve_dtype(dtype)
    if torch.device(device).type != "cpu" or cpu_supports(dtype) is not False:
        return None
    name = str(dtype).removeprefix("torch.")
    wanted = " / ".join(_CPU_FLAGS[dtype][:2])
    return (
        f"--dtype {name}: this CPU has no {name} instructions ({wanted}); PyTorch emulates it, "
        "which is typically several times slower than float32 (use --dtype float32)"
    )
