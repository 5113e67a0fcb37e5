"""Analysis that only the benchmarks use (and the tests that check it): the per-pixel colour ceiling,
a translation's global part, the checkerboard measure, and the second ground-truth task, ``etching``,
beside the demo's ``winter``. The unpaired colour distribution transfer is the package's
(``cyclegan.colour_transfer``), since ``--colour_transfer_start`` trains from it.

Import it from a benchmark script (``benchmarks/`` is the script's own folder) or from the tests
(conftest puts ``benchmarks/`` on the path).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from cyclegan.colour_transfer import fit_cubic
from cyclegan.demo import Task
from cyclegan.models.layers import cubic_features
from cyclegan.metrics import unit_range

GREY_PHOTOS = ("camera.png", "brick.png", "grass.png", "gravel.png", "moon.png", "coins.png", "cell.png",
               "clock_motion.png", "page.png")


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float (H, W) array, edges mirrored (Pillow cannot blur floats)."""
    half = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        padded = np.pad(x, [(half, half) if a == axis else (0, 0) for a in (0, 1)], mode="symmetric")
        length = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(i, i + length), axis=axis) for i, w in enumerate(taps))
    return x


def etching_look(image: Image.Image) -> Image.Image:
    """T2: local contrast (unsharp mask, radius 2), dark ink along edges, then sepia toning.

    Unlike the winter look, most of it is spatial: no per-pixel colour mapping can reproduce it.
    """
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    sharp = np.clip(grey + 1.0 * (grey - _blur(grey, 2.0)), 0, 1)
    smooth = _blur(grey, 1.0)
    gy, gx = np.gradient(smooth)
    ink = np.clip(np.hypot(gx, gy) * 6.0 - 0.15, 0, 1)  # about 0 on flat areas, 1 on strong edges
    tone = sharp * (1.0 - 0.6 * ink)
    sepia = np.stack([0.08 + 0.92 * tone ** 0.85, 0.05 + 0.82 * tone, 0.03 + 0.62 * tone ** 1.2], axis=-1)
    return Image.fromarray((np.clip(sepia, 0, 1) * 255 + 0.5).astype(np.uint8))


ETCHING = Task("etching", GREY_PHOTOS, etching_look,
               "greyscale photo -> sepia etching (local contrast, ink along edges)")


# ---- references a translation is measured against -----------------------------------------------

def _pixels(images: list[torch.Tensor]) -> np.ndarray:
    """(N pixels, C) float64 in [0, 1] from (1, C, H, W) or (C, H, W) tensors in [-1, 1]."""
    return np.concatenate([unit_range(x).permute(0, 2, 3, 1).reshape(-1, unit_range(x).shape[1]).numpy() for x in images])


def _mean_psnr(predicted: np.ndarray, truths: list[torch.Tensor]) -> float:
    """Mean over images of the PSNR of ``predicted`` pixels (in the order of ``_pixels``) against ``truths``."""
    scores, start = [], 0
    for truth in truths:
        target = unit_range(truth).permute(0, 2, 3, 1).reshape(-1, unit_range(truth).shape[1]).numpy()
        mse = float(((np.clip(predicted[start:start + len(target)], 0, 1) - target) ** 2).mean())
        scores.append(math.inf if mse == 0 else 10 * math.log10(1.0 / mse))
        start += len(target)
    return float(np.mean(scores))


def colour_mapping_ceiling(inputs: list[torch.Tensor], truths: list[torch.Tensor], *, bins: int = 32) -> dict[str, float]:
    """How well the best per-pixel colour mapping, fitted to the truth itself, can do (mean PSNR, dB).

    Two fits of output colour as a function of input colour alone: a 3-D lookup table (the mean
    truth colour of every input colour cell, ``bins`` per channel) and a least-squares cubic
    polynomial. ``best`` is the better of the two. A translation that needs neighbourhoods (blur,
    edges, texture) cannot be reached by any per-pixel mapping, so this is a ceiling only for the
    per-pixel part of the task.
    """
    fits = per_pixel_fits(inputs, truths, bins=bins)
    scores = {f"{kind}_psnr_db": _mean_psnr(predicted, truths) for kind, predicted in fits.items()}
    return {**scores, "best_psnr_db": max(scores.values())}


def _apply_cubic(fit: tuple[torch.Tensor, torch.Tensor], x: np.ndarray) -> np.ndarray:
    """A cubic of ``fit_cubic`` applied to (N pixels, C) colours in [0, 1], clipped to [0, 1] as an image would be."""
    weight, bias = fit
    return np.clip((cubic_features(torch.from_numpy(x), dim=1) @ weight.T + bias).numpy(), 0, 1)


