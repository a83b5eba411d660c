"""Exact bilinear resizing followed by a per-pixel first maximum, for the post-processors.

The winner per pixel of maps resized with ``F.interpolate(mode="bilinear",
align_corners=False)`` is found without changing a value, faster than resizing everything and
calling ``argmax``:

* a map whose bilinear value is below another map's everywhere cannot win: a resized value is a
  convex combination of the corners of one 2x2 low-resolution block, so a map whose largest
  corner is below another map's smallest corner in every block is not resized (``may_win``);
* on CPU the maximum runs plane by plane over the contiguous ``(maps, H, W)`` stack (a strict
  ``>`` keeps the first maximum, as ``argmax``), several times faster than ``argmax(dim=0)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# A computed bilinear value can leave the range of its four corners by a few float32 roundings
# (weights that sum to 1 within an ulp, two products and sums, one more product by the score):
# under 1e-6 relative. Maps are skipped only when they lose by more than this margin.
_MARGIN = 1e-4
# torch's CPU bilinear kernel vectorises across the maps of a stack when the output is small
# (height + width <= 128): a map's values then depend in the last bit on its stack, so there
# the whole stack is resized, as the reference does. Above, each value is computed on its own.
_SMALL_OUTPUT = 128


def may_win(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor | None:
    """Indices (ascending) of the maps ``(maps, h, w)`` (values >= 0) that can be the largest
    somewhere once resized bilinearly to ``size``; None to resize them all (when skipping
    cannot pay, or could change the resized values of the others)."""
    count, height, width = maps.shape
    if count < 2 or size[0] + size[1] <= _SMALL_OUTPUT or size[0] * size[1] <= height * width:
        return None
    # Every output pixel mixes source values of one 2x2 block (border pixels read one row or
    # column of it): bounds per block bound the pixels. A single row or column is repeated.
    if height == 1 or width == 1:
        maps = F.pad(maps[None], (0, int(width == 1), 0, int(height == 1)), mode="replicate")[0]
    bounds = []
    for pick in (torch.maximum, torch.minimum):
        rows = pick(maps[:, :-1], maps[:, 1:])
        bounds.append(pick(rows[..., :-1], rows[..., 1:]))  # (maps, h - 1, w - 1)
    upper, lower = bounds  # the largest and smallest corner of each map per block
    floor = lower.amax(dim=0)  # some map is at least this high in the block
    reaches = (upper >= floor * (1 - _MARGIN)).flatten(1).any(dim=1)
    return reaches.nonzero()[:, 0]


def first_argmax(stack: torch.Tensor) -> torch.Tensor:
    """``stack.argmax(dim=0)`` of ``(maps, H, W)``: int64 ``(H, W)``, the first maximum.

    On CPU a running maximum over the contiguous planes: ``argmax`` across planes is several
    times slower there. The index is kept in float32 (exact below 2**24 maps) so that each step is
    three vectorised float ops; ``lerp`` with a weight of exactly 0 or 1 returns either end."""
    if stack.device.type != "cpu" or stack.shape[0] == 1:
        return stack.argmax(dim=0)
    best = stack[0].clone()
    index = torch.zeros_like(best)
    above = torch.empty_like(best)
    for plane in range(1, stack.shape[0]):  # strict > keeps the earlier plane on ties
        torch.gt(stack[plane], best, out=above)
        torch.maximum(best, stack[plane], out=best)
        index.lerp_(torch.tensor(float(plane)), above)
    return index.long()


def count_at_least(stack: torch.Tensor, threshold: float, maps: torch.Tensor) -> torch.Tensor:
    """``(stack[m] >= threshold).sum()`` for each index ``m`` in ``maps``, as int64 ``(maps,)``,
    for a ``(maps, H, W)`` stack.

    On CPU plane by plane through one reused buffer: a fresh stack-sized temporary costs a page
    fault per 4 KiB, more than the comparison. Each plane is compared into 0.0 / 1.0 and summed in
    floating point, exact (partial sums are integers below 2**24, or 2**53 in float64) and much
    faster than summing booleans."""
    if stack.device.type != "cpu":
        return (stack.index_select(0, maps) >= threshold).flatten(1).sum(dim=1)
    dtype = torch.float32 if stack[0].numel() < 2**24 else torch.float64
    hits = torch.empty(stack.shape[1:], dtype=dtype)
    counts = torch.empty(maps.shape[0], dtype=dtype)
    for slot, plane in enumerate(maps.tolist()):
        torch.ge(stack[plane], threshold, out=hits)
        torch.sum(hits.view(-1), dim=0, out=counts[slot])
    return counts.long()


def resize_candidates(
    maps: torch.Tensor, size: tuple[int, int], scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The maps ``(maps, h, w)`` that can win, resized to ``size`` (then times ``scale``
    ``(maps,)``), as ``(n, H, W)``, and their indices (None: all of them)."""
    weighted = maps if scale is None else maps * scale[:, None, None]
    chosen = may_win(weighted, size)
    if chosen is not None:
        maps = maps.index_select(0, chosen)
        scale = None if scale is None else scale.index_select(0, chosen)
    resized = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
    if scale is not None:
        resized *= scale[:, None, None]
    return resized, chosen
