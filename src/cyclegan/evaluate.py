"""Evaluating a run: Inception features (cached for real image folders), FID/KID between folders, and
``evaluate_run``, which translates the test split and measures it with ``metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import (
    KID_SUBSET_SIZE, KID_SUBSETS, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, colour_sample, colour_swd_255,
    distribution_metrics, l1_255, psnr, ssim,
)
from .names import DIRECTIONS, ONE_WAY_MODELS, other_direction
from .tiling import TileOptions


# ---- Inception features, with a cache for real image folders -----------------------------------------

FEATURE_PROTOCOL = "fid-inception-2015-12-05 pool3 2048-d; RGB; bilinear resize to 299x299; inputs in [-1, 1]"


@torch.inference_mode()
def tensor_features(net, images, *, device="cpu") -> np.ndarray:
    """(N, 2048) features of an iterable of (3, H, W) tensors in [-1, 1] (1-channel ones are repeated)."""
    from .images import match_channels

    rows = [net(match_channels(image, 3).unsqueeze(0).to(device)).double().cpu().numpy() for image in images]
    return np.concatenate(rows) if rows else np.zeros((0, 2048))


def folder_features(net, folder, *, cache_dir=None, device="cpu", weights_id: str = "") -> np.ndarray:
    """Features of every image under ``folder``, cached by file names, sizes and times and the protocol."""
    import hashlib

    from .images import find_images, load_image, to_tensor

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


def default_cache_dir() -> Path:
    from .tracking import user_cache_dir

    return user_cache_dir("features")


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
    from .inception import find_weights, load_inception
    from .tracking import sha256_of

    path = find_weights(inception_weights)
    return load_inception(path, device=device), sha256_of(path)


# ---- evaluating a run -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Features:
    """The feature network of FID/KID, an id of its weights (for cache keys), and where it runs and caches."""

    net: Any
    weights_id: str
    cache_dir: Path
    device: Any


def evaluate_run(checkpoint, *, dataroot=None, direction: str = "both", truth=None, max_images: int = 0,
                 device: str | None = None, show_progress: bool = False, fid: bool = True, feature_net=None,
                 inception_weights=None, cache_dir=None, tiles: TileOptions = TileOptions(), engine: str = "torch",
                 precision: str = "fp32", train_mode: bool = False) -> dict:
    """Translate the test split and measure it; writes and returns ``RUN/eval_<epoch>.json``'s content.

    Per direction: the cycle-consistency L1 |F(G(a)) - a| and the colour distance of the translations to the
    target domain's real test images (``metrics.colour_swd_255``; None without them), in [0, 255] units, and, with ``truth``
    (a folder of files named like the inputs; for AtoB, or for BtoA when that is the only
    direction), PSNR, SSIM and L1 against it. Every image at its own size.

    A pix2pix checkpoint is measured on its test pairs (``heldout.test_pairs``; ``truth``, when given, is
    the folder of partners for testA/): PSNR, SSIM and L1 against each partner, FID/KID against the
    partners, no cycle L1 (``train_mode``: see ``Translator``). A CUT checkpoint is measured AtoB only, with
    no cycle L1 (``cycle_l1_255`` is None): it has no generator back.
    """
    import json

    from .checkpoint import Checkpoint
    from .heldout import TestSplit, epoch_label
    from .tracking import atomic_write_text, progress
    from .translate import Translator

    if direction not in ("both", *DIRECTIONS):
        raise ValueError(f"unknown --direction {direction!r}; valid: both, {', '.join(DIRECTIONS)}")
    directions = DIRECTIONS if direction == "both" else (direction,)
    checkpoint = Checkpoint(checkpoint)
    config = checkpoint.config
    root = Path(dataroot or config.data.dataroot)
    paired, model = config.model.model == "pix2pix", config.model.model
    if model in ONE_WAY_MODELS:
        if direction == "BtoA":
            raise ValueError(f"{checkpoint.path} is a {model} model: it translates AtoB only")
        directions = ("AtoB",)
    translators = {d: Translator.on_engine(checkpoint, d, engine=engine, precision=precision, device=device, tiles=tiles,
                                           train_mode=train_mode)
                   for d in (("AtoB",) if model in ONE_WAY_MODELS else DIRECTIONS)}
    features = None
    if fid:
        on = translators["AtoB"].device
        net, weights_id = _feature_network(feature_net, inception_weights, on)
        features = Features(net, weights_id, Path(cache_dir or default_cache_dir()), on)
    results, counts = {}, {}
    if paired:
        results["AtoB"] = _measure_pairs(translators["AtoB"], checkpoint, root, truth=truth, max_images=max_images,
                                         features=features, show_progress=show_progress)
        counts["AtoB"] = results["AtoB"]["images"]
    else:
        split = TestSplit.find(root, data_direction=config.data.direction, directions=directions,
                               max_images=max_images, require=True)
    for d, paths in ({} if paired else split.images).items():
        bar = progress(None, total=len(paths), description=f"evaluate {d}", enabled=show_progress, unit="img")
        results[d] = _measure_direction(translators[d], translators.get(other_direction(d)), paths, folder=split.folders[d],
                                        truth_dir=Path(truth) if truth and d == directions[0] else None, bar=bar,
                                        features=features, target_folder=split.target_folder(d), seed=config.train.seed)
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
            "fid_kid": (f"{FEATURE_PROTOCOL}; weights sha256 {features.weights_id}; translations against the real "
                        f"test images of the target domain; KID: {KID_SUBSETS} subsets of up to {KID_SUBSET_SIZE}, "
                        f"unbiased, with its standard error") if features else "not computed (--no_fid)",
            "engine": translators["AtoB"].engine_choice,
            "seed": config.train.seed,
        },
    }
    path = checkpoint.output_dir / f"eval_{epoch_label(checkpoint)}.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    report["path"] = str(path)
    return report


def _measure_direction(forward, back, paths, *, folder: Path, truth_dir: Path | None, bar, features: Features | None,
                       target_folder: Path, seed: int) -> dict:
    from .heldout import cycle_batches
    from .images import load_image, match_channels, to_tensor

    cycle, scores, missing, fake_features, images = [], {"psnr_db": [], "ssim": [], "l1_255": []}, 0, [], 0
    fake_colours = []
    for batch_paths, real, fake, rec in cycle_batches(forward, back, paths, batch_size=forward.default_batch_size):
        if features is not None:
            fake_features.append(tensor_features(features.net, fake.clamp(-1, 1), device=features.device))
        images += len(batch_paths)
        fake_colours += [colour_sample(f, seed=seed) for f in fake]
        for path, r, f, c in zip(batch_paths, real, fake, rec if rec is not None else [None] * len(batch_paths)):
            if c is not None:  # a one-way model (CUT) has no generator back, so no cycle
                cycle.append(l1_255(c, r))
            if truth_dir is None:
                continue
            expected = truth_dir / path.relative_to(folder)
            if not expected.is_file():
                missing += 1
                continue
            target = match_channels(to_tensor(load_image(expected, channels=f.shape[0])), f.shape[0])
            add_truth_scores(scores, f, target, truth=expected, source=path)
        bar.update(len(batch_paths))
    result = {"images": images, "cycle_l1_255": float(np.mean(cycle)) if cycle else None,
              "colour_swd_255": colour_distance_to_folder(fake_colours, target_folder, seed=seed)}
    if features is not None:
        real_features = folder_features(features.net, target_folder, cache_dir=features.cache_dir,
                                        device=features.device, weights_id=features.weights_id)
        result.update(distribution_metrics(real_features, np.concatenate(fake_features), seed=seed))
    if truth_dir is not None:
        matched = len(scores["psnr_db"])
        if not matched:
            raise FileNotFoundError(f"no file in {truth_dir} matches the names of the images in {folder}")
        result["truth"] = {"dir": str(truth_dir), "matched": matched, "missing": missing,
                           **{k: float(np.mean(v)) for k, v in scores.items()}}
    return result


def colour_distance_to_folder(fake_colours: list[np.ndarray], folder: Path, *, seed: int) -> float | None:
    """``colour_swd_255`` between the translations' colour samples and those of the real images in ``folder``
    (the target domain's test images); None when the folder holds none."""
    from .images import find_images, load_image, to_tensor

    paths = find_images(folder) if folder.is_dir() else []
    if not paths or not fake_colours:
        return None
    channels = fake_colours[0].shape[1]
    real = [colour_sample(to_tensor(load_image(p, channels=channels)), seed=seed) for p in paths]
    return colour_swd_255(np.concatenate(fake_colours), np.concatenate(real), seed=seed)


def add_truth_scores(scores: dict[str, list[float]], fake, target, *, truth: Path, source: Path) -> None:
    """Append PSNR, SSIM and L1 of ``fake`` (the translation of ``source``) against ``target`` (read from ``truth``)."""
    if target.shape != fake.shape:
        raise ValueError(f"ground truth {truth} is {tuple(target.shape)}, the translation of {source} "
                         f"is {tuple(fake.shape)} (C, H, W)")
    scores["psnr_db"].append(psnr(fake, target))
    scores["ssim"].append(ssim(fake, target))
    scores["l1_255"].append(l1_255(fake, target))


def _measure_pairs(translator, checkpoint, root: Path, *, truth, max_images: int, features: Features | None,
                   show_progress: bool) -> dict:
    """A pix2pix generator's scores against the partners of its test pairs."""
    from .heldout import test_pairs, translated_pairs
    from .tracking import progress

    pairs, swap, folder = test_pairs(checkpoint, root, max_images=max_images, truth=truth)
    scores, fakes, truths = {"psnr_db": [], "ssim": [], "l1_255": []}, [], []
    bar = progress(None, total=len(pairs), description="evaluate AtoB", enabled=show_progress, unit="img")
    for pair, _, fake, target in translated_pairs(translator, pairs, swap=swap,
                                                  channels_b=checkpoint.config.model.output_nc):
        add_truth_scores(scores, fake, target, truth=pair[1] or pair[0], source=pair[0])
        if features is not None:
            fakes.append(tensor_features(features.net, [fake.clamp(-1, 1)], device=features.device))
            truths.append(tensor_features(features.net, [target], device=features.device))
        bar.update(1)
    bar.close()
    result = {"images": len(pairs), "cycle_l1_255": None,
              "truth": {"dir": str(truth or folder), "matched": len(pairs), "missing": 0,
                        **{k: float(np.mean(v)) for k, v in scores.items()}}}
    if features is not None:
        result.update(distribution_metrics(np.concatenate(truths), np.concatenate(fakes),
                                           seed=checkpoint.config.train.seed))
    return result


def flatten_results(results: dict) -> dict[str, float]:
    """{"AtoB_fid": ..., "AtoB_cycle_l1_255": ..., "AtoB_psnr_db": ...} from ``evaluate_run``'s results."""
    flat = {}
    for direction, r in results.items():
        for key in ("fid", "kid", "cycle_l1_255", "colour_swd_255"):
            if r.get(key) is not None:
                flat[f"{direction}_{key}"] = float(r[key])
        for key in ("psnr_db", "ssim", "l1_255"):
            if "truth" in r:
                flat[f"{direction}_{key}"] = float(r["truth"][key])
    return flat


def format_report(report: dict) -> str:
    """The terminal table of ``evaluate_run``'s numbers."""
    lines = [f"{'direction':10s} {'images':>7s} {'FID':>8s} {'KID x1000':>14s} {'cycle L1':>9s} {'colour':>7s} "
             f"{'PSNR dB':>8s} {'SSIM':>6s} {'L1':>6s}"]
    for direction, r in report["results"].items():
        t = r.get("truth")
        truth = f"{t['psnr_db']:8.2f} {t['ssim']:6.3f} {t['l1_255']:6.2f}" if t else f"{'-':>8s} {'-':>6s} {'-':>6s}"
        dist = (f"{r['fid']:8.2f} {r['kid'] * 1000:7.2f} ± {r['kid_std_error'] * 1000:4.2f}" if "fid" in r
                else f"{'-':>8s} {'-':>14s}")
        cycle = f"{r['cycle_l1_255']:9.2f}" if r.get("cycle_l1_255") is not None else f"{'-':>9s}"
        colour = f"{r['colour_swd_255']:7.2f}" if r.get("colour_swd_255") is not None else f"{'-':>7s}"
        lines.append(f"{direction:10s} {r['images']:7d} {dist} {cycle} {colour} {truth}")
    lines.append("(FID/KID and the colour distance (sliced Wasserstein of the pixel colours) against the real test "
                 "images of the target domain; L1 and colour in [0, 255] units; PSNR, SSIM and L1 against --truth)")
    return "\n".join(lines)


def evaluate_latest(trainer) -> dict[str, float]:
    """The hook ``cyclegan.fit`` runs every --eval_freq epochs: the run's latest checkpoint measured on
    the test split (FID and KID only when the Inception weights are at hand), as flat numbers; {} when
    the run has no test split."""
    import logging

    from .checkpoint import LATEST
    from .inception import find_weights

    t = trainer.config.train
    try:
        find_weights(download=False)
        fid = True
    except FileNotFoundError:
        fid = False  # the cheap metrics only; FID needs the Inception weights at hand
    try:
        report = evaluate_run(trainer.run_dir / LATEST, fid=fid, truth=t.eval_truth or None, device=str(trainer.device))
    except FileNotFoundError as exc:
        logging.getLogger(__name__).warning("no evaluation at epoch %d: %s", trainer.epoch - 1, exc)
        return {}
    return flatten_results(report["results"])
