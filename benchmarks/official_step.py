"""The official training step, operation for operation: the yardstick for every speed-up.

``reference_step`` follows the official ``CycleGANModel.optimize_parameters``: eager, NCHW, fp32,
one ``backward`` per discriminator, and the caller passes the official for-loop Adam
(``foreach=False``). The trainer's step must compute the same losses and the same updates
(``tests/test_speed.py``) and is measured against this one (``benchmarks/train_speed.py``).
It lives with the benchmarks because only they and the tests use it.
"""

from __future__ import annotations

import itertools

import torch
from torch.nn import functional as F

from cyclegan.image_pool import ImagePool
from cyclegan.objective import CycleGAN, set_requires_grad


def reference_optimizers(model: CycleGAN, *, lr: float = 2e-4, beta1: float = 0.5,
                         fused: bool = False) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """The official optimizers: Adam over both generators, Adam over both discriminators, for-loop kernel
    (``fused=True``: the trainer's kernel, for comparing the rest of the step bit for bit)."""
    kernel = {"fused": True} if fused else {"foreach": False}
    betas = (beta1, 0.999)
    opt_g = torch.optim.Adam(itertools.chain(model.g_ab.parameters(), model.g_ba.parameters()), lr=lr, betas=betas,
                             **kernel)
    opt_d = torch.optim.Adam(itertools.chain(model.d_a.parameters(), model.d_b.parameters()), lr=lr, betas=betas,
                             **kernel)
    return opt_g, opt_d


def reference_step(model: CycleGAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, pool_a: ImagePool,
                   pool_b: ImagePool, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
    """One official iteration; returns the eight losses."""
    g_ab, g_ba, d_a, d_b, gan = model.g_ab, model.g_ba, model.d_a, model.d_b, model.gan_loss
    lambda_a, lambda_b, lambda_idt = model.lambda_a, model.lambda_b, model.lambda_identity
    # forward()
    fake_b = g_ab(real_a)
    rec_a = g_ba(fake_b)
    fake_a = g_ba(real_b)
    rec_b = g_ab(fake_a)
    # G_A and G_B
    set_requires_grad([d_a, d_b], False)
    opt_g.zero_grad()
    if lambda_idt > 0:
        loss_idt_a = F.l1_loss(g_ab(real_b), real_b) * lambda_b * lambda_idt
        loss_idt_b = F.l1_loss(g_ba(real_a), real_a) * lambda_a * lambda_idt
    else:
        loss_idt_a = loss_idt_b = torch.zeros(())
    loss_g_a = gan(d_b(fake_b), True)
    loss_g_b = gan(d_a(fake_a), True)
    loss_cycle_a = F.l1_loss(rec_a, real_a) * lambda_a
    loss_cycle_b = F.l1_loss(rec_b, real_b) * lambda_b
    loss_g = loss_g_a + loss_g_b + loss_cycle_a + loss_cycle_b + loss_idt_a + loss_idt_b
    loss_g.backward()
    opt_g.step()
    # D_A and D_B
    set_requires_grad([d_a, d_b], True)
    opt_d.zero_grad()
    loss_d_a = _backward_d(model, d_b, real_b, pool_b.query(fake_b))
    loss_d_b = _backward_d(model, d_a, real_a, pool_a.query(fake_a))
    opt_d.step()
    losses = {"D_A": loss_d_a, "G_A": loss_g_a, "cycle_A": loss_cycle_a, "idt_A": loss_idt_a,
              "D_B": loss_d_b, "G_B": loss_g_b, "cycle_B": loss_cycle_b, "idt_B": loss_idt_b}
    return {name: float(value.detach()) for name, value in losses.items()}


def _backward_d(model: CycleGAN, d, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    loss = model.discriminator_loss(d, real, fake)
    loss.backward()
    return loss.detach()
