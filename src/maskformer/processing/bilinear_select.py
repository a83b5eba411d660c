"""Reductions over bilinearly resized maps, computed without resizing every map.

The post-processors need, at the target size, only (a) which of ``N`` non-negative maps is the
largest at each pixel and (b) how many pixels of each map reach a threshold. The reference
resizes all ``N`` maps to full resolution for that. Bilinear resizing (torch's
``interpolate(mode="bilinear", align_corners=False)``) makes every output pixel a convex
combination of the four source pixels of one source *cell* (a pixel and its right, lower and
lower-right neighbours), with the same weights for every map. So per cell:

* when one map leads at all four corners and its smallest corner value is above the largest
  runner-up value at the corners, it leads at every output pixel of the cell: the cell is decided
  from the per-pixel top two values alone, without touching its output pixels;
* a map whose four corners are all above (below) the threshold is above (below) it at every
  output pixel of the cell, which adds the cell's known number of output pixels (or none).

Only the output pixels of the remaining cells are sampled, as one small block of slots per
(cell, map) pair that can still matter. Our float32 rounding can differ from torch's in the last
bits, so decisions within a relative ``2e-6`` of a tie (or of the threshold) are finally
re-evaluated with ``F.interpolate`` itself, on just the maps involved: results are identical to
resizing everything, ties included.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Relative bound on the rounding of one bilinear sample (times a scale) against the exact convex
# combination: at most ~6 float32 roundings of non-negative terms, each <= 2**-24 (~6e-8).
_SLACK = 1e-6
_SHRINK = (1 - _SLACK) / (1 + _SLACK)
# Decisions closer than this (relative) are re-checked with torch's own interpolation: more than
# twice the worst difference between our sample and torch's (~7e-7 by the bound above; measured
# at most 3.4e-7 on random maps).
_NEAR = 2e-6
# Absolute margin for values in float32's subnormal range, where relative bounds fail.
_TINY = 1e-36
# Maps are ranked with their index packed into the low bits of the float32 bit pattern when
# there are at most this many (bit patterns of non-negative floats order like the floats).
_MAX_PACKED_MAPS = 256


@dataclass
class _Taps:
    """Bilinear geometry along one axis: per output index its first source index, and per source
    index the run of output indices whose first tap it is (``start``, ``count``), laid out as
    ``block`` slots with their tap weights (``weight_first``, ``weight_second``) and whether each
    slot is a real output index (``valid``), each ``(block, in)``. ``regular_block`` is the
    largest run away from the two edges (edge runs can be longer)."""

    first: torch.Tensor  # (out,) int64
    count: torch.Tensor  # (in,) int64
    start: torch.Tensor  # (in,) int64
    block: int
    regular_block: int
    weight_first: torch.Tensor  # (block, in) float32
    weight_second: torch.Tensor  # (block, in) float32
    valid: torch.Tensor  # (block, in) bool


def _taps(in_size: int, out_size: int, device: torch.device) -> _Taps:
    """torch's half-pixel bilinear taps (source coordinate rounded once to float32)."""
    scale = np.float64(np.float32(in_size / out_size))
    position = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    position = np.maximum(position, np.float32(0))
    first = np.minimum(np.floor(position).astype(np.int64), in_size - 1)
    weight_second = np.clip(position - first.astype(np.float32), 0, 1).astype(np.float32)
    weight_first = (np.float32(1) - weight_second).astype(np.float32)
    count = np.bincount(first, minlength=in_size)
    start = np.cumsum(count) - count
    block = max(int(count.max()), 1)
    regular_block = max(int(count[1:-1].max()), 1) if in_size > 2 else block
    slots = np.arange(block)[:, None]
    slot_index = np.minimum(start[None, :] + slots, out_size - 1)  # (block, in)
    as_tensor = lambda array: torch.as_tensor(np.ascontiguousarray(array), device=device)  # noqa: E731
    return _Taps(
        as_tensor(first),
        as_tensor(count),
        as_tensor(start),
        block,
        regular_block,
        as_tensor(weight_first[slot_index]),
        as_tensor(weight_second[slot_index]),
        as_tensor(slots < count[None, :]),
    )


