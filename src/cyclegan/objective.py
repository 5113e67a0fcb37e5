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

``Pix2Pix`` is the paired objective of the official pix2pix model: one generator (g_ab, the official
netG) and a conditional discriminator (d_b, netD) that sees the input and an output stacked, with
the losses ``G_GAN``, ``G_L1``, ``D_real`` and ``D_fake``. Its discriminator is updated before its
generator, as the official ``optimize_parameters`` does.

``CUT`` is the one-sided unpaired objective of Park et al. 2020 (taesungp/contrastive-unpaired-translation):
one generator (g_ab, netG), one discriminator of B (d_b, netD) and PatchNCE's projection head (h_ab, netF),
with the losses ``G_GAN``, ``NCE`` (G(a) against a), ``NCE_Y`` (G(b) against b), ``D_real`` and ``D_fake``.
Like pix2pix, its discriminator is updated first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .config import ExperimentConfig
from .losses import (GANLoss, colour_moment_loss, cycle_loss, gradient_penalty, identity_loss, patch_nce_loss,
                     residual_loss)
from .models import build_discriminator, generator_for
from .models.generators import PatchProjection
from .names import CUT_NETWORK_NAMES, NETWORK_NAMES, PIX2PIX_NETWORK_NAMES

LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
COLOUR_LOSS_NAMES = ("colour_A", "colour_B")  # with --lambda_colour: G_A's fakes against B's moments, G_B's against A's
PAIRED_LOSS_NAMES = ("paired_A", "paired_B")  # with --lambda_paired: |G(a) - b| and |F(b) - a| on known pairs
RESIDUAL_LOSS_NAMES = ("residual_A", "residual_B")  # with --lambda_residual: |G(a) - base(a)|, |F(b) - base(b)|
NCE_LOSS_NAMES = ("NCE_A", "NCE_B")  # with --lambda_NCE: PatchNCE of G(a) against a, of F(b) against b
NCE_HEAD_NAMES = ("h_ab", "h_ba")  # their projection heads, trained with the generators
PIX2PIX_LOSS_NAMES = ("G_GAN", "G_L1", "D_real", "D_fake")
CUT_LOSS_NAMES = ("G_GAN", "NCE", "NCE_Y", "D_real", "D_fake")  # the official CUT names; NCE_Y with --nce_idt


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class Objective(nn.Module):
    """What the Trainer reads of an objective: its network names (the attributes holding them), which are
    generators and discriminators, the losses it logs, and how the sample grid is laid out."""

    network_names: tuple[str, ...] = ()
    trained_with_generators: tuple[str, ...] = ()  # networks that G's optimizer updates beside the generators

    def networks(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in self.network_names}

    def generator_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(losses.values())

    @staticmethod
    def discriminator_total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """A discriminator-first objective's D loss: the mean of its real and fake terms, plus any penalty."""
        return 0.5 * (losses["D_fake"] + losses["D_real"]) + losses.get("D_gp", 0.0)


