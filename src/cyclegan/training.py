"""The CycleGAN model, its training step, and the loop that trains, logs, saves and resumes.

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

import copy
import itertools
import logging
import random
import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import EMA_SUFFIX, LATEST, NETWORK_NAMES, Checkpoint, save_checkpoint
from .config import ExperimentConfig, build_experiment
from .data import Preprocess, UnpairedDataset, unpaired_dataset_from_folders
from .devices import autocast, check_precision, data_workers, describe_data_workers, memory_format, pick_device
from .distributed import SINGLE, Distributed, device_for
from .gallery import write_training_page
from .image_pool import ImagePool
from .losses import (ColourSums, GANLoss, add_sums, colour_moment_loss, colour_moments, colour_sums, cycle_loss,
                     gradient_penalty, identity_loss)
from .models import build_discriminator, generator_for
from .schedules import Plateau, cosine_factor, ema_weight, linear_decay, linear_factor, step_factor, warmup_factor
from .tracking import MetricsLog, TensorBoardLog, atomic_write_text, format_losses, image_grid, progress

log = logging.getLogger(__name__)

LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
COLOUR_LOSS_NAMES = ("colour_A", "colour_B")  # with --lambda_colour: G_A's fakes against B's moments, G_B's against A's
COLOUR_TARGET_IMAGES = 256  # training images per domain whose colour moments are the targets

# Options that may change when a run is resumed: they steer the loop, not what is learnt per step.
RESUME_OVERRIDABLE = frozenset({
    "n_epochs", "n_epochs_decay", "max_iters", "save_epoch_freq", "save_latest_freq", "print_freq",
    "display_freq", "num_threads", "device", "dataroot", "tensorboard", "precision", "allow_emulated_precision",
    "memory_format", "compile", "fused_adam", "on_bad_image", "on_nonfinite", "eval_freq", "eval_truth", "keep_best",
})
HIGHER_IS_BETTER = ("psnr_db", "ssim")


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite; the message says where and what to do."""


