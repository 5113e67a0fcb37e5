"""Evaluation metrics: image-to-image (PSNR, SSIM, L1) and distribution distances (FID, KID).

Images are (C, H, W) or (B, C, H, W) tensors in [-1, 1]; distances between feature sets are
computed in float64 NumPy from (N, D) feature arrays.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


# ---- image against image -----------------------------------------------------------------------

def _unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], as (B, C, H, W) float64."""
    x = x if x.dim() == 4 else x.unsqueeze(0)
    return (x.detach().double().cpu().clamp(-1, 1) + 1) / 2


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, on the [0, 1] scale (infinite for identical images)."""
    mse = float(((_unit(x) - _unit(y)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def l1_255(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean absolute difference in [0, 255] units."""
    return float((_unit(x) - _unit(y)).abs().mean()) * 255


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data
    range 1, averaged over channels and the positions where the window fits."""
    a, b = _unit(x), _unit(y)
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


def _pixels(images: list[torch.Tensor]) -> np.ndarray:
    """(N pixels, C) float64 in [0, 1] from (1, C, H, W) or (C, H, W) tensors in [-1, 1]."""
    return np.concatenate([_unit(x).permute(0, 2, 3, 1).reshape(-1, _unit(x).shape[1]).numpy() for x in images])


def _mean_psnr(predicted: np.ndarray, truths: list[torch.Tensor]) -> float:
    """Mean over images of the PSNR of ``predicted`` pixels (in the order of ``_pixels``) against ``truths``."""
    scores, start = [], 0
    for truth in truths:
        target = _unit(truth).permute(0, 2, 3, 1).reshape(-1, _unit(truth).shape[1]).numpy()
        mse = float(((np.clip(predicted[start:start + len(target)], 0, 1) - target) ** 2).mean())
        scores.append(math.inf if mse == 0 else 10 * math.log10(1.0 / mse))
        start += len(target)
    return float(np.mean(scores))


def _cubic_features(x: np.ndarray) -> np.ndarray:
    """1 and every monomial of the channels up to degree 3: (N, 20) for RGB."""
    columns = [np.ones(len(x))]
    channels = range(x.shape[1])
    for degree in (1, 2, 3):
        for combo in itertools.combinations_with_replacement(channels, degree):
            columns.append(np.prod(x[:, combo], axis=1))
    return np.stack(columns, axis=1)


def colour_mapping_ceiling(inputs: list[torch.Tensor], truths: list[torch.Tensor], *, bins: int = 32) -> dict[str, float]:
    """How well the best per-pixel colour mapping, fitted to the truth itself, can do (mean PSNR, dB).

    Two fits of output colour as a function of input colour alone: a 3-D lookup table (the mean
    truth colour of every input colour cell, ``bins`` per channel) and a least-squares cubic
    polynomial. ``best`` is the better of the two. A translation that needs neighbourhoods (blur,
    edges, texture) cannot be reached by any per-pixel mapping, so this is a ceiling only for the
    per-pixel part of the task.
    """
    x, y = _pixels(inputs), _pixels(truths)
    cells = np.minimum((x * bins).astype(np.int64), bins - 1)
    cell = np.ravel_multi_index(tuple(cells.T), (bins,) * x.shape[1])
    counts = np.bincount(cell, minlength=bins ** x.shape[1])
    table = np.stack([np.bincount(cell, weights=y[:, c], minlength=len(counts)) for c in range(y.shape[1])], axis=1)
    lut = table[cell] / counts[cell, None]
    features = _cubic_features(x)
    coefficients, *_ = np.linalg.lstsq(features, y, rcond=None)
    scores = {"lut_psnr_db": _mean_psnr(lut, truths), "cubic_psnr_db": _mean_psnr(features @ coefficients, truths)}
    return {**scores, "best_psnr_db": max(scores.values())}


def colour_distribution_transfer(source: np.ndarray, target: np.ndarray, *, iterations: int = 30, quantiles: int = 1001,
                                 seed: int = 0):
    """Fit the iterative distribution transfer of Pitie et al. (2005) from ``source`` colours to
    ``target`` colours ((N, C) arrays in [0, 1], unpaired) and return the fitted mapping.

    Each round rotates colour space at random and matches every rotated axis's 1-D distribution by
    quantiles. It uses only the two colour distributions, as an unpaired method must: applied to
    held-out inputs, it shows how far matching the domains' colours can get on a task (the unpaired
    reference of benchmarks/learning.py).
    """
    rng = np.random.default_rng(seed)
    levels = np.linspace(0.0, 1.0, quantiles)
    steps = []  # (rotation, per-axis (source quantiles, target quantiles))
    current = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    for _ in range(iterations):
        rotation, _ = np.linalg.qr(rng.normal(size=(current.shape[1],) * 2))
        rotated, rotated_target = current @ rotation, target @ rotation
        axes = [(np.quantile(rotated[:, k], levels), np.quantile(rotated_target[:, k], levels)) for k in range(rotated.shape[1])]
        for k, (from_q, to_q) in enumerate(axes):
            rotated[:, k] = np.interp(rotated[:, k], from_q, to_q)
        current = rotated @ rotation.T
        steps.append((rotation, axes))

    def apply(pixels: np.ndarray) -> np.ndarray:
        out = np.asarray(pixels, dtype=np.float64)
        for rotation, axes in steps:
            rotated = out @ rotation
            for k, (from_q, to_q) in enumerate(axes):
                rotated[:, k] = np.interp(rotated[:, k], from_q, to_q)
            out = rotated @ rotation.T
        return np.clip(out, 0.0, 1.0)

    return apply


def periodic_peak(images: torch.Tensor, period: int, *, neighbourhood: int = 2) -> float:
    """How far the power spectrum stands out at 1/``period`` cycles per pixel: the checkerboard test.

    The power of mean-free, Hann-windowed images (N, C, H, W in [-1, 1]), averaged over images and
    channels, is taken at the three frequencies of a pattern repeating every ``period`` pixels
    (vertical, horizontal, diagonal), each divided by the median power of the surrounding
    (2 * neighbourhood + 1)^2 - 1 frequencies. Natural images give about 1; the checkerboard of a
    stride-``period`` transposed convolution gives a peak well above it. Returns the largest of the three.
    """
    x = _unit(images)
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


# ---- Inception features, with a cache for real image folders -----------------------------------------

FEATURE_PROTOCOL = "fid-inception-2015-12-05 pool3 2048-d; RGB; bilinear resize to 299x299; inputs in [-1, 1]"
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


@torch.inference_mode()
def tensor_features(net, images, *, device="cpu") -> np.ndarray:
    """(N, 2048) features of an iterable of (3, H, W) tensors in [-1, 1] (1-channel ones are repeated)."""
    from .data import match_channels

    rows = [net(match_channels(image, 3).unsqueeze(0).to(device)).double().cpu().numpy() for image in images]
    return np.concatenate(rows) if rows else np.zeros((0, 2048))


def folder_features(net, folder, *, cache_dir=None, device="cpu", weights_id: str = "") -> np.ndarray:
    """Features of every image under ``folder``, cached by file names, sizes and times and the protocol."""
    import hashlib
    from pathlib import Path

    from .data import find_images, load_image, to_tensor

    folder = Path(folder)
    paths = find_images(folder)
    if not paths:
        raise FileNotFoundError(f"{folder} holds no images")
    fingerprint = hashlib.sha256()
    fingerprint.update(f"{FEATURE_PROTOCOL}|{weights_id}".encode())
    for path in paths:
        stat = path.stat()
        fingerprint.update(f"|{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    cache = Path(cache_dir) / f"{fingerprint.hexdigest()[:32]}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache)
    features = tensor_features(net, (to_tensor(load_image(p, channels=3)) for p in paths), device=device)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, features)
        tmp.replace(cache)
    return features


def distribution_metrics(real: np.ndarray, fake: np.ndarray, *, seed: int = 0) -> dict:
    mean, error = kid_from_features(real, fake, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=seed)
    return {"fid": fid_from_features(real, fake), "kid": mean, "kid_std_error": error}


def default_cache_dir():
    import os
    from pathlib import Path

    return Path(os.environ.get("CYCLEGAN_CACHE", Path.home() / ".cache" / "cyclegan")) / "features"


def fid_between_folders(dir_a, dir_b, *, feature_net=None, inception_weights=None, cache_dir=None,
                        device="cpu") -> dict:
    """FID and KID between two image folders, with the same network and protocol as ``evaluate``."""
    net, weights_id = _feature_network(feature_net, inception_weights, device)
    cache_dir = cache_dir or default_cache_dir()
    a = folder_features(net, dir_a, cache_dir=cache_dir, device=device, weights_id=weights_id)
    b = folder_features(net, dir_b, cache_dir=cache_dir, device=device, weights_id=weights_id)
    return {**distribution_metrics(a, b), "images": {str(dir_a): len(a), str(dir_b): len(b)},
            "protocol": FEATURE_PROTOCOL, "weights": weights_id}


def _feature_network(feature_net, inception_weights, device):
    """(network, an id of its weights for cache keys): an injected network, or the FID Inception."""
    if feature_net is not None:
        return feature_net.to(device).eval(), f"injected:{type(feature_net).__name__}:{id(feature_net)}"
    from .inception import find_weights, load_inception, sha256_of

    path = find_weights(inception_weights)
    return load_inception(path, device=device), sha256_of(path)


# ---- evaluating a run -----------------------------------------------------------------------------

def evaluate_run(checkpoint, *, dataroot=None, direction: str = "both", truth=None, max_images: int = 0,
                 device: str | None = None, show_progress: bool = False, fid: bool = True, feature_net=None,
                 inception_weights=None, cache_dir=None, **translator_options) -> dict:
    """Translate the test split and measure it; writes and returns ``RUN/eval_<epoch>.json``'s content.

    Per direction: the cycle-consistency L1 |F(G(a)) - a| in [0, 255] units and, with ``truth``
    (a folder of files named like the inputs; for AtoB, or for BtoA when that is the only
    direction), PSNR, SSIM and L1 against it. Every image at its own size.
    """
    import json
    from pathlib import Path

    from .checkpoint import Checkpoint
    from .data import domain_folders, find_images
    from .tracking import atomic_write_text, progress
    from .translate import Translator, epoch_label

    checkpoint = Checkpoint(checkpoint)
    config = checkpoint.config
    root = Path(dataroot or config.data.dataroot)
    folders = dict(zip(("AtoB", "BtoA"), domain_folders(root, "test", config.data.direction)))
    directions = ("AtoB", "BtoA") if direction == "both" else (direction,)
    if direction not in ("both", "AtoB", "BtoA"):
        raise ValueError(f"unknown --direction {direction!r}; valid: both, AtoB, BtoA")
    translators = {d: Translator.from_checkpoint(checkpoint.path, d, device=device, **translator_options)
                   for d in ("AtoB", "BtoA")}
    features = None
    if fid:
        net, weights_id = _feature_network(feature_net, inception_weights, translators["AtoB"].device)
        features = {"net": net, "weights_id": weights_id, "cache_dir": cache_dir or default_cache_dir(),
                    "device": translators["AtoB"].device}
    results, counts = {}, {}
    for d in directions:
        if not folders[d].is_dir():
            raise FileNotFoundError(f"{folders[d]} does not exist; --dataroot must hold test{d[0]}/")
        paths = find_images(folders[d], max_count=max_images)
        truth_dir = Path(truth) if truth and d == directions[0] else None
        forward, back = translators[d], translators["BtoA" if d == "AtoB" else "AtoB"]
        bar = progress(None, total=len(paths), description=f"evaluate {d}", enabled=show_progress, unit="img")
        target_folder = folders["BtoA" if d == "AtoB" else "AtoB"]
        results[d] = _measure_direction(forward, back, paths, folders[d], truth_dir, bar, features, target_folder,
                                        config.train.seed)
        bar.close()
        counts[d] = len(paths)
    report = {
        "checkpoint": str(checkpoint.path), "epoch": epoch_label(checkpoint), "results": results,
        "protocol": {
            "images": counts, "dataroot": str(root),
            "resize": "none: every image at its own size, reflect-padded to the generator's stride and cropped back",
            "image_format": "inputs decoded from their files; translations measured in float, before any re-encoding",
            "range": "cycle and truth L1 in [0, 255] units; PSNR and SSIM on [0, 1]",
            "ssim": f"Gaussian window {SSIM_WINDOW}, sigma {SSIM_SIGMA}, K1 {SSIM_K1}, K2 {SSIM_K2}, mean over channels",
            "fid_kid": (f"{FEATURE_PROTOCOL}; weights sha256 {features['weights_id']}; translations against the real "
                        f"test images of the target domain; KID: {KID_SUBSETS} subsets of up to {KID_SUBSET_SIZE}, "
                        f"unbiased, with its standard error") if features else "not computed (--no_fid)",
            "seed": config.train.seed,
        },
    }
    path = checkpoint.path.parent / f"eval_{epoch_label(checkpoint)}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    report["path"] = str(path)
    return report


def _measure_direction(forward, back, paths, folder, truth_dir, bar, features=None, target_folder=None,
                       seed: int = 0) -> dict:
    from .data import load_image, match_channels, to_tensor
    from .translate import cycle_batches

    cycle, scores, missing, fake_features = [], {"psnr_db": [], "ssim": [], "l1_255": []}, 0, []
    for batch_paths, real, fake, rec in cycle_batches(forward, back, paths, batch_size=forward.default_batch_size):
        if features is not None:
            fake_features.append(tensor_features(features["net"], fake.clamp(-1, 1), device=features["device"]))
        for path, r, f, c in zip(batch_paths, real, fake, rec):
            cycle.append(l1_255(c, r))
            if truth_dir is None:
                continue
            expected = truth_dir / path.relative_to(folder)
            if not expected.is_file():
                missing += 1
                continue
            target = match_channels(to_tensor(load_image(expected, channels=f.shape[0])), f.shape[0])
            if target.shape != f.shape:
                raise ValueError(f"ground truth {expected} is {tuple(target.shape)}, the translation of {path} "
                                 f"is {tuple(f.shape)} (C, H, W)")
            scores["psnr_db"].append(psnr(f, target))
            scores["ssim"].append(ssim(f, target))
            scores["l1_255"].append(l1_255(f, target))
        bar.update(len(batch_paths))
    result = {"images": len(cycle), "cycle_l1_255": float(np.mean(cycle)) if cycle else None}
    if features is not None:
        real_features = folder_features(features["net"], target_folder, cache_dir=features["cache_dir"],
                                        device=features["device"], weights_id=features["weights_id"])
        result.update(distribution_metrics(real_features, np.concatenate(fake_features), seed=seed))
    if truth_dir is not None:
        matched = len(scores["psnr_db"])
        if not matched:
            raise FileNotFoundError(f"no file in {truth_dir} matches the names of the images in {folder}")
        result["truth"] = {"dir": str(truth_dir), "matched": matched, "missing": missing,
                           **{k: float(np.mean(v)) for k, v in scores.items()}}
    return result


def flatten_results(results: dict) -> dict[str, float]:
    """{"AtoB_fid": ..., "AtoB_cycle_l1_255": ..., "AtoB_psnr_db": ...} from ``evaluate_run``'s results."""
    flat = {}
    for direction, r in results.items():
        for key in ("fid", "kid", "cycle_l1_255"):
            if r.get(key) is not None:
                flat[f"{direction}_{key}"] = float(r[key])
        for key in ("psnr_db", "ssim", "l1_255"):
            if "truth" in r:
                flat[f"{direction}_{key}"] = float(r["truth"][key])
    return flat


def format_report(report: dict) -> str:
    """The terminal table of ``evaluate_run``'s numbers."""
    lines = [f"{'direction':10s} {'images':>7s} {'FID':>8s} {'KID x1000':>14s} {'cycle L1':>9s} {'PSNR dB':>8s} "
             f"{'SSIM':>6s} {'L1':>6s}"]
    for direction, r in report["results"].items():
        t = r.get("truth")
        truth = f"{t['psnr_db']:8.2f} {t['ssim']:6.3f} {t['l1_255']:6.2f}" if t else f"{'-':>8s} {'-':>6s} {'-':>6s}"
        dist = (f"{r['fid']:8.2f} {r['kid'] * 1000:7.2f} ± {r['kid_std_error'] * 1000:4.2f}" if "fid" in r
                else f"{'-':>8s} {'-':>14s}")
        lines.append(f"{direction:10s} {r['images']:7d} {dist} {r['cycle_l1_255']:9.2f} {truth}")
    lines.append("(FID/KID against the real test images of the target domain; L1 in [0, 255] units; "
                 "PSNR, SSIM and L1 against --truth)")
    return "\n".join(lines)
