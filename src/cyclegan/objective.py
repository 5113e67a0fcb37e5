"""The CycleGAN objective: the four networks, their losses, and the two forwards that compute them.

Names, paper and official code side by side:

=========  ==============  ==================  ========================================
here       paper           official code       role
=========  ==============  ==================  ========================================
g_ab       G: X -> Y       netG_A              translates domain A into domain B
g_ba       F: Y -> X       netG_B              translates domain B into domain A
d_b        D_Y             netD_A              judges domain B: real_b vs fake_b
d_a        D_X             netD_B              judges domain A: real_a vs fake_a
=========  ==============  ==================  ========================================

The eight logged losses keep the official names: ``G_A`` = GAN(d_b(fake_b)), ``D_A`` = loss of
d_b, ``cycle_A`` = lambda_A |g_ba(g_ab(a)) - a|, ``idt_A`` = lambda_identity lambda_B |g_ab(b) - b|,
and the mirror images ``G_B``, ``D_B`` (d_a), ``cycle_B``, ``idt_B``.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ExperimentConfig
from .losses import GANLoss, colour_moment_loss, cycle_loss, gradient_penalty, identity_loss
from .models import build_discriminator, generator_for
from .names import NETWORK_NAMES

LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
COLOUR_LOSS_NAMES = ("colour_A", "colour_B")  # with --lambda_colour: G_A's fakes against B's moments, G_B's against A's


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class CycleGAN(nn.Module):
    """The four networks and the losses that tie them together."""

    def __init__(
        self,
        g_ab: nn.Module,
        g_ba: nn.Module,
        d_a: nn.Module,
        d_b: nn.Module,
        *,
        gan_mode: str = "lsgan",
        lambda_a: float = 10.0,
        lambda_b: float = 10.0,
        lambda_identity: float = 0.5,
        lambda_gp: float = 10.0,
        lambda_colour: float = 0.0,
    ):
        super().__init__()
        self.g_ab, self.g_ba, self.d_a, self.d_b = g_ab, g_ba, d_a, d_b
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_a, self.lambda_b, self.lambda_identity = lambda_a, lambda_b, lambda_identity
        self.lambda_gp = lambda_gp
        self.lambda_colour = lambda_colour

    def networks(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in NETWORK_NAMES}

    def translate_both(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """fake_b = G(a), rec_a = F(G(a)), fake_a = F(b), rec_b = G(F(b))."""
        fake_b = self.g_ab(real_a)
        rec_a = self.g_ba(fake_b)
        fake_a = self.g_ba(real_b)
        rec_b = self.g_ab(fake_a)
        return {"real_a": real_a, "fake_b": fake_b, "rec_a": rec_a, "real_b": real_b, "fake_a": fake_a, "rec_b": rec_b}

    def generator_losses(self, images: dict[str, torch.Tensor], colour: dict | None = None) -> dict[str, torch.Tensor]:
        """Adversarial, cycle and identity losses of both generators (discriminators held fixed); with
        ``lambda_colour``, the colour-moment losses too, given ``colour`` = {"a"/"b": (target moments,
        history sums or None)} for the fakes of A and of B."""
        real_a, real_b = images["real_a"], images["real_b"]
        losses = {
            "G_A": self.gan_loss(self.d_b(images["fake_b"]), True),
            "G_B": self.gan_loss(self.d_a(images["fake_a"]), True),
            "cycle_A": cycle_loss(images["rec_a"], real_a, self.lambda_a),
            "cycle_B": cycle_loss(images["rec_b"], real_b, self.lambda_b),
        }
        if self.lambda_identity > 0:
            losses["idt_A"] = identity_loss(self.g_ab(real_b), real_b, self.lambda_b * self.lambda_identity)
            losses["idt_B"] = identity_loss(self.g_ba(real_a), real_a, self.lambda_a * self.lambda_identity)
        else:
            losses["idt_A"] = losses["idt_B"] = real_a.new_zeros(())
        if self.lambda_colour > 0:
            if colour is None:
                raise ValueError("lambda_colour > 0 needs the domains' colour moments (Trainer.set_colour_targets)")
            losses["colour_A"] = colour_moment_loss(images["fake_b"], *colour["b"], self.lambda_colour)
            losses["colour_B"] = colour_moment_loss(images["fake_a"], *colour["a"], self.lambda_colour)
        return losses

    def discriminator_loss(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """0.5 * (GAN(D(real), real) + GAN(D(fake), fake)), with ``fake`` detached from its generator;
        plus the gradient penalty for wgangp."""
        fake = fake.detach()
        loss = 0.5 * (self.gan_loss(d(real), True) + self.gan_loss(d(fake), False))
        if self.gan_loss.mode == "wgangp":
            loss = loss + gradient_penalty(d, real, fake, weight=self.lambda_gp)
        return loss


class GeneratorSide(nn.Module):
    """Both generators and all their losses in one forward (the discriminators are the model's).

    DistributedDataParallel needs exactly one forward per backward, and a generator is used up to
    three times per iteration (translation, reconstruction, identity): inside one forward that is fine.
    """

    def __init__(self, model: CycleGAN):
        super().__init__()
        self.g_ab, self.g_ba = model.g_ab, model.g_ba
        self._model = [model]  # a plain list: the discriminators must not become this module's parameters

    def forward(self, real_a: torch.Tensor, real_b: torch.Tensor, colour: dict | None = None):
        model = self._model[0]
        images = model.translate_both(real_a, real_b)
        return images, model.generator_losses(images, colour)


class DiscriminatorSide(nn.Module):
    """Both discriminator losses in one forward, on the real images and the pooled, detached fakes."""

    def __init__(self, model: CycleGAN):
        super().__init__()
        self.d_a, self.d_b = model.d_a, model.d_b
        self._model = [model]

    def forward(self, real_a, real_b, fake_a, fake_b) -> dict[str, torch.Tensor]:
        model = self._model[0]
        return {"D_A": model.discriminator_loss(self.d_b, real_b, fake_b),
                "D_B": model.discriminator_loss(self.d_a, real_a, fake_a)}


def build_cyclegan(config: ExperimentConfig) -> CycleGAN:
    """Freshly initialised networks for ``config`` (init draws from torch's global RNG)."""
    m, t = config.model, config.train
    return CycleGAN(
        generator_for(m, "AtoB"),
        generator_for(m, "BtoA"),
        build_discriminator(m, in_channels=m.input_nc),
        build_discriminator(m, in_channels=m.output_nc),
        gan_mode=t.gan_mode,
        lambda_a=t.lambda_A,
        lambda_b=t.lambda_B,
        lambda_identity=t.lambda_identity,
        lambda_gp=t.lambda_gp,
        lambda_colour=t.lambda_colour,
    )
