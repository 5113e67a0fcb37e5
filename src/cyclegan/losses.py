"""The CycleGAN objectives: adversarial (least squares or cross-entropy), cycle and identity L1, the
colour-moment loss (--lambda_colour) and CUT's PatchNCE (--lambda_NCE)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .names import GAN_MODES


class GANLoss(nn.Module):
    """Adversarial loss against an all-real (1) or all-fake (0) target of the prediction's shape.

    ``lsgan``: mean squared error (the paper); ``vanilla``: binary cross-entropy on logits;
    ``wgangp``: the Wasserstein critic loss, -mean(D) for real and mean(D) for fake (its gradient
    penalty is ``gradient_penalty``). A list of predictions (a multi-scale discriminator's) gets
    the mean of their losses.
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode {mode!r}; valid: {', '.join(GAN_MODES)}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor | list[torch.Tensor], target_is_real: bool) -> torch.Tensor:
        if isinstance(prediction, list):
            return torch.stack([self(scale, target_is_real) for scale in prediction]).mean()
        if self.mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor, weight: float, beta: float = 0.0,
               blur: int = 0) -> torch.Tensor:
    """weight * mean |F(G(x)) - x| (the paper), or with ``beta`` > 0 the smooth L1 of that error: quadratic
    below beta, so its pull on an error fades as the error does, and the L1's beyond it.

    With ``blur`` = N > 0 as well, only the error's local mean over N x N pixels (its tone) is smooth L1;
    what is left (its detail) keeps the L1: a global tone can leave the identity without the detail
    losing the L1's hold on small errors."""
    if beta <= 0:
        return weight * F.l1_loss(reconstructed, real)
    if blur <= 0:
        return weight * F.smooth_l1_loss(reconstructed, real, beta=beta)
    error = reconstructed - real
    tone = local_mean(error, blur)
    return weight * (F.smooth_l1_loss(tone, torch.zeros_like(tone), beta=beta) + (error - tone).abs().mean())


def local_mean(images: torch.Tensor, size: int) -> torch.Tensor:
    """The mean over the size x size window around each pixel (reflected at the borders), same shape."""
    before = size // 2
    padded = F.pad(images, (before, size - 1 - before, before, size - 1 - before), mode="reflect")
    return F.avg_pool2d(padded, size, stride=1)


def identity_loss(same: torch.Tensor, real: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * mean |G(y) - y|: a generator fed its own target domain should change nothing."""
    return weight * F.l1_loss(same, real)


def residual_loss(output: torch.Tensor, base: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * mean |G(x) - clamp(base(x))|: what a global-residual generator's residual changes in its output.

    The gradient flows into both sides, so a trained colour map under the residual (the base) is not pulled by
    it: only the residual is held back.
    """
    return weight * F.l1_loss(output, base.clamp(-1.0, 1.0))


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, weight: float = 10.0) -> torch.Tensor:
    """weight * mean((|grad D(x)|_2 - 1)^2) at x = a random mix of real and fake (WGAN-GP, "mixed").

    ``fake`` should be detached; the graph is kept so that the penalty trains ``d``.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    judged = d(mixed)
    total = sum(scale.sum() for scale in judged) if isinstance(judged, list) else judged.sum()
    (grad,) = torch.autograd.grad(total, mixed, create_graph=True)
    norm = (grad.flatten(1) + 1e-16).norm(2, dim=1)  # (B,)
    return weight * ((norm - 1.0) ** 2).mean()


ColourSums = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def colour_sums(images: torch.Tensor) -> ColourSums:
    """(pixel count, per-channel sum (C,), sum of channel outer products (C, C)) of (N, C, H, W) images."""
    pixels = images.float().transpose(0, 1).flatten(1)  # (C, N*H*W)
    return pixels.new_tensor(float(pixels.shape[1])), pixels.sum(1), pixels @ pixels.T


def add_sums(first: ColourSums, second: ColourSums) -> ColourSums:
    return tuple(a + b for a, b in zip(first, second))  # type: ignore[return-value]


def colour_moments(sums: ColourSums) -> torch.Tensor:
    """The mean colour (C,) and the upper triangle of the colour covariance, concatenated."""
    count, total, outer = sums
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    rows, cols = torch.triu_indices(len(mean), len(mean), device=mean.device)
    return torch.cat([mean, covariance[rows, cols]])


def colour_moment_loss(fake: torch.Tensor, target: torch.Tensor, history: ColourSums | None, weight: float) -> torch.Tensor:
    """weight * |moments(history + fake) - target|^2, with the gradient of that mismatch sent through ``fake``.

    The colour mean and covariance are those of all recently generated images (``history``, the
    detached contents of the discriminator's pool, plus this batch), so only the whole set is pulled
    towards the target domain's moments: each image keeps its own colours. (Matching each batch of
    one image to the domain's moments would push every image to the same mean.) The value is
    weight * |mismatch|^2; the gradient is that of |moments(fake) - moments(fake) + mismatch|^2.
    """
    own = colour_moments(colour_sums(fake))
    whole = colour_sums(fake.detach()) if history is None else add_sums(history, colour_sums(fake.detach()))
    mismatch = (colour_moments(whole) - target).detach()
    return weight * (own - (own.detach() - mismatch)).pow(2).sum()


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, *, images: int, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE (Park et al. 2020): each query patch (of the translation) must pick its own key patch (of the
    input, at the same place) among the other patches of the same image. ``query``, ``key``: (images * P, D),
    L2-normalised; the keys are held fixed, as in the official code."""
    key = key.detach()
    q, k = query.view(images, -1, query.shape[1]), key.view(images, -1, key.shape[1])
    positive = (q * k).sum(dim=2, keepdim=True)  # (B, P, 1)
    negative = torch.bmm(q, k.transpose(1, 2))  # (B, P, P); its diagonal is the positive
    eye = torch.eye(q.shape[1], dtype=torch.bool, device=q.device)[None]
    logits = torch.cat([positive, negative.masked_fill(eye, -10.0)], dim=2) / temperature
    target = torch.zeros(logits.shape[0] * logits.shape[1], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.flatten(0, 1), target)
