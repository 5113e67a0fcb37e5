"""``fit``: the loop that trains a ``Trainer`` through its epochs and keeps its run folder.

The run folder holds config.json, metrics.jsonl, the checkpoints, samples/, the page (index.html)
and, with --tensorboard, tensorboard/. Ctrl-C and SIGTERM save a resumable checkpoint before the
loop exits. Evaluation during training (--eval_freq) is a hook passed in, so that training needs
nothing of translation or evaluation.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import LATEST, save_checkpoint
from .config import ExperimentConfig, parse_duration
from .data import PairedDataset, Preprocess, UnpairedDataset, paired_dataset_from_folders, unpaired_dataset_from_folders
from .devices import data_workers, describe_data_workers
from .gallery import write_training_page
from .tracking import MetricsLog, TensorBoardLog, atomic_write_text, format_losses, image_grid, progress
from .training import Trainer

log = logging.getLogger(__name__)

HIGHER_IS_BETTER = ("psnr_db", "ssim")

# evaluate(trainer) -> the evaluation's numbers ({"AtoB_cycle_l1_255": ...}), or {} when there was none.
Evaluate = Callable[[Trainer], dict[str, float]]


def fit(trainer: Trainer, dataset: UnpairedDataset | PairedDataset | None = None, *, show_progress: bool = True,
        callback: Callable[[Trainer], bool] | None = None, evaluate: Evaluate | None = None,
        budget_clock: Callable[[], float] | None = None) -> Path:
    """Train until the last epoch (or ``max_iters``); returns the run folder.

    ``callback(trainer)`` runs after every iteration; when it returns True the run stops there,
    saving a resumable checkpoint as at ``max_iters``. ``evaluate`` runs every --eval_freq epochs
    (``cyclegan.evaluate.evaluate_latest`` measures the test split). ``budget_clock`` (seconds) is what
    --time_budget counts, the wall clock unless given: a caller whose callback pauses training to measure
    it can leave its own time out.
    """
    if trainer.config.train.eval_freq and evaluate is None:
        raise ValueError("--eval_freq is set, but fit() was given no evaluate hook: pass "
                         "evaluate=cyclegan.evaluate.evaluate_latest, or set eval_freq to 0")
    dataset = dataset if dataset is not None else make_dataset(trainer)
    return _Loop(trainer, dataset, show_progress=show_progress, callback=callback, evaluate=evaluate,
                 budget_clock=budget_clock).run()


def make_dataset(trainer: Trainer) -> UnpairedDataset | PairedDataset:
    """The training images, checked up front; bad ones (and, for pairs, images without a partner) are
    listed in RUN/bad_images.txt."""
    d, m = trainer.config.data, trainer.config.model
    bad: list[tuple[Path, str]] = []
    options = dict(phase="train", direction=d.direction,
                   preprocess=Preprocess(d.preprocess, d.load_size, d.crop_size, flip=not d.no_flip),
                   channels_a=m.input_nc, channels_b=m.output_nc, serial=d.serial_batches,
                   max_dataset_size=d.max_dataset_size, seed=trainer.config.train.seed,
                   on_bad_image=d.on_bad_image, bad_images=bad)
    if m.model == "pix2pix":
        dataset = paired_dataset_from_folders(d.dataroot, **options)
    else:
        dataset = unpaired_dataset_from_folders(d.dataroot, with_partners=trainer.config.train.lambda_paired > 0,
                                                **options)
    if getattr(dataset, "partners", None):
        log.info("--lambda_paired: %d of %d images of A have a known partner in B", len(dataset.partners),
                 len(dataset.paths_a))
    listing = trainer.run_dir / "bad_images.txt"
    if not trainer.dist.is_main:
        return dataset
    if bad:
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(listing, "".join(f"{path}\t{problem}\n" for path, problem in bad))
        log.warning("skipped %d of %d training images that cannot be used; they are listed in %s",
                    len(bad), len(bad) + len(set(dataset.paths_a) | set(dataset.paths_b)), listing)
    elif listing.exists():
        listing.unlink()
    return dataset


def write_page(trainer: Trainer) -> Path:
    """Refresh ``RUN/index.html``: loss and lr plots and the sample grids, newest epoch first."""
    t, m = trainer.config.train, trainer.config.model
    weights = {"pix2pix": f"lambda_L1 {t.lambda_L1}",
               "cut": f"{t.CUT_mode}, lambda_NCE {t.lambda_NCE}, identity PatchNCE {'on' if t.nce_idt else 'off'}"}.get(
        m.model, f"lambda_A {t.lambda_A}, lambda_B {t.lambda_B}, lambda_identity {t.lambda_identity}"
                 + (f", lambda_paired {t.lambda_paired}" if t.lambda_paired else ""))
    summary = (f"{m.model} {m.netG}, ngf {m.ngf}, data {trainer.config.data.dataroot}; "
               f"{trainer.total_iters} iterations, {trainer.epoch - 1} of {trainer.total_epochs} epochs done, "
               f"lr {trainer.learning_rate():.2e}; batch {t.batch_size}, {weights}")
    if not trainer.dist.is_main:
        return trainer.run_dir / "index.html"
    return write_training_page(trainer.run_dir, title=f"cyclegan run {trainer.config.name}", summary=summary)


def shard(trainer: Trainer, dataset: UnpairedDataset) -> list[int]:
    """This rank's items of the epoch: all of them, or under torchrun every world_size-th one
    (DistributedSampler; the dataset itself reshuffles A and redraws B every epoch)."""
    if not trainer.dist.enabled:
        return list(range(len(dataset)))
    from torch.utils.data.distributed import DistributedSampler

    return list(DistributedSampler(dataset, num_replicas=trainer.dist.world_size, rank=trainer.dist.rank, shuffle=False))


class TimeBudget:
    """--time_budget: the iteration rate, timed over the first iterations of the run (after SKIPPED ones that
    carry the start-up), fixes the run's length in iterations for the time left. The rate is that of the median
    iteration, so that a one-off pause while timing (a checkpoint, a sample grid, an evaluation) does not shorten
    the run. On a shared machine the first seconds' rate can be far from the run's, so the rate is timed again
    over the iterations since, at RETIMED_AT shares of the budget, and the length refitted to the time left
    (``Trainer.fix_horizon`` keeps the lr continuous). A resumed run keeps the length its checkpoint holds."""

    SKIPPED = 3
    TIMED = 20  # at least, and over at least TIMED_SHARE of the budget (the rate moves in the first seconds) ...
    TIMED_SHARE = 0.05
    MOST_SHARE = 0.1  # ... but never past a tenth of it, when iterations are slow
    RETIMED_AT = (0.25, 0.5, 0.75)
    clock = staticmethod(time.perf_counter)

    def __init__(self, trainer: Trainer, clock: Callable[[], float] | None = None):
        t = trainer.config.train
        self.seconds = parse_duration(t.time_budget) if t.time_budget and not t.budget_iters else None
        self.clock = clock or self.clock
        self.started = self.last = self.clock()
        self.first = trainer.total_iters
        self.durations: list[float] = []
        self.retimes = list(self.RETIMED_AT)
        self.fixed = False

    def after_iteration(self, trainer: Trainer) -> bool:
        """True when this iteration fixed or refitted the length (``trainer.fix_horizon``)."""
        if self.seconds is None:
            return False
        done, now = trainer.total_iters - self.first, self.clock()
        if done > self.SKIPPED:
            self.durations.append(now - self.last)
        self.last = now
        spent = now - self.started
        if not trainer.dist.any(self._due(spent) or spent >= self.seconds):  # every rank decides at the same iteration
            return False
        self._fix(trainer, spent)
        return True

    def _due(self, spent: float) -> bool:
        timed = len(self.durations)
        if not self.fixed:
            return (timed >= self.TIMED and spent >= self.TIMED_SHARE * self.seconds) or (
                timed > 0 and spent >= self.MOST_SHARE * self.seconds)
        return timed > 0 and spent >= self.retimes[0] * self.seconds

    def _fix(self, trainer: Trainer, spent: float) -> None:
        median = float(np.median(self.durations)) if self.durations else 0.0
        rate = 1.0 / median if median > 0 else 0.0
        horizon = trainer.dist.smallest(trainer.total_iters + int(max(0.0, self.seconds - spent) * rate))
        trainer.fix_horizon(max(horizon, trainer.total_iters))
        t = trainer.config.train
        log.info("--time_budget %s: %.2f iterations/s (the median of the last %d iterations), so the run ends at "
                 "iteration %d; the lr schedule is spread over them (%d + %d epochs)", t.time_budget, rate,
                 len(self.durations), t.budget_iters, t.n_epochs, t.n_epochs_decay)
        while self.retimes and spent >= self.retimes[0] * self.seconds:
            self.retimes.pop(0)
        self.durations, self.fixed = [], True
        if not self.retimes or spent >= self.seconds:
            self.seconds = None


class _Loop:
    """One call of ``fit``: the trainer, its data, its logs, and what stops it."""

    def __init__(self, trainer: Trainer, dataset: UnpairedDataset, *, show_progress: bool,
                 callback: Callable[[Trainer], bool] | None, evaluate: Evaluate | None,
                 budget_clock: Callable[[], float] | None = None):
        self.trainer, self.dataset = trainer, dataset
        self.show_progress, self.callback, self.evaluate = show_progress, callback, evaluate
        self.tensorboard: TensorBoardLog | None = None
        self.metrics: MetricsLog | _NoLog = _NoLog()
        self.budget = TimeBudget(trainer, budget_clock)

    def run(self) -> Path:
        trainer, dataset = self.trainer, self.dataset
        trainer.iters_per_epoch = -(-len(shard(trainer, dataset)) // trainer.config.train.batch_size)
        if trainer.config.train.lambda_colour > 0:
            trainer.set_colour_targets(dataset)
        # A resumed run keeps its maps; a caller may have fitted the start before fit() (to score it, say).
        fitted = trainer.total_iters > 0 or trainer.colour_start_fitted
        if trainer.config.model.colour_transfer_start != "off" and not fitted:
            moved = trainer.start_from_colour_transfer(dataset)
            log.info("colour transfer start: %s", ", ".join(f"{name} moves colours by {value:.3f} on average"
                                                            for name, value in moved.items()))
        self._open_run_folder()
        log.info("run folder %s: %d images per epoch, epoch %d of %d, iteration %d",
                 trainer.run_dir, len(dataset), trainer.epoch, trainer.total_epochs, trainer.total_iters)
        if trainer.dist.is_main:
            log.info("precision: %s (%s)", trainer.precision, trainer.precision_reason)
            log.info("%s", describe_data_workers(trainer.config.data.num_threads))
            caveat = keep_best_caveat(trainer.config)
            if caveat:
                log.warning("%s", caveat)
        if trainer.dist.enabled and trainer.dist.is_main:
            t = trainer.config.train
            log.info("distributed: %d processes (%s), batch %d each: effective batch %d; lr %g, not scaled with the "
                     "batch; %d iterations per epoch", trainer.dist.world_size, trainer.dist.backend, t.batch_size,
                     t.batch_size * trainer.dist.world_size, t.lr, trainer.iters_per_epoch)
        try:
            with _InterruptToSave() as interrupt:
                while trainer.epoch <= trainer.total_epochs:
                    if not self._train_epoch(interrupt):
                        break
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
        write_page(trainer)
        return trainer.run_dir

    def _open_run_folder(self) -> None:
        """Rank 0 prepares the run folder and its logs; the other ranks write nothing."""
        trainer = self.trainer
        if not trainer.dist.is_main:
            return
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in trainer.run_dir.glob(".*.tmp-*"):  # the half-written file of a killed save
            stale.unlink(missing_ok=True)
        atomic_write_text(trainer.run_dir / "config.json", trainer.config.to_json() + "\n")
        self.metrics = MetricsLog(trainer.run_dir / "metrics.jsonl")
        self.metrics.truncate_after(trainer.total_iters)
        if trainer.config.train.tensorboard:
            self.tensorboard = TensorBoardLog(trainer.run_dir / "tensorboard")

    def _loader(self) -> torch.utils.data.DataLoader:
        trainer, batch = self.trainer, self.trainer.config.train.batch_size
        self.dataset.set_epoch(trainer.epoch)
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=batch, sampler=shard(trainer, self.dataset)[trainer.epoch_iter * batch:],
            num_workers=data_workers(trainer.config.data.num_threads), drop_last=False,
            pin_memory=trainer.device.type == "cuda",
            # A private generator, so that making a loader never draws from torch's global RNG.
            generator=torch.Generator().manual_seed(trainer.config.train.seed + trainer.epoch),
        )

    def _train_epoch(self, interrupt: "_InterruptToSave") -> bool:
        """Train the rest of the current epoch; False when the run must stop early."""
        trainer, t = self.trainer, self.trainer.config.train
        bar = progress(self._loader(), total=trainer.iters_per_epoch, initial=trainer.epoch_iter,
                       enabled=self.show_progress, description=f"epoch {trainer.epoch}/{trainer.total_epochs}")
        for batch in bar:
            trainer.set_learning_rate()
            partners = {key: batch[key] for key in ("partner_b", "has_partner")} if "has_partner" in batch else None
            losses = trainer.train_step_tensors(batch["A"], batch["B"], partners)
            trainer.epoch_cycle_loss.add(sum(losses[name] for name in trainer.model.plateau_losses).float())
            trainer.epoch_iter += 1
            trainer.total_iters += 1
            self._after_iteration(losses, bar)
            if self.budget.after_iteration(trainer) and trainer.dist.is_main:
                atomic_write_text(trainer.run_dir / "config.json", trainer.config.to_json() + "\n")
            if self._must_stop(interrupt):
                bar.close()
                return False
        bar.close()
        if trainer.last_images and trainer.total_iters % t.display_freq:  # the epoch's last grid, unless just saved
            self._save_samples()
        trainer.end_epoch()
        trainer.save(trainer.run_dir / LATEST)
        if (trainer.epoch - 1) % t.save_epoch_freq == 0 or trainer.epoch > trainer.total_epochs:
            trainer.save(trainer.run_dir / f"epoch_{trainer.epoch - 1:04d}.safetensors", with_training_state=False)
        if t.eval_freq and (trainer.epoch - 1) % t.eval_freq == 0 and trainer.dist.is_main:
            self._evaluate()
        write_page(trainer)
        return True

    def _evaluate(self) -> None:
        """Run the evaluate hook on the latest checkpoint; log its numbers; keep the best checkpoint."""
        trainer = self.trainer
        numbers = self.evaluate(trainer)
        if not numbers:
            return
        self.metrics.append({"iter": trainer.total_iters, "epoch": trainer.epoch - 1,
                             **{f"eval_{k}": v for k, v in numbers.items()}})
        if self.tensorboard is not None:
            self.tensorboard.scalars(trainer.total_iters, {f"eval/{k}": v for k, v in numbers.items()})
        log.info("evaluation after epoch %d: %s", trainer.epoch - 1, ", ".join(f"{k} {v:.4g}" for k, v in numbers.items()))
        if trainer.config.train.keep_best:
            keep_best(trainer, numbers)

    def _after_iteration(self, loss_tensors: dict[str, torch.Tensor], bar) -> None:
        trainer, t = self.trainer, self.trainer.config.train
        if trainer.total_iters % t.print_freq == 0:  # the only place losses are read back from the device
            losses = {name: value for name, value in zip(loss_tensors, torch.stack(list(loss_tensors.values())).tolist())}
            bar.set_postfix(format_losses(losses), refresh=False)
            self.metrics.append({"iter": trainer.total_iters, "epoch": trainer.epoch, "epoch_iter": trainer.epoch_iter,
                                 "lr": trainer.used_lr, "time": time.time(), **losses})
            if self.tensorboard is not None:
                self.tensorboard.scalars(trainer.total_iters, {**losses, "lr": trainer.used_lr})
        if trainer.total_iters % t.display_freq == 0:
            self._save_samples()
        if trainer.total_iters % t.save_latest_freq == 0:
            trainer.save(trainer.run_dir / LATEST)

    def _must_stop(self, interrupt: "_InterruptToSave") -> bool:
        trainer = self.trainer
        max_iters = trainer.config.train.max_iters
        if self.callback is not None and self.callback(trainer):
            trainer.save(trainer.run_dir / LATEST)
            return True
        budget = trainer.config.train.budget_iters
        if budget and trainer.total_iters >= budget:
            trainer.save(trainer.run_dir / LATEST)
            log.info("reached the end of --time_budget %s (%d iterations)", trainer.config.train.time_budget, budget)
            return True
        if max_iters and trainer.total_iters >= max_iters:
            trainer.save(trainer.run_dir / LATEST)
            log.info("reached max_iters=%d; resume with: cyclegan train --resume %s", max_iters, trainer.run_dir)
            return True
        if trainer.dist.any(interrupt.requested):  # torchrun signals every rank, maybe at different iterations
            trainer.save(trainer.run_dir / LATEST)
            log.warning("interrupted at iteration %d; saved. Resume with: cyclegan train --resume %s",
                        trainer.total_iters, trainer.run_dir)
            return True
        return False

    def _save_samples(self) -> None:
        save_samples(self.trainer, tensorboard=self.tensorboard)


def save_samples(trainer: Trainer, *, tensorboard: TensorBoardLog | None = None) -> Path | None:
    """A grid: real A, fake B, reconstructed A / real B, fake A, reconstructed B (pix2pix: real A, fake B,
    real B) (rank 0 only)."""
    if not trainer.dist.is_main:
        return None
    im = trainer.last_images
    grid = image_grid([[im[name] for name in row] for row in trainer.model.sample_rows])
    folder = trainer.run_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch_{trainer.epoch:04d}_iter_{trainer.total_iters:07d}.png"
    grid.save(path)
    if tensorboard is not None:
        tensorboard.image("samples", grid, trainer.total_iters)
    return path


def keep_best_caveat(config: ExperimentConfig) -> str | None:
    """Why the --keep_best number would keep a poor checkpoint for this run, or None."""
    metric = config.train.keep_best
    if "cycle_l1" in metric and config.model.global_residual:
        return (f"--keep_best {metric} with --global_residual: the generators start as the identity, whose cycle "
                "error is zero, so the lowest cycle L1 tends to keep the first evaluations, near doing nothing "
                "(README: Choosing a checkpoint without the truth); AtoB_colour_swd_255 or AtoB_fid judge the "
                "translation itself")
    return None


def keep_best(trainer: Trainer, numbers: dict[str, float]) -> None:
    """Save RUN/best.safetensors when the --keep_best number is the best so far."""
    metric = trainer.config.train.keep_best
    if metric not in numbers:
        raise ValueError(f"--keep_best {metric}: the evaluation has no such number; it has {', '.join(numbers)}")
    value = numbers[metric]
    higher = metric.endswith(HIGHER_IS_BETTER)
    if trainer.best is None or (value > trainer.best if higher else value < trainer.best):
        trainer.best = value
        save_checkpoint(trainer.run_dir / "best.safetensors", config=trainer.config, networks=trainer.networks(),
                        info={**trainer.info(), "best": {metric: value}})
        log.info("new best %s %.4g: saved %s", metric, value, trainer.run_dir / "best.safetensors")


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