# lr multiplier while training epoch ``epoch`` (from 1; fractional within the epoch) of a run of
# ``total`` epochs; plateau is stateful. linear and step keep the official once-per-epoch steps.
LR_FACTORS = {
    "linear": lambda epoch, t, total: linear_factor(int(epoch), n_epochs=t.n_epochs, n_epochs_decay=t.n_epochs_decay),
    "step": lambda epoch, t, total: step_factor(int(epoch), lr_decay_iters=t.lr_decay_iters),
    "cosine": lambda epoch, t, total: cosine_factor(epoch, total_epochs=total),
}


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Every global RNG state, in checkpoint-storable types (no numpy objects)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Owns a run: the model, both Adam optimizers, both image pools, the counters and the run folder.

    ``Trainer(config)`` starts a new run; ``Trainer.resume(run_dir)`` continues one exactly.
    """

    def __init__(self, config: ExperimentConfig, *, device: str | torch.device | None = None,
                 distributed: Distributed = SINGLE):
        self.config = config
        self.dist = distributed
        t = config.train
        self.device = pick_device(device_for(distributed, t.device) if device is None else device)
        if distributed.enabled and t.gan_mode == "wgangp":
            raise ValueError("--gan_mode wgangp is not supported under torchrun: its gradient penalty differentiates "
                             "through the discriminator inside the forward, which DistributedDataParallel does not "
                             "support; train it in one process")
        check_precision(self.device, t.precision, allow_emulated=t.allow_emulated_precision)
        self.memory_format = memory_format(self.device, t.memory_format)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick its fastest kernels once
        seed_everything(t.seed)
        self.model = build_cyclegan(config)
        if distributed.enabled and "batch" in (config.model.norm, config.model.norm_D):
            self._sync_batch_norm()
        self.model.to(self.device, memory_format=self.memory_format)
        # The generators' moving averages (--ema_decay), used for translation; never trained directly.
        self.ema = {f"{name}{EMA_SUFFIX}": copy.deepcopy(getattr(self.model, name)).requires_grad_(False)
                    for name in ("g_ab", "g_ba")} if t.ema_decay > 0 else {}
        self.opt_g = self._adam(itertools.chain(self.model.g_ab.parameters(), self.model.g_ba.parameters()))
        self.opt_d = self._adam(itertools.chain(self.model.d_a.parameters(), self.model.d_b.parameters()))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "fp16")
        if t.compile:
            for net in self.model.networks().values():
                net.compile()  # in place: state_dict keys stay unprefixed
        self.g_side, self.d_side = self._sides()
        pool_seed = t.seed + 1000 * distributed.rank  # every rank keeps its own pools
        self.pool_a = ImagePool(t.pool_size, torch.Generator().manual_seed(pool_seed + 1))  # fakes of A, for d_a
        self.pool_b = ImagePool(t.pool_size, torch.Generator().manual_seed(pool_seed + 2))  # fakes of B, for d_b
        self.epoch = 1  # the epoch being trained, counted from 1
        self.epoch_iter = 0  # batches done in this epoch
        self.total_iters = 0
        self.last_images: dict[str, torch.Tensor] = {}
        self.tensorboard: TensorBoardLog | None = None
        self.plateau = Plateau()  # the plateau lr policy's state, driven by the epoch's mean cycle loss
        self.epoch_cycle_loss: list = [0.0, 0]  # sum of cycle_A + cycle_B over this epoch (a tensor), and the count
        self.best: float | None = None  # the best --keep_best value so far
        self.callback: Callable[["Trainer"], bool] | None = None
        self.iters_per_epoch = 0  # known once fit() has the dataset; makes the cosine lr move within an epoch
        self.colour_targets: dict[str, torch.Tensor] = {}  # --lambda_colour: each domain's colour moments
        self.set_learning_rate()

    def _sync_batch_norm(self) -> None:
        """Batch statistics over all ranks, as one process with the whole batch would compute them."""
        if self.device.type != "cuda":
            raise ValueError("--norm batch under torchrun needs SyncBatchNorm, which runs on CUDA only; on CPUs use "
                             "--norm instance (the CycleGAN default, which needs no synchronisation)")
        for name in NETWORK_NAMES:
            setattr(self.model, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(self.model, name)))

    def _sides(self) -> tuple[nn.Module, nn.Module]:
        """The generator and discriminator objectives, wrapped in DistributedDataParallel under torchrun."""
        g_side, d_side = GeneratorSide(self.model), DiscriminatorSide(self.model)
        if not self.dist.enabled:
            return g_side, d_side
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(g_side, device_ids=ids), DistributedDataParallel(d_side, device_ids=ids)

    def _adam(self, params) -> torch.optim.Adam:
        t = self.config.train
        return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, 0.999), fused=t.fused_adam or None)

    # ---- one iteration -------------------------------------------------------------------

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        """One generator update (discriminators frozen), then one update of both discriminators."""
        return {name: float(value) for name, value in self.train_step_tensors(real_a, real_b).items()}

    def train_step_tensors(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """``train_step`` without reading the losses back to the host (the loop does that every print_freq)."""
        real_a = real_a.to(self.device, memory_format=self.memory_format, non_blocking=True)
        real_b = real_b.to(self.device, memory_format=self.memory_format, non_blocking=True)
        images, generator_losses = self.generator_step(real_a, real_b)
        losses = {**generator_losses, **self.discriminator_step(images)}
        self.scaler.update()
        self.update_ema()
        self.last_images = {k: v[0].detach() for k, v in images.items()}
        return {name: losses[name].detach() for name in LOSS_NAMES + COLOUR_LOSS_NAMES if name in losses}

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- w * ema + (1 - w) * generator, w = ema_weight(total_iters)."""
        if not self.ema:
            return
        w = ema_weight(self.total_iters, decay=self.config.train.ema_decay)
        for name, average in self.ema.items():
            live = getattr(self.model, name[: -len(EMA_SUFFIX)])
            torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), 1.0 - w)
            for kept, current in zip(average.buffers(), live.buffers()):
                kept.copy_(current)

    def networks(self) -> dict[str, nn.Module]:
        """Every network a checkpoint holds: the four trained ones and the generator averages."""
        return {**self.model.networks(), **self.ema}

    def generator_step(self, real_a: torch.Tensor, real_b: torch.Tensor):
        """Translate both ways and update g_ab and g_ba on all their losses; the discriminators get no
        gradient. Returns the images and the losses."""
        discriminators = [self.model.d_a, self.model.d_b]
        set_requires_grad(discriminators, False)
        self.opt_g.zero_grad(set_to_none=True)
        with autocast(self.device, self.config.train.precision):
            images, losses = self.g_side(real_a, real_b, self._colour_inputs())
        total = sum(losses.values())
        self.scaler.scale(total).backward()
        if self._finite(total, losses, "generator"):
            self.scaler.step(self.opt_g)
        set_requires_grad(discriminators, True)
        return images, losses

    def set_colour_targets(self, dataset: UnpairedDataset) -> None:
        """The colour moments of (up to COLOUR_TARGET_IMAGES of) each domain's training images, as trained on."""
        for key in ("a", "b"):
            sums = None
            for image in dataset.spread_sample(key, COLOUR_TARGET_IMAGES, self.config.train.seed):
                sums = colour_sums(image[None]) if sums is None else add_sums(sums, colour_sums(image[None]))
            self.colour_targets[key] = colour_moments(sums).to(self.device)

    def _colour_inputs(self) -> dict[str, tuple[torch.Tensor, ColourSums | None]] | None:
        """For the colour-moment loss: each domain's target moments and the sums of its fakes in the pool."""
        if self.config.train.lambda_colour <= 0:
            return None
        if not self.colour_targets:
            raise ValueError("--lambda_colour needs the domains' colour moments: fit() measures them, or call "
                             "Trainer.set_colour_targets(dataset) before train_step")
        pools = {"a": self.pool_a, "b": self.pool_b}
        return {key: (target, colour_sums(torch.cat(pools[key].images)) if pools[key].images else None)
                for key, target in self.colour_targets.items()}

    def _finite(self, total: torch.Tensor, losses: dict[str, torch.Tensor], which: str) -> bool:
        """Whether the update may be applied; stops the run on a non-finite loss unless told to skip."""
        finite = bool(torch.isfinite(total))
        if not self.dist.any(not finite):  # under torchrun all ranks skip, or stop, together
            return True
        if finite:  # another rank's loss is the non-finite one
            if self.config.train.on_nonfinite == "skip":
                return False
            raise NonFiniteLossError(f"a {which} loss became non-finite on another rank at iteration "
                                     f"{self.total_iters + 1}; stopped (see that rank's message)")
        values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
        if self.config.train.on_nonfinite == "skip":
            log.warning("iteration %d: non-finite %s loss (%s); update skipped", self.total_iters + 1, which, values)
            return False
        raise NonFiniteLossError(
            f"the {which} loss became non-finite at iteration {self.total_iters + 1} ({values}); stopped without "
            f"saving, so {self.run_dir / LATEST} is still the last good checkpoint. Lower --lr, check the data, "
            f"or pass --on_nonfinite skip")

    def discriminator_step(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Update d_b on real B vs pooled fake B, and d_a on real A vs pooled fake A."""
        self.opt_d.zero_grad(set_to_none=True)
        fake_b = self.pool_b.query(images["fake_b"])
        fake_a = self.pool_a.query(images["fake_a"])
        with autocast(self.device, self.config.train.precision):
            losses = self.d_side(images["real_a"], images["real_b"], fake_a, fake_b)
        total = losses["D_A"] + losses["D_B"]
        self.scaler.scale(total).backward()
        if self._finite(total, losses, "discriminator"):
            self.scaler.step(self.opt_d)
        return losses

    # ---- schedule ------------------------------------------------------------------------

    @property
    def total_epochs(self) -> int:
        return self.config.train.n_epochs + self.config.train.n_epochs_decay

    def learning_rate(self) -> float:
        """The lr of the next update: the policy's factor, times the warm-up ramp."""
        t = self.config.train
        warmup = warmup_factor(self.total_iters, warmup_iters=t.warmup_iters)
        if t.lr_policy == "plateau":
            return t.lr * self.plateau.factor * warmup
        epoch = self.epoch + (self.epoch_iter / self.iters_per_epoch if self.iters_per_epoch else 0.0)
        return t.lr * LR_FACTORS[t.lr_policy](epoch, t, self.total_epochs) * warmup

    @property
    def used_lr(self) -> float:
        """The lr of the latest update (``learning_rate`` already looks at the next one)."""
        return self.opt_g.param_groups[0]["lr"]

    def set_learning_rate(self) -> None:
        """Set the lr and the identity-loss weight for the next update (both may change every iteration)."""
        lr = self.learning_rate()
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = lr
        t = self.config.train
        self.model.lambda_identity = t.lambda_identity * linear_decay(self.total_iters, decay_iters=t.lambda_identity_decay_iters)

    # ---- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs."""
        return {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "pool_a": self.pool_a.state_dict(),
            "pool_b": self.pool_b.state_dict(),
            "rng": capture_rng(),
            "counters": {"epoch": self.epoch, "epoch_iter": self.epoch_iter, "total_iters": self.total_iters},
            "schedule": {"plateau": self.plateau.state_dict(),
                         "epoch_cycle_loss": [float(self.epoch_cycle_loss[0]), self.epoch_cycle_loss[1]]},
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            **self._rank_states(),
        }

    def _rank_states(self) -> dict[str, Any]:
        """Under torchrun: every rank's own pools and RNGs, gathered on rank 0 (a collective)."""
        if not self.dist.enabled:
            return {}
        own = {"pool_a": _cpu_pool(self.pool_a.state_dict()), "pool_b": _cpu_pool(self.pool_b.state_dict()),
               "rng": capture_rng()}
        gathered = self.dist.gather(own)
        return {"ranks": gathered} if gathered is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        own = self._own_rank_state(state)
        for pool, key in ((self.pool_a, "pool_a"), (self.pool_b, "pool_b")):
            pool_state = dict(own[key])
            pool_state["images"] = [image.to(self.device) for image in pool_state["images"]]
            pool.load_state_dict(pool_state)
        restore_rng(own["rng"])
        counters = state["counters"]
        self.epoch, self.epoch_iter, self.total_iters = counters["epoch"], counters["epoch_iter"], counters["total_iters"]
        if "schedule" in state:  # absent from checkpoints written before the plateau policy existed
            self.plateau.load_state_dict(state["schedule"]["plateau"])
            total, count = state["schedule"]["epoch_cycle_loss"]
            self.epoch_cycle_loss = [float(total), int(count)]
        self.best = state.get("best")
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.set_learning_rate()

    def _own_rank_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's pools and RNGs: its own when the checkpoint has one per rank, else rank 0's."""
        ranks = state.get("ranks")
        if ranks and len(ranks) == self.dist.world_size:
            return ranks[self.dist.rank]
        if ranks or self.dist.enabled:
            log.warning("the checkpoint was written by %d process(es) and %d resume it: every process starts from the "
                        "pools and RNGs of the first, so the run continues, but not bit for bit",
                        len(ranks or [0]), self.dist.world_size)
        return state

    def info(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "epoch_iter": self.epoch_iter, "total_iters": self.total_iters,
                "lr": self.learning_rate(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def save(self, path: str | Path, *, with_training_state: bool = True) -> Path:
        """Write a checkpoint (rank 0 only; with the training state, every rank must call it)."""
        state = self.state_dict() if with_training_state else None
        if not self.dist.is_main:
            return Path(path)
        return save_checkpoint(path, config=self.config, networks=self.networks(), info=self.info(), training_state=state)

    @classmethod
    def resume(cls, run_dir: str | Path, *, overrides: dict[str, Any] | None = None,
               device: str | torch.device | None = None, distributed: Distributed = SINGLE) -> "Trainer":
        """A trainer in exactly the state of ``run_dir``'s latest checkpoint."""
        run_dir = Path(run_dir)
        checkpoint = Checkpoint(run_dir)
        overrides = dict(overrides or {})
        refused = sorted(set(overrides) - RESUME_OVERRIDABLE - {"name", "checkpoints_dir"})
        changed = [k for k in refused if checkpoint.config.option(k) != overrides[k]]
        if changed:
            raise ValueError(f"cannot change {', '.join(changed)} when resuming {run_dir}: the checkpoint was "
                             f"trained with them; options that may change: {', '.join(sorted(RESUME_OVERRIDABLE))}")
        overrides.update(name=run_dir.name, checkpoints_dir=str(run_dir.parent))
        config = build_experiment({k: v for k, v in overrides.items() if k not in refused}, base=checkpoint.config)
        trainer = cls(config, device=device, distributed=distributed)
        for name, net in trainer.networks().items():
            checkpoint.load_network(name, net)
        trainer.load_state_dict(checkpoint.training_state())
        return trainer

    # ---- the loop ------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    def make_dataset(self) -> UnpairedDataset:
        """The training images, checked up front; bad ones are listed in RUN/bad_images.txt."""
        d, m = self.config.data, self.config.model
        bad: list[tuple[Path, str]] = []
        dataset = unpaired_dataset_from_folders(
            d.dataroot, phase="train", direction=d.direction,
            preprocess=Preprocess(d.preprocess, d.load_size, d.crop_size, flip=not d.no_flip),
            channels_a=m.input_nc, channels_b=m.output_nc, serial=d.serial_batches,
            max_dataset_size=d.max_dataset_size, seed=self.config.train.seed,
            on_bad_image=d.on_bad_image, bad_images=bad,
        )
        listing = self.run_dir / "bad_images.txt"
        if not self.dist.is_main:
            return dataset
        if bad:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(listing, "".join(f"{path}\t{problem}\n" for path, problem in bad))
            log.warning("skipped %d of %d training images that cannot be used; they are listed in %s",
                        len(bad), len(bad) + len(dataset.paths_a) + len(dataset.paths_b), listing)
        elif listing.exists():
            listing.unlink()
        return dataset

    def _shard(self, dataset: UnpairedDataset) -> list[int]:
        """This rank's items of the epoch: all of them, or under torchrun every world_size-th one
        (DistributedSampler; the dataset itself reshuffles A and redraws B every epoch)."""
        if not self.dist.enabled:
            return list(range(len(dataset)))
        from torch.utils.data.distributed import DistributedSampler

        return list(DistributedSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=False))

    def _loader(self, dataset: UnpairedDataset) -> torch.utils.data.DataLoader:
        batch = self.config.train.batch_size
        dataset.set_epoch(self.epoch)
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch, sampler=self._shard(dataset)[self.epoch_iter * batch:],
            num_workers=data_workers(self.config.data.num_threads), drop_last=False,
            pin_memory=self.device.type == "cuda",
            # A private generator, so that making a loader never draws from torch's global RNG.
            generator=torch.Generator().manual_seed(self.config.train.seed + self.epoch),
        )

    def fit(self, dataset: UnpairedDataset | None = None, *, show_progress: bool = True,
            callback: Callable[["Trainer"], bool] | None = None) -> Path:
        """Train until the last epoch (or ``max_iters``); returns the run folder.

        ``callback(trainer)`` runs after every iteration; when it returns True the run stops there,
        saving a resumable checkpoint as at ``max_iters``.
        """
        dataset = dataset if dataset is not None else self.make_dataset()
        self.callback = callback
        self.iters_per_epoch = -(-len(self._shard(dataset)) // self.config.train.batch_size)
        if self.config.train.lambda_colour > 0:
            self.set_colour_targets(dataset)
        metrics = self._open_run_folder()
        log.info("run folder %s: %d images per epoch, epoch %d of %d, iteration %d",
                 self.run_dir, len(dataset), self.epoch, self.total_epochs, self.total_iters)
        if self.dist.is_main:
            log.info("%s", describe_data_workers(self.config.data.num_threads))
        if self.dist.enabled and self.dist.is_main:
            t = self.config.train
            log.info("distributed: %d processes (%s), batch %d each: effective batch %d; lr %g, not scaled with the "
                     "batch; %d iterations per epoch", self.dist.world_size, self.dist.backend, t.batch_size,
                     t.batch_size * self.dist.world_size, t.lr, self.iters_per_epoch)
        try:
            with _InterruptToSave() as interrupt:
                while self.epoch <= self.total_epochs:
                    if not self._train_epoch(dataset, metrics, interrupt, show_progress):
                        break
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
        self.write_page()
        return self.run_dir

    def _open_run_folder(self) -> "MetricsLog | _NoLog":
        """Rank 0 prepares the run folder and its logs; the other ranks write nothing."""
        if not self.dist.is_main:
            return _NoLog()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.run_dir.glob(".*.tmp-*"):  # the half-written file of a killed save
            stale.unlink(missing_ok=True)
        atomic_write_text(self.run_dir / "config.json", self.config.to_json() + "\n")
        metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        metrics.truncate_after(self.total_iters)
        self.tensorboard = TensorBoardLog(self.run_dir / "tensorboard") if self.config.train.tensorboard else None
        return metrics

    def write_page(self) -> Path:
        """Refresh ``RUN/index.html``: loss and lr plots and the sample grids, newest epoch first."""
        t = self.config.train
        summary = (f"{self.config.model.netG}, ngf {self.config.model.ngf}, data {self.config.data.dataroot}; "
                   f"{self.total_iters} iterations, {self.epoch - 1} of {self.total_epochs} epochs done, "
                   f"lr {self.learning_rate():.2e}; "
                   f"batch {t.batch_size}, lambda_A {t.lambda_A}, lambda_B {t.lambda_B}, lambda_identity {t.lambda_identity}")
        if not self.dist.is_main:
            return self.run_dir / "index.html"
        return write_training_page(self.run_dir, title=f"cyclegan run {self.config.name}", summary=summary)

    def _train_epoch(self, dataset: UnpairedDataset, metrics: MetricsLog, interrupt: "_InterruptToSave",
                     show_progress: bool) -> bool:
        """Train the rest of the current epoch; False when the run must stop early."""
        t = self.config.train
        loader = self._loader(dataset)
        batches = self.iters_per_epoch
        bar = progress(loader, total=batches, initial=self.epoch_iter, enabled=show_progress,
                       description=f"epoch {self.epoch}/{self.total_epochs}")
        for batch in bar:
            self.set_learning_rate()
            losses = self.train_step_tensors(batch["A"], batch["B"])
            self.epoch_cycle_loss = [self.epoch_cycle_loss[0] + (losses["cycle_A"] + losses["cycle_B"]).float(),
                                     self.epoch_cycle_loss[1] + 1]
            self.epoch_iter += 1
            self.total_iters += 1
            self._after_iteration(losses, metrics, bar)
            if self._must_stop(interrupt):
                bar.close()
                return False
        bar.close()
        if self.last_images and self.total_iters % t.display_freq:  # the epoch's last grid, unless just saved
            self.save_samples()
        self.end_epoch()
        self.save(self.run_dir / LATEST)
        if (self.epoch - 1) % t.save_epoch_freq == 0 or self.epoch > self.total_epochs:
            self.save(self.run_dir / f"epoch_{self.epoch - 1:04d}.safetensors", with_training_state=False)
        if t.eval_freq and (self.epoch - 1) % t.eval_freq == 0 and self.dist.is_main:
            self.evaluate(metrics)
        self.write_page()
        return True

    def evaluate(self, metrics: MetricsLog) -> dict[str, float]:
        """Evaluate the latest checkpoint on the test split; log the numbers; keep the best checkpoint."""
        from .evaluate import evaluate_run, flatten_results
        from .inception import find_weights

        t = self.config.train
        try:
            find_weights(download=False)
            fid = True
        except FileNotFoundError:
            fid = False  # the cheap metrics only; FID needs the Inception weights at hand
        try:
            report = evaluate_run(self.run_dir / LATEST, fid=fid, truth=t.eval_truth or None, device=str(self.device))
        except FileNotFoundError as exc:
            log.warning("no evaluation at epoch %d: %s", self.epoch - 1, exc)
            return {}
        numbers = flatten_results(report["results"])
        metrics.append({"iter": self.total_iters, "epoch": self.epoch - 1, **{f"eval_{k}": v for k, v in numbers.items()}})
        if self.tensorboard is not None:
            self.tensorboard.scalars(self.total_iters, {f"eval/{k}": v for k, v in numbers.items()})
        log.info("evaluation after epoch %d: %s", self.epoch - 1, ", ".join(f"{k} {v:.4g}" for k, v in numbers.items()))
        if t.keep_best:
            self._keep_best(numbers)
        return numbers

    def _keep_best(self, numbers: dict[str, float]) -> None:
        metric = self.config.train.keep_best
        if metric not in numbers:
            raise ValueError(f"--keep_best {metric}: the evaluation has no such number; it has {', '.join(numbers)}")
        value = numbers[metric]
        higher = metric.endswith(HIGHER_IS_BETTER)
        if self.best is None or (value > self.best if higher else value < self.best):
            self.best = value
            save_checkpoint(self.run_dir / "best.safetensors", config=self.config, networks=self.networks(),
                            info={**self.info(), "best": {metric: value}})
            log.info("new best %s %.4g: saved %s", metric, value, self.run_dir / "best.safetensors")

    def end_epoch(self) -> None:
        """Advance the counters (and the plateau policy, with the epoch's mean cycle loss)."""
        total, count = self.epoch_cycle_loss
        if count:
            self.plateau.end_epoch(float(total) / count)
        self.epoch += 1
        self.epoch_iter = 0
        self.epoch_cycle_loss = [0.0, 0]

    def _after_iteration(self, loss_tensors: dict[str, torch.Tensor], metrics: MetricsLog, bar) -> None:
        t = self.config.train
        if self.total_iters % t.print_freq == 0:  # the only place losses are read back from the device
            losses = {name: value for name, value in zip(loss_tensors, torch.stack(list(loss_tensors.values())).tolist())}
            bar.set_postfix(format_losses(losses), refresh=False)
            metrics.append({"iter": self.total_iters, "epoch": self.epoch, "epoch_iter": self.epoch_iter,
                            "lr": self.used_lr, "time": time.time(), **losses})
            if self.tensorboard is not None:
                self.tensorboard.scalars(self.total_iters, {**losses, "lr": self.used_lr})
        if self.total_iters % t.display_freq == 0:
            self.save_samples()
        if self.total_iters % t.save_latest_freq == 0:
            self.save(self.run_dir / LATEST)

    def _must_stop(self, interrupt: "_InterruptToSave") -> bool:
        max_iters = self.config.train.max_iters
        if self.callback is not None and self.callback(self):
            self.save(self.run_dir / LATEST)
            return True
        if max_iters and self.total_iters >= max_iters:
            self.save(self.run_dir / LATEST)
            log.info("reached max_iters=%d; resume with: cyclegan train --resume %s", max_iters, self.run_dir)
            return True
        if self.dist.any(interrupt.requested):  # torchrun signals every rank, maybe at different iterations
            self.save(self.run_dir / LATEST)
            log.warning("interrupted at iteration %d; saved. Resume with: cyclegan train --resume %s",
                        self.total_iters, self.run_dir)
            return True
        return False

    def save_samples(self) -> Path | None:
        """A grid: real A, fake B, reconstructed A / real B, fake A, reconstructed B (rank 0 only)."""
        if not self.dist.is_main:
            return None
        im = self.last_images
        grid = image_grid([[im["real_a"], im["fake_b"], im["rec_a"]], [im["real_b"], im["fake_a"], im["rec_b"]]])
        folder = self.run_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"epoch_{self.epoch:04d}_iter_{self.total_iters:07d}.png"
        grid.save(path)
        if self.tensorboard is not None:
            self.tensorboard.image("samples", grid, self.total_iters)
        return path


def _cpu_pool(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "images": [image.cpu() for image in state["images"]]}


class _NoLog:
    """The metrics log of ranks other than 0: writes nothing."""

    def append(self, record: dict[str, Any]) -> None:
        pass


class _InterruptToSave:
    """Turns Ctrl-C / SIGTERM into a flag, so the loop saves a checkpoint before it exits."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_InterruptToSave":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

