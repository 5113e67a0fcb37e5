"""Image files in and out: finding, decoding (EXIF, bit depth, alpha), the bad-image check, tensor <->
image, and saving in the format a file name asks for. One exception, ``ImageReadError``, names the
file and the problem whenever an image cannot be read.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .names import BAD_IMAGE_POLICIES, OUTPUT_FORMATS

# What Pillow raises on a file it cannot decode: unknown or truncated data, a corrupt header, or a
# declared size past its decompression-bomb limit.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
FORMATS_WITHOUT_ALPHA = ("JPEG", "BMP")

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
    except DECODE_ERRORS as exc:
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
    except DECODE_ERRORS as exc:
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


# ---- translation inputs and outputs: alpha, bit depth and channels kept ------------------------

def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The image without its alpha channel, and the alpha channel (None when it has none)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return image.convert("RGB" if image.mode[0] in "RP" else "L"), image.getchannel("A")
    return image, None


@dataclass(frozen=True)
class Restore:
    """What a translated tensor needs to become an image like its input: alpha, bit depth, channels."""

    alpha: Image.Image | None = None
    depth: str = "8"  # "8", "16" (integer) or "float"
    channels: int | None = None  # the input's colour channels, when they differ from the network's


def prepare_image(image: Image.Image, channels: int) -> tuple[torch.Tensor, Restore]:
    """A (C, H, W) tensor in [-1, 1] with the network's channel count, and how to restore the input's kind."""
    image, alpha = split_alpha(ImageOps.exif_transpose(image))
    if image.mode in HIGH_DEPTH_MODES:
        depth = "float" if image.mode == "F" else "16"
        tensor = match_channels(to_tensor(to_float_image(image)), channels)
        return tensor, Restore(alpha, depth, 1 if channels != 1 else None)
    source_channels = 1 if image.mode in ("L", "1") else 3
    tensor = to_tensor(image.convert("RGB" if channels == 3 else "L"))
    return tensor, Restore(alpha, "8", source_channels if source_channels != channels and alpha is None else None)


def finish_image(tensor: torch.Tensor, restore: Restore | Image.Image | None = None) -> Image.Image:
    """The translated (C, H, W) tensor as an image of the input's kind (alpha, bit depth, channels)."""
    if not isinstance(restore, Restore):
        restore = Restore(alpha=restore)
    if restore.channels:
        tensor = match_channels(tensor, restore.channels)
    if restore.depth != "8" and tensor.shape[-3] == 1:  # Pillow has no 16-bit or float colour images
        values = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) / 2)[0].numpy()  # (H, W) in [0, 1]
        if restore.depth == "16":
            return Image.fromarray((values * 65535 + 0.5).astype(np.uint16))
        return Image.fromarray(values.astype(np.float32), mode="F")
    image = to_image(tensor)
    if restore.alpha is not None:
        image = image.convert("RGBA" if image.mode == "RGB" else "LA")
        image.putalpha(restore.alpha)
    return image


def read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except DECODE_ERRORS as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def peek_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF rotation, read from the header without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except DECODE_ERRORS as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    return (height, width) if rotated else (width, height)


def save_image(image: Image.Image, path: Path) -> Path:
    """Save in the format the suffix names, dropping alpha or bit depth where the format lacks them."""
    kind = OUTPUT_FORMATS.get(path.suffix.lower().lstrip("."), "PNG")
    if kind in FORMATS_WITHOUT_ALPHA and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])
    if image.mode == "F" and kind != "TIFF":  # only TIFF stores floats; PNG keeps 16 bits of them
        array = np.asarray(image)
        image = Image.fromarray((array.clip(0, 1) * 65535 + 0.5).astype(np.uint16))
    if image.mode.startswith("I;16") and kind not in ("PNG", "TIFF"):
        image = Image.fromarray((np.asarray(image) // 257).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=kind)
    return path
