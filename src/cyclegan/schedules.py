"""Learning-rate policies: the multiplier of the initial lr while training epoch ``epoch`` (from 1).

The stateless policies are closed forms of the official code's torch schedulers, stepped once per
epoch; ``plateau`` keeps a small state that the trainer saves in its checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PLATEAU_FACTOR = 0.2  # the official ReduceLROnPlateau(mode="min", factor=0.2, threshold=0.01, patience=5)
PLATEAU_THRESHOLD = 0.01
PLATEAU_PATIENCE = 5
STEP_GAMMA = 0.1


def linear_factor(epoch: int, *, n_epochs: int, n_epochs_decay: int) -> float:
    """1 for epochs 1..n_epochs, then 1 - (epoch - n_epochs) / (n_epochs_decay + 1)."""
    return 1.0 - max(0, epoch - n_epochs) / float(n_epochs_decay + 1)


def step_factor(epoch: int, *, lr_decay_iters: int) -> float:
    """0.1 ** ((epoch - 1) // lr_decay_iters): the official StepLR, whose step counts epochs."""
    return STEP_GAMMA ** ((epoch - 1) // lr_decay_iters)


def cosine_factor(epoch: float, *, total_epochs: int) -> float:
    """Half a cosine from 1 down to 0 over the whole run (n_epochs + n_epochs_decay epochs).

    ``epoch`` may be fractional (epoch 2.5 is half way through the second), so the trainer lowers
    the lr at every iteration, which matters in runs of a few epochs.

    The official code anneals over n_epochs only, after which the closed-form cosine climbs back up
    during the decay epochs; here it reaches zero at the end of the run instead.
    """
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / total_epochs))


def warmup_factor(iteration: int, *, warmup_iters: int) -> float:
    """(iteration + 1) / warmup_iters for the first warmup_iters updates (counted from 0), then 1."""
    return 1.0 if iteration >= warmup_iters else (iteration + 1) / warmup_iters


def linear_decay(iteration: int, *, decay_iters: int) -> float:
    """1 - iteration / decay_iters, down to 0 and staying there; 1 throughout when decay_iters is 0."""
    return 1.0 if decay_iters <= 0 else max(0.0, 1.0 - iteration / decay_iters)


def ramp_factor(share: float, *, start: float, over: float) -> float:
    """From ``start`` linearly up to 1 over the first ``over`` share of the run, 1 after it (``over`` 0: always 1)."""
    return 1.0 if over <= 0 else start + (1.0 - start) * min(1.0, share / over)


def fade_factor(share: float, *, over: float) -> float:
    """From 1 linearly down to 0 over the first ``over`` share of the run, 0 after it (``over`` 0: always 1)."""
    return 1.0 if over <= 0 else max(0.0, 1.0 - share / over)


def ema_weight(iteration: int, *, decay: float) -> float:
    """The EMA decay used at ``iteration`` (from 0): min(decay, (1 + n) / (10 + n)).

    Early on the average then spans about the last tenth of the run instead of being dominated by
    the initial weights, which matters in short runs.
    """
    return min(decay, (1.0 + iteration) / (10.0 + iteration))


@dataclass
class Plateau:
    """Multiply the lr by 0.2 once the per-epoch metric has not improved by 1% for 5 epochs."""

    factor: float = 1.0
    best: float = math.inf
    bad_epochs: int = 0

    def end_epoch(self, metric: float) -> float:
        """Record the finished epoch's metric; returns the factor for the next epoch."""
        if metric < self.best * (1.0 - PLATEAU_THRESHOLD):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > PLATEAU_PATIENCE:
            self.factor *= PLATEAU_FACTOR
            self.bad_epochs = 0
        return self.factor

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.factor, self.best, self.bad_epochs = float(state["factor"]), float(state["best"]), int(state["bad_epochs"])


# The lr multiplier of each stateless policy while training ``epoch`` (from 1; fractional within the
# epoch); linear and step keep the official once-per-epoch steps. plateau is ``Plateau``'s factor.
LR_FACTORS = {
    "linear": lambda epoch, *, n_epochs, n_epochs_decay, lr_decay_iters: linear_factor(
        int(epoch), n_epochs=n_epochs, n_epochs_decay=n_epochs_decay),
    "step": lambda epoch, *, n_epochs, n_epochs_decay, lr_decay_iters: step_factor(int(epoch), lr_decay_iters=lr_decay_iters),
    "cosine": lambda epoch, *, n_epochs, n_epochs_decay, lr_decay_iters: cosine_factor(
        epoch, total_epochs=n_epochs + n_epochs_decay),
}
