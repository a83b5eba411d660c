"""Reductions over bilinearly resized maps, computed without resizing every map.

The post-processors need, at the target size, only (a) which of ``N`` non-negative maps is the
largest at each pixel and (b) how many pixels of each map reach a threshold. The reference
resizes all ``N`` maps to full resolution for that. Bilinear resizing (torch's
``interpolate(mode="bilinear", align_corners=False)``) makes every output pixel a convex
combination of the four source pixels of one source *cell*, so per cell:

* a map whose largest corner is below the largest smallest-corner value of another map cannot be
  the argmax anywhere in the cell; in most cells a single map survives, and the whole cell is
  decided without touching its pixels;
* a map whose four corners are all above (below) the threshold is above (below) it at every pixel.

Only the pixels of undecided cells are sampled, for their surviving maps. Our float32 rounding
can differ from torch's in the last bit, so pixels whose decision lies within a relative ``1e-5``
of a tie (or of the threshold) are finally re-evaluated with ``F.interpolate`` itself, on just the
maps involved: results are identical to resizing everything, ties included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Relative bound on the rounding difference between our bilinear samples and torch's.
_SLACK = 1e-6
# Decisions closer than this (relative) are re-checked with torch's own interpolation.
_NEAR = 1e-5


@dataclass
class _Taps:
    """Bilinear geometry along one axis: per output index the source indices and weights, and
    per source index the range of output indices whose first tap is that index."""

    first: torch.Tensor  # (out,) int64
    second: torch.Tensor  # (out,) int64
    weight_first: torch.Tensor  # (out,) float32
    weight_second: torch.Tensor  # (out,) float32
    start: torch.Tensor  # (in,) int64
    count: torch.Tensor  # (in,) int64
    max_count: int


def _taps(in_size: int, out_size: int, device: torch.device) -> _Taps:
    """torch's half-pixel bilinear taps (source coordinate rounded once to float32)."""
    scale = np.float64(np.float32(in_size / out_size))
    position = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    position = np.maximum(position, np.float32(0))
    first = np.minimum(np.floor(position).astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    weight_second = np.clip(position - first.astype(np.float32), 0, 1).astype(np.float32)
    weight_first = (np.float32(1) - weight_second).astype(np.float32)
    count = np.bincount(first, minlength=in_size)
    start = np.cumsum(count) - count
    as_tensor = lambda array: torch.as_tensor(array, device=device)  # noqa: E731
    return _Taps(
        as_tensor(first),
        as_tensor(second),
        as_tensor(weight_first),
        as_tensor(weight_second),
        as_tensor(start),
        as_tensor(count),
        int(count.max()),
    )


def _neighbour_reduce(maps: torch.Tensor, reduce) -> torch.Tensor:
    """``reduce`` (torch.maximum / torch.minimum) over each pixel and its right, lower and
    lower-right neighbours (edges replicated): ``(N, h, w)``."""
    rows = torch.empty_like(maps)
    reduce(maps[:, :-1], maps[:, 1:], out=rows[:, :-1])
    rows[:, -1] = maps[:, -1]
    cells = torch.empty_like(maps)
    reduce(rows[:, :, :-1], rows[:, :, 1:], out=cells[:, :, :-1])
    cells[:, :, -1] = rows[:, :, -1]
    return cells


class _Grid:
    """Bilinear geometry of one resize ``(h, w) -> (H, W)`` plus the source cell of every output
    pixel."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int], device: torch.device):
        self.rows = _taps(in_size[0], out_size[0], device)
        self.cols = _taps(in_size[1], out_size[1], device)
        self.in_w = in_size[1]
        self.out_size = out_size
        self.cell_of_pixel = (self.rows.first * in_size[1])[:, None] + self.cols.first[None, :]
        self.pixels_per_cell = self.rows.count[:, None] * self.cols.count[None, :]  # (h, w)
        # Per output row / column: flat offsets of its two taps and their weights, (out, 2).
        self.row_offsets = torch.stack([self.rows.first, self.rows.second], 1) * in_size[1]
        self.row_weights = torch.stack([self.rows.weight_first, self.rows.weight_second], 1)
        self.col_offsets = torch.stack([self.cols.first, self.cols.second], 1)
        self.col_weights = torch.stack([self.cols.weight_first, self.cols.weight_second], 1)
        # Source rows / columns of every cell's four corners: (4, h, 1) and (4, 1, w).
        rows = torch.arange(in_size[0], device=device)
        cols = torch.arange(in_size[1], device=device)
        next_rows = (rows + 1).clamp_(max=in_size[0] - 1)
        next_cols = (cols + 1).clamp_(max=in_size[1] - 1)
        self.corner_rows = torch.stack([rows, rows, next_rows, next_rows])[:, :, None]
        self.corner_cols = torch.stack([cols, next_cols, cols, next_cols])[:, None, :]
        self.plane = in_size[0] * in_size[1]
        self.corner_offsets = self.corner_rows * in_size[1] + self.corner_cols  # (4, h, w) flat

    def selected_samples(
        self,
        maps: torch.Tensor,
        selected: torch.Tensor,
        cells: torch.Tensor,
        scale: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bilinear samples, at every output pixel of the source ``cells`` (flat indices), of the
        maps ``selected`` (bool ``(N, h, w)``) in that cell, as flat (pixel, map) pairs.

        Returns ``pixels`` ``(pixels,)`` (flat output indices), and per pair, grouped by pixel with
        ascending map index: the pixel's position in ``pixels``, the map index and the sample
        (times ``scale`` when given), each ``(pairs,)``.
        """
        device = maps.device
        chosen = selected.flatten(1)[:, cells].T  # (cells, N)
        counts = chosen.sum(dim=1)
        cell_maps = chosen.nonzero()[:, 1]  # cell-major, ascending map index
        cell_starts = counts.cumsum(0) - counts

        position_of_cell = torch.full_like(self.pixels_per_cell.flatten(), -1)
        position_of_cell[cells] = torch.arange(cells.numel(), device=device)
        pixel_cell = position_of_cell[self.cell_of_pixel].flatten()
        pixels = (pixel_cell >= 0).nonzero()[:, 0]
        pixel_cell = pixel_cell[pixels]
        pairs_per_pixel = counts[pixel_cell]
        owner = torch.repeat_interleave(
            torch.arange(pixels.numel(), device=device), pairs_per_pixel
        )
        first_pair = pairs_per_pixel.cumsum(0) - pairs_per_pixel
        offset = torch.arange(owner.numel(), device=device) - first_pair[owner]
        map_index = cell_maps[cell_starts[pixel_cell][owner] + offset]

        pair_pixels = pixels[owner]
        row = torch.div(pair_pixels, self.out_size[1], rounding_mode="floor")
        col = pair_pixels - row * self.out_size[1]
        offsets = (map_index * self.plane)[:, None, None] + self.row_offsets[row][:, :, None]
        corners = maps.take(offsets + self.col_offsets[col][:, None, :])  # (pairs, 2 rows, 2 cols)
        values = (
            (corners * self.col_weights[col][:, None, :]).sum(dim=2) * self.row_weights[row]
        ).sum(dim=1)
        if scale is not None:
            values = values * scale[map_index]
        return pixels, owner, map_index, values


def _exact(
    maps: torch.Tensor, involved: torch.Tensor, size: tuple[int, int], scale: torch.Tensor | None
) -> torch.Tensor:
    """torch's own resize of ``maps[involved]`` (times ``scale``), ``(len(involved), H, W)``."""
    resized = F.interpolate(maps[involved][None], size=size, mode="bilinear", align_corners=False)[
        0
    ]
    if scale is not None:
        resized = resized * scale[involved][:, None, None]
    return resized


class ResizedMaps:
    """Non-negative maps ``(N, h, w)``, each times ``scale[n]``, as if resized bilinearly to
    ``size``; answers argmax and threshold-count queries without resizing them."""

    def __init__(
        self, maps: torch.Tensor, size: tuple[int, int], scale: torch.Tensor | None = None
    ):
        self.maps, self.size, self.scale = maps, size, scale
        self.grid = _Grid(maps.shape[-2:], size, maps.device)
        self.scaled = maps if scale is None else maps * scale[:, None, None]
        self.largest = _neighbour_reduce(self.scaled, torch.maximum)  # (N, h, w) corner maxima

    def argmax(self) -> torch.Tensor:
        """Index of the largest resized map at every output pixel, int64 ``(H, W)``; ties go to
        the lowest index like ``argmax``."""
        grid, scaled, largest = self.grid, self.scaled, self.largest
        # (h, w): the best map at each source pixel (any choice is correct; max() is fast)
        leader = scaled.max(dim=0).indices
        # Lower bound of the best sample in a cell: the best smallest-corner value among the
        # leaders of its four corners.
        corner_leaders = leader[grid.corner_rows, grid.corner_cols]  # (4, h, w)
        leader_corners = scaled.take(
            corner_leaders[:, None] * grid.plane + grid.corner_offsets[None]
        )
        floor_value = leader_corners.amin(dim=1).amax(dim=0) * ((1 - _SLACK) / (1 + _SLACK))
        # A cell is contested when a map other than its top-left leader can reach the floor.
        leader_index = leader[None]
        leader_largest = largest.gather(0, leader_index)
        largest.scatter_(0, leader_index, -1.0)
        contested = largest.amax(dim=0) >= floor_value
        largest.scatter_(0, leader_index, leader_largest)
        result = leader.flatten()[grid.cell_of_pixel]  # right wherever the leader is alone
        cells = contested.flatten().nonzero()[:, 0]
        if cells.numel() == 0:
            return result

        candidate = largest >= floor_value
        pixels, owner, map_index, values = grid.selected_samples(
            self.maps, candidate, cells, self.scale
        )
        count = pixels.numel()
        best_value = torch.full((count,), -1.0, device=values.device, dtype=values.dtype)
        best_value = best_value.scatter_reduce(0, owner, values, reduce="amax")
        pair_order = torch.arange(owner.numel(), device=values.device)
        is_best = values == best_value[owner]
        first_best = torch.full((count,), owner.numel(), device=values.device, dtype=torch.long)
        first_best = first_best.scatter_reduce(
            0, owner[is_best], pair_order[is_best], reduce="amin"
        )
        flat_result = result.view(-1)
        flat_result[pixels] = map_index[first_best]

        close = values >= (best_value - best_value * _NEAR)[owner]
        near_tie = torch.bincount(owner[close], minlength=count) > 1
        if bool(near_tie.any()):
            involved = torch.unique(map_index[close & near_tie[owner]])
            exact = _exact(self.maps, involved, self.size, self.scale).flatten(1)
            tie_pixels = pixels[near_tie]
            flat_result[tie_pixels] = involved[exact[:, tie_pixels].argmax(dim=0)]
        return result

    def threshold_counts(self, threshold: float) -> torch.Tensor:
        """Per map, the number of output pixels whose resized value is ``>= threshold``: int64
        ``(N,)``."""
        grid = self.grid
        smallest = _neighbour_reduce(self.scaled, torch.minimum)
        # Margins of _SLACK absorb the rounding of single samples (values are non-negative).
        all_above = smallest >= threshold / (1 - _SLACK)
        undecided = ~all_above & (self.largest >= threshold / (1 + _SLACK))
        pixels_per_cell = grid.pixels_per_cell.flatten().double()  # exact integer sums
        counts = (all_above.flatten(1).double() @ pixels_per_cell).round().long()
        cells = undecided.any(dim=0).flatten().nonzero()[:, 0]
        if cells.numel() == 0:
            return counts
        pixels, owner, map_index, values = grid.selected_samples(
            self.maps, undecided, cells, self.scale
        )
        near = (values - threshold).abs() <= _NEAR * max(abs(threshold), 1e-30)
        reached = (values >= threshold) & ~near
        counts = counts + torch.bincount(map_index[reached], minlength=counts.numel())
        if bool(near.any()):
            near_maps = map_index[near]
            near_pixels = pixels[owner[near]]
            involved, position = torch.unique(near_maps, return_inverse=True)
            exact = _exact(self.maps, involved, self.size, self.scale).flatten(1)
            hits = exact[position, near_pixels] >= threshold
            counts = counts.index_add(0, near_maps, hits.long())
        return counts


def resized_argmax(
    maps: torch.Tensor, size: tuple[int, int], scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``(interpolate(maps[None], size, bilinear)[0] * scale[:, None, None]).argmax(0)``.

    ``maps``: non-negative ``(N, h, w)``; ``scale``: optional non-negative ``(N,)``.
    Returns int64 ``(H, W)``, ties resolved to the lowest index like ``argmax``.
    """
    return ResizedMaps(maps, size, scale).argmax()


def resized_threshold_counts(
    maps: torch.Tensor, size: tuple[int, int], scale: torch.Tensor, threshold: float
) -> torch.Tensor:
    """``(interpolate(maps[None], size, bilinear)[0] * scale[:, None, None] >= threshold)``
    counted per map: int64 ``(N,)``. ``maps`` non-negative ``(N, h, w)``, ``scale`` ``(N,)``."""
    return ResizedMaps(maps, size, scale).threshold_counts(threshold)
