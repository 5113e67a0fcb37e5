"""The CycleGAN objectives: adversarial (least squares or cross-entropy), cycle and identity L1."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GANLoss(nn.Module):
    """Adversarial loss against an all-real (1) or all-fake (0) target of the prediction's shape.

    ``lsgan``: mean squared error (the paper); ``vanilla``: binary cross-entropy on logits.
    """

    MODES = ("lsgan", "vanilla")

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown gan_mode {mode!r}; valid: {', '.join(self.MODES)}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * mean |F(G(x)) - x|."""
    return weight * F.l1_loss(reconstructed, real)


def identity_loss(same: torch.Tensor, real: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * mean |G(y) - y|: a generator fed its own target domain should change nothing."""
    return weight * F.l1_loss(same, real)
