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

from . import rasters
from .names import BAD_IMAGE_POLICIES, OUTPUT_FORMATS
from .rasters import Bands

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


def open_image(path: str | Path | bytes, *, name: str | None = None) -> Image.Image | Bands:
    """The image at ``path`` (or in these bytes), decoded, its orientation applied: a Pillow image, or
    ``Bands`` for what Pillow would read at less than its depth or channel count (16-bit colour PNG and
    TIFF, TIFFs of 2 or 4+ bands). ``name`` is what errors call it (the path by default)."""
    name = name or str(path)
    source = path if isinstance(path, (bytes, bytearray)) else Path(path)
    try:
        header = _header(source)
    except OSError as exc:
        raise ImageReadError(f"cannot read image {name}: {exc}") from exc
    kind = rasters.sniff(header, source)
    if kind:
        try:
            return rasters.decode(kind, source, name)
        except rasters.RasterError as exc:
            raise ImageReadError(str(exc)) from exc
    try:
        with Image.open(rasters.readable(source)) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except DECODE_ERRORS as exc:
        raise ImageReadError(f"cannot read image {name}: {exc}") from exc


def _header(source: Path | bytes) -> bytes:
    """The first bytes of a file or buffer: enough for ``rasters.sniff``."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source[:32])
    with source.open("rb") as file:
        return file.read(32)


def load_image(path: str | Path, *, channels: int = 3) -> Image.Image | Bands:
    """Decode ``path`` with its orientation applied, with ``channels`` channels: RGB (3) or grayscale (1)
    converted as Pillow does, any other count as ``Bands`` (the file must have that many, alpha included
    or not). 16-bit, 32-bit and float grayscale images come back as mode F on the 0-255 scale (see
    ``to_float_image``), so that no precision is lost; ``match_channels`` gives them 3 channels."""
    image = open_image(path)
    problem = channel_problem(image, channels)
    if problem:
        raise ImageReadError(f"{path}: {problem}")
    if isinstance(image, Bands):
        colour, _ = image.split_alpha()
        return image if image.channels == channels else colour
    if image.mode in HIGH_DEPTH_MODES:
        return to_float_image(image)
    if channels in (1, 3):
        return image.convert("RGB" if channels == 3 else "L")
    return to_bands(image)


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def channel_counts(image: Image.Image | Bands) -> tuple[int, int]:
    """(channels without alpha, channels with it) of a decoded image."""
    if isinstance(image, Bands):
        return image.channels - image.alpha, image.channels
    bands = len(image.getbands())
    if image.mode == "P":
        return 3, 4 if "transparency" in image.info else 3
    return bands - (image.mode in ALPHA_MODES), bands


def channel_problem(image: Image.Image | Bands, channels: int) -> str | None:
    """None when the image can feed a network of ``channels`` channels (its own count, with or without
    alpha, or gray and colour into each other); else why not."""
    colour, total = channel_counts(image)
    if channels in (colour, total) or (channels in (1, 3) and colour in (1, 3)):
        return None
    if channels in (1, 3) and colour == 4 and not isinstance(image, Bands):
        return None  # CMYK: Pillow converts it
    return f"has {colour} channels{f' and alpha' if total > colour else ''}; the model takes {channels}"


def to_float_image(image: Image.Image) -> Image.Image:
    """A high-bit-depth grayscale image as mode F with values in [0, 255].

    The range: 16-bit images span 0-65535; 32-bit integer images too when their values fit, else
    their own minimum to maximum; float images are taken as [0, 1] when their values lie there,
    else also stretched from their minimum to their maximum.
    """
    integer_max = None if image.mode == "F" else 65535.0
    array = rasters.unit_interval(np.asarray(image, dtype=np.float64), integer_max=integer_max)
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


def image_problem(path: str | Path, *, min_side: int = 0, channels: int | None = None) -> str | None:
    """None when ``path`` decodes fully as an image with sides of at least ``min_side`` (and, when given,
    channels a network of ``channels`` can take); else why not.

    Catches zero-byte and non-image files, truncated data, decompression bombs (a huge declared
    size), images too small to crop and channel counts the model does not take.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = open_image(path)  # decodes everything: truncated files fail here
    except Image.DecompressionBombWarning as exc:
        return f"declared size too large (a decompression bomb?): {exc}"
    except ImageReadError as exc:
        return str(exc.__cause__ or exc) or type(exc).__name__
    width, height = image.size
    if min(width, height) < min_side:
        return f"{width}x{height} is smaller than crop_size {min_side}"
    return channel_problem(image, channels) if channels else None


