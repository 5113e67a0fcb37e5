"""The ``Trainer``: the networks on their device, both Adam optimizers, both image pools, the EMA, one
training step, the lr and identity-weight schedules, and the state that makes a resume exact.

The loop that drives it (run folder, logs, samples, evaluation, interrupts) is ``run.fit``; the
networks and their losses are ``objective``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import EMA_SUFFIX, LATEST, Checkpoint, save_checkpoint
from .colour_transfer import transfer_as_cubic
from .config import ExperimentConfig, build_experiment
from .data import UnpairedDataset
from .devices import autocast, check_precision, memory_format, pick_device, resolve_precision, settle_cpu_maths
from .distributed import SINGLE, Distributed, device_for, sync_batch_norm
from .hub import is_hub_name
from .image_pool import ImagePool
from .losses import ColourSums, add_sums, colour_moments, colour_sums
from .names import GENERATOR_FOR_DIRECTION
from .objective import (ConditionalDiscriminatorSide, CycleGAN, DiscriminatorSide, GeneratorSide, build_objective,
                        set_requires_grad)
from .schedules import LR_FACTORS, Plateau, ema_weight, fade_factor, linear_decay, ramp_factor, warmup_factor

log = logging.getLogger(__name__)

COLOUR_TARGET_IMAGES = 256  # training images per domain whose colour moments are the targets
LR_SCALE = "lr_scale"  # an optimizer group's lr as a multiple of the run's (--colour_map_lr's group)
COLOUR_TRANSFER_PIXELS = 200_000  # pixels per domain that --colour_transfer_start's transfer is fitted to

# Options that may change when a run is resumed: they steer the loop, not what is learnt per step.
RESUME_OVERRIDABLE = frozenset({
    "n_epochs", "n_epochs_decay", "max_iters", "save_epoch_freq", "save_latest_freq", "print_freq",
    "display_freq", "num_threads", "device", "dataroot", "tensorboard", "precision", "allow_emulated_precision",
    "memory_format", "compile", "fused_adam", "on_bad_image", "on_nonfinite", "eval_freq", "eval_truth", "keep_best",
})


# Measured with torch 2.13 at 128 px resnet_6blocks: finite losses, non-finite gradients in every generator weight.
COMPILED_BF16_ON_CPU = ("--compile with bf16 on a CPU gives non-finite generator gradients at the first update "
                        "(torch 2.13's compiled CPU backward under bf16 autocast)")


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite; the message says where and what to do."""


