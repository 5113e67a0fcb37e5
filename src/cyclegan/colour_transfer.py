"""Unpaired colour transfers between two sets of colours, and the cubic colour maps that hold them.

Both use nothing but the two colour distributions, as an unpaired method must. ``channel_transfer``
matches each channel's histogram on its own (one monotone tone curve per channel: the least displacement
that matches every channel's distribution); ``distribution_transfer``, the iterative distribution transfer
of Pitie et al. (2005), matches the joint distribution. ``--colour_transfer_start`` starts each generator's
colour map (a cubic polynomial of the channels, ``models.ColourMap``) at a cubic fitted to one of them, and
the benchmarks use the joint transfer as the unpaired reference of a task.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .models.layers import cubic_features


RIDGE = 1e-3  # per pixel: keeps a cubic fitted to nearly collinear colours (a sepia domain) from huge coefficients


def fit_cubic(source: torch.Tensor, target: torch.Tensor, *, ridge: float = RIDGE) -> tuple[torch.Tensor, torch.Tensor]:
    """The ridge-regularised least-squares cubic map from ``source`` colours to ``target`` colours ((N, C) each,
    paired by row): (weight (C_out, terms), bias (C_out,)), so that target ~ cubic_features(source) @ weight.T + bias.

    Where the source colours lie near a curve (a toned or greyscale domain) the plain least squares fits the
    noise across it with coefficients in the tens of thousands, and colours off the curve, which training
    soon feeds the generator, come out wild; ``ridge`` x N on the diagonal (not on the constant) prevents it.
    ``ridge=0`` is the plain least squares, for measuring how well a cubic fits (the benchmarks' analysis).
    """
    features = cubic_features(source.double(), dim=1)
    design = torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype)], dim=1)
    if ridge == 0:  # the plain least squares, the minimum-norm solution where the colours span too little
        solution = torch.linalg.lstsq(design, target.double(), driver="gelsd").solution
    else:
        penalty = torch.eye(design.shape[1], dtype=design.dtype) * ridge * len(design)
        penalty[-1, -1] = 0.0
        solution = torch.linalg.solve(design.T @ design + penalty, design.T @ target.double())  # (terms + 1, C_out)
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


def channel_transfer(source: np.ndarray, target: np.ndarray, *, quantiles: int = 1001) -> Callable[[np.ndarray], np.ndarray]:
    """Fit, for every channel on its own, the monotone curve that gives ``source``'s values ((N, C) in [0, 1])
    the distribution of ``target``'s ((M, C), unpaired): histogram matching. Returns the mapping of (K, C) colours."""
    levels = np.linspace(0.0, 1.0, quantiles)
    curves = [(np.quantile(source[:, k], levels), np.quantile(target[:, k], levels)) for k in range(source.shape[1])]

    def apply(pixels: np.ndarray) -> np.ndarray:
        out = np.array(pixels, dtype=np.float64)
        for k, (from_q, to_q) in enumerate(curves):
            out[:, k] = np.interp(out[:, k], from_q, to_q)
        return out

    return apply


TRANSFERS = {"channels": lambda source, target, seed: channel_transfer(source, target),
             "joint": lambda source, target, seed: distribution_transfer(source, target, seed=seed)}


def transfer_as_cubic(source: torch.Tensor, target: torch.Tensor, *, kind: str = "joint",
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A cubic colour map, on the [-1, 1] scale of the networks, that carries the colours ``source`` ((N, C) in
    [-1, 1]) to the distribution of ``target`` ((M, C) in [-1, 1], unpaired): the transfer of that ``kind``
    (a key of TRANSFERS), fitted and then fitted by a cubic. Returns ``fit_cubic``'s (weight, bias)."""
    if kind not in TRANSFERS:
        raise ValueError(f"unknown colour transfer {kind!r}; valid: {', '.join(TRANSFERS)}")
    to_unit = lambda x: (x.double().cpu().numpy() + 1.0) / 2.0  # noqa: E731
    moved = TRANSFERS[kind](to_unit(source), to_unit(target), seed)(to_unit(source))
    return fit_cubic(source.double().cpu(), torch.from_numpy(moved) * 2.0 - 1.0)