def scan_images(paths: Sequence[Path], *, min_side: int = 0, on_bad: str = "skip",
                channels: int | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(readable paths, [(bad path, problem)]); with ``on_bad="fail"`` the first bad one raises."""
    if on_bad not in BAD_IMAGE_POLICIES:
        raise ValueError(f"unknown --on_bad_image {on_bad!r}; valid: {', '.join(BAD_IMAGE_POLICIES)}")
    good, bad = [], []
    for path in paths:
        problem = image_problem(path, min_side=min_side, channels=channels)
        if problem is None:
            good.append(path)
        elif on_bad == "fail":
            raise ImageReadError(f"bad image {path}: {problem} (--on_bad_image skip leaves such files out)")
        else:
            bad.append((path, problem))
    return good, bad


def to_tensor(image: Image.Image | Bands | np.ndarray) -> torch.Tensor:
    """A PIL image, ``Bands`` or (H, W[, C]) 8-bit array as a float tensor in [-1, 1], shape (C, H, W)."""
    array = image.array() if isinstance(image, Bands) else np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A (C, H, W) tensor in [-1, 1] as an 8-bit PIL image; other channel counts than 1 and 3 as a
    preview (pages, sample grids): the first three channels as RGB, or the first one as gray."""
    if tensor.shape[-3] not in (1, 3):
        tensor = tensor[..., :3 if tensor.shape[-3] > 3 else 1, :, :]
    array = to_array(tensor)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """A (C, H, W) tensor in [-1, 1] as an (H, W, C) uint8 array."""
    return ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def to_bands(image: Image.Image) -> Bands:
    """An 8-bit Pillow image as ``Bands`` of its own channels (alpha marked)."""
    array = np.asarray(image, dtype=np.float32).reshape(image.size[1], image.size[0], -1)
    return Bands.from_array(array, alpha=image.mode in ALPHA_MODES, depth="8")


# ---- translation inputs and outputs: alpha, bit depth and channels kept ------------------------

def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The image without its alpha channel, and the alpha channel (None when it has none)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        return image.convert("RGB" if image.mode[0] in "RP" else "L"), image.getchannel("A")
    return image, None


@dataclass(frozen=True)
class Restore:
    """What a translated tensor needs to become an image like its input: alpha, bit depth, channels."""

    alpha: Image.Image | Bands | None = None
    depth: str = "8"  # "8", "16" (integer) or "float"
    channels: int | None = None  # the input's colour channels, when they differ from the network's


def prepare_image(image: Image.Image | Bands, channels: int) -> tuple[torch.Tensor, Restore]:
    """A (C, H, W) tensor in [-1, 1] with the network's channel count, and how to restore the input's kind;
    a channel count the network cannot take is an ``ImageReadError``."""
    problem = channel_problem(image, channels)
    if problem:
        raise ImageReadError(f"the image {problem}")
    if not isinstance(image, Bands) and channels not in (1, 3):
        image = to_bands(image)
    if isinstance(image, Bands):
        return _prepare_bands(image, channels)
    image, alpha = split_alpha(upright(image))
    if image.mode in HIGH_DEPTH_MODES:
        depth = "float" if image.mode == "F" else "16"
        tensor = match_channels(to_tensor(to_float_image(image)), channels)
        return tensor, Restore(alpha, depth, 1 if channels != 1 else None)
    source_channels = 1 if image.mode in ("L", "1") else 3
    tensor = to_tensor(image.convert("RGB" if channels == 3 else "L"))
    return tensor, Restore(alpha, "8", source_channels if source_channels != channels and alpha is None else None)


def _prepare_bands(image: Bands, channels: int) -> tuple[torch.Tensor, Restore]:
    colour, alpha = (image, None) if image.channels == channels else image.split_alpha()
    tensor = match_channels(to_tensor(colour), channels)
    return tensor, Restore(alpha, image.depth, colour.channels if colour.channels != channels else None)


def finish_image(tensor: torch.Tensor, restore: Restore | Image.Image | None = None) -> Image.Image | Bands:
    """The translated (C, H, W) tensor as an image of the input's kind (alpha, bit depth, channels):
    a Pillow image where Pillow holds that kind, else ``Bands`` (16-bit colour, other channel counts)."""
    if not isinstance(restore, Restore):
        restore = Restore(alpha=restore)
    if restore.channels:
        tensor = match_channels(tensor, restore.channels)
    channels = tensor.shape[-3]
    if channels not in (1, 3) or isinstance(restore.alpha, Bands) or (restore.depth != "8" and channels == 3):
        return _finish_bands(tensor, restore)
    if restore.depth != "8":  # gray: Pillow holds 16-bit and float grayscale
        values = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) / 2)[0].numpy()  # (H, W) in [0, 1]
        if restore.depth == "16":
            return Image.fromarray((values * 65535 + 0.5).astype(np.uint16))
        return Image.fromarray(values.astype(np.float32), mode="F")
    image = to_image(tensor)
    if restore.alpha is not None:
        image = image.convert("RGBA" if image.mode == "RGB" else "LA")
        image.putalpha(restore.alpha)
    return image