class CycleGAN(Objective):
    """The four networks and the losses that tie them together."""

    network_names = NETWORK_NAMES
    generator_names = ("g_ab", "g_ba")
    discriminator_names = ("d_a", "d_b")
    loss_names = (LOSS_NAMES + COLOUR_LOSS_NAMES + RESIDUAL_LOSS_NAMES + PAIRED_LOSS_NAMES
                  + NCE_LOSS_NAMES)  # those the configuration computes
    plateau_losses = ("cycle_A", "cycle_B")  # their epoch mean drives --lr_policy plateau
    sample_rows = (("real_a", "fake_b", "rec_a"), ("real_b", "fake_a", "rec_b"))
    discriminator_first = False

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
        lambda_residual: float = 0.0,
        lambda_paired: float = 0.0,
        nce: PatchNCE | None = None,
        cycle_beta: float = 0.0,
        cycle_beta_blur: int = 0,
    ):
        super().__init__()
        self.g_ab, self.g_ba, self.d_a, self.d_b = g_ab, g_ba, d_a, d_b
        self.lambda_paired = lambda_paired
        self.nce = nce
        if nce is not None:
            self.h_ab, self.h_ba = nce.heads(g_ab), nce.heads(g_ba)
            self.network_names = NETWORK_NAMES + NCE_HEAD_NAMES
            self.trained_with_generators = NCE_HEAD_NAMES
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_a, self.lambda_b, self.lambda_identity = lambda_a, lambda_b, lambda_identity
        self.lambda_gp = lambda_gp
        self.lambda_colour = lambda_colour
        self.lambda_residual = lambda_residual
        self.cycle_share = 1.0  # of lambda_a and lambda_b, for the cycle terms only (the trainer ramps it)
        self.cycle_beta = cycle_beta
        self.cycle_beta_blur = cycle_beta_blur

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
            "cycle_A": cycle_loss(images["rec_a"], real_a, self.lambda_a * self.cycle_share, self.cycle_beta,
                                  self.cycle_beta_blur),
            "cycle_B": cycle_loss(images["rec_b"], real_b, self.lambda_b * self.cycle_share, self.cycle_beta,
                                  self.cycle_beta_blur),
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
        if self.lambda_residual > 0:
            losses["residual_A"] = residual_loss(images["fake_b"], self.g_ab.base(real_a), self.lambda_residual)
            losses["residual_B"] = residual_loss(images["fake_a"], self.g_ba.base(real_b), self.lambda_residual)
        if self.lambda_paired > 0:
            losses.update(self.paired_losses(images))
        if self.nce is not None:
            losses["NCE_A"] = self.nce.loss(self.g_ab, self.h_ab, images["real_a"], images["fake_b"])
            losses["NCE_B"] = self.nce.loss(self.g_ba, self.h_ba, images["real_b"], images["fake_a"])
        return losses

    def paired_losses(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """lambda_paired |G(a) - b| and lambda_paired |F(b) - a| over the batch items whose partner b is known
        (``images["partner_b"]``, ``images["has_partner"]``); zero when none is."""
        known = images.get("has_partner")
        if known is None or not bool(known.any()):
            zero = images["real_a"].new_zeros(())
            return {"paired_A": zero, "paired_B": zero}
        real_a, partner = images["real_a"][known], images["partner_b"][known]
        return {"paired_A": cycle_loss(images["fake_b"][known], partner, self.lambda_paired),
                "paired_B": cycle_loss(self.g_ba(partner), real_a, self.lambda_paired)}

    def discriminator_loss(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """0.5 * (GAN(D(real), real) + GAN(D(fake), fake)), with ``fake`` detached from its generator;
        plus the gradient penalty for wgangp."""
        fake = fake.detach()
        loss = 0.5 * (self.gan_loss(d(real), True) + self.gan_loss(d(fake), False))
        if self.gan_loss.mode == "wgangp":
            loss = loss + gradient_penalty(d, real, fake, weight=self.lambda_gp)
        return loss


@dataclass(frozen=True)
class PatchNCE:
    """CUT's PatchNCE as a term of the generator loss: ``weight`` (--lambda_NCE), ``patches`` per layer and
    image, softmax ``temperature``; averaged over the encoder layers of ``ResnetGenerator.encode``."""

    weight: float
    patches: int = 256
    temperature: float = 0.07

    @staticmethod
    def heads(generator: nn.Module) -> PatchProjection:
        return PatchProjection(generator.encoder_channels())

    def loss(self, generator: nn.Module, head: PatchProjection, source: torch.Tensor, translated: torch.Tensor, *,
             flipped: bool = False):
        """``flipped``: ``translated`` is the translation of the source flipped left to right, so its features are
        flipped back before they are compared (CUT's flip equivariance)."""
        keys, locations = head(generator.encode(source), self.patches)
        features = generator.encode(translated)
        if flipped:
            features = [feature.flip(3) for feature in features]
        queries, _ = head(features, self.patches, locations)
        per_layer = [patch_nce_loss(q, k, images=source.shape[0], temperature=self.temperature)
                     for q, k in zip(queries, keys)]
        return sum(self.weight * loss for loss in per_layer) / len(per_layer)  # the official order of operations


class GeneratorSide(nn.Module):
    """The generators and every generator loss that needs no discriminator update first, in one forward.

    DistributedDataParallel needs exactly one forward per backward, and a generator is used up to
    three times per iteration (translation, reconstruction, identity): inside one forward that is fine.
    CycleGAN: both generators and all their losses (its discriminators are held fixed). pix2pix and CUT,
    whose discriminator is updated between G's forward and G's backward: the translations, and CUT's PatchNCE.
    """

    def __init__(self, model: Objective):
        super().__init__()
        for name in model.generator_names + model.trained_with_generators:  # registered here, so that DDP keeps
            setattr(self, name, getattr(model, name))                       # their gradients in step
        self._model = [model]  # a plain list: the discriminators must not become this module's parameters

    def forward(self, real_a: torch.Tensor, real_b: torch.Tensor, colour: dict | None = None,
                partners: dict[str, torch.Tensor] | None = None):
        """``partners``: {"partner_b": the known partners of real_a (any value where unknown), "has_partner": a
        boolean per item}, for --lambda_paired."""
        model = self._model[0]
        if model.discriminator_first:
            return model.translate(real_a, real_b)
        images = {**model.translate_both(real_a, real_b), **(partners or {})}
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


class Pix2Pix(Objective):
    """The official pix2pix objective (Isola et al. 2017): G translates A into B; D judges (a, b) stacked.

    D = 0.5 (GAN(D(a, G(a)), fake) + GAN(D(a, b), real)); G = GAN(D(a, G(a)), real) + lambda_L1 |G(a) - b|.
    """

    network_names = PIX2PIX_NETWORK_NAMES
    generator_names = ("g_ab",)
    discriminator_names = ("d_b",)
    loss_names = PIX2PIX_LOSS_NAMES
    plateau_losses = ("G_L1",)
    sample_rows = (("real_a", "fake_b", "real_b"),)
    discriminator_first = True

    def __init__(self, g_ab: nn.Module, d_b: nn.Module, *, gan_mode: str = "vanilla", lambda_l1: float = 100.0,
                 lambda_gp: float = 10.0):
        super().__init__()
        self.g_ab, self.d_b = g_ab, d_b
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_l1, self.lambda_gp = lambda_l1, lambda_gp

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor):
        """The images ({real_a, fake_b = G(a), real_b}) and the losses that need no discriminator (none)."""
        return {"real_a": real_a, "fake_b": self.g_ab(real_a), "real_b": real_b}, {}

    @staticmethod
    def discriminator_input(images: dict[str, torch.Tensor]) -> torch.Tensor:
        """What D judges as fake: the input and its translation, stacked."""
        return torch.cat([images["real_a"], images["fake_b"]], 1)

    def generator_losses(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """G_GAN = GAN(D(a, G(a)), real) and G_L1 = lambda_L1 |G(a) - b| (the discriminator held fixed)."""
        fake_ab = torch.cat([images["real_a"], images["fake_b"]], 1)
        return {"G_GAN": self.gan_loss(self.d_b(fake_ab), True),
                "G_L1": self.lambda_l1 * F.l1_loss(images["fake_b"], images["real_b"])}

    def discriminator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_ab: torch.Tensor) -> dict[str, torch.Tensor]:
        """D_fake on the (pooled) stacked fake pair, detached, then D_real on (a, b): the official order."""
        fake_ab = fake_ab.detach()
        real_ab = torch.cat([real_a, real_b], 1)
        losses = {"D_fake": self.gan_loss(self.d_b(fake_ab), False), "D_real": self.gan_loss(self.d_b(real_ab), True)}
        if self.gan_loss.mode == "wgangp":
            losses["D_gp"] = gradient_penalty(self.d_b, real_ab, fake_ab, weight=self.lambda_gp)
        return losses


class CUT(Objective):
    """CUT (Park et al. 2020): G translates A into B; D judges B; PatchNCE ties each patch of G(a) to the patch
    of a at the same place, against the other patches of a, through G's own encoder and a projection head.

    D = 0.5 (GAN(D(G(a)), fake) + GAN(D(b), real)); G = GAN(D(G(a)), real) + NCE(G(a), a), or with ``nce_idt``
    GAN(D(G(a)), real) + 0.5 (NCE(G(a), a) + NCE(G(b), b)), as the official cut_model. Each NCE carries lambda_NCE.
    """

    generator_names = ("g_ab",)
    discriminator_names = ("d_b",)
    trained_with_generators = ("h_ab",)
    loss_names = CUT_LOSS_NAMES
    plateau_losses = ("NCE",)
    discriminator_first = True
    network_names = CUT_NETWORK_NAMES

    def __init__(self, g_ab: nn.Module, d_b: nn.Module, nce: PatchNCE, *, nce_idt: bool = True,
                 flip_equivariance: bool = False, gan_mode: str = "lsgan", lambda_gp: float = 10.0):
        super().__init__()
        self.g_ab, self.d_b, self.h_ab = g_ab, d_b, nce.heads(g_ab)
        self.nce, self.nce_idt, self.flip_equivariance = nce, nce_idt, flip_equivariance
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_gp = lambda_gp
        self.sample_rows = (("real_a", "fake_b", "real_b", "idt_b") if nce_idt else ("real_a", "fake_b", "real_b"),)

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor):
        """The images (fake_b = G(a), with nce_idt idt_b = G(b), in one batch as the official forward) and the
        PatchNCE losses, which need no discriminator. With flip equivariance, half of the time (drawn from torch's
        global RNG) G translates the batch flipped left to right, as the official forward does."""
        images = {"real_a": real_a, "real_b": real_b}
        flipped = self.flip_equivariance and bool(torch.rand(()) < 0.5)
        inputs = torch.cat([real_a, real_b]) if self.nce_idt else real_a
        outputs = self.g_ab(inputs.flip(3) if flipped else inputs)
        if self.nce_idt:
            images["fake_b"], images["idt_b"] = outputs.split([len(real_a), len(real_b)])
        else:
            images["fake_b"] = outputs
        losses = {"NCE": self.nce.loss(self.g_ab, self.h_ab, real_a, images["fake_b"], flipped=flipped)}
        if self.nce_idt:
            losses["NCE_Y"] = self.nce.loss(self.g_ab, self.h_ab, real_b, images["idt_b"], flipped=flipped)
        return images, losses

    @staticmethod
    def discriminator_input(images: dict[str, torch.Tensor]) -> torch.Tensor:
        return images["fake_b"]

    def generator_losses(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """G_GAN = GAN(D(G(a)), real), the discriminator held fixed."""
        return {"G_GAN": self.gan_loss(self.d_b(images["fake_b"]), True)}

    def generator_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        nce = 0.5 * (losses["NCE"] + losses["NCE_Y"]) if self.nce_idt else losses["NCE"]
        return losses["G_GAN"] + nce

    def discriminator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """D_fake on the (pooled) fake B, detached, then D_real on b (``real_a`` is not judged)."""
        fake_b = fake_b.detach()
        losses = {"D_fake": self.gan_loss(self.d_b(fake_b), False), "D_real": self.gan_loss(self.d_b(real_b), True)}
        if self.gan_loss.mode == "wgangp":
            losses["D_gp"] = gradient_penalty(self.d_b, real_b, fake_b, weight=self.lambda_gp)
        return losses


class ConditionalDiscriminatorSide(nn.Module):
    """The discriminator losses of a discriminator-first objective (pix2pix, CUT) in one forward (one forward
    per backward, for DistributedDataParallel)."""

    def __init__(self, model: Pix2Pix | CUT):
        super().__init__()
        self.d_b = model.d_b
        self._model = [model]

    def forward(self, real_a, real_b, fake) -> dict[str, torch.Tensor]:
        return self._model[0].discriminator_losses(real_a, real_b, fake)


def build_objective(config: ExperimentConfig) -> CycleGAN | Pix2Pix | CUT:
    """The objective ``config.model.model`` names, with freshly initialised networks."""
    builders = {"pix2pix": build_pix2pix, "cut": build_cut, "cycle_gan": build_cyclegan}
    return builders[config.model.model](config)


def build_cut(config: ExperimentConfig) -> CUT:
    """G: A -> B, D of B, then PatchNCE's head (init draws from torch's global RNG, G first, as the official model)."""
    m, t = config.model, config.train
    return CUT(generator_for(m, "AtoB"), build_discriminator(m, in_channels=m.output_nc),
               PatchNCE(t.lambda_NCE, t.num_patches, t.nce_T), nce_idt=t.nce_idt,
               flip_equivariance=t.flip_equivariance, gan_mode=t.gan_mode, lambda_gp=t.lambda_gp)


def build_pix2pix(config: ExperimentConfig) -> Pix2Pix:
    """G: input_nc -> output_nc; D judges input_nc + output_nc channels (init draws from torch's global RNG,
    G first, as the official model)."""
    m, t = config.model, config.train
    return Pix2Pix(generator_for(m, "AtoB"), build_discriminator(m, in_channels=m.input_nc + m.output_nc),
                   gan_mode=t.gan_mode, lambda_l1=t.lambda_L1, lambda_gp=t.lambda_gp)


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
        lambda_residual=t.lambda_residual,
        lambda_paired=t.lambda_paired,
        nce=PatchNCE(t.lambda_NCE, t.num_patches, t.nce_T) if t.lambda_NCE > 0 else None,
        cycle_beta=t.cycle_beta,
        cycle_beta_blur=t.cycle_beta_blur,
    )
