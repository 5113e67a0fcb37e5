"""Unpaired colour transfer between two sets of colours, and the cubic colour maps that hold it.

The iterative distribution transfer of Pitie et al. (2005) matches one colour distribution to another
using nothing but the two distributions, as an unpaired method must. ``--colour_transfer_start`` starts
each generator's colour map (a cubic polynomial of the channels, ``models.ColourMap``) at a cubic fitted to
that transfer, and the benchmarks use the transfer as the unpaired reference of a task.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .models.layers import cubic_features


def fit_cubic(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The least-squares cubic map from ``source`` colours to ``target`` colours ((N, C) each, paired by row):
    (weight (C_out, terms), bias (C_out,)), so that target ~ cubic_features(source) @ weight.T + bias."""
    features = cubic_features(source.double(), dim=1)
    design = torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, target.double()).solution  # (terms + 1, C_out)
    return solution[:-1].T.contiguous(), solution[-1].contiguous()


def distribution_transfer(source: np.ndarray, target: np.ndarray, *, iterations: int = 30, quantiles: int = 1001,
                          seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Fit the iterative distribution transfer from ``source`` colours to ``target`` colours ((N, C) arrays in
    [0, 1], unpaired) and return the fitted mapping of (M, C) colours.

    Each round rotates colour space at random and matches every rotated axis's 1-D distribution by quantiles.
    """
    rng = np.random.default_rng(seed)
    levels = np.linspace(0.0, 1.0, quantiles)
    steps = []  # (rotation, per-axis (source quantiles, target quantiles))
    current = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    for _ in range(iterations):
        rotation, _ = np.linalg.qr(rng.normal(size=(current.shape[1],) * 2))
        rotated, rotated_target = current @ rotation, target @ rotation
        axes = [(np.quantile(rotated[:, k], levels), np.quantile(rotated_target[:, k], levels))
                for k in range(rotated.shape[1])]
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


def transfer_as_cubic(source: torch.Tensor, target: torch.Tensor, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A cubic colour map, on the [-1, 1] scale of the networks, that carries the colours ``source`` ((N, C) in
    [-1, 1]) to the distribution of ``target`` ((M, C) in [-1, 1], unpaired): the distribution transfer, fitted
    and then fitted by a cubic. Returns ``fit_cubic``'s (weight, bias)."""
    to_unit = lambda x: (x.double().cpu().numpy() + 1.0) / 2.0  # noqa: E731
    moved = distribution_transfer(to_unit(source), to_unit(target), seed=seed)(to_unit(source))
    return fit_cubic(source.double().cpu(), torch.from_numpy(moved) * 2.0 - 1.0)