@dataclass
class EpochMean:
    """The sum and count of a loss over the current epoch; the sum stays a tensor, so adding to it does
    not wait for the device."""

    total: Any = 0.0
    count: int = 0

    def add(self, value: torch.Tensor) -> None:
        self.total = self.total + value
        self.count += 1


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
    """One run's trainable state: the model, both Adam optimizers, both image pools, the counters.

    ``Trainer(config)`` starts a new run; ``Trainer.resume(run_dir)`` continues one exactly;
    ``cyclegan.fit(trainer)`` trains it.
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
        # --precision auto is resolved here, once; precision_reason is what the start-up line says.
        self.precision, self.precision_reason = resolve_precision(self.device, t.precision)
        if t.compile and self.device.type == "cpu" and self.precision == "bf16":
            if t.precision != "auto":
                raise ValueError(COMPILED_BF16_ON_CPU + "; train bf16 without --compile, or compile in fp32")
            self.precision, self.precision_reason = "fp32", f"{self.precision_reason}, but {COMPILED_BF16_ON_CPU}"
        check_precision(self.device, self.precision, allow_emulated=t.allow_emulated_precision)
        self.memory_format = memory_format(self.device, t.memory_format)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick its fastest kernels once
        settle_cpu_maths()
        seed_everything(t.seed)
        self.model = build_objective(config)
        if distributed.enabled and "batch" in (config.model.norm, config.model.norm_D):
            sync_batch_norm(self.model, self.model.network_names, self.device)
        self.model.to(self.device, memory_format=self.memory_format)
        # The generators' moving averages (--ema_decay), used for translation; never trained directly.
        self.ema = {f"{name}{EMA_SUFFIX}": copy.deepcopy(getattr(self.model, name)).requires_grad_(False)
                    for name in self.model.generator_names} if t.ema_decay > 0 else {}
        self.opt_g = self._adam(self._generator_groups())
        self.opt_d = self._adam(self._parameters(self.model.discriminator_names))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if t.compile:
            for net in self.model.networks().values():
                net.compile()  # in place: state_dict keys stay unprefixed
        # The generator and discriminator objectives, wrapped in DistributedDataParallel under torchrun.
        discriminators = ConditionalDiscriminatorSide if self.model.discriminator_first else DiscriminatorSide
        self.g_side = distributed.wrap(GeneratorSide(self.model), self.device)
        self.d_side = distributed.wrap(discriminators(self.model), self.device)
        pool_seed = t.seed + 1000 * distributed.rank  # every rank keeps its own pools
        self.pool_a = ImagePool(t.pool_size, torch.Generator().manual_seed(pool_seed + 1))  # fakes of A, for d_a
        self.pool_b = ImagePool(t.pool_size, torch.Generator().manual_seed(pool_seed + 2))  # fakes of B, for d_b
        self.epoch = 1  # the epoch being trained, counted from 1
        self.epoch_iter = 0  # batches done in this epoch
        self.total_iters = 0
        self.last_images: dict[str, torch.Tensor] = {}
        self.plateau = Plateau()  # the plateau lr policy's state, driven by the epoch's mean cycle loss
        self.epoch_cycle_loss = EpochMean()  # the objective's plateau_losses (cycle_A + cycle_B), for the plateau policy
        self.best: float | None = None  # the best --keep_best value so far
        self.iters_per_epoch = 0  # known once fit() has the dataset; makes the cosine lr move within an epoch
        self.colour_targets: dict[str, torch.Tensor] = {}  # --lambda_colour: each domain's colour moments
        self.colour_start_fitted = False  # --colour_transfer_start: fitted already (by fit(), or by the caller)
        self.set_learning_rate()

    def _parameters(self, names: tuple[str, ...]):
        return itertools.chain.from_iterable(getattr(self.model, name).parameters() for name in names)

    def _generator_groups(self) -> list[dict[str, Any]]:
        """The generator side's parameters; with --colour_map_lr other than 1 the colour maps form a second group,
        whose lr is the run's lr times that factor (``LR_SCALE``)."""
        trained = list(self._parameters(self.model.generator_names + self.model.trained_with_generators))
        scale = self.config.train.colour_map_lr
        if scale == 1:
            return [{"params": trained}]
        maps = {id(p) for name in self.model.generator_names for p in getattr(self.model, name).colour_map.parameters()}
        return [{"params": [p for p in trained if id(p) not in maps]},
                {"params": [p for p in trained if id(p) in maps], LR_SCALE: scale}]

    def _adam(self, params) -> torch.optim.Adam:
        t = self.config.train
        return torch.optim.Adam(params, lr=t.lr, betas=(t.beta1, 0.999), fused=t.fused_adam or None)

    # ---- one iteration -------------------------------------------------------------------

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor, partners: dict | None = None) -> dict[str, float]:
        """CycleGAN: one generator update (discriminators frozen), then one update of both discriminators.
        pix2pix and CUT: G(a), one discriminator update, then one generator update (their official order); for
        pix2pix real_b is real_a's partner. ``partners`` ({"partner_b", "has_partner"}) feed --lambda_paired."""
        return {name: float(value) for name, value in self.train_step_tensors(real_a, real_b, partners).items()}

    def train_step_tensors(self, real_a: torch.Tensor, real_b: torch.Tensor,
                           partners: dict | None = None) -> dict[str, torch.Tensor]:
        """``train_step`` without reading the losses back to the host (the loop does that every print_freq)."""
        real_a, real_b = self._on_device(real_a), self._on_device(real_b)
        if self.model.discriminator_first:
            images, losses = self.discriminator_first_step(real_a, real_b)
        else:
            partners = {"partner_b": self._on_device(partners["partner_b"]),
                        "has_partner": partners["has_partner"].to(self.device)} if partners else None
            images, generator_losses = self.generator_step(real_a, real_b, partners)
            losses = {**generator_losses, **self.discriminator_step(images)}
        self.scaler.update()
        self.update_ema()
        self.last_images = {k: v[0].detach() for k, v in images.items() if v.dim() == 4}
        return {name: losses[name].detach() for name in self.model.loss_names if name in losses}

    def _backward_and_step(self, optimizer: torch.optim.Optimizer, total: torch.Tensor,
                           losses: dict[str, torch.Tensor], which: str) -> None:
        """Backpropagate ``total`` (scaled for fp16) and apply the update, unless a loss is non-finite."""
        self.scaler.scale(total).backward()
        if update_allowed(self, total, losses, which):
            self.scaler.step(optimizer)

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, memory_format=self.memory_format, non_blocking=True)

    def discriminator_first_step(self, real_a: torch.Tensor, real_b: torch.Tensor):
        """pix2pix: fake_b = G(a); update D on (a, b) against the (pooled) (a, fake_b); then update G on D's
        new verdict and the L1 to b. CUT: fake_b = G(a) (and G(b)) with the PatchNCE losses; update D on b
        against the (pooled) fake_b; then update G and the PatchNCE head on D's new verdict and PatchNCE."""
        discriminator = self.model.d_b
        self.opt_g.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            images, early_losses = self.g_side(real_a, real_b)
        set_requires_grad([discriminator], True)
        self.opt_d.zero_grad(set_to_none=True)
        fake = self.pool_b.query(self.model.discriminator_input(images).detach())
        with autocast(self.device, self.precision):
            d_losses = self.d_side(real_a, real_b, fake)
        total = self.model.discriminator_total(d_losses)
        self._backward_and_step(self.opt_d, total, d_losses, "discriminator")
        set_requires_grad([discriminator], False)
        with autocast(self.device, self.precision):
            g_losses = {**early_losses, **self.model.generator_losses(images)}
        total = self.model.generator_total(g_losses)
        self._backward_and_step(self.opt_g, total, g_losses, "generator")
        set_requires_grad([discriminator], True)
        return images, {**g_losses, **d_losses}

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

    def generator_step(self, real_a: torch.Tensor, real_b: torch.Tensor, partners: dict | None = None):
        """Translate both ways and update g_ab and g_ba on all their losses; the discriminators get no
        gradient. Returns the images and the losses."""
        discriminators = [self.model.d_a, self.model.d_b]
        set_requires_grad(discriminators, False)
        self.opt_g.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            images, losses = self.g_side(real_a, real_b, self._colour_inputs(), partners)
        total = sum(losses.values())
        self._backward_and_step(self.opt_g, total, losses, "generator")
        set_requires_grad(discriminators, True)
        return images, losses

    def set_colour_targets(self, dataset: UnpairedDataset) -> None:
        """The colour moments of (up to COLOUR_TARGET_IMAGES of) each domain's training images, as trained on."""
        for key in ("a", "b"):
            sums = None
            for image in dataset.spread_sample(key, COLOUR_TARGET_IMAGES, self.config.train.seed):
                sums = colour_sums(image[None]) if sums is None else add_sums(sums, colour_sums(image[None]))
            self.colour_targets[key] = colour_moments(sums).to(self.device)

    def start_from_colour_transfer(self, dataset: UnpairedDataset) -> dict[str, float]:
        """--colour_transfer_start: set each generator's colour map (and its moving average) to the unpaired colour
        transfer from its source domain's training colours to its target domain's. Returns, per generator, the
        mean absolute change (on [-1, 1]) the map makes to its source colours, for the log."""
        seed = self.config.train.seed
        pixels = {key: self._pixel_sample(dataset, key, seed) for key in ("a", "b")}
        moved = {}
        for direction, name in GENERATOR_FOR_DIRECTION.items():
            if name not in self.model.generator_names:
                continue
            source, target = (pixels["a"], pixels["b"]) if direction == "AtoB" else (pixels["b"], pixels["a"])
            weight, bias = transfer_as_cubic(source, target, kind=self.config.model.colour_transfer_start, seed=seed)
            for net in (getattr(self.model, name), self.ema.get(f"{name}{EMA_SUFFIX}")):
                if net is not None:
                    net.colour_map.set_cubic(weight.float(), bias.float())
            with torch.no_grad():
                mapped = getattr(self.model, name).colour_map(source.T[None, :, :, None].to(self.device).float())
            moved[name] = float((mapped[0, :, :, 0].T.cpu() - source).abs().mean())
        self.colour_start_fitted = True
        return moved

    @staticmethod
    def _pixel_sample(dataset: UnpairedDataset, key: str, seed: int) -> torch.Tensor:
        """Up to COLOUR_TRANSFER_PIXELS colours (N, C) in [-1, 1], drawn from the domain's spread sample of images."""
        images = list(dataset.spread_sample(key, COLOUR_TARGET_IMAGES, seed))
        colours = torch.cat([image.reshape(image.shape[0], -1).T for image in images])
        if len(colours) <= COLOUR_TRANSFER_PIXELS:
            return colours
        chosen = torch.randperm(len(colours), generator=torch.Generator().manual_seed(seed))[:COLOUR_TRANSFER_PIXELS]
        return colours[chosen]

    def _colour_inputs(self) -> dict[str, tuple[torch.Tensor, ColourSums | None]] | None:
        """For the colour-moment loss: each domain's target moments and the sums of its fakes in the pool."""
        if self.config.train.lambda_colour <= 0 or self.model.lambda_colour <= 0:  # off, or decayed to zero
            return None
        if not self.colour_targets:
            raise ValueError("--lambda_colour needs the domains' colour moments: fit() measures them, or call "
                             "Trainer.set_colour_targets(dataset) before train_step")
        pools = {"a": self.pool_a, "b": self.pool_b}
        return {key: (target, colour_sums(torch.cat(pools[key].images)) if pools[key].images else None)
                for key, target in self.colour_targets.items()}

    def discriminator_step(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Update d_b on real B vs pooled fake B, and d_a on real A vs pooled fake A."""
        self.opt_d.zero_grad(set_to_none=True)
        fake_b = self.pool_b.query(images["fake_b"])
        fake_a = self.pool_a.query(images["fake_a"])
        with autocast(self.device, self.precision):
            losses = self.d_side(images["real_a"], images["real_b"], fake_a, fake_b)
        total = losses["D_A"] + losses["D_B"]
        self._backward_and_step(self.opt_d, total, losses, "discriminator")
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
        epoch = self.schedule_epoch()
        factor = LR_FACTORS[t.lr_policy](epoch, n_epochs=t.n_epochs, n_epochs_decay=t.n_epochs_decay,
                                         lr_decay_iters=t.lr_decay_iters)
        return t.lr * factor * warmup

    def schedule_epoch(self) -> float:
        """Where the run is in its schedule, in epochs counted from 1 (fractional within an epoch); with a fixed
        --time_budget length, the share of the schedule done (``budget_progress``), spread over the run's epochs."""
        if self.config.train.budget_iters:
            return 1.0 + self.budget_progress() * self.total_epochs
        return self.epoch + (self.epoch_iter / self.iters_per_epoch if self.iters_per_epoch else 0.0)

    def schedule_share(self) -> float:
        """The share of the run's schedule done, 0 to 1."""
        return min(1.0, max(0.0, (self.schedule_epoch() - 1.0) / self.total_epochs))

    def budget_progress(self) -> float:
        """The share of a --time_budget run's schedule done: linear in the iterations from where the length was
        last refitted (budget_from_iter, at budget_from_progress) to its end (budget_iters)."""
        t = self.config.train
        left = t.budget_iters - t.budget_from_iter
        if left <= 0:
            return 1.0
        done = min(1.0, max(0, self.total_iters - t.budget_from_iter) / left)
        return t.budget_from_progress + (1.0 - t.budget_from_progress) * done

    def fix_horizon(self, iterations: int) -> None:
        """End the run after ``iterations`` in total (from --time_budget): the epochs are set to cover them,
        in the ratio of n_epochs to n_epochs_decay, and the rest of the lr schedule (the share not yet done, of the
        configured epochs or of an earlier length) is spread over the iterations up to it, so the lr never jumps."""
        t = self.config.train
        # The configured split, kept from the first fit on: each refit re-rounding the last one's split would drift.
        share = t.budget_constant_share if t.budget_iters else t.n_epochs / (t.n_epochs + t.n_epochs_decay)
        epochs = max(1, -(-iterations // max(1, self.iters_per_epoch)))
        constant = min(epochs, round(epochs * share))
        self.config = replace(self.config, train=replace(
            t, budget_iters=max(1, iterations), n_epochs=constant, n_epochs_decay=epochs - constant,
            budget_constant_share=share, budget_from_iter=self.total_iters, budget_from_progress=self.schedule_share()))

    @property
    def used_lr(self) -> float:
        """The lr of the latest update (``learning_rate`` already looks at the next one)."""
        return self.opt_g.param_groups[0]["lr"]

    def set_learning_rate(self) -> None:
        """Set the lr and the identity-, colour- and cycle-loss weights for the next update (all may change every
        iteration)."""
        lr = self.learning_rate()
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get(LR_SCALE, 1.0)
        t = self.config.train
        if not isinstance(self.model, CycleGAN):
            return
        self.model.lambda_identity = t.lambda_identity * linear_decay(self.total_iters, decay_iters=t.lambda_identity_decay_iters)
        self.model.lambda_colour = t.lambda_colour * linear_decay(self.total_iters, decay_iters=t.lambda_colour_decay_iters)
        self.model.cycle_share = ramp_factor(self.schedule_share(), start=t.lambda_cycle_start, over=t.lambda_cycle_ramp)
        self.model.cycle_beta = t.cycle_beta * fade_factor(self.schedule_share(), over=t.cycle_beta_decay)

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
                         "epoch_cycle_loss": [float(self.epoch_cycle_loss.total), self.epoch_cycle_loss.count]},
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            **self._rank_states(),
        }

    def _rank_states(self) -> dict[str, Any]:
        """Under torchrun: every rank's own pools and RNGs, gathered on rank 0 (a collective)."""
        if not self.dist.enabled:
            return {}
        gathered = self.dist.gather({"pool_a": _cpu_pool(self.pool_a.state_dict()),
                                     "pool_b": _cpu_pool(self.pool_b.state_dict()), "rng": capture_rng()})
        return {"ranks": gathered} if gathered is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        own = self.dist.own_rank_state(state)
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
            self.epoch_cycle_loss = EpochMean(float(total), int(count))
        self.best = state.get("best")
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.set_learning_rate()

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
        if is_hub_name(run_dir):
            raise ValueError(f"{run_dir}: a Hub model holds weights only, no optimizer state, pools or counters, so it "
                             f"cannot be resumed; resume from the run folder it was pushed from")
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

    def end_epoch(self) -> None:
        """Advance the counters (and the plateau policy, with the epoch's mean cycle loss)."""
        if self.epoch_cycle_loss.count:
            self.plateau.end_epoch(float(self.epoch_cycle_loss.total) / self.epoch_cycle_loss.count)
        self.epoch += 1
        self.epoch_iter = 0
        self.epoch_cycle_loss = EpochMean()

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir


def update_allowed(trainer: Trainer, total: torch.Tensor, losses: dict[str, torch.Tensor], which: str) -> bool:
    """Whether ``trainer``'s update may be applied; stops the run on a non-finite loss unless told to skip
    (--on_nonfinite). Under torchrun all ranks skip, or stop, together."""
    finite = bool(torch.isfinite(total))
    if not trainer.dist.any(not finite):
        return True
    skip, iteration = trainer.config.train.on_nonfinite == "skip", trainer.total_iters + 1
    if finite:  # another rank's loss is the non-finite one
        if skip:
            return False
        raise NonFiniteLossError(f"a {which} loss became non-finite on another rank at iteration {iteration}; "
                                 f"stopped (see that rank's message)")
    values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
    if skip:
        log.warning("iteration %d: non-finite %s loss (%s); update skipped", iteration, which, values)
        return False
    raise NonFiniteLossError(
        f"the {which} loss became non-finite at iteration {iteration} ({values}); stopped without saving, so "
        f"{trainer.run_dir / LATEST} is still the last good checkpoint. Lower --lr, check the data, or pass "
        f"--on_nonfinite skip")


def _cpu_pool(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "images": [image.cpu() for image in state["images"]]}
