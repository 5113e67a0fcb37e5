"""Instance norm with the statistics of the whole image while a generator runs tile by tile.

Two ways to measure them exactly, with the same result:

- **Staged** (``staged_tiles``, for the generators of ``models``): the network is flattened into a
  program, its layers in order with a stack for the skip connections, and every instance-norm layer
  is a stop. All tiles run to the next stop, that layer's statistics are summed over the tile cores,
  and each tile's state there (the activation and its pending skips) is kept, so that the next stage
  starts from it instead of from the image: one pass over the network in all. A state is kept only
  where recomputing it would cost more than keeping it (``KEEP_MACS_PER_ELEMENT``), and states larger
  than ``STATE_MEMORY_BUDGET`` in all wait in a temporary folder instead of in memory.
- **Layer by layer** (``WholeImageInstanceNorm.measure_layers``, for any other network): the network
  runs from the image once per norm layer, up to that layer, with its norm layers swapped for stand-ins.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .models.generators import ResnetBlock, ResnetGenerator, UnetGenerator, UnetSkipBlock

# Keep a tile's state when the states of all tiles fit in STATE_MEMORY_BUDGET, or when reaching it from
# the last kept one took at least this many multiply-adds per element of the state. A kept state
# that does not fit costs a round trip through a file; the full-resolution features after
# the stem (147 per element in a ResNet generator) and after its last upsampling (275) are cheap to
# recompute, its other stage boundaries (500 to 1,100) are not.
KEEP_MACS_PER_ELEMENT = 512
STATE_MEMORY_BUDGET = 256 * 2**20  # bytes of kept states held in memory; more go to a temporary folder

Core = tuple[int, int, int, int, int, int]  # tile_h, tile_w and the core box in the tile: y0, y1, x0, x1


def uses_instance_statistics(layer: nn.Module) -> bool:
    return isinstance(layer, nn.InstanceNorm2d) and not (layer.track_running_stats and not layer.training)


# ---- statistics ------------------------------------------------------------------------------

class CoreSums:
    """Count, sum and sum of squares per (image, channel) of one layer's input over the tile cores."""

    def __init__(self):
        self.sums: list[torch.Tensor] | None = None

    def add(self, x: torch.Tensor, core: Core) -> None:
        tile_h, tile_w, y0, y1, x0, x1 = core
        sy, sx = tile_h // x.shape[-2], tile_w // x.shape[-1]  # this layer's downsampling
        part = x[..., y0 // sy:y1 // sy, x0 // sx:x1 // sx]
        # Per-tile moments in one pass without temporaries (a full-resolution core is hundreds of MB),
        # summed over the tiles in float64.
        var, mean = torch.var_mean(part.float(), dim=(-2, -1), correction=0)
        count = float(part.shape[-2] * part.shape[-1])
        mean, var = mean.double().cpu(), var.double().cpu()
        sums = [torch.tensor(count, dtype=torch.float64), count * mean, count * (var + mean * mean)]
        self.sums = sums if self.sums is None else [a + b for a, b in zip(self.sums, sums)]

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (biased) variance, each (B, C)."""
        count, total, squares = self.sums
        mean = total / count
        return mean.float(), (squares / count - mean * mean).clamp_min(0).float()


def normalise(layer: nn.InstanceNorm2d, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """What ``layer`` computes with the given statistics, each (B, C), instead of ``x``'s own."""
    mean, var = mean.to(x.device)[:, :, None, None], var.to(x.device)[:, :, None, None]
    y = (x - mean).mul_(torch.rsqrt(var + layer.eps))  # in place: one full-size temporary, not three
    if layer.affine:
        y.mul_(layer.weight[None, :, None, None]).add_(layer.bias[None, :, None, None])
    return y


# ---- layer by layer, for any network ---------------------------------------------------------

class _StopForward(Exception):
    """Raised by the measured layer's stand-in and caught by ``run_to_measured_layer``: the layers after
    it are not needed for its statistics (stopping there halves the cost of exact statistics)."""


class GivenStatisticsNorm(nn.Module):
    """Stands in for one InstanceNorm2d while ``WholeImageInstanceNorm`` is active: normalises with the
    statistics it is given, or records the statistics of its input."""

    def __init__(self, norm: nn.InstanceNorm2d, index: int, owner: "WholeImageInstanceNorm"):
        super().__init__()
        self.norm, self.index, self.owner = norm, index, owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.owner.normalise(self.index, self.norm, x)


class WholeImageInstanceNorm:
    """While active (``with``), the network's instance-norm layers are replaced by stand-ins that
    normalise with given whole-image statistics instead of each tile's own; one layer at a time can be
    measured over tile cores. Leaving the block puts the original layers back."""

    def __init__(self, net: nn.Module):
        self.layers = [m for m in net.modules() if uses_instance_statistics(m)]
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        self._places = [(parent, name, index[id(child)]) for parent in net.modules()
                        for name, child in parent.named_children() if id(child) in index]
        self.frozen: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: mean, var, each (B, C)
        self.measure: int | str | None = None  # the layer to measure (the forward stops there), or "all"
        self.core: Core = (1, 1, 0, 0, 0, 0)
        self._sums: list[CoreSums] = []  # per measured layer

    def __bool__(self) -> bool:
        return bool(self.layers)

    def __enter__(self) -> "WholeImageInstanceNorm":
        for parent, name, index in self._places:
            setattr(parent, name, GivenStatisticsNorm(self.layers[index], index, self))
        return self

    def __exit__(self, *exc) -> None:
        for parent, name, index in self._places:
            setattr(parent, name, self.layers[index])

    def measured(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Mean and (biased) variance of each measured layer's input over all cores seen."""
        stats = [sums.mean_var() for sums in self._sums]
        self._sums = []
        return stats

    def normalise(self, index: int, layer: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
        """What layer ``index`` computes while active (its stand-in's forward)."""
        if self.measure == "all":
            self._record(x, slot=index)
            return layer(x)
        if index == self.measure:
            self._record(x, slot=0)
            raise _StopForward
        return normalise(layer, x, *self.frozen[index])

    def _record(self, x: torch.Tensor, *, slot: int) -> None:
        if slot == len(self._sums):
            self._sums.append(CoreSums())
        self._sums[slot].add(x, self.core)

    def run_to_measured_layer(self, net: nn.Module, tile: torch.Tensor, core: Core) -> None:
        """Run ``net`` on ``tile`` up to the layer being measured, recording its input over ``core``."""
        self.core = core
        try:
            net(tile)
        except _StopForward:
            pass

    def measure_layers(self, run_parts: Callable[[], None]) -> None:
        """Measure the layers in order; ``run_parts`` runs the network over every part of the image
        with ``run_to_measured_layer``. Layer k is measured with layers < k already normalised with
        their measured statistics, so the result is exact up to tile-border effects."""
        self.frozen = []
        for index in range(len(self.layers)):
            self.measure = index
            run_parts()
            self.frozen += self.measured()
        self.measure = None

    def measure_whole(self, net: nn.Module, x: torch.Tensor) -> None:
        """Take every layer's statistics from one ordinary pass over all of ``x``."""
        self.measure, self.core = "all", (x.shape[-2], x.shape[-1], 0, x.shape[-2], 0, x.shape[-1])
        net(x)
        self.frozen, self.measure = self.measured(), None


# ---- the staged program ------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One step of a flattened network. ``kind``: "layer" (``module`` applied to the activation),
    "norm" (an instance-norm ``module``: a stop), "push" (the activation saved for a skip), "add" /
    "cat" (the last saved one added / concatenated in front), "finish" (``module.finish(h, saved)``)."""

    kind: str
    module: nn.Module | None = None


def flatten(net: nn.Module) -> list[Step] | None:
    """``net`` as a program of steps that computes what ``net(x)`` computes; None for a network whose
    instance-norm layers sit in modules this does not know how to take apart."""
    if not any(uses_instance_statistics(m) for m in net.modules()):
        return [Step("layer", net)]
    if uses_instance_statistics(net):
        return [Step("norm", net)]
    parts = _PARTS.get(type(net))
    if parts is None:
        return None
    steps: list[Step] = []
    for part in parts(net):
        inner = part if isinstance(part, Step) else flatten(part)
        if inner is None:
            return None
        steps += [inner] if isinstance(inner, Step) else inner
    return steps


def _unet_parts(block: UnetSkipBlock) -> list:
    return [block.model] if block.outermost else [Step("push"), block.model, Step("cat")]


_PARTS: dict[type, Callable[[nn.Module], list]] = {
    nn.Sequential: lambda seq: list(seq),
    ResnetBlock: lambda block: [Step("push"), block.conv_block, Step("add")],
    ResnetGenerator: lambda gen: [Step("push"), gen.stem, gen.down, gen.blocks, gen.up, Step("finish", gen)],
    UnetSkipBlock: _unet_parts,
    UnetGenerator: lambda gen: [gen.model],
}


def _multiply_adds(module: nn.Module, before: torch.Size, after: torch.Size) -> int:
    """Multiply-adds of the convolutions in ``module`` for one application, from the shapes around it."""
    total = 0
    for layer in module.modules():
        if isinstance(layer, nn.ConvTranspose2d):
            total += layer.weight.numel() * before[0] * before[-2] * before[-1]
        elif isinstance(layer, nn.Conv2d):
            total += layer.weight.numel() * after[0] * after[-2] * after[-1]
    return total


@dataclass
class TileState:
    """Where one tile is in the program: the activation entering the next step and the saved skips."""

    h: torch.Tensor
    skips: list[torch.Tensor] = field(default_factory=list)
    multiply_adds: int = 0  # since the state was last kept

    def tensors(self) -> list[torch.Tensor]:
        return [self.h, *self.skips]

    def elements(self) -> int:
        return sum(t.numel() for t in self.tensors())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


def run_steps(steps: Sequence[Step], state: TileState, frozen: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> TileState:
    """``state`` carried through ``steps``; norm layers use the ``frozen`` statistics (by id). ``state``
    is emptied, so that each activation is freed as soon as the next one exists (hundreds of MB at
    full resolution)."""
    h, skips, macs = state.h, list(state.skips), state.multiply_adds
    state.h, state.skips = None, []
    for step in steps:
        if step.kind == "norm":
            h = normalise(step.module, h, *frozen[id(step.module)])
        elif step.kind == "push":
            skips.append(h)
        elif step.kind == "add":
            h = skips.pop() + h
        elif step.kind == "cat":
            h = torch.cat([skips.pop(), h], 1)
        elif step.kind == "finish":
            h = step.module.finish(h, skips.pop())
        else:
            before = h.shape
            h = step.module(h)
            macs += _multiply_adds(step.module, before, h.shape)
    return TileState(h, skips, macs)


class KeptStates:
    """Each tile's kept state: in memory while the kept states stay within ``budget`` bytes, the others
    in files of a temporary folder (the stage-boundary activations of a 12-megapixel image are
    gigabytes). A tile's file is overwritten in place from stage to stage, without truncation, so
    that its pages are reused instead of freed and allocated again."""

    def __init__(self, tiles: int, budget: int | None = None):
        self.tiles, self.budget = tiles, STATE_MEMORY_BUDGET if budget is None else budget
        self.states: dict[int, TileState | tuple[Path, list]] = {}
        self.in_memory = 0  # bytes of the states held in memory
        self._folder: tempfile.TemporaryDirectory | None = None

    def fit_in_memory(self, state: TileState) -> bool:
        """Whether every tile's state of this size fits in the memory budget."""
        return state.nbytes() * self.tiles <= self.budget

    def put(self, index: int, state: TileState) -> None:
        old = self.states.pop(index, None)
        if isinstance(old, TileState):
            self.in_memory -= old.nbytes()
        if self.in_memory + state.nbytes() <= self.budget:
            self.states[index] = TileState(state.h, state.skips)
            self.in_memory += state.nbytes()
            return
        path = self._folder_path() / f"{index}.bin"
        with open(path, "r+b" if path.exists() else "wb") as f:
            for t in state.tensors():
                t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tofile(f)
        self.states[index] = (path, [(t.dtype, t.shape, t.device) for t in state.tensors()])

    def _folder_path(self) -> Path:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="cyclegan-tiles-")
        return Path(self._folder.name)

    def get(self, index: int) -> TileState:
        kept = self.states[index]
        if isinstance(kept, TileState):
            return TileState(kept.h, list(kept.skips))  # run_steps empties the one it is given
        path, layout = kept
        tensors = []
        with open(path, "rb") as f:  # one buffer per tensor, so that each is freed when it is used up
            for dtype, shape, device in layout:
                raw = torch.from_numpy(np.fromfile(f, dtype=np.uint8, count=shape.numel() * dtype.itemsize))
                tensors.append(raw.view(dtype).reshape(shape).to(device))
        return TileState(tensors[0], tensors[1:])

    def close(self) -> None:
        self.states.clear()
        self.in_memory = 0
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


Statistics = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def as_measured(stop: int, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return mean, var


class SmoothedStatistics:
    """Each norm layer's statistics as a moving average over the calls so far (frames of a video):
    ``momentum`` is the weight of the past. Causal and one pass; the mean and the second moment are
    averaged, so that a drifting mean widens the variance as the frames' union would. ``reset`` at a cut."""

    def __init__(self, momentum: float):
        if not 0 <= momentum < 1:
            raise ValueError(f"the smoothing momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def reset(self) -> None:
        self.state.clear()

    def __call__(self, stop: int, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        second = var + mean * mean
        if stop not in self.state or self.momentum == 0:
            # No past to average with: the frame's own statistics as measured. Going through the second
            # moment would round the variance, enough to move a pixel of the output by a level on some CPUs.
            self.state[stop] = (mean, second)
            return mean, var
        past_mean, past_second = self.state[stop]
        mean = self.momentum * past_mean + (1 - self.momentum) * mean
        second = self.momentum * past_second + (1 - self.momentum) * second
        self.state[stop] = (mean, second)
        return mean, (second - mean * mean).clamp_min(0)


def staged_tiles(steps: Sequence[Step], tiles: Sequence[tuple[Core, Callable[[], torch.Tensor]]], *,
                 on_tile: Callable[[], None] = lambda: None,
                 statistics: Statistics = as_measured) -> Iterator[tuple[int, torch.Tensor]]:
    """(tile index, output) for every tile, every instance-norm layer normalised with the statistics of
    its input over all tile cores (``tiles``: each tile's core and a function that loads its input);
    ``statistics(stop, mean, var)`` may replace them (the smoothing over time of ``SmoothedStatistics``).

    The norm layers are measured in order, all tiles running from their kept states to the next norm
    layer; ``on_tile`` is called after every tile of every stage."""
    stops = [i for i, step in enumerate(steps) if step.kind == "norm"]
    kept, start = KeptStates(len(tiles)), 0
    frozen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def state_of(index: int) -> TileState:
        return kept.get(index) if start else TileState(tiles[index][1]())

    try:
        for stop in stops:
            sums, keep = CoreSums(), None
            for index, (core, _) in enumerate(tiles):
                state = run_steps(steps[start:stop], state_of(index), frozen)
                sums.add(state.h, core)
                if keep is None:
                    keep = kept.fit_in_memory(state) or state.multiply_adds >= KEEP_MACS_PER_ELEMENT * state.elements()
                if keep:
                    kept.put(index, state)
                del state  # a full-resolution activation: not alive while the next tile runs
                on_tile()
            frozen[id(steps[stop].module)] = statistics(stop, *sums.mean_var())
            start = stop if keep else start
        for index in range(len(tiles)):
            yield index, run_steps(steps[start:], state_of(index), frozen).h
            on_tile()
    finally:
        kept.close()
