"""The CycleGAN objectives: adversarial (least squares or cross-entropy), cycle and identity L1."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GANLoss(nn.Module):
    """Adversarial loss against an all-real (1) or all-fake (0) target of the prediction's shape.

    ``lsgan``: mean squared error (the paper); ``vanilla``: binary cross-entropy on logits;
    ``wgangp``: the Wasserstein critic loss, -mean(D) for real and mean(D) for fake (its gradient
    penalty is ``gradient_penalty``).
    """

    MODES = ("lsgan", "vanilla", "wgangp")

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown gan_mode {mode!r}; valid: {', '.join(self.MODES)}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        if self.mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
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


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, weight: float = 10.0) -> torch.Tensor:
    """weight * mean((|grad D(x)|_2 - 1)^2) at x = a random mix of real and fake (WGAN-GP, "mixed").

    ``fake`` should be detached; the graph is kept so that the penalty trains ``d``.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(mixed).sum(), mixed, create_graph=True)
    norm = (grad.flatten(1) + 1e-16).norm(2, dim=1)  # (B,)
    return weight * ((norm - 1.0) ** 2).mean()
