"""Preparing training images (resize, crop, flip); the unpaired dataset of two image folders, and the
paired one of pix2pix (side-by-side A|B images, or two folders matched by file name).

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

from .images import (
    IMAGE_EXTENSIONS, ImageReadError, find_images, load_image, match_channels, peek_size, scan_images, to_tensor,
)

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

    def pair(self, a: Image.Image, b: Image.Image, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Both images with the same resize, crop and flip (b is first resized to a's size when they differ)."""
        replay = torch.Generator().set_state(generator.get_state())
        return self(a, generator), self.like(b, a.size, replay)

    def like(self, b: Image.Image, size: tuple[int, int], replay: torch.Generator) -> torch.Tensor:
        """``b`` prepared as its partner of ``size`` (width, height) was, ``replay`` repeating that partner's draws."""
        if b.size != size:
            b = b.resize(size, Image.BICUBIC)
        return self(b, replay)

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
        partners: dict[Path, Path] | None = None,
    ):
        """``partners`` {A image: its known partner in B}: items then carry ``partner_b`` (with A's crop and
        flip; zeros where unknown) and ``has_partner``, for --lambda_paired."""
        if not paths_a or not paths_b:
            raise ValueError("both domains need at least one image")
        self.paths_a, self.paths_b = list(paths_a), list(paths_b)
        self.partners = partners
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
        before_a = generator.get_state()
        a, path_a = self._load(self.paths_a, int(self.order_a[index]), self.channels_a, generator)
        item = {}
        if self.partners is not None:
            item = self._partner(path_a, a, torch.Generator().set_state(before_a))
        b, path_b = self._load(self.paths_b, int(self.order_b[index]), self.channels_b, generator)
        return {"A": a, "B": b, "A_path": str(path_a), "B_path": str(path_b), **item}

    def _partner(self, path_a: Path, a: torch.Tensor, replay: torch.Generator) -> dict:
        """A's known partner in B, prepared with A's crop and flip (``replay`` repeats A's draws)."""
        path_b = self.partners.get(path_a)
        if path_b is not None:
            try:
                b = self.preprocess.like(load_image(path_b, channels=self.channels_b), peek_size(path_a), replay)
                return {"partner_b": match_channels(b, self.channels_b), "has_partner": True}
            except ImageReadError as exc:
                log.warning("leaving out the pair %s / %s: %s", path_a, path_b, exc)
        return {"partner_b": a.new_zeros((self.channels_b, *a.shape[1:])), "has_partner": False}

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