def _neighbour_reduce(maps: torch.Tensor, reduce) -> torch.Tensor:
    """``reduce`` (``torch.maximum``, ``torch.minimum``, ``torch.logical_and``, ...) over each
    pixel and its right, lower and lower-right neighbours (edges replicated): ``(..., h, w)`` in,
    same shape out."""
    rows = torch.empty_like(maps)
    reduce(maps[..., :-1, :], maps[..., 1:, :], out=rows[..., :-1, :])
    rows[..., -1, :] = maps[..., -1, :]
    cells = torch.empty_like(maps)
    reduce(rows[..., :-1], rows[..., 1:], out=cells[..., :-1])
    cells[..., -1] = rows[..., -1]
    return cells


@dataclass
class _Leaders:
    """Per source pixel of non-negative ``(N, h, w)`` maps, each ``(h, w)``: the index of the
    largest map (lowest index among equals), a lower bound of its value, the index of a
    runner-up and upper bounds of the runner-up's and the third map's values (-1 when there
    are fewer maps). Without packing, ``runner_up`` and ``third`` are None (not computed)."""

    leader: torch.Tensor
    best: torch.Tensor
    runner_up: torch.Tensor | None
    second: torch.Tensor
    third: torch.Tensor | None


def _leaders(scaled: torch.Tensor) -> _Leaders:
    """Rank the maps at every source pixel (see ``_Leaders``).

    With at most ``_MAX_PACKED_MAPS`` maps, each map's index is packed into the low bits of its
    float32 bit pattern, so one integer ``amax`` gives value and index together. The bounds are
    then loose by a relative ``2**-15`` at most; where two maps are equal at that precision the
    runner-up bound reaches the leader's bound, so callers comparing them with a margin stay
    correct.
    """
    count = scaled.shape[0]
    if count > _MAX_PACKED_MAPS:
        best, leader = scaled.max(dim=0)
        second = scaled.scatter(0, leader[None], -1.0).amax(dim=0)
        return _Leaders(leader, best, None, second, None)
    code_bits = max((count - 1).bit_length(), 1)
    code_mask = (1 << code_bits) - 1
    codes = code_mask - torch.arange(count, dtype=torch.int32, device=scaled.device)
    keys = scaled.view(torch.int32) & ~code_mask  # bit patterns order like non-negative floats
    keys |= codes[:, None, None]  # equal truncated values: the lowest index has the largest key
    ranked = []
    for _ in range(min(count, 3)):
        top = keys.amax(dim=0)
        ranked.append(top)
        if len(ranked) < min(count, 3):
            keys.scatter_(0, (code_mask - (top & code_mask)).long()[None], -1)
    index = [(code_mask - (top & code_mask)).long() for top in ranked]
    lower = (ranked[0] & ~code_mask).view(torch.float32)  # truncated: <= the leader's value
    # the next truncation step: >= the value
    upper = [((top | code_mask) + 1).view(torch.float32) for top in ranked[1:]]
    upper += [torch.full_like(lower, -1.0)] * (2 - len(upper))
    runner_up = index[1] if count > 1 else index[0]
    return _Leaders(index[0], lower, runner_up, upper[0], upper[1])


