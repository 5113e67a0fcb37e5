"""Images Pillow cannot hold in one object: 16-bit colour and any channel count (4-band satellite tiles,
2-channel microscopy). ``Bands`` keeps them as one mode-F Pillow image per channel on the 0-255 scale,
the scale of every other image here, so resizing, cropping and flipping go through the same Pillow
calls as for ordinary photos. ``sniff`` says which files need this path; ``decode`` and ``encode``
read and write them with tifffile (TIFF, any channel count and depth) and OpenCV (16-bit PNG, which
Pillow reads and writes as 8-bit), the extra ``cyclegan[image16]``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
PNG_COLOUR_TYPES_WITH_CHANNELS = (2, 4, 6)  # RGB, gray + alpha, RGBA
TIFF_ALPHA_EXTRASAMPLES = (1, 2)  # associated, unassociated alpha
DEPTHS = ("8", "16", "float")


class RasterError(ValueError):
    """A file this module cannot decode or a result a format cannot hold; the message says which and why."""


class Bands:
    """An image as one mode-F Pillow band per channel, values on the 0-255 scale; ``alpha``: the last band is
    transparency; ``depth``: what a file written from it holds ("8", "16" or "float")."""

    mode = "bands"

    def __init__(self, bands: Sequence[Image.Image], *, alpha: bool = False, depth: str = "16"):
        if not bands or any(b.mode != "F" or b.size != bands[0].size for b in bands):
            raise ValueError("Bands needs one or more mode-F images of one size")
        if depth not in DEPTHS:
            raise ValueError(f"unknown depth {depth!r}; valid: {', '.join(DEPTHS)}")
        self.bands, self.alpha, self.depth = tuple(bands), alpha, depth

    @classmethod
    def from_array(cls, array: np.ndarray, *, alpha: bool = False, depth: str = "16") -> "Bands":
        """(H, W, C) values on the 0-255 scale."""
        array = np.asarray(array, dtype=np.float32)
        return cls([Image.fromarray(np.ascontiguousarray(array[:, :, c]), mode="F") for c in range(array.shape[2])],
                   alpha=alpha, depth=depth)

    @property
    def size(self) -> tuple[int, int]:
        return self.bands[0].size

    @property
    def channels(self) -> int:
        return len(self.bands)

    def array(self) -> np.ndarray:
        """(H, W, C) float32 on the 0-255 scale."""
        return np.stack([np.asarray(b, dtype=np.float32) for b in self.bands], axis=2)

    def _each(self, method: str, *args) -> "Bands":
        return Bands([getattr(b, method)(*args) for b in self.bands], alpha=self.alpha, depth=self.depth)

    def resize(self, size: tuple[int, int], resample=Image.BICUBIC) -> "Bands":
        return self if tuple(size) == self.size else self._each("resize", tuple(size), resample)

    def crop(self, box) -> "Bands":
        return self._each("crop", box)

    def transpose(self, method) -> "Bands":
        return self._each("transpose", method)

    def split_alpha(self) -> tuple["Bands", "Bands | None"]:
        """(the colour bands, the alpha band or None)."""
        if not self.alpha or self.channels < 2:
            return self, None
        return (Bands(self.bands[:-1], depth=self.depth),
                Bands(self.bands[-1:], depth=self.depth))

    def with_alpha(self, alpha: "Bands") -> "Bands":
        return Bands([*self.bands, alpha.resize(self.size).bands[0]], alpha=True, depth=self.depth)


def unit_interval(array: np.ndarray, *, integer_max: float | None) -> np.ndarray:
    """Values in [0, 1]: integers over ``integer_max`` when they fit under it; floats as they are when
    they lie in [0, 1]; anything else stretched from its own minimum to its maximum."""
    array = np.asarray(array, dtype=np.float64)
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
    if integer_max is not None and low >= 0 and high <= integer_max:
        return array / integer_max
    if integer_max is None and low >= 0 and high <= 1:
        return array
    return (array - low) / max(high - low, 1e-12)


def depth_of(dtype: np.dtype) -> tuple[str, float | None]:
    """(the depth a file of ``dtype`` is written back with, the integer maximum its values are read over)."""
    if dtype == np.uint8:
        return "8", 255.0
    if np.issubdtype(dtype, np.integer):  # 16-bit, and 32-bit whose values fit in 16 bits, span 0-65535
        return "16", 65535.0
    return "float", None


# ---- which files need this path --------------------------------------------------------------

def sniff(header: bytes, source: Path | bytes) -> str | None:
    """"png" or "tiff" when the file needs this module (16-bit colour PNG; a TIFF Pillow would read at
    less than its depth or channels), None when Pillow reads it fully."""
    if header.startswith(PNG_SIGNATURE) and len(header) >= 26:
        return "png" if header[24] == 16 and header[25] in PNG_COLOUR_TYPES_WITH_CHANNELS else None
    if header.startswith(TIFF_SIGNATURES):
        return "tiff" if _tiff_needs_bands(source) else None
    return None


def _tiff_needs_bands(source: Path | bytes) -> bool:
    tifffile = _optional("tifffile", "TIFFs beyond 8-bit RGB")
    if tifffile is None:
        return False
    try:
        with tifffile.TiffFile(readable(source)) as tiff:
            page = tiff.pages[0]
            samples, dtype, extras = page.samplesperpixel, np.dtype(page.dtype), tuple(page.extrasamples or ())
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: Pillow's decoder reports the problem
        return False
    if samples == 1:
        return False  # Pillow reads 8-bit, 16-bit, 32-bit and float grayscale exactly
    if dtype != np.uint8:
        return True
    return samples not in (3, 4) or (samples == 4 and not set(extras) & set(TIFF_ALPHA_EXTRASAMPLES)
                                     and page.photometric != 5)  # 5: CMYK, which Pillow converts


_MISSING_WARNED: set[str] = set()


def _optional(module: str, what: str):
    """The module, or None (with a warning once) when the ``image16`` extra is not installed."""
    try:
        return __import__(module)
    except ImportError:
        if module not in _MISSING_WARNED:
            _MISSING_WARNED.add(module)
            log.warning("%s is not installed: %s are read by Pillow, at 8 bits per channel "
                        "(pip install 'cyclegan[image16]')", module, what)
        return None


def readable(source: Path | bytes):
    """What a decoder opens: the path, or the bytes as a file."""
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source


# ---- decoding ---------------------------------------------------------------------------------

def decode(kind: str, source: Path | bytes, name: str) -> Bands:
    """The file as ``Bands``, orientation applied; ``name`` is the file named in errors."""
    try:
        array, alpha, orientation = _decode_png(source) if kind == "png" else _decode_tiff(source)
    except RasterError:
        raise
    except Exception as exc:  # noqa: BLE001 - the decoders raise many kinds; all mean "cannot read"
        raise RasterError(f"cannot read image {name}: {exc}") from exc
    if array.ndim == 2:
        array = array[:, :, None]
    depth, integer_max = depth_of(array.dtype)
    values = unit_interval(array, integer_max=integer_max) * 255.0
    return Bands.from_array(orient(values, orientation), alpha=alpha, depth=depth)


def _decode_png(source: Path | bytes):
    cv2 = _require("cv2", "opencv-python-headless")
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise RasterError("OpenCV cannot decode this PNG (truncated or corrupt?)")
    if array.ndim == 3 and array.shape[2] >= 3:  # OpenCV's BGR(A) order
        array = array[:, :, [2, 1, 0, *range(3, array.shape[2])]]
    return array, array.ndim == 3 and array.shape[2] in (2, 4), 1


def _decode_tiff(source: Path | bytes):
    tifffile = _require("tifffile", "tifffile")
    with tifffile.TiffFile(readable(source)) as tiff:
        page = tiff.pages[0]
        array = page.asarray()
        if page.planarconfig == 2 and array.ndim == 3:  # separate planes: (C, H, W)
            array = array.transpose(1, 2, 0)
        alpha = bool(set(page.extrasamples or ()) & set(TIFF_ALPHA_EXTRASAMPLES))
        orientation_tag = page.tags.get(274)
        return array, alpha, int(orientation_tag.value) if orientation_tag else 1


def _require(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise RasterError(f"reading this image needs {package}: pip install 'cyclegan[image16]'") from None


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) turned upright by the TIFF/EXIF orientation value (1-8)."""
    turns = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 1)[::-1],
             8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turns.get(orientation, turns[1])(array))


