"""Preparing training images (resize, crop, flip) and the unpaired dataset of two image folders.

Randomness is a pure function of (seed, epoch, index): each sample seeds its own
``torch.Generator``, so loading in worker processes and resuming mid-epoch give the same images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from .images import IMAGE_EXTENSIONS, ImageReadError, find_images, load_image, match_channels, scan_images, to_tensor

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Preprocess:
    """How a training image becomes a tensor: resize and/or random crop, random flip."""

    mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        if self.mode == "resize_and_crop":
            image = image.resize((self.load_size, self.load_size), Image.BICUBIC)
            image = self._random_crop(image, generator)
        elif self.mode == "crop":
            image = self._random_crop(image, generator)
        elif self.mode == "scale_width":
            image = self._scale_width(image)
        elif self.mode == "scale_width_and_crop":
            image = self._random_crop(self._scale_width(image), generator)
        elif self.mode == "none":
            image = self._round_to_multiple(image, 4)
        else:
            raise ValueError(f"unknown preprocess {self.mode!r}; valid: crop, none, resize_and_crop, "
                             "scale_width, scale_width_and_crop")
        if self.flip and torch.rand((), generator=generator).item() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(image)

    def _random_crop(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        width, height = image.size
        size = self.crop_size
        if width < size or height < size:
            raise ImageReadError(f"image is {width}x{height}, smaller than crop_size {size}")
        top = int(torch.randint(height - size + 1, (), generator=generator))
        left = int(torch.randint(width - size + 1, (), generator=generator))
        return image.crop((left, top, left + size, top + size))

    def _scale_width(self, image: Image.Image) -> Image.Image:
        """Width to load_size, aspect kept, but never less tall than crop_size (the official rule)."""
        width, height = image.size
        if width == self.load_size and height >= self.crop_size:
            return image
        size = (self.load_size, int(max(self.load_size * height / width, self.crop_size)))
        return image.resize(size, Image.BICUBIC)

    @staticmethod
    def _round_to_multiple(image: Image.Image, base: int) -> Image.Image:
        """Each side resized to its nearest multiple of ``base``, as the official ``__make_power_2`` does
        (Python's round: halves go to the even multiple, 286 -> 288 and 282 -> 280), but never below ``base``."""
        width, height = image.size
        size = (max(base, round(width / base) * base), max(base, round(height / base) * base))
        return image if size == image.size else image.resize(size, Image.BICUBIC)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one sample, distinct for every (seed, epoch, index)."""
    return (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % (2**63)


class UnpairedDataset(torch.utils.data.Dataset):
    """Items pair the i-th image of A (in order or shuffled per epoch) with a random image of B.

    Its length is max(|A|, |B|), as in the official code; call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        paths_a: Sequence[Path],
        paths_b: Sequence[Path],
        *,
        preprocess: Preprocess,
        channels_a: int = 3,
        channels_b: int = 3,
        serial: bool = False,
        seed: int = 0,
    ):
        if not paths_a or not paths_b:
            raise ValueError("both domains need at least one image")
        self.paths_a, self.paths_b = list(paths_a), list(paths_b)
        self.preprocess = preprocess
        self.channels_a, self.channels_b = channels_a, channels_b
        self.serial, self.seed = serial, seed
        self.set_epoch(1)

    def __len__(self) -> int:
        return max(len(self.paths_a), len(self.paths_b))

    def set_epoch(self, epoch: int) -> None:
        """Fix this epoch's order of A and draw of B."""
        self.epoch = epoch
        n = len(self)
        if self.serial:
            self.order_a = torch.arange(n) % len(self.paths_a)
            self.order_b = torch.arange(n) % len(self.paths_b)
            return
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        self.order_a = torch.randperm(n, generator=generator) % len(self.paths_a)
        self.order_b = torch.randint(len(self.paths_b), (n,), generator=generator)

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        a, path_a = self._load(self.paths_a, int(self.order_a[index]), self.channels_a, generator)
        b, path_b = self._load(self.paths_b, int(self.order_b[index]), self.channels_b, generator)
        return {"A": a, "B": b, "A_path": str(path_a), "B_path": str(path_b)}

    def spread_sample(self, domain: str, count: int, seed: int):
        """Up to ``count`` preprocessed images (C, H, W) of domain ``"a"`` or ``"b"``, spread evenly over its files."""
        paths, channels = (self.paths_a, self.channels_a) if domain == "a" else (self.paths_b, self.channels_b)
        generator = torch.Generator().manual_seed(seed)
        for index in range(0, len(paths), max(1, len(paths) // count)):
            yield self._load(paths, index, channels, generator)[0]

    def _load(self, paths: list[Path], index: int, channels: int, generator: torch.Generator):
        """Load ``paths[index]``; a file that fails is reported and the next one is used instead."""
        for attempt in range(len(paths)):
            path = paths[(index + attempt) % len(paths)]
            try:
                return match_channels(self.preprocess(load_image(path, channels=channels), generator), channels), path
            except ImageReadError as exc:
                log.warning("skipping %s: %s", path, exc)
        raise ImageReadError(f"no readable image among {len(paths)} files, e.g. {paths[0]}")


def domain_folders(dataroot: str | Path, phase: str, direction: str) -> tuple[Path, Path]:
    """``(ROOT/<phase>A, ROOT/<phase>B)``, swapped for BtoA."""
    root = Path(dataroot)
    a, b = root / f"{phase}A", root / f"{phase}B"
    return (b, a) if direction == "BtoA" else (a, b)


def unpaired_dataset_from_folders(
    dataroot: str | Path,
    *,
    phase: str = "train",
    direction: str = "AtoB",
    preprocess: Preprocess,
    channels_a: int = 3,
    channels_b: int = 3,
    serial: bool = False,
    max_dataset_size: int = 0,
    seed: int = 0,
    on_bad_image: str = "skip",
    bad_images: list[tuple[Path, str]] | None = None,
) -> UnpairedDataset:
    """The dataset of ``dataroot/<phase>A`` and ``<phase>B``, with errors that say what to fix.

    Every image is checked up front; bad ones are left out (and appended to ``bad_images``) or,
    with ``on_bad_image="fail"``, stop everything with the file's name and problem.
    """
    root = Path(dataroot)
    if not str(dataroot) or not root.is_dir():
        raise FileNotFoundError(f"dataroot {root} does not exist; pass --dataroot with {phase}A/ and {phase}B/ inside")
    min_side = preprocess.crop_size if preprocess.mode == "crop" else 0
    domains = []
    for folder in domain_folders(root, phase, direction):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist; --dataroot must hold {phase}A/ and {phase}B/")
        paths = find_images(folder, max_count=max_dataset_size)
        if not paths:
            raise FileNotFoundError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths, bad = scan_images(paths, min_side=min_side, on_bad=on_bad_image)
        if not paths:
            raise FileNotFoundError(f"{folder} holds no usable image: all {len(bad)} failed, e.g. {bad[0][0]}: {bad[0][1]}")
        if len(paths) < 2 and phase == "train":
            raise ValueError(f"{folder} holds a single usable image ({paths[0].name}); a domain needs at least 2 "
                             f"(in practice hundreds) for the discriminators to learn it")
        if bad_images is not None:
            bad_images.extend(bad)
        domains.append(paths)
    return UnpairedDataset(
        domains[0], domains[1], preprocess=preprocess, channels_a=channels_a, channels_b=channels_b,
        serial=serial, seed=seed,
    )