class _Grid:
    """Bilinear geometry of one resize ``(h, w) -> (H, W)``, organised by source cell (a source
    pixel with its right, lower and lower-right neighbours, edges replicated).

    The output pixels of a cell form a block of ``count_row x count_col`` slots; blocks of edge
    cells can be larger than the rest, so cells are handled in groups of one block shape.
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int], device: torch.device):
        height, width = in_size
        self.rows = _taps(height, out_size[0], device)
        self.cols = _taps(width, out_size[1], device)
        self.in_size, self.out_size, self.plane = in_size, out_size, height * width
        self.pixels_per_cell = (self.rows.count[:, None] * self.cols.count[None, :]).flatten()
        # Cells whose block fits the regular (non-edge) block shape.
        self.regular = (
            (self.rows.count <= self.rows.regular_block)[:, None]
            & (self.cols.count <= self.cols.regular_block)[None, :]
        ).flatten()
        # Flat source offsets of each cell's four corners (top-left, top-right, bottom-left,
        # bottom-right), (4, h * w).
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        next_rows = (rows + 1).clamp_(max=height - 1)
        next_cols = (cols + 1).clamp_(max=width - 1)
        top, bottom = rows[:, None] * width, next_rows[:, None] * width
        self.corner_offsets = torch.stack(
            [top + cols, top + next_cols, bottom + cols, bottom + next_cols]
        ).flatten(1)

    def expand(self, cell_values: torch.Tensor) -> torch.Tensor:
        """Per-cell values ``(h, w)`` copied to every output pixel of their cell: ``(H, W)``."""
        return cell_values.index_select(0, self.rows.first).index_select(1, self.cols.first)

    def groups(self, cells: torch.Tensor) -> list[tuple[torch.Tensor, tuple[int, int]]]:
        """Split flat source ``cells`` into (positions in ``cells``, block shape) groups."""
        regular = self.regular[cells]
        shapes = [
            (regular, (self.rows.regular_block, self.cols.regular_block)),
            (~regular, (self.rows.block, self.cols.block)),
        ]
        return [(mask.nonzero()[:, 0], shape) for mask, shape in shapes if bool(mask.any())]

    def slot_valid(self, cells: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Whether each slot of a ``shape`` block of the flat source ``cells`` is an output
        pixel: bool ``(slots, cells)``."""
        rows, cols = shape
        row_valid = self.rows.valid[:rows].index_select(1, cells // self.in_size[1])
        col_valid = self.cols.valid[:cols].index_select(1, cells % self.in_size[1])
        return (row_valid[:, None, :] & col_valid[None, :, :]).view(rows * cols, -1)

    def slot_pixels(self, cells: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Flat output index of each slot of a ``shape`` block of the flat source ``cells``
        (clamped into the image where the slot is not an output pixel): int64
        ``(slots, cells)``."""
        row, col = cells // self.in_size[1], cells % self.in_size[1]
        rows = self.rows.start[row] + torch.arange(shape[0], device=row.device)[:, None]
        cols = self.cols.start[col] + torch.arange(shape[1], device=col.device)[:, None]
        rows = rows.clamp_(max=self.out_size[0] - 1)
        cols = cols.clamp_(max=self.out_size[1] - 1)
        return (rows[:, None, :] * self.out_size[1] + cols[None, :, :]).view(
            shape[0] * shape[1], -1
        )

    def block_samples(
        self,
        maps: torch.Tensor,
        map_index: torch.Tensor,
        cells: torch.Tensor,
        shape: tuple[int, int],
    ) -> torch.Tensor:
        """Bilinear samples of ``maps[map_index[k]]`` at the slots of a ``shape`` block of
        ``cells[k]`` (torch's arithmetic up to rounding): float32 ``(slots, pairs)``; slots that
        are not output pixels hold meaningless finite values."""
        offsets = self.corner_offsets.index_select(1, cells) + map_index * self.plane
        corners = maps.view(-1).index_select(0, offsets.view(-1)).view(4, 1, -1)
        top_left, top_right, bottom_left, bottom_right = corners
        rows, cols = shape
        row, col = cells // self.in_size[1], cells % self.in_size[1]
        col_first = self.cols.weight_first[:cols].index_select(1, col)  # (block_cols, pairs)
        col_second = self.cols.weight_second[:cols].index_select(1, col)
        row_first = self.rows.weight_first[:rows].index_select(1, row)[:, None]
        row_second = self.rows.weight_second[:rows].index_select(1, row)[:, None]
        top = top_left * col_first + top_right * col_second  # (block_cols, pairs)
        bottom = bottom_left * col_first + bottom_right * col_second
        values = (
            top[None] * row_first + bottom[None] * row_second
        )  # (block_rows, block_cols, pairs)
        return values.view(rows * cols, -1)


def _exact(
    maps: torch.Tensor,
    involved: torch.Tensor,
    size: tuple[int, int],
    scale: torch.Tensor | None,
    pixels: torch.Tensor,
) -> torch.Tensor:
    """torch's own resize of ``maps[involved]`` (times ``scale``) at the flat output ``pixels``:
    ``(len(involved), len(pixels))``."""
    resized = F.interpolate(maps[involved][None], size=size, mode="bilinear", align_corners=False)
    values = resized[0].flatten(1)[:, pixels]
    if scale is not None:
        values = values * scale[involved][:, None]
    return values


@dataclass
class ArgmaxParts:
    """The argmax of resized maps, kept compact: ``cell_leader`` ``(h, w)`` is the answer at
    every output pixel of its cell except at ``pixels`` (flat output indices ``(P,)``), whose
    answers are ``pixel_leader`` ``(P,)``; ``won_counts`` ``(N,)`` counts output pixels per map."""

    cell_leader: torch.Tensor
    pixels: torch.Tensor
    pixel_leader: torch.Tensor
    won_counts: torch.Tensor


@functools.lru_cache(maxsize=8)
def _grid(in_size: tuple[int, int], out_size: tuple[int, int], device: torch.device) -> _Grid:
    """The (cached) geometry of one resize; batches usually share their sizes."""
    return _Grid(in_size, out_size, device)


class ResizedMaps:
    """Non-negative maps ``(N, h, w)``, each times ``scale[n]``, as if resized bilinearly to
    ``size``; answers argmax and threshold-count queries without resizing them."""

    def __init__(
        self, maps: torch.Tensor, size: tuple[int, int], scale: torch.Tensor | None = None
    ):
        self.maps, self.size, self.scale = maps.contiguous(), size, scale
        self.grid = _grid(tuple(maps.shape[-2:]), tuple(size), maps.device)
        self.scaled = self.maps if scale is None else self.maps * scale[:, None, None]

    def _samples(
        self, map_index: torch.Tensor, cells: torch.Tensor, shape: tuple[int, int]
    ) -> torch.Tensor:
        """Resized values of map ``map_index[k]`` at the slots of a ``shape`` block of
        ``cells[k]``, ``(slots, pairs)``."""
        values = self.grid.block_samples(self.maps, map_index, cells, shape)
        if self.scale is not None:
            values *= self.scale[map_index]
        return values

    def argmax_parts(self) -> ArgmaxParts:
        """The argmax, compact (see ``ArgmaxParts``); ties go to the lowest index."""
        grid, scaled = self.grid, self.scaled
        count, device = scaled.shape[0], scaled.device
        pixels_per_cell = grid.pixels_per_cell
        ranks = _leaders(scaled)
        leader = ranks.leader
        # A cell is decided when one map leads at its four corners with its smallest corner
        # above the largest runner-up (margins absorb the rounding of single samples).
        same_leader = _neighbour_reduce(leader, torch.minimum) == _neighbour_reduce(
            leader, torch.maximum
        )
        lowest_best = _neighbour_reduce(ranks.best, torch.minimum) * _SHRINK - _TINY
        contested = ~same_leader | (_neighbour_reduce(ranks.second, torch.maximum) >= lowest_best)
        contested = contested.view(-1) & (pixels_per_cell > 0)
        decided = ~contested
        won_counts = torch.zeros(count, dtype=torch.int64, device=device)
        won_counts.index_add_(0, leader.view(-1)[decided], pixels_per_cell[decided])
        cells = contested.nonzero()[:, 0]
        pixels, pixel_leader = [], []
        if ranks.third is not None and cells.numel():
            # Cells where the same two maps lead at every corner and every other map stays
            # below half the smallest best value (the larger of the two is at least the mean of
            # the two, which is at least that) are settled between those two.
            first = torch.minimum(leader, ranks.runner_up)
            last = torch.maximum(leader, ranks.runner_up)
            two_maps = (
                (_neighbour_reduce(first, torch.minimum) == _neighbour_reduce(first, torch.maximum))
                & (_neighbour_reduce(last, torch.minimum) == _neighbour_reduce(last, torch.maximum))
                & (_neighbour_reduce(ranks.third, torch.maximum) < lowest_best * 0.5 * _SHRINK)
            ).view(-1)[cells] & grid.regular[cells]  # the few edge cells: one general group
            pair_cells = cells[two_maps]
            cells = cells[~two_maps]
            for positions, shape in grid.groups(pair_cells):
                group = pair_cells[positions]
                candidates = (first.view(-1)[group], last.view(-1)[group])
                group_pixels, group_leader = self._two_map_argmax(group, candidates, shape)
                pixels.append(group_pixels)
                pixel_leader.append(group_leader)
        for positions, shape in grid.groups(cells):
            group_pixels, group_leader = self._contested_argmax(cells[positions], shape)
            pixels.append(group_pixels)
            pixel_leader.append(group_leader)
        if not pixels:
            empty = torch.empty(0, dtype=torch.int64, device=device)
            return ArgmaxParts(leader, empty, empty, won_counts)
        pixel_leader = torch.cat(pixel_leader)
        won_counts += torch.bincount(pixel_leader, minlength=count)
        return ArgmaxParts(leader, torch.cat(pixels), pixel_leader, won_counts)

    def _two_map_argmax(
        self,
        cells: torch.Tensor,
        candidates: tuple[torch.Tensor, torch.Tensor],
        shape: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The argmax at every output pixel of the flat source ``cells`` (whose blocks fit
        ``shape``), where it is one of two maps per cell (``candidates``, lower index first):
        flat output indices and leading maps, each ``(pixels,)``."""
        grid = self.grid
        first, last = candidates
        values = self._samples(torch.cat([first, last]), cells.repeat(2), shape)
        first_value, last_value = values.view(values.shape[0], 2, -1).unbind(1)  # (slots, cells)
        pixel_leader = torch.where(last_value > first_value, last, first)  # ties: lower index
        valid = grid.slot_valid(cells, shape)
        pixels = grid.slot_pixels(cells, shape)
        larger = torch.maximum(first_value, last_value)
        near_tie = ((first_value - last_value).abs() <= larger * _NEAR + _TINY) & valid
        if bool(near_tie.any()):
            tie_cells = near_tie.any(dim=0)
            involved = torch.unique(torch.cat([first[tie_cells], last[tie_cells]]))
            exact = _exact(self.maps, involved, self.size, self.scale, pixels[near_tie])
            pixel_leader[near_tie] = involved[exact.argmax(dim=0)]
        return pixels[valid], pixel_leader[valid]

    def _contested_argmax(
        self, cells: torch.Tensor, shape: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The argmax at every output pixel of the flat source ``cells`` (whose blocks fit
        ``shape``): flat output indices and leading maps, each ``(pixels,)``."""
        grid, scaled = self.grid, self.scaled
        count, device = scaled.shape[0], scaled.device
        # Candidates: maps whose largest corner reaches the best smallest corner of any map.
        corners = scaled.view(count, -1).index_select(1, grid.corner_offsets[:, cells].view(-1))
        corners = corners.view(count, 4, -1)  # (N, 4, cells)
        cell_floor = corners.amin(dim=1).amax(dim=0) * _SHRINK - _TINY
        candidate = corners.amax(dim=1) >= cell_floor  # (N, cells)
        cell_position, map_index = candidate.T.nonzero().unbind(1)  # cell-major, maps ascending
        values = self._samples(map_index, cells[cell_position], shape)  # (slots, pairs)
        slots, pairs = values.shape
        scatter_index = cell_position.expand(slots, -1)
        best_value = values.new_full((slots, cells.numel()), -1.0)
        best_value.scatter_reduce_(1, scatter_index, values, reduce="amax")
        best_of_pair = best_value.gather(1, scatter_index)
        pair_order = torch.arange(pairs, device=device).expand(slots, -1)
        first_best = torch.full_like(best_value, pairs, dtype=torch.int64)
        first_best.scatter_reduce_(
            1, scatter_index, torch.where(values == best_of_pair, pair_order, pairs), reduce="amin"
        )
        pixel_leader = map_index[first_best]  # (slots, cells)
        valid = grid.slot_valid(cells, shape)
        pixels = grid.slot_pixels(cells, shape)
        # Near ties are settled by torch's own interpolation of the maps involved.
        close = values >= best_of_pair - best_of_pair * _NEAR - _TINY
        close_count = torch.zeros_like(first_best).scatter_add_(1, scatter_index, close.long())
        near_tie = (close_count > 1) & valid
        if bool(near_tie.any()):
            involved = torch.unique(map_index[(close & near_tie.gather(1, scatter_index)).any(0)])
            exact = _exact(self.maps, involved, self.size, self.scale, pixels[near_tie])
            pixel_leader[near_tie] = involved[exact.argmax(dim=0)]
        return pixels[valid], pixel_leader[valid]

    def argmax(self) -> torch.Tensor:
        """Index of the largest resized map at every output pixel, int64 ``(H, W)``; ties go to
        the lowest index like ``argmax``."""
        parts = self.argmax_parts()
        result = self.grid.expand(parts.cell_leader)
        result.view(-1)[parts.pixels] = parts.pixel_leader
        return result

    def _threshold_cells(self, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per map, the output pixels of cells whose four corners all reach ``threshold``
        (int64 ``(N,)``), and which (map, cell) pairs are undecided (bool ``(N, h * w)``)."""
        scaled = self.scaled
        count = scaled.shape[0]
        # Margins absorb the rounding of single samples (values are non-negative).
        all_above = _neighbour_reduce(scaled >= threshold / (1 - _SLACK) + _TINY, torch.logical_and)
        any_near = _neighbour_reduce(scaled >= threshold / (1 + _SLACK) - _TINY, torch.logical_or)
        undecided = (any_near & ~all_above).view(count, -1)
        return self._pixel_sums(all_above.view(count, -1)), undecided

    def _pixel_sums(self, cell_mask: torch.Tensor) -> torch.Tensor:
        """Per row of a bool ``(N, h * w)`` cell mask, the output pixels of its cells, int64."""
        # Integer sums below 2**24 are exact in float32.
        exact_sum = torch.float32 if self.size[0] * self.size[1] < 2**24 else torch.float64
        pixels_per_cell = self.grid.pixels_per_cell.to(exact_sum)
        return torch.mv(cell_mask.view(torch.uint8).to(exact_sum), pixels_per_cell).long()

    def threshold_count_bounds(
        self, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per map, bounds ``lower <= count <= upper`` of ``threshold_counts(threshold)`` from
        the source cells alone (int64 ``(N,)`` each), and the undecided (map, cell) pairs that
        ``threshold_counts`` would sample (bool ``(N, h * w)``)."""
        lower, undecided = self._threshold_cells(threshold)
        return lower, lower + self._pixel_sums(undecided), undecided

    def threshold_counts(
        self,
        threshold: float,
        maps: torch.Tensor | None = None,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per map, the number of output pixels whose resized value is ``>= threshold``: int64
        ``(N,)``. With ``maps`` (bool ``(N,)``) only those maps are counted exactly, the others
        get a lower bound; ``bounds`` reuses ``threshold_count_bounds``' lower bound and
        undecided pairs."""
        counts, undecided = self._threshold_cells(threshold) if bounds is None else bounds
        counts = counts.clone()
        if maps is not None:
            undecided = undecided & maps[:, None]
        cells = undecided.view(torch.uint8).amax(dim=0).nonzero()[:, 0]
        for positions, shape in self.grid.groups(cells):
            group_cells = cells[positions]
            map_index, cell_position = undecided.index_select(1, group_cells).nonzero().unbind(1)
            self._count_reached(map_index, group_cells[cell_position], shape, threshold, counts)
        return counts

    def _count_reached(
        self,
        map_index: torch.Tensor,
        cells: torch.Tensor,
        shape: tuple[int, int],
        threshold: float,
        counts: torch.Tensor,
    ) -> None:
        """Add to ``counts`` the output pixels of each (map, cell) pair that reach
        ``threshold``."""
        grid = self.grid
        values = self._samples(map_index, cells, shape)  # (slots, pairs)
        valid = grid.slot_valid(cells, shape)
        near = ((values - threshold).abs() <= _NEAR * abs(threshold) + _TINY) & valid
        reached = (values >= threshold) & valid & ~near
        counts.index_add_(0, map_index, reached.sum(dim=0))
        if bool(near.any()):
            slot, pair = near.nonzero().unbind(1)
            near_maps = map_index[pair]
            near_pixels = grid.slot_pixels(cells[pair], shape).gather(0, slot[None])[0]
            involved, position = torch.unique(near_maps, return_inverse=True)
            exact = _exact(self.maps, involved, self.size, self.scale, near_pixels)
            hits = exact.gather(0, position[None])[0] >= threshold
            counts.index_add_(0, near_maps, hits.long())


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