class PairedDataset(torch.utils.data.Dataset):
    """Aligned pairs (a, b) for pix2pix, with the same resize, crop and flip for both.

    ``pairs`` are (A file, B file), or (A|B file, None) for one image holding A on its left half and B
    on its right (the official aligned layout; ``swap`` takes B as the input, --direction BtoA).
    Items are ordered at random per epoch (``serial``: in order); call ``set_epoch`` before each epoch.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path | None]], *, preprocess: Preprocess, channels_a: int = 3,
                 channels_b: int = 3, swap: bool = False, serial: bool = False, seed: int = 0):
        if not pairs:
            raise ValueError("a paired dataset needs at least one pair")
        self.pairs = list(pairs)
        self.preprocess, self.swap = preprocess, swap
        self.channels_a, self.channels_b = channels_a, channels_b
        self.serial, self.seed = serial, seed
        self.set_epoch(1)

    @property
    def paths_a(self) -> list[Path]:
        return [a for a, _ in self.pairs]

    @property
    def paths_b(self) -> list[Path]:
        return [b if b is not None else a for a, b in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        self.order = torch.arange(len(self)) if self.serial else torch.randperm(len(self), generator=generator)

    def __getitem__(self, index: int) -> dict:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        start = int(self.order[index])
        for attempt in range(len(self.pairs)):
            pair = self.pairs[(start + attempt) % len(self.pairs)]
            try:
                a, b = self.preprocess.pair(*self._images(pair), generator)
            except ImageReadError as exc:
                log.warning("skipping the pair %s: %s", " / ".join(str(p) for p in pair if p is not None), exc)
                continue
            path_a, path_b = pair[0], pair[1] or pair[0]
            return {"A": match_channels(a, self.channels_a), "B": match_channels(b, self.channels_b),
                    "A_path": str(path_a), "B_path": str(path_b)}
        raise ImageReadError(f"no readable pair among {len(self.pairs)}, e.g. {self.pairs[0][0]}")

    def _images(self, pair: tuple[Path, Path | None]) -> tuple[Image.Image, Image.Image]:
        return pair_images(pair, channels_a=self.channels_a, channels_b=self.channels_b, swap=self.swap)


def pair_images(pair: tuple[Path, Path | None], *, channels_a: int = 3, channels_b: int = 3,
                swap: bool = False) -> tuple[Image.Image, Image.Image]:
    """(input, target) images of a pair: two files, or the left and right halves of one (swapped with ``swap``)."""
    first, second = pair
    if second is not None:
        return load_image(first, channels=channels_a), load_image(second, channels=channels_b)
    both = load_image(first, channels=3 if 3 in (channels_a, channels_b) else 1)
    width, height = both.size
    if width < 2:
        raise ImageReadError(f"{first} is {width} pixel wide: no A|B halves to split")
    left, right = both.crop((0, 0, width // 2, height)), both.crop((width // 2, 0, width, height))
    return (right, left) if swap else (left, right)


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
    with_partners: bool = False,
) -> UnpairedDataset:
    """The dataset of ``dataroot/<phase>A`` and ``<phase>B``, with errors that say what to fix.

    Every image is checked up front; bad ones are left out (and appended to ``bad_images``) or,
    with ``on_bad_image="fail"``, stop everything with the file's name and problem.
    """
    root = Path(dataroot)
    if not str(dataroot) or not root.is_dir():
        raise FileNotFoundError(f"dataroot {root} does not exist; pass --dataroot with {phase}A/ and {phase}B/ inside")
    min_side = preprocess.crop_size if preprocess.mode == "crop" else 0
    folders = domain_folders(root, phase, direction)
    domains = []
    for folder, channels in zip(folders, (channels_a, channels_b)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist; --dataroot must hold {phase}A/ and {phase}B/")
        paths = find_images(folder, max_count=max_dataset_size)
        if not paths:
            raise FileNotFoundError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths, bad = scan_images(paths, min_side=min_side, on_bad=on_bad_image, channels=channels)
        if not paths:
            raise FileNotFoundError(f"{folder} holds no usable image: all {len(bad)} failed, e.g. {bad[0][0]}: {bad[0][1]}")
        if len(paths) < 2 and phase == "train":
            raise ValueError(f"{folder} holds a single usable image ({paths[0].name}); a domain needs at least 2 "
                             f"(in practice hundreds) for the discriminators to learn it")
        if bad_images is not None:
            bad_images.extend(bad)
        domains.append(paths)
    partners = partners_by_name(domains[0], domains[1], *folders) if with_partners else None
    if with_partners and not partners:
        raise ValueError(f"--lambda_paired needs known pairs, but no image of {folders[0]} has a partner of the same "
                         f"name in {folders[1]}")
    return UnpairedDataset(
        domains[0], domains[1], preprocess=preprocess, channels_a=channels_a, channels_b=channels_b,
        serial=serial, seed=seed, partners=partners,
    )


def paired_dataset_from_folders(
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
) -> PairedDataset:
    """The pairs of ``dataroot/<phase>/`` (side-by-side A|B images, the official aligned layout) or, when that
    folder is absent, of ``<phase>A/`` and ``<phase>B/`` matched by file name (extensions may differ).

    Bad images are left out as in ``unpaired_dataset_from_folders``; an image whose partner is missing is
    reported the same way (appended to ``bad_images``) and left out, or with ``on_bad_image="fail"`` stops.
    """
    min_side = preprocess.crop_size if preprocess.mode == "crop" else 0
    pairs, bad, swap = find_pairs(dataroot, phase=phase, direction=direction, max_count=max_dataset_size,
                                  min_side=min_side, on_bad=on_bad_image)
    if bad_images is not None:
        bad_images.extend(bad)
    return PairedDataset(pairs, preprocess=preprocess, channels_a=channels_a, channels_b=channels_b, swap=swap,
                         serial=serial, seed=seed)


def find_pairs(dataroot: str | Path, *, phase: str = "train", direction: str = "AtoB", max_count: int = 0,
               min_side: int = 0, on_bad: str = "skip") -> tuple[list[tuple[Path, Path | None]], list[tuple[Path, str]], bool]:
    """(pairs, [(bad path, problem)], swap) of ``dataroot/<phase>/`` (side-by-side A|B images, the official
    aligned layout; swap = B is the input) or, when that folder is absent, of ``<phase>A/`` and ``<phase>B/``
    matched by file name (extensions may differ)."""
    root = Path(dataroot)
    if not str(dataroot) or not root.is_dir():
        raise FileNotFoundError(f"dataroot {root} does not exist; pass --dataroot with {phase}/ (A|B side by side) "
                                f"or {phase}A/ and {phase}B/ (matched by name)")
    if (root / phase).is_dir():
        paths = find_images(root / phase, max_count=max_count)
        if not paths:
            raise FileNotFoundError(f"{root / phase} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        good, bad = scan_images(paths, min_side=min_side, on_bad=on_bad)
        pairs: list[tuple[Path, Path | None]] = [(path, None) for path in good]
        swap = direction == "BtoA"
    else:
        folders = domain_folders(root, phase, direction)
        for folder in folders:
            if not folder.is_dir():
                raise FileNotFoundError(f"{root} holds neither {phase}/ (A|B side by side) nor {phase}A/ and "
                                        f"{phase}B/ (pairs matched by name): {folder} is missing")
        pairs, bad = matched_pairs(*folders, max_count=max_count, min_side=min_side, on_bad=on_bad)
        swap = False
    if not pairs:
        raise FileNotFoundError(f"{root} holds no usable pair for {phase}" + (f": all {len(bad)} failed, e.g. "
                                f"{bad[0][0]}: {bad[0][1]}" if bad else ""))
    return pairs, bad, swap


def matched_pairs(folder_a: Path, folder_b: Path, *, max_count: int = 0, min_side: int = 0, on_bad: str = "skip"):
    """([(a, b)], [(bad path, problem)]): the images of two folders paired by relative path without extension."""
    by_stem = _by_stem(find_images(folder_b), folder_b)
    pairs, bad = [], []
    used = set()
    for path in find_images(folder_a, max_count=max_count):
        stem = path.relative_to(folder_a).with_suffix("")
        partner = by_stem.get(stem)
        if partner is None:
            problem = f"no partner named {stem}.* in {folder_b}"
            if on_bad == "fail":
                raise ImageReadError(f"{path}: {problem} (--on_bad_image skip leaves such files out)")
            bad.append((path, problem))
            continue
        used.add(stem)
        good, problems = scan_images([path, partner], min_side=min_side, on_bad=on_bad)
        if len(good) == 2:
            pairs.append((path, partner))
        bad.extend(problems)
    if not max_count:
        bad += [(path, f"no partner named {stem}.* in {folder_a}") for stem, path in by_stem.items() if stem not in used]
    return pairs, bad


def partners_by_name(paths_a: Sequence[Path], paths_b: Sequence[Path], folder_a: Path, folder_b: Path) -> dict[Path, Path]:
    """{A image: the B image of the same relative path without extension}, for --lambda_paired."""
    by_stem = _by_stem(paths_b, folder_b)
    found = {path: by_stem.get(path.relative_to(folder_a).with_suffix("")) for path in paths_a}
    return {a: b for a, b in found.items() if b is not None}


def _by_stem(paths: Sequence[Path], folder: Path) -> dict[Path, Path]:
    """{relative path without extension: path}: how partners find each other across two folders."""
    return {path.relative_to(folder).with_suffix(""): path for path in paths}
