"""Reductions over bilinearly resized maps, computed without resizing every map.

The post-processors need, at the target size, only (a) which of ``N`` non-negative maps is the
largest at each pixel and (b) how many pixels of each map reach a threshold. The reference
resizes all ``N`` maps to full resolution for that. Bilinear resizing (torch's
``interpolate(mode="bilinear", align_corners=False)``) makes every output pixel a convex
combination of the four source pixels of one source *cell* (a pixel and its right, lower and
lower-right neighbours), with the same weights for every map. So each resized value lies between
the smallest and the largest of its cell's four corners, and per cell:

* a map can lead at some output pixel of the cell only if its largest corner reaches the best
  smallest corner of any map (the cell's *floor*); when a single map does, it leads at every
  output pixel of the cell, which is decided without touching its output pixels;
* a map whose four corners are all above (below) the threshold is above (below) it at every
  output pixel of the cell, which adds the cell's known number of output pixels (or none).

Only the output pixels of the remaining cells are sampled, as one block of slots per cell for
each of its candidate maps, with a few large tensor operations per group of cells. Our float32
rounding can differ from torch's in the last bits, so decisions within a relative ``2e-6`` of a
tie (or of the threshold) are finally re-evaluated with ``F.interpolate`` itself (on the whole
stack, since torch's kernel vectorises across maps) and read for just the maps involved: results
are identical to resizing everything, ties included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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
# (i + j) -/+ (j - i) = 2i, 2j
_PAIR_SIGNS = torch.tensor([[-1.0], [1.0]])


@dataclass
class _Taps:
    """Bilinear geometry along one axis: torch's half-pixel taps.

    ``first`` ``(out,)``: each output index's first source index. The output indices whose first
    tap is source index ``i`` form a run of ``count[i]``; runs are cut into *chunks* of at most
    ``block`` (only edge runs are ever longer: clamped coordinates pile up at index 0).
    ``first_chunk`` and ``chunks`` ``(in,)``: each source index's first chunk and number of
    chunks. ``table`` ``(4 * block + 1, chunks)``, per slot of each chunk: the first and second
    tap weights, 1.0 for the chunk's own outputs (0.0 past its end, where slots repeat its last
    output), the output index times ``stride``, and in the last row the chunk's length."""

    first: torch.Tensor  # (out,) int64
    count: torch.Tensor  # (in,) int64
    block: int
    first_chunk: torch.Tensor  # (in,) int64
    chunks: torch.Tensor  # (in,) int64
    multi_chunk: bool
    table: torch.Tensor  # (4 * block + 1, chunks) float


