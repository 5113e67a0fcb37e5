"""--time_budget: the run's length fixed from the measured iteration rate, the schedule fitted to it, resume exact."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from cyclegan.checkpoint import Checkpoint
from cyclegan.config import parse_duration
from cyclegan.run import TimeBudget, fit
from cyclegan.training import Trainer


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45), (" 2M ", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "0m", "-5s", ""])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="time_budget"):
        parse_duration(text)


@pytest.fixture
def steady_clock(monkeypatch):
    """Every reading of the budget's clock is 0.25 s after the previous one: 4 iterations a second."""
    ticks = itertools.count()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: next(ticks) * 0.25))


def budget_run(tiny_config, name, **options):
    options = {"time_budget": "10s", **options}
    return tiny_config(name=name, recipe="fast", n_epochs=50, n_epochs_decay=50, save_latest_freq=7, **options)


def test_the_budget_fixes_the_length_and_the_schedule_ends_at_it(tiny_config, steady_clock, caplog):
    import logging

    caplog.set_level(logging.INFO)
    trainer = Trainer(budget_run(tiny_config, "b"))
    fit(trainer, show_progress=False)
    # 4 it/s: fixed after iteration 3 + 20 = 23, at 23 clock readings (5.75 s), 4.25 s left: 17 more.
    assert trainer.total_iters == trainer.config.train.budget_iters == 40
    saved = json.loads((trainer.run_dir / "config.json").read_text())["train"]
    assert saved["budget_iters"] == 40 and saved["time_budget"] == "10s"
    epochs = saved["n_epochs"] + saved["n_epochs_decay"]  # 3 images an epoch: 14 epochs cover 40 iterations
    assert epochs == 14 and saved["n_epochs"] == 7
    assert trainer.used_lr < 0.01 * trainer.config.train.lr  # the cosine reached its end with the budget
    assert Checkpoint(trainer.run_dir).config.train.budget_iters == 40
    assert "the run ends at iteration 40" in caplog.text


def test_a_resumed_budget_run_ends_exactly_as_an_uninterrupted_one(tiny_config, steady_clock, monkeypatch):
    whole = Trainer(budget_run(tiny_config, "whole"))
    fit(whole, show_progress=False)
    ticks = itertools.count()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: next(ticks) * 0.25))  # the same clock again
    parts = Trainer(budget_run(tiny_config, "parts"))
    fit(parts, show_progress=False, callback=lambda t: t.total_iters == 30)  # stopped after the horizon is fixed
    resumed = Trainer.resume(parts.run_dir)
    assert resumed.config.train.budget_iters == 40
    fit(resumed, show_progress=False)
    assert resumed.total_iters == 40
    for name, net in whole.networks().items():
        for (key, a), b in zip(net.state_dict().items(), resumed.networks()[name].state_dict().values()):
            assert torch.equal(a, b), (name, key)


def test_a_budget_shorter_than_the_first_iterations_stops_at_once(tiny_config, monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: next(ticks) * 5.0))
    trainer = Trainer(budget_run(tiny_config, "short"))
    fit(trainer, show_progress=False)
    assert trainer.total_iters == trainer.config.train.budget_iters == 2  # the budget was spent by the 2nd


def test_a_pause_while_timing_does_not_shorten_the_run(tiny_config, monkeypatch):
    """An evaluation or a checkpoint during the timed iterations: 0.25 s an iteration, one of 3.25 s."""
    readings = iter([0.0] + [0.25 * i + (3.0 if i >= 5 else 0.0) for i in range(1, 1000)])
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: next(readings)))
    monkeypatch.setattr(TimeBudget, "TIMED", 4)  # a short timing window, so that the test trains a short run
    monkeypatch.setattr(TimeBudget, "MOST_SHARE", 0.5)
    trainer = Trainer(budget_run(tiny_config, "paused", time_budget="12s"))
    fit(trainer, show_progress=False)
    # timed at the median 0.25 s: fixed after iteration 3 + 4 (clock 4.75 s), 7.25 s left: 29 more (the mean
    # timed iteration, 1 s, would have given 7)
    assert trainer.config.train.budget_iters == 7 + 29


def test_a_rate_that_changes_after_the_timing_is_timed_again_and_the_schedule_never_jumps(tiny_config, monkeypatch):
    """0.5 s an iteration while the rate is first timed, 0.25 s from then on (a neighbour on a shared machine
    that stops): timed once, the run would end at iteration 80, after 26 of its 40 seconds."""
    readings = (0.5 * i if i <= 24 else 12.0 + 0.25 * (i - 24) for i in itertools.count())
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(lambda: next(readings)))
    trainer = Trainer(budget_run(tiny_config, "retimed", time_budget="40s", warmup_iters=0))
    shares = []
    fit(trainer, show_progress=False, callback=lambda t: shares.append(t.schedule_share()) and False)
    # fixed at iteration 23 (11.5 s, 2 it/s: 80), timed again at half the budget (iteration 56, 20 s, 4 it/s: 136)
    # and at three quarters (iteration 96, 30 s: 136 still), which ends at the 40th second
    assert trainer.total_iters == trainer.config.train.budget_iters == 136
    assert trainer.config.train.budget_from_iter == 96
    # 46 epochs of 3 crops, split as configured (50 + 50); re-rounding each fit's split would give 24 + 22
    assert (trainer.config.train.n_epochs, trainer.config.train.n_epochs_decay) == (23, 23)
    assert shares[-1] == 1.0 and trainer.used_lr < 0.01 * trainer.config.train.lr
    steps = np.diff(shares)
    # Never back, and never a jump: the steepest part spreads the rest of the schedule over the 57 iterations
    # that the first timing gave (a length fixed without keeping the share done would jump by 0.2 at iteration 23).
    assert steps.min() >= 0 and steps.max() <= 1 / 57
