"""Translating images larger than one tile: reflect padding to the network's stride, the tile plan and
its blending, and ``run_tiled``, which gives instance norm the statistics of the whole image instead
of each tile's own.

Tiles overlap and their outputs are blended with raised-cosine weights, so that no seam shows.
Instance norm would normalise every tile by its own statistics (a visible change of tone from tile
to tile); instead the statistics of the whole image are measured once (exactly over the tiles, see
``tile_stats``, or estimated from a downscaled copy) and every tile is normalised with them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .names import DEFAULT_OVERLAP, DEFAULT_TILE, TILE_STATS
from .tile_stats import Statistics, WholeImageInstanceNorm, as_measured, flatten, staged_tiles

MIN_SIDE = 4


# ---- padding ------------------------------------------------------------------------------

def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect padding of any amount: in several passes when the image is smaller than the pad."""
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        step = [min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1)]
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return x


def padding_for(size: int, multiple: int, smallest: int | None = None) -> tuple[int, int]:
    """(before, after) padding that makes ``size`` a multiple of ``multiple`` and at least ``smallest`` (default:
    two multiples, which a ResNet needs: its reflection pads need more than one pixel at the bottleneck)."""
    target = max(smallest or 2 * multiple, -(-size // multiple) * multiple)
    extra = target - size
    return extra // 2, extra - extra // 2


def check_size(height: int, width: int, name: str = "image") -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(f"{name} is {width}x{height} pixels; translation needs at least {MIN_SIDE} pixels on each side")


# ---- tiles --------------------------------------------------------------------------------

def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size ``tile`` covering ``length``, neighbours overlapping by >= ``overlap``."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


def core_bounds(starts: Sequence[int], tile: int, length: int, multiple: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` among tiles at the middle of each overlap, on multiples of ``multiple``."""
    cuts = [(a + tile + b) // 2 // multiple * multiple for a, b in zip(starts, starts[1:])]
    edges = [0, *cuts, length]
    return list(zip(edges, edges[1:]))


def blend_window(starts: Sequence[int], index: int, tile: int) -> torch.Tensor:
    """1-D weights of one tile: raised-cosine ramps where it overlaps a neighbour, flat elsewhere."""
    weight = torch.ones(tile, dtype=torch.float64)
    start = starts[index]
    if index > 0:
        ramp = starts[index - 1] + tile - start  # overlap with the previous tile
        t = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp
        weight[:ramp] *= torch.sin(t * math.pi / 2) ** 2
    if index < len(starts) - 1:
        ramp = start + tile - starts[index + 1]  # overlap with the next tile
        t = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp
        weight[tile - ramp:] *= torch.cos(t * math.pi / 2) ** 2
    return weight


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one padded image lie, and which part of it each tile's statistics own."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    starts_y: tuple[int, ...]
    starts_x: tuple[int, ...]
    cores_y: tuple[tuple[int, int], ...]
    cores_x: tuple[tuple[int, int], ...]

    @classmethod
    def make(cls, height: int, width: int, *, tile: int, overlap: int, multiple: int) -> "TilePlan":
        tile_h, tile_w = min(tile, height), min(tile, width)
        starts_y, starts_x = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
        return cls(height, width, tile_h, tile_w, tuple(starts_y), tuple(starts_x),
                   tuple(core_bounds(starts_y, tile_h, height, multiple)),
                   tuple(core_bounds(starts_x, tile_w, width, multiple)))

    def __len__(self) -> int:
        return len(self.starts_y) * len(self.starts_x)

    def tiles(self) -> Iterator[tuple[int, int, tuple[int, int, int, int]]]:
        """(top, left, core box relative to the tile as (y0, y1, x0, x1)) for every tile."""
        for (top, (cy0, cy1)), (left, (cx0, cx1)) in itertools.product(
                zip(self.starts_y, self.cores_y), zip(self.starts_x, self.cores_x)):
            yield top, left, (cy0 - top, cy1 - top, cx0 - left, cx1 - left)

    def weights(self, top: int, left: int) -> torch.Tensor:
        wy = blend_window(self.starts_y, self.starts_y.index(top), self.tile_h)
        wx = blend_window(self.starts_x, self.starts_x.index(left), self.tile_w)
        return (wy[:, None] * wx[None, :]).float()  # (tile_h, tile_w)

    def weight_sum(self) -> torch.Tensor:
        """Sum of all tiles' weights at every pixel; separable, so an outer product of two sums."""
        def total(starts, tile, length):
            out = torch.zeros(length, dtype=torch.float64)
            for i, s in enumerate(starts):
                out[s:s + tile] += blend_window(starts, i, tile)
            return out
        return (total(self.starts_y, self.tile_h, self.height)[:, None]
                * total(self.starts_x, self.tile_w, self.width)[None, :]).float()


# ---- options --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TileOptions:
    """How an image larger than ``tile`` x ``tile`` pixels is translated: tiles of that side, neighbours
    sharing ``overlap`` pixels, and instance-norm statistics ``exact`` (measured over the tiles, layer by
    layer) or ``estimate`` (from one pass over a copy downscaled to one tile)."""

    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    stats: str = "exact"

    def for_stride(self, multiple: int) -> "TileOptions":
        """These options checked against a network's stride, the overlap rounded up to it: tile starts
        and core boundaries must fall on the stride (256 for unet_256)."""
        if self.tile < 2 * multiple or self.tile % multiple:
            raise ValueError(f"--tile {self.tile} must be a multiple of {multiple} and at least {2 * multiple}")
        overlap = max(multiple, -(-self.overlap // multiple) * multiple)
        if self.overlap < 1 or overlap > self.tile // 2:
            raise ValueError(f"--overlap {self.overlap} (rounded up to a multiple of {multiple}: {overlap}) must be "
                             f"positive and at most half the tile ({self.tile // 2})")
        if self.stats not in TILE_STATS:
            raise ValueError(f"unknown --tile_stats {self.stats!r}; valid: {', '.join(TILE_STATS)}")
        return replace(self, overlap=overlap)

    def needs_tiles(self, height: int, width: int) -> bool:
        return height * width > self.tile * self.tile

# ---- translating tensors -----------------------------------------------------------------------

def _downscaled(x: torch.Tensor, max_pixels: int, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = min(1.0, math.sqrt(max_pixels / (h * w)))
    size = (max(2 * multiple, round(h * scale / multiple) * multiple), max(2 * multiple, round(w * scale / multiple) * multiple))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def run_tiled(net: nn.Module, x: torch.Tensor, *, options: TileOptions, multiple: int,
              device: torch.device | None = None, show_progress: bool = False) -> torch.Tensor:
    """Translate a padded (B, C, H, W) CPU tensor tile by tile; the result stays on the CPU.

    ``options.stats`` says where instance norm takes its whole-image statistics from: ``exact``
    measures them over the tiles (``tile_stats``: one staged pass for the generators of ``models``,
    one pass per norm layer for other networks); ``estimate`` takes them from one pass over a copy
    downscaled to one tile.
    """
    from .tracking import progress

    options = options.for_stride(multiple)
    device = device or x.device
    plan = TilePlan.make(x.shape[-2], x.shape[-1], tile=options.tile, overlap=options.overlap, multiple=multiple)
    norms = WholeImageInstanceNorm(net)
    exact = bool(norms) and options.stats == "exact"
    steps = flatten(net) if exact else None
    bar = progress(None, total=((len(norms.layers) if exact else 0) + 1) * len(plan),
                   description=f"tiles of {x.shape[-1]}x{x.shape[-2]}", enabled=show_progress, unit="tile", leave=False)
    boxes = list(plan.tiles())
    if steps is not None:
        tiles = [((plan.tile_h, plan.tile_w, *core), partial(_tile_of, x, plan, top, left, device))
                 for top, left, core in boxes]
        outputs = ((boxes[i][:2], y) for i, y in staged_tiles(steps, tiles, on_tile=partial(bar.update, 1)))
        output = blend(plan, outputs, x.shape[0])
    else:
        with norms:
            if exact:
                norms.measure_layers(partial(measure_tiles, net, norms, x, plan, device, bar))
            elif norms:
                norms.measure_whole(net, _downscaled(x, plan.tile_h * plan.tile_w, multiple).to(device))
            output = blend(plan, tile_outputs(net, x, plan, device, on_tile=partial(bar.update, 1)), x.shape[0])
    bar.close()
    return output


def _tile_of(x: torch.Tensor, plan: TilePlan, top: int, left: int, device) -> torch.Tensor:
    return x[..., top:top + plan.tile_h, left:left + plan.tile_w].to(device)


def tile_outputs(net: nn.Module, x: torch.Tensor, plan: TilePlan, device, *,
                 on_tile: Callable[[], None] = lambda: None) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    """((top, left), ``net``'s output) for every tile of ``x``, as ``blend`` takes them."""
    for top, left, _ in plan.tiles():
        yield (top, left), net(_tile_of(x, plan, top, left, device))
        on_tile()


def blend(plan: TilePlan, outputs: Iterable[tuple[tuple[int, int], torch.Tensor]], batch: int) -> torch.Tensor:
    """The image from each tile's output (at its (top, left)), overlaps blended by the tiles' weights."""
    output: torch.Tensor | None = None
    for (top, left), y in outputs:
        y = y.float().cpu()
        if output is None:
            output = torch.zeros(batch, y.shape[1], plan.height, plan.width)
        output[..., top:top + plan.tile_h, left:left + plan.tile_w] += y * plan.weights(top, left)
    return output.div_(plan.weight_sum())


def measure_tiles(net: nn.Module, norms: WholeImageInstanceNorm, x: torch.Tensor, plan: TilePlan, device, bar) -> None:
    """One measuring pass: every tile of ``x`` up to the measured layer."""
    for top, left, core in plan.tiles():
        norms.run_to_measured_layer(net, _tile_of(x, plan, top, left, device), (plan.tile_h, plan.tile_w, *core))
        bar.update(1)


# ---- frames of a clip ------------------------------------------------------------------------------

Frame = tuple[tuple[int, int], Callable[[], torch.Tensor]]  # (padded height, width), the loader of (1, C, H, W)


def run_frames(net: nn.Module, frames: Sequence[Frame], *, options: TileOptions, multiple: int,
               device: torch.device | None = None, statistics: Statistics = as_measured,
               on_tile: Callable[[], None] = lambda: None) -> Iterator[torch.Tensor]:
    """Each padded frame's output on the CPU, in order, with every instance-norm layer normalised with
    the statistics of all the frames together: what ``net`` gives the frames stacked into one image
    (``statistics`` may replace them). Frames above ``options.tile`` are tiled as ``run_tiled`` tiles
    them. One staged pass (``tile_stats``); ``on_tile`` is called after every tile of every stage."""
    steps = flatten(net)
    if steps is None:
        raise ValueError(f"statistics across frames need a generator of this package, not a {type(net).__name__}")
    options = options.for_stride(multiple)
    plans, tiles, owner = [], [], []
    for index, ((height, width), load) in enumerate(frames):
        plan = frame_plan(height, width, options=options, multiple=multiple)
        plans.append(plan)
        for top, left, core in plan.tiles():
            tiles.append(((plan.tile_h, plan.tile_w, *core), partial(_frame_tile, load, plan, top, left, device)))
            owner.append((index, (top, left)))
    pending: list[tuple[tuple[int, int], torch.Tensor]] = []
    for tile_index, y in staged_tiles(steps, tiles, on_tile=on_tile, statistics=statistics):
        frame, corner = owner[tile_index]
        pending.append((corner, y))
        if tile_index + 1 == len(owner) or owner[tile_index + 1][0] != frame:
            yield blend(plans[frame], pending, 1)
            pending = []


def frame_plan(height: int, width: int, *, options: TileOptions, multiple: int) -> TilePlan:
    """The tiles of one padded frame: one when it fits in ``options.tile``."""
    side = options.tile if options.needs_tiles(height, width) else max(height, width)
    return TilePlan.make(height, width, tile=side, overlap=options.overlap, multiple=multiple)


def _frame_tile(load: Callable[[], torch.Tensor], plan: TilePlan, top: int, left: int, device) -> torch.Tensor:
    return _tile_of(load(), plan, top, left, device or torch.device("cpu"))