def per_pixel_fits(inputs: list[torch.Tensor], targets: list[torch.Tensor], *, bins: int = 32) -> dict[str, np.ndarray]:
    """The two least-squares fits of target colour as a function of input colour alone, over all the images
    together: ``lut`` (the mean target colour of every input colour cell, ``bins`` per channel) and ``cubic``
    (a cubic polynomial of the channels). Each is (N pixels, C) in [0, 1], in the order of ``_pixels``."""
    x, y = _pixels(inputs), _pixels(targets)
    cells = np.minimum((x * bins).astype(np.int64), bins - 1)
    cell = np.ravel_multi_index(tuple(cells.T), (bins,) * x.shape[1])
    counts = np.bincount(cell, minlength=bins ** x.shape[1])
    table = np.stack([np.bincount(cell, weights=y[:, c], minlength=len(counts)) for c in range(y.shape[1])], axis=1)
    cubic = fit_cubic(torch.from_numpy(x), torch.from_numpy(y), ridge=0.0)  # the best cubic, unshrunk
    return {"lut": table[cell] / counts[cell, None], "cubic": _apply_cubic(cubic, x)}


def truth_round_trip(inputs: list[torch.Tensor], truths: list[torch.Tensor]) -> float:
    """The cycle error that the truth's own colour mapping leaves: the mean |f(g(a)) - a| (of 255), where g is the
    best cubic from a to T(a) and f the best cubic back. A cycle loss weighs any translation pair by that much;
    where the truth's is above a start's, the cycle term pulls the start away from the truth."""
    a, truth = _pixels(inputs), _pixels(truths)
    there = fit_cubic(torch.from_numpy(a), torch.from_numpy(truth), ridge=0.0)
    back = fit_cubic(torch.from_numpy(truth), torch.from_numpy(a), ridge=0.0)
    return float(np.abs(_apply_cubic(back, _apply_cubic(there, a)) - a).mean() * 255)


def global_part(inputs: list[torch.Tensor], translations: list[torch.Tensor], truths: list[torch.Tensor]) -> dict[str, float]:
    """Split a translation G(a) into its global part, the one colour mapping g that G applies on average (a
    cubic polynomial of the channels fitted to G's own outputs over all the images: a lookup table would learn
    each image's own colours by heart where the images hold few colours), and the rest, which varies with the
    image and the neighbourhood. Mean PSNRs (dB): ``translation`` is G(a) against the truth; ``global_part``
    g(a) against the truth (is G's average mapping the right one?); ``global_share`` g(a) against G(a) itself
    (how far G is a global mapping at all); ``reach`` how far G(a) went from a towards T(a), the least-squares
    k of G(a) - a = k (T(a) - a) over all pixels (0: the identity, 1: all the way, below 1: short of it)."""
    g = per_pixel_fits(inputs, translations)["cubic"]
    a, translated = _pixels(inputs), _pixels(translations)
    moved, needed = translated - a, _pixels(truths) - a
    return {"translation_psnr_db": _mean_psnr(translated, truths),
            "global_part_psnr_db": _mean_psnr(g, truths), "global_share_psnr_db": _mean_psnr(g, translations),
            "reach": float((moved * needed).sum() / (needed * needed).sum())}


def periodic_peak(images: torch.Tensor, period: int, *, neighbourhood: int = 2) -> float:
    """How far the power spectrum stands out at 1/``period`` cycles per pixel: the checkerboard test.

    The power of mean-free, Hann-windowed images (N, C, H, W in [-1, 1]), averaged over images and
    channels, is taken at the three frequencies of a pattern repeating every ``period`` pixels
    (vertical, horizontal, diagonal), each divided by the median power of the surrounding
    (2 * neighbourhood + 1)^2 - 1 frequencies. Natural images give about 1; the checkerboard of a
    stride-``period`` transposed convolution gives a peak well above it. Returns the largest of the three.
    """
    x = unit_range(images)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    h, w = x.shape[-2:]
    window = torch.hann_window(h, periodic=False, dtype=x.dtype)[:, None] * torch.hann_window(w, periodic=False, dtype=x.dtype)
    power = (torch.fft.fft2(x * window).abs() ** 2).mean(dim=(0, 1)).numpy()
    ratios = []
    for fy, fx in ((h // period, 0), (0, w // period), (h // period, w // period)):
        around = np.roll(power, (neighbourhood - fy, neighbourhood - fx), axis=(0, 1))[:2 * neighbourhood + 1, :2 * neighbourhood + 1]
        others = np.delete(around.ravel(), around.size // 2)
        ratios.append(float(power[fy, fx] / max(np.median(others), 1e-30)))
    return max(ratios)
