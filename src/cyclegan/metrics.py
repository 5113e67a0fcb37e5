"""Image metrics (PSNR, SSIM, L1) and distances between feature distributions (Fréchet distance, KID).

Images are (C, H, W) or (B, C, H, W) tensors in [-1, 1]; distances between feature sets are
computed in float64 NumPy from (N, D) feature arrays.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


# ---- image against image -----------------------------------------------------------------------

def unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], as (B, C, H, W) float64."""
    x = x if x.dim() == 4 else x.unsqueeze(0)
    return (x.detach().double().cpu().clamp(-1, 1) + 1) / 2


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, on the [0, 1] scale (infinite for identical images)."""
    mse = float(((unit_range(x) - unit_range(y)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def l1_255(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean absolute difference in [0, 255] units."""
    return float((unit_range(x) - unit_range(y)).abs().mean()) * 255


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data
    range 1, averaged over channels and the positions where the window fits."""
    a, b = unit_range(x), unit_range(y)
    channels = a.shape[1]
    half = SSIM_WINDOW // 2
    grid = torch.arange(SSIM_WINDOW, dtype=torch.float64) - half
    g = torch.exp(-(grid**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)  # valid positions only

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


# ---- feature distributions ------------------------------------------------------------------------

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, as the FID tools compute it) of (N, D) features."""
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    Tr (S1 S2)^1/2 is the sum of the square roots of the eigenvalues of S1^1/2 S2 S1^1/2, a
    symmetric matrix: stable where scipy's sqrtm of the non-symmetric S1 S2 needs a jitter.
    """
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic kernel k(a, b) = (a.b / d + 1)^3 of KID (Binkowski et al. 2018)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid_from_features(real: np.ndarray, fake: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """KID: the mean unbiased MMD^2 over random subsets, and its standard error over them."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least 2 images in each set")
    rng = np.random.default_rng(seed)
    values = np.array([polynomial_mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                                                fake[rng.choice(len(fake), size, replace=False)])
                       for _ in range(subsets)])
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(subsets)) if subsets > 1 else 0.0


KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


def distribution_metrics(real: np.ndarray, fake: np.ndarray, *, seed: int = 0) -> dict:
    mean, error = kid_from_features(real, fake, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=seed)
    return {"fid": fid_from_features(real, fake), "kid": mean, "kid_std_error": error}


# ---- colour distributions ---------------------------------------------------------------------------

COLOUR_SAMPLE_PER_IMAGE, COLOUR_DIRECTIONS, COLOUR_QUANTILES = 4096, 64, 256


def colour_sample(image: torch.Tensor, *, count: int = COLOUR_SAMPLE_PER_IMAGE, seed: int = 0) -> np.ndarray:
    """(count, C) colours in [0, 255] drawn from ``image`` ((C, H, W) or (1, C, H, W) in [-1, 1]), the same
    positions for every image of one size, so that a run's evaluations compare like with like; every pixel
    when the image has fewer. A fixed count per image bounds the memory whatever the test images' sizes."""
    pixels = unit_range(image)[0].flatten(1).T.numpy() * 255  # (H*W, C)
    if len(pixels) <= count:
        return pixels
    return pixels[np.random.default_rng(seed).choice(len(pixels), count, replace=False)]


def colour_swd_255(x: np.ndarray, y: np.ndarray, *, directions: int = COLOUR_DIRECTIONS,
                   quantiles: int = COLOUR_QUANTILES, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two colour distributions ((N, C) and (M, C) samples in [0, 255],
    unpaired, any sizes): the mean over ``directions`` fixed random unit directions of the 1-D Wasserstein
    distance between the two projections, from their quantiles. 0 for the same distribution; a shift of every
    colour by d along one channel gives d times the mean |cosine| of the directions with that channel.

    It needs no network: unlike FID it runs without the Inception weights, and it sees colour and tone
    only, not content or texture.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"colour_swd_255 needs two non-empty (N, C) samples with the same C, got {x.shape} and {y.shape}")
    unit = np.random.default_rng(seed).normal(size=(directions, x.shape[1]))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    levels = (np.arange(quantiles) + 0.5) / quantiles
    qx = np.quantile(x @ unit.T, levels, axis=0)  # (quantiles, directions)
    qy = np.quantile(y @ unit.T, levels, axis=0)
    return float(np.abs(qx - qy).mean())
