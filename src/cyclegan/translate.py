"""Inference at any size: the ``Translator``, which pads to the network's stride, batches same-size
images and tiles large ones (``tiling``), optionally on a faster engine (``engines``); and the inputs
a command names and the outputs they become.

Every output keeps its input's width and height: the image is reflect-padded to a multiple of the
generator's stride, translated, and cropped back.
"""

from __future__ import annotations

import glob
import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from PIL import Image
from torch import nn

from .checkpoint import Checkpoint
from .devices import pick_device
from .images import (
    IMAGE_EXTENSIONS, Bands, ImageReadError, Restore, finish_image, find_images, open_image, peek_size, prepare_image,
    save_image, upright,
)
from .models.layers import batch_statistics_mode
from .names import BAD_IMAGE_POLICIES, OUTPUT_FORMATS
from .tiling import TileOptions, check_size, padding_for, reflect_pad, run_tiled

log = logging.getLogger(__name__)


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

    def __init__(self, generator: nn.Module, *, in_channels: int = 3, out_channels: int | None = None, device: str | torch.device | None = None,
                 tiles: TileOptions = TileOptions(), resize: Resize | None = None, on_bad_image: str = "fail",
                 show_progress: bool = False, checkpoint: Checkpoint | None = None, engine: nn.Module | None = None,
                 engine_choice: str = "torch, fp32", train_mode: bool = False):
        """``on_bad_image`` "skip" leaves unreadable inputs out and lists them in ``skipped``; ``show_progress``
        shows a bar over the tiles of large images; ``checkpoint`` is where the generator came from;
        ``engine`` (from ``engines``) translates the images that fit in one tile, the PyTorch ``generator``
        the larger ones, whose tiles need its instance-norm layers for whole-image statistics.
        ``train_mode`` runs batch norm on each image's own statistics and dropout as noise, as the official
        pix2pix test does without --eval: one image at a time, never tiled (batch statistics would mix
        images or tiles), on PyTorch."""
        if train_mode and engine is not None:
            raise ValueError("train_mode runs on the PyTorch generator; an exported engine runs in eval mode")
        self.device = pick_device(device)
        self.train_mode = train_mode
        self.generator = generator.to(self.device).eval()
        if train_mode:
            batch_statistics_mode(self.generator)
        self.engine, self.engine_choice = engine, engine_choice  # the choice in words, for the log
        self.in_channels = in_channels
        self.out_channels = out_channels or int(getattr(generator, "out_channels", 0)) or in_channels
        self.multiple = getattr(generator, "size_multiple", 4)
        self.smallest_side = getattr(generator, "smallest_side", 2 * self.multiple)
        self.tiles = tiles.for_stride(self.multiple)
        self.resize = resize
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"unknown --on_bad_image {on_bad_image!r}; valid: {', '.join(BAD_IMAGE_POLICIES)}")
        self.on_bad_image = on_bad_image
        self.show_progress = show_progress
        self.checkpoint = checkpoint
        self.skipped: list[tuple[Path, str]] = []

    @classmethod
    def from_checkpoint(cls, path: str | Path | Checkpoint, direction: str = "AtoB", *,
                        device: str | torch.device | None = None, **settings) -> "Translator":
        """The generator for ``direction`` of a run folder, checkpoint file or opened ``Checkpoint``; no
        architecture flags. ``settings`` are the constructor's other keyword arguments."""
        checkpoint = path if isinstance(path, Checkpoint) else Checkpoint(path)
        in_channels, out_channels = checkpoint.config.model.generator_channels(direction)
        return cls(checkpoint.generator(direction), in_channels=in_channels, out_channels=out_channels, device=device,
                   checkpoint=checkpoint, **settings)

    @classmethod
    def on_engine(cls, path: str | Path | Checkpoint, direction: str = "AtoB", *, engine: str = "auto",
                  precision: str = "fp32", device: str | torch.device | None = None, **settings) -> "Translator":
        """``from_checkpoint`` with the images that fit in one tile run by ``engine`` (auto, torch, openvino,
        onnxruntime; see ``engines``) in ``precision`` (fp32, or bf16 on OpenVINO). The engine chosen and
        why are in ``engine_choice``."""
        from .engines import engine_generator, resolve_engine

        checkpoint = path if isinstance(path, Checkpoint) else Checkpoint(path)
        name, why = resolve_engine(engine)
        if pick_device(device).type == "cuda" and name != "torch":
            name, why = "torch", f"{why}; on CUDA the PyTorch generator runs instead"
        if settings.get("train_mode") and name != "torch":
            if engine != "auto":
                raise ValueError(f"--train_mode runs on the PyTorch generator, not on --engine {engine} (an exported "
                                 f"graph runs in eval mode)")
            name, why = "torch", f"{why}; --train_mode runs on PyTorch"
        if precision != "fp32" and name != "openvino":
            raise ValueError(f"--precision {precision} at translation needs the OpenVINO engine ({why})")
        fast = engine_generator(checkpoint, direction, engine=name, precision=precision) if name != "torch" else None
        return cls.from_checkpoint(checkpoint, direction, device=device, engine=fast,
                                   engine_choice=f"{name}, {precision} ({why})", **settings)

    # ---- tensors ----

    def needs_tiles(self, height: int, width: int) -> bool:
        return not self.train_mode and self.tiles.needs_tiles(height, width)

    @torch.inference_mode()
    def translate_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (C, H, W) in [-1, 1] -> the same shape and device, translated."""
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        if batch.dim() != 4 or batch.shape[1] != self.in_channels:
            raise ValueError(f"expected a (B, {self.in_channels}, H, W) tensor, got shape {tuple(x.shape)}")
        height, width = batch.shape[-2:]
        check_size(height, width)
        (top, bottom), (left, right) = (padding_for(height, self.multiple, self.smallest_side),
                                        padding_for(width, self.multiple, self.smallest_side))
        padded = reflect_pad(batch.float(), top, bottom, left, right)
        if self.needs_tiles(height, width):
            out = run_tiled(self.generator, padded.cpu(), options=self.tiles, multiple=self.multiple, device=self.device,
                            show_progress=self.show_progress)
        else:
            out = (self.engine or self.generator)(padded.to(self.device)).float()
        out = out[..., top:top + height, left:left + width].to(x.device)
        return out[0] if single else out

    # ---- images ----

    def __call__(self, image: Image.Image | Bands) -> Image.Image | Bands:
        """Translate a PIL image (or ``Bands``) at its own size; an alpha channel is carried over unchanged."""
        if self.resize:
            image = self.resize.apply(upright(image))
        tensor, restore = prepare_image(image, self.in_channels)
        return finish_image(self.translate_tensor(tensor), restore)  # translate_tensor checks the size

    def load(self, path: Path) -> tuple[torch.Tensor, Restore]:
        image = open_image(path)
        if self.resize:
            image = self.resize.apply(image)
        try:
            tensor, restore = prepare_image(image, self.in_channels)
        except ImageReadError as exc:
            raise ImageReadError(f"{path}: {exc}") from exc
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
        """4 on CUDA; 1 on a CPU, where batching does not pay (README: Performance); 1 in train mode."""
        return 4 if self.device.type == "cuda" and not self.train_mode else 1

    def translate_files(self, jobs: Sequence[tuple[Path, Path]], *, batch_size: int | None = None,
                        show_progress: bool = False) -> list[Path]:
        """Translate every (source, destination) pair; returns the destinations written."""
        from .tracking import progress

        batch_size = batch_size or self.default_batch_size
        self._check_formats(target for _, target in jobs)
        destination = dict(jobs)
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

    def _check_formats(self, targets: Iterable[Path]) -> None:
        """Refuse, before any work, output formats that cannot hold this model's channel count."""
        if self.out_channels in (1, 3):
            return
        for suffix in {target.suffix.lower() for target in targets}:
            if OUTPUT_FORMATS.get(suffix.lstrip(".")) != "TIFF":
                raise ValueError(f"this model writes {self.out_channels} channels, which {suffix} files cannot hold: "
                                 f"write TIFF (--format tif)")

    def translate_folder(self, src: str | Path, dst: str | Path, *, format: str | None = None,
                         batch_size: int | None = None, show_progress: bool = False) -> list[Path]:
        """Translate every image under ``src`` into ``dst``, keeping relative paths (as png, or tif for
        channel counts PNG cannot hold, unless ``format`` says otherwise)."""
        format = format or default_format(self.out_channels)
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


def default_format(channels: int) -> str:
    """png for gray and RGB results; tif for other channel counts, which PNG cannot hold."""
    return "png" if channels in (1, 3) else "tif"


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
