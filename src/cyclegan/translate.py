"""Inference at any size: pad to the network's stride, batch same-size images, tile large ones.

Every output keeps its input's width and height: the image is reflect-padded to a multiple of the
generator's stride, translated, and cropped back. Images with more pixels than one tile are cut
into overlapping tiles whose outputs are blended with raised-cosine weights, so that no seam
shows. Instance norm would normalise every tile by its own statistics (a visible change of tone
from tile to tile); instead, tiled translation estimates the statistics of the whole image once
(on a downscaled copy, then refined over the tiles) and every tile is normalised with them.
"""

from __future__ import annotations

import glob
import itertools
import logging
import math
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from .checkpoint import Checkpoint, load_generator
from .images import (
    IMAGE_EXTENSIONS, Restore, finish_image, find_images, peek_size, prepare_image, read_image, save_image, to_image,
)
from .devices import pick_device
from .names import DEFAULT_OVERLAP, DEFAULT_TILE, GENERATOR_FOR_DIRECTION, OUTPUT_FORMATS, TILE_STATS

log = logging.getLogger(__name__)

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


def padding_for(size: int, multiple: int) -> tuple[int, int]:
    """(before, after) padding that makes ``size`` a multiple of ``multiple`` and at least two of them."""
    target = max(2 * multiple, -(-size // multiple) * multiple)
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


# ---- instance norm over the whole image ------------------------------------------------------

def _uses_instance_statistics(layer: nn.Module) -> bool:
    return isinstance(layer, nn.InstanceNorm2d) and not (layer.track_running_stats and not layer.training)


class _StopForward(Exception):
    """Raised inside a network once the layer being measured has been recorded."""


class WholeImageInstanceNorm:
    """While active, the network's instance-norm layers normalise with given whole-image statistics
    instead of each tile's own, and one layer at a time can be measured over tile cores."""

    def __init__(self, net: nn.Module):
        self.layers = [m for m in net.modules() if _uses_instance_statistics(m)]
        self.frozen: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: mean, var, each (B, C)
        self.measure: int | str | None = None  # the layer to measure (the forward stops there), or "all"
        self.core: tuple[int, int, int, int, int, int] = (1, 1, 0, 0, 0, 0)  # tile_h, tile_w, y0, y1, x0, x1
        self._sums: list[list[torch.Tensor]] | None = None  # per measured layer: count, sum, sum of squares

    def __bool__(self) -> bool:
        return bool(self.layers)

    def __enter__(self) -> "WholeImageInstanceNorm":
        for index, layer in enumerate(self.layers):
            layer.forward = partial(self._forward, index, layer)
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers:
            del layer.forward

    def measured(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Mean and (biased) variance of each measured layer's input over all cores seen."""
        stats = []
        for count, total, squares in self._sums:
            mean = total / count
            stats.append((mean.float(), (squares / count - mean * mean).clamp_min(0).float()))
        self._sums = None
        return stats

    def _forward(self, index: int, layer: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
        if self.measure == "all":
            self._record(x, slot=index)
            return nn.InstanceNorm2d.forward(layer, x)
        if index == self.measure:
            self._record(x, slot=0)
            raise _StopForward
        mean, var = (s.to(x.device)[:, :, None, None] for s in self.frozen[index])
        y = (x - mean) * torch.rsqrt(var + layer.eps)
        if layer.affine:
            y = y * layer.weight[None, :, None, None] + layer.bias[None, :, None, None]
        return y

    def _record(self, x: torch.Tensor, *, slot: int) -> None:
        tile_h, tile_w, y0, y1, x0, x1 = self.core
        sy, sx = tile_h // x.shape[-2], tile_w // x.shape[-1]  # this layer's downsampling
        core = x[..., y0 // sy:y1 // sy, x0 // sx:x1 // sx]
        sums = [torch.tensor(float(core.shape[-2] * core.shape[-1]), dtype=torch.float64),
                core.sum((-2, -1), dtype=torch.float64).cpu(), core.square().sum((-2, -1), dtype=torch.float64).cpu()]
        if self._sums is None:
            self._sums = []
        if slot < len(self._sums):
            self._sums[slot] = [a + b for a, b in zip(self._sums[slot], sums)]
        else:
            self._sums.append(sums)

    def measure_layers(self, run_parts: Callable[[], None]) -> None:
        """Measure the layers in order; ``run_parts`` runs the network over every part of the image,
        setting ``core`` before each. Layer k is measured with layers < k already normalised with
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


# ---- translating tensors -----------------------------------------------------------------------

def _downscaled(x: torch.Tensor, max_pixels: int, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = min(1.0, math.sqrt(max_pixels / (h * w)))
    size = (max(2 * multiple, round(h * scale / multiple) * multiple), max(2 * multiple, round(w * scale / multiple) * multiple))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def run_tiled(net: nn.Module, x: torch.Tensor, *, tile: int, overlap: int, multiple: int,
              stats: str = "exact", device: torch.device | None = None, show_progress: bool = False) -> torch.Tensor:
    """Translate a padded (B, C, H, W) CPU tensor tile by tile; the result stays on the CPU.

    ``stats`` says where instance norm takes its whole-image statistics from: ``exact`` measures
    them over the tiles, one layer after another (about as costly as ten passes for
    resnet_9blocks); ``estimate`` takes them from one pass over a copy downscaled to one tile.
    """
    from .tracking import progress

    if stats not in TILE_STATS:
        raise ValueError(f"unknown tile statistics {stats!r}; valid: {', '.join(TILE_STATS)}")
    device = device or x.device
    plan = TilePlan.make(x.shape[-2], x.shape[-1], tile=tile, overlap=overlap, multiple=multiple)
    norms = WholeImageInstanceNorm(net)
    measured_passes = len(norms.layers) if stats == "exact" else 0
    bar = progress(None, total=(measured_passes + 1) * len(plan), description=f"tiles of {x.shape[-1]}x{x.shape[-2]}",
                   enabled=show_progress, unit="tile", leave=False)
    with norms:
        if norms and stats == "exact":
            norms.measure_layers(partial(_measure_tiles, net, norms, x, plan, device, bar))
        elif norms:
            norms.measure_whole(net, _downscaled(x, plan.tile_h * plan.tile_w, multiple).to(device))
        output: torch.Tensor | None = None
        for top, left, _ in plan.tiles():
            y = net(x[..., top:top + plan.tile_h, left:left + plan.tile_w].to(device)).float().cpu()
            if output is None:
                output = torch.zeros(x.shape[0], y.shape[1], plan.height, plan.width)
            output[..., top:top + plan.tile_h, left:left + plan.tile_w] += y * plan.weights(top, left)
            bar.update(1)
    bar.close()
    return output.div_(plan.weight_sum())


def _measure_tiles(net, norms: WholeImageInstanceNorm, x: torch.Tensor, plan: TilePlan, device, bar) -> None:
    for top, left, core in plan.tiles():
        norms.core = (plan.tile_h, plan.tile_w, *core)
        try:
            net(x[..., top:top + plan.tile_h, left:left + plan.tile_w].to(device))
        except _StopForward:
            pass
        bar.update(1)


@dataclass(frozen=True)
class Resize:
    """Optional resizing before translation: ``N`` (shorter side N, aspect kept) or ``WxH`` (exact)."""

    short_side: int = 0
    size: tuple[int, int] | None = None

    @classmethod
    def parse(cls, spec: str | int | None) -> "Resize | None":
        text = str(spec or "").strip().lower()
        if text in ("", "0"):
            return None
        try:
            if "x" in text:
                w, h = (int(v) for v in text.split("x"))
                if w > 0 and h > 0:
                    return cls(size=(w, h))
            elif int(text) > 0:
                return cls(short_side=int(text))
        except ValueError:
            pass
        raise ValueError(f"--resize {spec!r}: expected N (shorter side, aspect kept) or WxH, e.g. 512 or 640x480")

    def target(self, width: int, height: int) -> tuple[int, int]:
        if self.size:
            return self.size
        scale = self.short_side / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def apply(self, image: Image.Image) -> Image.Image:
        size = self.target(*image.size)
        return image if size == image.size else image.resize(size, Image.BICUBIC)


# ---- the translator -----------------------------------------------------------------------------

class Translator:
    """A trained generator ready for images of any size: eval mode, inference mode, tiling, batching.

    >>> translator = Translator.from_checkpoint("checkpoints/horse2zebra", direction="AtoB")
    >>> zebra = translator(Image.open("horse.jpg"))
    """

    def __init__(self, generator: nn.Module, *, in_channels: int = 3, device: str | torch.device | None = None,
                 tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, stats: str = "exact",
                 resize: Resize | None = None):
        self.device = pick_device(device)
        self.generator = generator.to(self.device).eval()
        self.in_channels = in_channels
        self.multiple = getattr(generator, "size_multiple", 4)
        if tile < 2 * self.multiple or tile % self.multiple:
            raise ValueError(f"--tile {tile} must be a multiple of {self.multiple} and at least {2 * self.multiple}")
        # Tile starts and core boundaries must fall on the network's stride, so the overlap is
        # rounded up to it (256 for unet_256).
        self.overlap = max(self.multiple, -(-overlap // self.multiple) * self.multiple)
        if overlap < 1 or self.overlap > tile // 2:
            raise ValueError(f"--overlap {overlap} (rounded up to a multiple of {self.multiple}: {self.overlap}) must be "
                             f"positive and at most half the tile ({tile // 2})")
        self.tile = tile
        if stats not in TILE_STATS:
            raise ValueError(f"unknown --tile_stats {stats!r}; valid: {', '.join(TILE_STATS)}")
        self.stats = stats
        self.resize = resize
        self.show_progress = False  # a bar over the tiles of large images; translate_files turns it on
        self.on_bad_image = "fail"  # or "skip": unreadable inputs are reported in ``skipped`` and left out
        self.checkpoint: Checkpoint | None = None  # set by from_checkpoint
        self.skipped: list[tuple[Path, str]] = []

    @classmethod
    def from_checkpoint(cls, path: str | Path, direction: str = "AtoB", *, device: str | torch.device | None = None,
                        **options) -> "Translator":
        """The generator for ``direction`` of a run folder or checkpoint file; no architecture flags."""
        checkpoint = Checkpoint(path)
        model = checkpoint.config.model
        in_channels = model.input_nc if direction == "AtoB" else model.output_nc
        generator = load_generator(checkpoint.path, direction)
        translator = cls(generator, in_channels=in_channels, device=device, **options)
        translator.checkpoint = checkpoint
        return translator

    # ---- tensors ----

    def needs_tiles(self, height: int, width: int) -> bool:
        return height * width > self.tile * self.tile

    @torch.inference_mode()
    def translate_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (C, H, W) in [-1, 1] -> the same shape and device, translated."""
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        if batch.dim() != 4 or batch.shape[1] != self.in_channels:
            raise ValueError(f"expected a (B, {self.in_channels}, H, W) tensor, got shape {tuple(x.shape)}")
        height, width = batch.shape[-2:]
        check_size(height, width)
        (top, bottom), (left, right) = padding_for(height, self.multiple), padding_for(width, self.multiple)
        padded = reflect_pad(batch.float(), top, bottom, left, right)
        if self.needs_tiles(height, width):
            out = run_tiled(self.generator, padded.cpu(), tile=self.tile, overlap=self.overlap, multiple=self.multiple,
                            stats=self.stats, device=self.device, show_progress=self.show_progress)
        else:
            out = self.generator(padded.to(self.device)).float()
        out = out[..., top:top + height, left:left + width].to(x.device)
        return out[0] if single else out

    # ---- images ----

    def __call__(self, image: Image.Image) -> Image.Image:
        """Translate a PIL image at its own size; an alpha channel is carried over unchanged."""
        if self.resize:
            image = self.resize.apply(ImageOps.exif_transpose(image))
        tensor, restore = prepare_image(image, self.in_channels)
        return finish_image(self.translate_tensor(tensor), restore)  # translate_tensor checks the size

    def load(self, path: Path) -> tuple[torch.Tensor, Restore]:
        image = ImageOps.exif_transpose(read_image(path))
        if self.resize:
            image = self.resize.apply(image)
        tensor, restore = prepare_image(image, self.in_channels)
        check_size(tensor.shape[-2], tensor.shape[-1], f"image {path}")
        return tensor, restore

    def batches(self, paths: Sequence[Path], *, batch_size: int) -> Iterator[list[tuple[Path, torch.Tensor, Restore]]]:
        """Loaded images in batches of one size (decoding runs one batch ahead, in a thread)."""
        groups = self.plan_batches(paths, batch_size=batch_size)
        if not groups:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._load_group, groups[0])
            for following in [*groups[1:], None]:
                current = pending.result()
                pending = pool.submit(self._load_group, following) if following else None
                if current:
                    yield current

    def _load_group(self, group: Sequence[Path]):
        loaded = []
        for path in group:
            try:
                loaded.append((path, *self.load(path)))
            except ValueError as exc:  # ImageReadError, or too small: found only when decoding
                self._bad(path, exc)
        return loaded

    def _bad(self, path: Path, problem: Exception) -> None:
        if self.on_bad_image == "fail":
            raise problem if isinstance(problem, ValueError) else ValueError(str(problem))
        log.warning("skipping %s: %s", path, problem)
        self.skipped.append((path, str(problem)))

    def plan_batches(self, paths: Sequence[Path], *, batch_size: int) -> list[list[Path]]:
        """Group paths by image size (read from headers) into batches; tiled images go alone."""
        by_size: dict[tuple[int, int], list[Path]] = {}
        for path in paths:
            try:
                width, height = peek_size(path)
                if self.resize:
                    width, height = self.resize.target(width, height)
                check_size(height, width, f"image {path}")
            except ValueError as exc:
                self._bad(path, exc)
                continue
            by_size.setdefault((width, height), []).append(path)
        groups = []
        for (width, height), group in by_size.items():
            step = 1 if self.needs_tiles(height, width) else max(1, batch_size)
            groups += [group[i:i + step] for i in range(0, len(group), step)]
        return groups

    @property
    def default_batch_size(self) -> int:
        """4 on CUDA; 1 on a CPU, where batches of 4 measured 0.88x the images/s of single images."""
        return 4 if self.device.type == "cuda" else 1

    def translate_files(self, jobs: Sequence[tuple[Path, Path]], *, batch_size: int | None = None,
                        show_progress: bool = False) -> list[Path]:
        """Translate every (source, destination) pair; returns the destinations written."""
        from .tracking import progress

        batch_size = batch_size or self.default_batch_size
        destination = dict(jobs)
        self.show_progress = show_progress
        written: list[Path] = []
        saves: list[Future] = []
        with ThreadPoolExecutor(max_workers=1) as saver:
            bar = progress(None, total=len(jobs), initial=0, description="translate", enabled=show_progress, unit="img")
            for batch in self.batches([source for source, _ in jobs], batch_size=batch_size):
                out = self.translate_tensor(torch.stack([tensor for _, tensor, _ in batch]))
                for (source, _, restore), result in zip(batch, out):
                    target = destination[source]
                    saves.append(saver.submit(save_image, finish_image(result, restore), target))
                    written.append(target)
                bar.update(len(batch))
            bar.close()
            for future in saves:
                future.result()
        return written

    def translate_folder(self, src: str | Path, dst: str | Path, *, format: str = "png", batch_size: int | None = None,
                         show_progress: bool = False) -> list[Path]:
        """Translate every image under ``src`` into ``dst``, keeping relative paths."""
        return self.translate_files(plan_outputs([src], dst, format=format), batch_size=batch_size,
                                    show_progress=show_progress)


# ---- inputs and outputs ------------------------------------------------------------------

def expand_inputs(inputs: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """(image file, path relative to the output folder) for files, folders (recursive) and globs.

    A folder's images keep their paths relative to it; a glob's matches keep theirs relative to
    the pattern's fixed leading folders (``data/train*/*.jpg`` gives ``trainA/x.jpg``).
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += [(p, p.relative_to(path)) for p in find_images(path)]
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            found += _glob_images(str(item))
    return found


def _glob_images(pattern: str) -> list[tuple[Path, Path]]:
    matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
    if not matches:
        raise FileNotFoundError(f"input {pattern} is no file, no folder and matches nothing")
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts) - 1)
    base = Path(*parts[:fixed]) if fixed else Path(".")
    found = []
    for match in matches:
        if match.is_dir():
            found += [(p, p.relative_to(base)) for p in find_images(match)]
        elif match.suffix.lower() in IMAGE_EXTENSIONS:
            found.append((match, match.relative_to(base)))
    return found


def plan_outputs(inputs: Iterable[str | Path], output: str | Path, *, format: str = "png") -> list[tuple[Path, Path]]:
    """(source, destination) pairs; refuses clashing destinations and any that would overwrite an input.

    Sources that differ only by extension (``x.jpg`` beside ``x.png``) would share a destination: those
    whose extension is not the output format keep it in their name (``x.jpg.png``), which is logged.
    """
    if format.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"unknown --format {format!r}; valid: {', '.join(OUTPUT_FORMATS)}")
    output = Path(output)
    suffix = f".{format.lower()}"
    relatives = expand_inputs(inputs)
    if not relatives:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) among the inputs")
    plain = Counter(relative.with_suffix(suffix) for _, relative in relatives)
    pairs = [(source, output / _output_name(relative, suffix, shared=plain[relative.with_suffix(suffix)] > 1))
             for source, relative in relatives]
    _refuse_clashes(pairs, output)
    return pairs


def _output_name(relative: Path, suffix: str, *, shared: bool) -> Path:
    """``relative`` with the output format's extension; one that shares it with another input keeps its own too."""
    if not shared or relative.suffix.lower() == suffix:
        return relative.with_suffix(suffix)
    kept = relative.with_name(relative.name + suffix)
    log.info("%s and another input differ only by extension: writing %s", relative, kept)
    return kept


def _refuse_clashes(pairs: list[tuple[Path, Path]], output: Path) -> None:
    sources = {source.resolve() for source, _ in pairs}
    claimed: dict[Path, Path] = {}
    root = output.resolve()
    for source, target in pairs:
        if not target.resolve().is_relative_to(root):  # a glob like 'a/*/../../x.png'
            raise ValueError(f"the output for {source} would be {target}, outside --output {output}; "
                             f"translate it with a plainer input path")
        if target.resolve() in sources:
            raise ValueError(f"writing {target} would overwrite an input image; choose another --output or --format")
        if target in claimed:
            raise ValueError(f"{claimed[target]} and {source} would both be written to {target}; "
                             f"translate them into different --output folders")
        claimed[target] = source


# ---- cyclegan test: the official test page, at full size, for every test image -------------------

def epoch_label(checkpoint: Checkpoint) -> str:
    """Epochs the checkpoint has completed, with the iteration when it was saved mid-epoch."""
    info = checkpoint.info
    done = int(info.get("epoch", 1)) - 1
    return f"{done}_iter{info['total_iters']}" if info.get("epoch_iter") else str(done)


def run_test(checkpoint: str | Path, *, dataroot: str | Path | None = None, output: str | Path | None = None,
             max_images: int = 0, batch_size: int | None = None, device: str | None = None, show_progress: bool = False,
             **translator_options) -> Path:
    """Real, translated and reconstructed images of every test image of both domains, and an
    ``index.html`` showing them; returns the page. Default folder: ``RUN/test_<epoch>``."""
    from .data import domain_folders
    from .gallery import write_table_page
    from .tracking import progress

    checkpoint = Checkpoint(checkpoint)
    config = checkpoint.config
    root = Path(dataroot or config.data.dataroot)
    folders = dict(zip(("AtoB", "BtoA"), domain_folders(root, "test", config.data.direction)))
    present = {d: f for d, f in folders.items() if f.is_dir()}
    if not present:
        raise FileNotFoundError(f"{root} has neither testA/ nor testB/; pass --dataroot with the test images")
    output = Path(output) if output else checkpoint.path.parent / f"test_{epoch_label(checkpoint)}"
    translators = {}
    for direction, generator in GENERATOR_FOR_DIRECTION.items():
        if checkpoint.has_network(generator):  # an imported zoo model has one generator only
            translators[direction] = Translator.from_checkpoint(checkpoint.path, direction, device=device, **translator_options)
            translators[direction].show_progress = show_progress
    paths = {d: find_images(f, max_count=max_images) for d, f in present.items() if d in translators}
    if not paths:
        raise FileNotFoundError(f"{root} has no test folder for the generators in {checkpoint.path}")
    bar = progress(None, total=sum(map(len, paths.values())), description="test", enabled=show_progress, unit="img")
    sections = []
    for direction, images in paths.items():
        forward, back = translators[direction], translators.get("BtoA" if direction == "AtoB" else "AtoB")
        batch_size = batch_size or forward.default_batch_size
        source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
        rows = _cycle_images(forward, back, images, present[direction], output / "images" / direction,
                             batch_size=batch_size, bar=bar)
        headers = ("image", f"real {source}", f"translated to {target}") + ((f"reconstructed {source}",) if back else ())
        sections.append((f"{source} to {target}: {present[direction]}", headers, rows))
    bar.close()
    intro = (f"Checkpoint {checkpoint.path}, {config.model.netG}, epoch {epoch_label(checkpoint)}. Every test image "
             f"at its own size; click an image to open it at full resolution.")
    return write_table_page(output / "index.html", f"cyclegan test: {config.name}", sections, intro=intro)


def cycle_batches(forward: Translator, back: Translator | None, paths: Sequence[Path], *, batch_size: int):
    """(paths, real, fake, reconstructed) for batches of one size; reconstructed is None without ``back``."""
    for batch in forward.batches(paths, batch_size=batch_size):
        real = torch.stack([tensor for _, tensor, _ in batch])
        fake = forward.translate_tensor(real)
        yield [path for path, _, _ in batch], real, fake, back.translate_tensor(fake) if back is not None else None


def _cycle_images(forward: Translator, back: Translator | None, images: Sequence[Path], folder: Path, out_dir: Path,
                  *, batch_size: int, bar) -> list[list]:
    """Translate and reconstruct ``images``; save the three versions; one table row per image."""
    rows = []
    for paths, real, fake, rec in cycle_batches(forward, back, images, batch_size=batch_size):
        versions = {"real": real, "fake": fake, **({"rec": rec} if rec is not None else {})}
        for i, path in enumerate(paths):
            stem = out_dir / path.relative_to(folder).with_suffix("")
            saved = [save_image(to_image(tensors[i]), stem.with_name(f"{stem.name}_{kind}.png"))
                     for kind, tensors in versions.items()]
            rows.append([str(path.relative_to(folder)), *saved])
        bar.update(len(paths))
    return sorted(rows, key=lambda row: row[0])