def header_size(kind: str, source: Path | bytes) -> tuple[int, int]:
    """(width, height) after orientation, read without decoding the pixels."""
    if kind == "png":
        if isinstance(source, (bytes, bytearray)):
            data = source
        else:
            with Path(source).open("rb") as file:
                data = file.read(24)
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    tifffile = _require("tifffile", "tifffile")
    with tifffile.TiffFile(readable(source)) as tiff:
        page = tiff.pages[0]
        width, height = page.imagewidth, page.imagelength
        tag = page.tags.get(274)
    return (height, width) if tag and int(tag.value) in (5, 6, 7, 8) else (width, height)


# ---- encoding ---------------------------------------------------------------------------------

def encode(bands: Bands, kind: str) -> bytes:
    """``bands`` as the bytes of a ``kind`` file ("TIFF" or "PNG") at its depth; a result the format cannot
    hold is a ``RasterError`` naming the format to use instead."""
    array = stored_values(bands)
    if kind == "TIFF":
        return _encode_tiff(array, alpha=bands.alpha)
    if kind == "PNG":
        return _encode_png(array, alpha=bands.alpha)
    raise RasterError(f"{kind} holds 1 or 3 channels of 8 bits, not {bands.channels} channels: "
                      "write TIFF (--format tif), which holds any channel count and depth")