def _finish_bands(tensor: torch.Tensor, restore: Restore) -> Bands:
    values = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    bands = Bands.from_array(values, depth=restore.depth)
    alpha = restore.alpha
    if alpha is None:
        return bands
    return bands.with_alpha(alpha if isinstance(alpha, Bands) else Bands.from_array(
        np.asarray(alpha, dtype=np.float32)[:, :, None], depth="8"))


def upright(image: Image.Image | Bands) -> Image.Image | Bands:
    """A Pillow image with its EXIF orientation applied; ``Bands`` are upright from decoding."""
    return image if isinstance(image, Bands) else ImageOps.exif_transpose(image)


def peek_size(path: Path | bytes) -> tuple[int, int]:
    """(width, height) after orientation, read from the header (of a file, or of these bytes) without
    decoding the pixels."""
    source = path if isinstance(path, (bytes, bytearray)) else Path(path)
    name = "the upload" if isinstance(path, (bytes, bytearray)) else path
    try:
        header = _header(source)
        kind = rasters.sniff(header, source)
        if kind:
            return rasters.header_size(kind, source)
        with Image.open(rasters.readable(source)) as image:
            width, height = image.size
            rotated = _exif_orientation(image) in (5, 6, 7, 8)
    except (*DECODE_ERRORS, rasters.RasterError) as exc:
        raise ImageReadError(f"cannot read image {name}: {exc}") from exc
    return (height, width) if rotated else (width, height)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation, 1 where the EXIF cannot be read (a truncated file: decoding reports that)."""
    try:
        return image.getexif().get(0x0112, 1)
    except DECODE_ERRORS:
        return 1


def save_image(image: Image.Image | Bands, path: Path) -> Path:
    """Save in the format the suffix names, dropping alpha or bit depth where the format lacks them;
    ``Bands`` go through ``rasters.encode`` (TIFF: any channels and depth; PNG: 16-bit gray, RGB, RGBA)."""
    kind = OUTPUT_FORMATS.get(path.suffix.lower().lstrip("."), "PNG")
    if isinstance(image, Bands):
        image = _bands_for(image, kind)
    if isinstance(image, Bands):
        data = rasters.encode(image, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path
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


def _bands_for(image: Bands, kind: str) -> Image.Image | Bands:
    """``image`` as Pillow can save it in an 8-bit ``kind`` (JPEG, WebP, BMP): 1 or 3 channels at 8 bits,
    the alpha dropped; TIFF and PNG keep the ``Bands``."""
    if kind in ("TIFF", "PNG"):
        return image
    colour, _ = image.split_alpha()
    if colour.channels not in (1, 3):
        raise rasters.RasterError(f"{kind} holds 1 or 3 channels, not {colour.channels}: write TIFF (--format tif)")
    values = (np.clip(colour.array(), 0, 255) + 0.5).astype(np.uint8)
    return Image.fromarray(values[:, :, 0] if colour.channels == 1 else values)