def _taps(
    in_size: int, out_size: int, stride: int, dtype: torch.dtype, device: torch.device
) -> _Taps:
    scale = np.float64(np.float32(in_size / out_size))
    position = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    position = np.maximum(position, np.float32(0))
    first = np.minimum(np.floor(position).astype(np.int64), in_size - 1)
    weight_second = np.clip(position - first.astype(np.float32), 0, 1).astype(np.float32)
    weight_first = (np.float32(1) - weight_second).astype(np.float32)
    count = np.bincount(first, minlength=in_size)
    start = np.cumsum(count) - count
    block = max(int(count[1:-1].max()) if in_size > 2 else int(count.max()), 1)
    chunks = np.maximum(-(-count // block), 1)  # a source index without outputs: one empty chunk
    first_chunk = np.cumsum(chunks) - chunks
    source = np.repeat(np.arange(in_size), chunks)
    rank = np.arange(len(source)) - first_chunk[source]
    length = np.clip(count[source] - rank * block, 0, block)
    slot = np.minimum(np.arange(block)[:, None], np.maximum(length - 1, 0)[None, :])
    output = np.minimum(start[source] + rank * block + slot, out_size - 1)  # (block, chunks)
    table = np.concatenate(
        [
            weight_first[output],
            weight_second[output],
            np.arange(block)[:, None] < length[None, :],
            output * stride,
            length[None, :],
        ]
    )
    as_tensor = lambda array: torch.as_tensor(np.ascontiguousarray(array), device=device)  # noqa: E731
    return _Taps(
        as_tensor(first),
        as_tensor(count),
        block,
        as_tensor(first_chunk),
        as_tensor(chunks),
        bool((chunks > 1).any()),
        as_tensor(table).to(dtype),
    )


def _neighbour_reduce(maps: torch.Tensor, reduce, out: torch.Tensor, scratch: torch.Tensor):
    """``reduce`` (``torch.maximum``, ``torch.minimum``) over each pixel and its right, lower
    and lower-right neighbours (edges replicated), written to ``out``: ``(..., h, w)`` each;
    ``scratch`` (same shape) is overwritten."""
    reduce(maps[..., :-1, :], maps[..., 1:, :], out=scratch[..., :-1, :])
    scratch[..., -1, :] = maps[..., -1, :]
    reduce(scratch[..., :-1], scratch[..., 1:], out=out[..., :-1])
    out[..., -1] = scratch[..., -1]


class _Block:
    """Output slots of a group of source cells: each cell (per row and column chunk) has a block
    of ``rows x cols`` slots; slots past its own outputs repeat its last row or column (same
    pixel, same value). ``cells`` ``(cells,)`` are the flat source cells, one per chunk pair, and
    ``source`` their positions in the list the block was made from (None when unchanged)."""

    def __init__(
        self,
        cells: torch.Tensor,
        source: torch.Tensor | None,
        corner_offsets: torch.Tensor,
        row_table: torch.Tensor,
        col_table: torch.Tensor,
    ):
        self.cells, self.source = cells, source
        self.corner_offsets = corner_offsets  # (4, cells)
        rows, cols = (row_table.shape[0] - 1) // 4, (col_table.shape[0] - 1) // 4
        self.row_first, self.row_second, self.row_new, self.row_offset = row_table[:-1].split(rows)
        self.col_first, self.col_second, self.col_new, self.col_output = col_table[:-1].split(cols)
        self.pixel_count = row_table[-1] * col_table[-1]  # (cells,)

    def pixels(self) -> torch.Tensor:
        """Flat output index of every slot: int64 ``(rows, cols, cells)``."""
        return (self.row_offset[:, None] + self.col_output[None]).to(torch.int64)

    def first_slots(self) -> torch.Tensor:
        """1.0 for the first slot of each output pixel, 0.0 for repeats: ``(rows, cols,
        cells)``."""
        return self.row_new[:, None] * self.col_new[None]

    def interpolate(self, corners: torch.Tensor) -> torch.Tensor:
        """Bilinear samples from ``corners`` ``(..., 4, cells)`` (top-left, top-right,
        bottom-left, bottom-right) at every slot, in torch's order of operations:
        ``(..., rows, cols, cells)``. For non-negative corners the rounding error is at most a
        few units in the last place of the result."""
        top_left, top_right, bottom_left, bottom_right = corners.unsqueeze(-2).unbind(-3)
        top = torch.addcmul(top_left * self.col_first, top_right, self.col_second)
        bottom = torch.addcmul(bottom_left * self.col_first, bottom_right, self.col_second)
        return torch.addcmul(
            top.unsqueeze(-3) * self.row_first[:, None],
            bottom.unsqueeze(-3),
            self.row_second[:, None],
        )


class _Grid:
    """Bilinear geometry of one resize ``(h, w) -> (H, W)``, organised by source cell (a source
    pixel with its right, lower and lower-right neighbours, edges replicated): the output
    pixels whose four taps those are form a block of slots (see ``_Block``)."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int], device: torch.device):
        height, width = in_size
        # Sums of whole pixel counts (and flat output indices) are exact in float32 below 2**24.
        self.sum_dtype = torch.float32 if out_size[0] * out_size[1] < 2**24 else torch.float64
        self.rows = _taps(height, out_size[0], out_size[1], self.sum_dtype, device)
        self.cols = _taps(width, out_size[1], 1, self.sum_dtype, device)
        self.in_size, self.out_size, self.plane = in_size, out_size, height * width
        self.pixels_per_cell = (self.rows.count[:, None] * self.cols.count[None, :]).flatten()
        self.pixels_per_cell_sum = self.pixels_per_cell.to(self.sum_dtype)
        self.has_pixels = self.pixels_per_cell > 0
        # Cells with more than one chunk pair (some edge cells), or None.
        self.multi_chunk_cells = None
        if self.rows.multi_chunk or self.cols.multi_chunk:
            chunk_pairs = self.rows.chunks[:, None] * self.cols.chunks[None, :]
            self.multi_chunk_cells = (chunk_pairs > 1).flatten()
        # Flat source offsets of each cell's four corners (top-left, top-right, bottom-left,
        # bottom-right), (4, h * w).
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        next_rows = (rows + 1).clamp_(max=height - 1)
        next_cols = (cols + 1).clamp_(max=width - 1)
        top, bottom = rows[:, None] * width, next_rows[:, None] * width
        self.corner_offsets = torch.stack(
            [top + cols, top + next_cols, bottom + cols, bottom + next_cols]
        ).view(4, -1)
        # Flat source cell of every output pixel, (H, W).
        self.cell_of_pixel = (self.rows.first[:, None] * width + self.cols.first[None, :]).to(
            torch.int32 if height * width < 2**31 else torch.int64
        )

    def expand(self, cell_values: torch.Tensor) -> torch.Tensor:
        """Per-cell values ``(h, w)`` copied to every output pixel of their cell: ``(H, W)``."""
        flat = cell_values.reshape(-1).index_select(0, self.cell_of_pixel.view(-1))
        return flat.view(self.out_size)

    def block(self, cells: torch.Tensor) -> _Block:
        """The blocks of slots of the flat source ``cells`` (see ``_Block``)."""
        row, col = cells // self.in_size[1], cells % self.in_size[1]
        rows, cols = self.rows, self.cols
        row_chunk = rows.first_chunk.index_select(0, row)
        col_chunk = cols.first_chunk.index_select(0, col)
        source = None
        if self.multi_chunk_cells is not None and bool(
            self.multi_chunk_cells.index_select(0, cells).any()
        ):  # edge cells: one entry per pair of chunks
            col_chunks = cols.chunks.index_select(0, col)
            repeats = rows.chunks.index_select(0, row) * col_chunks
            source = torch.repeat_interleave(repeats)
            rank = torch.arange(source.numel(), device=cells.device) - (
                torch.cumsum(repeats, 0) - repeats
            ).index_select(0, source)
            col_chunks = col_chunks.index_select(0, source)
            row_chunk = row_chunk.index_select(0, source) + rank // col_chunks
            col_chunk = col_chunk.index_select(0, source) + rank % col_chunks
            cells = cells.index_select(0, source)
        return _Block(
            cells,
            source,
            self.corner_offsets.index_select(1, cells),
            rows.table.index_select(1, row_chunk),
            cols.table.index_select(1, col_chunk),
        )


@functools.lru_cache(maxsize=8)
def _grid(in_size: tuple[int, int], out_size: tuple[int, int], device: torch.device) -> _Grid:
    """The (cached) geometry of one resize; batches usually share their sizes."""
    return _Grid(in_size, out_size, device)


def _exact(
    maps: torch.Tensor,
    involved: torch.Tensor,
    size: tuple[int, int],
    scale: torch.Tensor | None,
    pixels: torch.Tensor,
) -> torch.Tensor:
    """torch's own resize of ``maps[involved]`` (times ``scale``) at the flat output ``pixels``:
    ``(len(involved), len(pixels))``.

    All maps are resized, not just the involved ones: torch's kernel vectorises across maps, so
    a map's last bits can depend on how many maps are resized with it."""
    resized = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)
    values = resized[0].flatten(1)[involved][:, pixels]
    if scale is not None:
        values = values * scale[involved][:, None]
    return values


@dataclass
class ArgmaxParts:
    """The argmax of resized maps, kept compact: ``cell_leader`` ``(h, w)`` is the answer at
    every output pixel of its cell except at ``pixels`` (flat output indices, one ``(P,)``
    tensor per group of cells; a pixel may repeat with the same answer), whose answers are
    ``pixel_leader`` (likewise);
    ``won_counts`` ``(N,)`` counts output pixels per map. With a threshold,
    ``confident_lower`` ``(N,)`` counts the output pixels of the cells each map wins whole with
    every pixel at or above the threshold, ``confident_upper`` ``(N,)`` those of the cells where
    it may reach the threshold: bounds of its threshold count."""

    cell_leader: torch.Tensor
    pixels: tuple[torch.Tensor, ...]
    pixel_leader: tuple[torch.Tensor, ...]
    won_counts: torch.Tensor
    confident_lower: torch.Tensor | None = None
    confident_upper: torch.Tensor | None = None


@functools.lru_cache(maxsize=16)
def _index_weights(count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Rows of ones, indices and squared indices of ``count`` maps: ``(3, count)``."""
    index = torch.arange(count, device=device, dtype=torch.float64)
    return torch.stack([torch.ones_like(index), index, index * index]).to(dtype)


Allocator = Callable[[str, tuple[int, ...], torch.dtype, torch.device], torch.Tensor]


def _fresh(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The default ``Allocator``: a new tensor."""
    return torch.empty(shape, dtype=dtype, device=device)


class ResizedMaps:
    """Non-negative maps ``(N, h, w)``, each times ``scale[n]``, as if resized bilinearly to
    ``size``; answers argmax and threshold-count queries without resizing them.

    Construction computes, per map and source cell, the smallest and largest of the cell's four
    (scaled) corners: ``cell_min`` and ``cell_max``, each ``(N, h * w)``. ``allocate(name,
    shape, dtype, device)`` provides its large temporaries (``"work"``, ``"bounds"``; default:
    fresh tensors); they are in use until the object is dropped.
    """

    def __init__(
        self,
        maps: torch.Tensor,
        size: tuple[int, int],
        scale: torch.Tensor | None = None,
        allocate: Allocator | None = None,
    ):
        self.maps, self.size, self.scale = maps.contiguous(), tuple(size), scale
        self.count = count = maps.shape[0]
        self.grid = _grid(tuple(maps.shape[-2:]), self.size, maps.device)
        self._allocate = allocate or _fresh
        # One allocation for the large temporaries: a scratch plane (and the scaled maps) now,
        # candidate flags and threshold flags later.
        planes = 1 if scale is None else 2
        self._work = self._allocate("work", (planes, *maps.shape), self.grid.sum_dtype, maps.device)
        bounds = self._allocate("bounds", (2, *maps.shape), maps.dtype, maps.device)
        scaled = (
            self.maps if scale is None else torch.mul(maps, scale[:, None, None], out=self._work[1])
        )
        _neighbour_reduce(scaled, torch.maximum, out=bounds[0], scratch=self._work[0])
        _neighbour_reduce(scaled, torch.minimum, out=bounds[1], scratch=self._work[0])
        self._scaled = scaled  # until threshold_count_bounds reuses the work planes
        self.cell_max, self.cell_min = bounds.view(2, count, -1)

    # -- argmax ---------------------------------------------------------------------------------

    def argmax(self) -> torch.Tensor:
        """Index of the largest resized map at every output pixel, int64 ``(H, W)``; ties go to
        the lowest index like ``argmax``."""
        parts = self.argmax_parts()
        result = self.grid.expand(parts.cell_leader)
        for pixels, leader in zip(parts.pixels, parts.pixel_leader):
            result.view(-1)[pixels] = leader
        return result

    def argmax_parts(self, threshold: float | None = None) -> ArgmaxParts:
        """The argmax, compact (see ``ArgmaxParts``); ties go to the lowest index. With
        ``threshold``, also ``confident_lower`` and ``confident_upper``."""
        grid, count, device = self.grid, self.count, self.maps.device
        # Candidates per cell: maps whose largest corner reaches the cell's floor, the best
        # smallest corner of any map (margins absorb the rounding of single samples).
        floor = self.cell_min.amax(dim=0)  # (h * w,)
        # While the largest corners are at hand: the threshold count's upper bound.
        confident_upper = None if threshold is None else self.threshold_count_upper(threshold)
        candidates = self._work[0].view(count, -1)
        torch.ge(self.cell_max, floor * _SHRINK - 2 * _TINY, out=candidates)  # 1.0 / 0.0
        # Per cell, the number of candidates and the sums of their indices and squared indices
        # (exact: whole numbers below 2**24, or float64), in one product.
        if count >= 1024:
            candidates = candidates.double()
        weights = _index_weights(count, candidates.dtype, device)
        number, index_sum, square_sum = torch.mm(weights, candidates)
        # A lone candidate leads everywhere in its cell (cells without output pixels: anywhere).
        decided = number == 1
        cell_leader = index_sum.to(torch.int64).clamp_(max=count - 1).view(grid.in_size)
        decided_pixels = torch.where(decided, grid.pixels_per_cell_sum.to(candidates.dtype), 0)
        # Pixels of the decided cells per leader (and, with a threshold, of those whose floor,
        # hence the leader's every value, reaches it).
        per_cell = decided_pixels[None]
        if threshold is not None:
            above = torch.where(floor >= self._threshold_margins(threshold)[0], decided_pixels, 0)
            per_cell = torch.stack([decided_pixels, above])
        sums = per_cell.new_zeros(per_cell.shape[0], count)
        sums.scatter_add_(1, cell_leader.view(1, -1).expand_as(per_cell), per_cell)
        won_counts, *confident_lower = sums.to(torch.int64).unbind(0)
        confident_lower = confident_lower[0] if confident_lower else None
        contested = (~decided & grid.has_pixels).nonzero()[:, 0]
        if contested.numel() == 0:
            return ArgmaxParts(cell_leader, (), (), won_counts, confident_lower, confident_upper)
        # Most contested cells lie on the border of two regions: two candidates i < j, read off
        # the sums (i + j, i^2 + j^2). The others (and the few edge cells with several chunks)
        # take a table of their candidates.
        pair = number[contested] == 2
        if grid.multi_chunk_cells is not None:
            pair &= ~grid.multi_chunk_cells[contested]
        pixels, pixel_leader = [], []
        for cells, kind in [(contested[pair], "pair"), (contested[~pair], "table")]:
            if cells.numel() == 0:
                continue
            block = grid.block(cells)
            cells = block.cells  # edge cells repeat, once per chunk of their block
            if kind == "pair":
                both, squares = index_sum[cells], square_sum[cells]
                gap = torch.addcmul(2 * squares, both, both, value=-1).sqrt_()
                table = torch.addcmul(both, gap, _PAIR_SIGNS.to(gap.device, gap.dtype))
                table = table.mul_(0.5).round_().to(torch.int64)  # (2, cells): i, j
                group = self._pair_argmax(table, block, won_counts)
            else:
                width = int(number[cells].max())
                table = self._candidate_table(candidates, cells, width)
                group = self._table_argmax(table, block, won_counts)
            pixels.append(group[0])
            pixel_leader.append(group[1])
        return ArgmaxParts(
            cell_leader,
            tuple(pixels),
            tuple(pixel_leader),
            won_counts,
            confident_lower,
            confident_upper,
        )

    def _candidate_table(
        self, candidates: torch.Tensor, cells: torch.Tensor, width: int
    ) -> torch.Tensor:
        """The candidate maps of each of ``cells``, ascending: int64 ``(width, cells)``; cells
        with fewer candidates are padded with ``N``."""
        flags = candidates.index_select(1, cells)  # (N, cells), 1.0 for candidates
        index = torch.arange(self.count, device=cells.device, dtype=flags.dtype)[:, None]
        keys = torch.where(flags > 0, index, float(self.count))  # N for non-candidates
        return keys.topk(width, dim=0, largest=False, sorted=True).values.to(torch.int64)

    def _settle_near_ties(
        self,
        leader: torch.Tensor,
        near_tie: torch.Tensor,
        involved_entries: torch.Tensor,
        table: torch.Tensor,
        pixels: torch.Tensor,
    ) -> torch.Tensor:
        """``leader`` with the ``near_tie`` slots replaced by the argmax of torch's own resize
        of the maps ``table[involved_entries]``."""
        involved = torch.unique(table[involved_entries])
        exact = _exact(self.maps, involved, self.size, self.scale, pixels[near_tie])
        leader = leader.clone()
        leader[near_tie] = involved[exact.argmax(dim=0)]
        return leader

    def _table_argmax(
        self, table: torch.Tensor, block: _Block, won_counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The argmax at every slot of ``block``, among each cell's candidate maps ``table``
        (``(width, cells)``, ascending, padded with ``N``): flat output indices and leading maps,
        each ``(slots,)``. Adds the pixels won to ``won_counts``."""
        values = block.interpolate(self._corners(table, block, padded=True))
        best = values.amax(dim=0)
        is_best = torch.eq(values, best, out=torch.empty_like(values))  # 1.0 / 0.0
        # Slots where no map is within the rounding margin of the best have one best map;
        # the others (exact ties included) are settled by torch's own interpolation.
        close = torch.ge(values, best - best * _NEAR - _TINY, out=torch.empty_like(values))
        near_tie = close.sum(dim=0) > 1
        leader = (is_best * table[:, None, None].to(values.dtype)).sum(dim=0).to(torch.int64)
        pixels = block.pixels()
        if bool(near_tie.any()):
            involved = (close.bool() & near_tie).flatten(1, 2).any(dim=1)  # (width, cells)
            leader = self._settle_near_ties(leader, near_tie, involved, table, pixels)
            is_best = (leader == table[:, None, None]).to(values.dtype)
        won = (is_best * block.first_slots()).sum(dim=(1, 2))  # (width, cells)
        won_counts.index_add_(0, table.clamp(max=self.count - 1).flatten(), won.flatten().long())
        return pixels.flatten(), leader.flatten()

    def _pair_argmax(
        self, table: torch.Tensor, block: _Block, won_counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_table_argmax`` for cells with exactly two candidates (``table`` ``(2, cells)``,
        ascending). Bilinear interpolation is linear, so the difference of the two resized maps
        is the resized difference of their corners, up to rounding (a few units in the last
        place of the larger corner sum); slots within that margin of zero take torch's own
        values."""
        first, second = self._corners(table, block)  # (4, cells) each
        margin = (first + second).amax(dim=0) * (2 * _SLACK) + 2 * _TINY  # (cells,)
        difference = block.interpolate(first - second)  # (rows, cols, cells)
        second_leads = difference < 0
        leader = table[0] + (table[1] - table[0]) * second_leads
        clearance = difference.abs().sub_(margin)  # <= 0: a near tie
        pixels = block.pixels()
        if bool(clearance.amin() <= 0):
            near_tie = clearance <= 0
            involved = near_tie.flatten(0, 1).any(dim=0).expand(2, -1)  # (2, cells)
            leader = self._settle_near_ties(leader, near_tie, involved, table, pixels)
            second_leads = leader == table[1]
        won_second = (second_leads * block.first_slots()).sum(dim=(0, 1)).long()  # (cells,)
        won_counts.index_add_(0, table[1], won_second)
        won_counts.index_add_(0, table[0], block.pixel_count.to(torch.int64) - won_second)
        return pixels.flatten(), leader.flatten()

    def _corners(self, table: torch.Tensor, block: _Block, padded: bool = False) -> torch.Tensor:
        """Scaled values of map ``table[k, i]`` at the four corners of ``block.cells[i]``:
        float32 ``(k, 4, cells)``. With ``padded``, entries ``table == N`` give -1."""
        count = self.count
        map_index = table.clamp(max=count - 1) if padded else table
        offsets = block.corner_offsets + (map_index * self.grid.plane)[:, None]
        source = self.maps if self._scaled is None else self._scaled
        corners = source.reshape(-1).index_select(0, offsets.view(-1)).view(offsets.shape)
        if self.scale is not None and self._scaled is None:
            corners *= self.scale.index_select(0, map_index.view(-1)).view(-1, 1, table.shape[1])
        if padded:
            corners.masked_fill_((table >= count)[:, None], -1.0)
        return corners

    # -- threshold counts -----------------------------------------------------------------------

    def _threshold_margins(self, threshold: float) -> tuple[float, float]:
        """Cell corners at or above the first value are above ``threshold`` at every output pixel
        of the cell; corners all below the second are below it everywhere."""
        return threshold / (1 - _SLACK) + _TINY, threshold / (1 + _SLACK) - _TINY

    def threshold_count_upper(self, threshold: float) -> torch.Tensor:
        """Per map, an upper bound of ``threshold_counts(threshold)`` from the source cells
        alone: int64 ``(N,)``."""
        flags = self._work[0].view(self.count, -1)
        torch.ge(self.cell_max, self._threshold_margins(threshold)[1], out=flags)
        return torch.mv(flags, self.grid.pixels_per_cell_sum).to(torch.int64)

    def threshold_count_bounds(self, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per map, bounds ``lower <= count <= upper`` of ``threshold_counts(threshold)`` from
        the source cells alone: int64 ``(N,)`` each."""
        above, near = self._threshold_margins(threshold)
        if self._work.shape[0] < 2:
            self._work = self._allocate(
                "work", (2, *self.maps.shape), self._work.dtype, self._work.device
            )
        if self.scale is not None:  # the scaled maps live in the work planes
            self._scaled = None
        flags = self._work.view(2, self.count, -1)
        torch.ge(self.cell_min, above, out=flags[0])  # whole cell above
        torch.ge(self.cell_max, near, out=flags[1])  # some output pixel may be above
        sums = torch.mv(flags.view(2 * self.count, -1), self.grid.pixels_per_cell_sum)
        lower, upper = sums.to(torch.int64).view(2, self.count)
        return lower, upper

    def threshold_counts(self, threshold: float, maps: torch.Tensor | None = None) -> torch.Tensor:
        """Per map, the number of output pixels whose resized value is ``>= threshold``: int64
        ``(N,)``. With ``maps`` (bool ``(N,)``) only those maps are counted exactly, the others
        get a lower bound."""
        above, near = self._threshold_margins(threshold)
        grid = self.grid
        counts, _ = self.threshold_count_bounds(threshold)
        selected = (
            torch.arange(self.count, device=self.maps.device)
            if maps is None
            else maps.nonzero()[:, 0]
        )
        whole = self.cell_min.index_select(0, selected) >= above
        undecided = (self.cell_max.index_select(0, selected) >= near) & ~whole  # (maps, h * w)
        cells = (undecided & grid.has_pixels).any(dim=0).nonzero()[:, 0]
        if cells.numel() == 0:
            return counts
        row, cell_position = undecided.index_select(1, cells).nonzero().unbind(1)
        block = grid.block(cells[cell_position])
        map_index = selected[row] if block.source is None else selected[row[block.source]]
        self._count_reached(map_index, block, threshold, counts)
        return counts

    def _count_reached(
        self, map_index: torch.Tensor, block: _Block, threshold: float, counts: torch.Tensor
    ) -> None:
        """Add to ``counts`` the output pixels of each (map ``map_index[i]``, cell
        ``block.cells[i]``) pair that reach ``threshold``."""
        values = block.interpolate(self._corners(map_index[None], block))[0]  # (rows, cols, pairs)
        first_slot = block.first_slots().bool()
        near = ((values - threshold).abs() <= _NEAR * abs(threshold) + _TINY) & first_slot
        reached = (values >= threshold) & first_slot & ~near
        counts.index_add_(0, map_index, reached.sum(dim=(0, 1)))
        if bool(near.any()):
            pair = near.nonzero()[:, 2]
            near_maps = map_index[pair]
            involved, position = torch.unique(near_maps, return_inverse=True)
            exact = _exact(self.maps, involved, self.size, self.scale, block.pixels()[near])
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
