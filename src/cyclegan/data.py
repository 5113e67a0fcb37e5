"""Finding, decoding and preparing images; the unpaired dataset of two image folders.

Randomness is a pure function of (seed, epoch, index): each sample seeds its own
``torch.Generator``, so loading in worker processes and resuming mid-epoch give the same images.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the problem."""


def find_images(folder: str | Path, *, max_count: int = 0) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; at most ``max_count`` when it is positive."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return paths[:max_count] if max_count > 0 else paths


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
LUMA = (0.299, 0.587, 0.114)


def load_image(path: str | Path, *, channels: int = 3) -> Image.Image:
    """Decode ``path`` with its EXIF orientation applied, as RGB (3 channels) or grayscale (1).

    16-bit, 32-bit and float grayscale images come back as mode F on the 0-255 scale (see
    ``to_float_image``), so that no precision is lost; ``match_channels`` gives them 3 channels.
    """
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in HIGH_DEPTH_MODES:
                return to_float_image(image)
            return image.convert("RGB" if channels == 3 else "L")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def to_float_image(image: Image.Image) -> Image.Image:
    """A high-bit-depth grayscale image as mode F with values in [0, 255].

    The range: 16-bit images span 0-65535; 32-bit integer images too when their values fit, else
    their own minimum to maximum; float images are taken as [0, 1] when their values lie there,
    else also stretched from their minimum to their maximum.
    """
    array = np.asarray(image, dtype=np.float64)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        array = array / 65535.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        pass
    else:
        array = (array - low) / max(high - low, 1e-12)
    return Image.fromarray((array * 255.0).astype(np.float32), mode="F")


def match_channels(tensor: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, H, W) with C = 1 or 3 -> ``channels``: gray repeated into RGB, RGB to luma."""
    if tensor.shape[-3] == channels:
        return tensor
    if tensor.shape[-3] == 1 and channels == 3:
        return tensor.expand(*tensor.shape[:-3], 3, *tensor.shape[-2:]).clone()
    if tensor.shape[-3] == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=tensor.dtype, device=tensor.device).view(3, 1, 1)
        return (tensor * weights).sum(-3, keepdim=True)
    raise ValueError(f"cannot turn {tensor.shape[-3]} channels into {channels}")


BAD_IMAGE_POLICIES = ("skip", "fail")


def image_problem(path: str | Path, *, min_side: int = 0) -> str | None:
    """None when ``path`` decodes fully as an image with sides of at least ``min_side``; else why not.

    Catches zero-byte and non-image files, truncated data, decompression bombs (a huge declared
    size) and images too small to crop.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decodes everything: truncated files fail here
                width, height = ImageOps.exif_transpose(image).size
    except Image.DecompressionBombWarning as exc:
        return f"declared size too large (a decompression bomb?): {exc}"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__
    if min(width, height) < min_side:
        return f"{width}x{height} is smaller than crop_size {min_side}"
    return None


def scan_images(paths: Sequence[Path], *, min_side: int = 0, on_bad: str = "skip") -> tuple[list[Path], list[tuple[Path, str]]]:
    """(readable paths, [(bad path, problem)]); with ``on_bad="fail"`` the first bad one raises."""
    if on_bad not in BAD_IMAGE_POLICIES:
        raise ValueError(f"unknown --on_bad_image {on_bad!r}; valid: {', '.join(BAD_IMAGE_POLICIES)}")
    good, bad = [], []
    for path in paths:
        problem = image_problem(path, min_side=min_side)
        if problem is None:
            good.append(path)
        elif on_bad == "fail":
            raise ImageReadError(f"bad image {path}: {problem} (--on_bad_image skip leaves such files out)")
        else:
            bad.append((path, problem))
    return good, bad


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a float tensor in [-1, 1], shape (C, H, W)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A (C, H, W) tensor in [-1, 1] as an 8-bit PIL image."""
    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    array = array.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


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