def stored_values(bands: Bands) -> np.ndarray:
    """(H, W, C) in the dtype of ``bands.depth``: uint8, uint16, or float32 in [0, 1]."""
    unit = np.clip(bands.array() / 255.0, 0.0, 1.0)
    if bands.depth == "float":
        return unit.astype(np.float32)
    top = 255 if bands.depth == "8" else 65535
    return (unit * top + 0.5).astype(np.uint8 if bands.depth == "8" else np.uint16)


def _encode_tiff(array: np.ndarray, *, alpha: bool) -> bytes:
    tifffile = _require("tifffile", "tifffile")
    colour = array.shape[2] - alpha
    buffer = io.BytesIO()
    options = {"photometric": "rgb" if colour == 3 else "minisblack", "planarconfig": "contig"}
    if alpha:
        options["extrasamples"] = ["unassalpha"]
    tifffile.imwrite(buffer, array if array.shape[2] > 1 else array[:, :, 0], **options)
    return buffer.getvalue()


def _encode_png(array: np.ndarray, *, alpha: bool) -> bytes:
    cv2 = _require("cv2", "opencv-python-headless")
    if array.shape[2] == 2 and alpha:  # OpenCV writes no gray + alpha PNG: RGBA with the gray repeated
        array = array[:, :, [0, 0, 0, 1]]
    channels = array.shape[2]
    if channels not in (1, 3, 4) or (channels == 4 and not alpha):
        raise RasterError(f"PNG holds gray, RGB or RGBA, not {channels} channels"
                          f"{'' if alpha else ' without alpha'}: write TIFF (--format tif)")
    if array.dtype == np.float32:  # PNG has no floats: 16 bits of them
        array = (array * 65535 + 0.5).astype(np.uint16)
    if channels >= 3:
        array = array[:, :, [2, 1, 0, *range(3, channels)]]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise RasterError("OpenCV could not encode the PNG")
    return encoded.tobytes()
