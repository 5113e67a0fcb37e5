"""--lambda_cycle_start / --lambda_cycle_ramp: the cycle weights rise over a share of the schedule; identity untouched.
--cycle_beta: the cycle terms as a smooth L1; --cycle_beta_blur: smooth for the error's tone only."""

from __future__ import annotations

import pytest
import torch

from cyclegan.config import build_experiment
from cyclegan.losses import cycle_loss
from cyclegan.run import fit
from cyclegan.training import Trainer


def at_share(trainer: Trainer, epoch: int) -> float:
    """The cycle share set for the first update of ``epoch`` (of the tiny run's 3)."""
    trainer.epoch, trainer.epoch_iter = epoch, 0
    trainer.set_learning_rate()
    return trainer.model.cycle_share


def test_the_cycle_weights_rise_from_their_start_share_over_the_ramp_and_the_identity_weight_stays(tiny_config):
    trainer = Trainer(tiny_config(lambda_A=8.0, lambda_B=6.0, lambda_identity=0.5, lambda_cycle_start=0.25,
                                  lambda_cycle_ramp=0.5))
    fit(trainer, show_progress=False)  # 3 epochs: the schedule's share is 0, 1/3 and 2/3 at their starts
    assert at_share(trainer, 1) == pytest.approx(0.25)
    assert at_share(trainer, 2) == pytest.approx(0.25 + 0.75 * (1 / 3) / 0.5)
    assert at_share(trainer, 3) == 1.0  # past the ramp
    at_share(trainer, 2)
    model, generator = trainer.model, torch.Generator().manual_seed(0)
    a, b = (torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        images = model.translate_both(a, b)
        losses = model.generator_losses(images)
        expected_cycle = 8.0 * 0.75 * (images["rec_a"] - a).abs().mean()
        expected_identity = 6.0 * 0.5 * (model.g_ab(b) - b).abs().mean()
    assert losses["cycle_A"] == pytest.approx(float(expected_cycle), rel=1e-5)
    assert losses["idt_A"] == pytest.approx(float(expected_identity), rel=1e-5)


def test_without_a_ramp_the_cycle_weights_are_the_papers_throughout(tiny_config):
    trainer = Trainer(tiny_config())
    assert [at_share(trainer, epoch) for epoch in (1, 2, 3)] == [1.0, 1.0, 1.0]


def test_a_cycle_beta_makes_the_trainers_cycle_terms_smooth_l1(tiny_config):
    model = Trainer(tiny_config(lambda_A=8.0, cycle_beta=0.2)).model
    generator = torch.Generator().manual_seed(1)
    a, b = (torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        images = model.translate_both(a, b)
        error = (images["rec_a"] - a).abs()
        smooth = torch.where(error < 0.2, 0.5 * error**2 / 0.2, error - 0.1).mean()
        cycle_a = model.generator_losses(images)["cycle_A"]
    assert float(cycle_a) == pytest.approx(8.0 * float(smooth), rel=1e-5)
    assert float(cycle_a) < 8.0 * float(error.mean())  # not the L1


def test_a_cycle_beta_blur_makes_only_the_tone_of_the_cycle_error_smooth(tiny_config):
    model = Trainer(tiny_config(lambda_A=8.0, cycle_beta=0.2, cycle_beta_blur=4)).model
    generator = torch.Generator().manual_seed(2)
    a, b = (torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        images = model.translate_both(a, b)
        error = images["rec_a"] - a
        padded = torch.nn.functional.pad(error, (2, 1, 2, 1), mode="reflect")
        tone = padded.unfold(2, 4, 1).unfold(3, 4, 1).mean(dim=(-1, -2))  # each pixel's 4x4 window, by hand
        smooth = torch.where(tone.abs() < 0.2, 0.5 * tone**2 / 0.2, tone.abs() - 0.1).mean()
        expected = 8.0 * (float(smooth) + float((error - tone).abs().mean()))
        assert float(model.generator_losses(images)["cycle_A"]) == pytest.approx(expected, rel=1e-5)


def test_the_split_cycle_loss_pulls_a_small_tone_shift_gently_and_small_detail_as_the_l1():
    real = torch.zeros(1, 3, 16, 16)
    # A small global tone error (a power of two, so that its local means are exact): all of it is the tone.
    shift = torch.full_like(real, 1 / 64, requires_grad=True)
    cycle_loss(real + shift, real, 1.0, beta=0.1, blur=4).backward()
    assert float(shift.grad.sum()) == pytest.approx((1 / 64) / 0.1, rel=1e-4)  # smooth: in proportion to the error
    stripes = torch.zeros_like(real)
    stripes[..., ::2] = 0.02
    stripes[..., 1::2] = -0.02  # small detail of zero local mean
    split = cycle_loss(real + stripes, real, 1.0, beta=0.1, blur=4)
    assert float(split) == pytest.approx(float(torch.nn.functional.l1_loss(real + stripes, real)), rel=1e-4)
    assert float(split) > 5 * float(cycle_loss(real + stripes, real, 1.0, beta=0.1))  # the smooth loss lets it go


def test_a_cycle_beta_decay_brings_the_l1_back_over_its_share_of_the_schedule(tiny_config):
    trainer = Trainer(tiny_config(cycle_beta=0.2, cycle_beta_decay=0.5))
    betas = []
    for epoch in (1, 2, 3):  # the schedule's share is 0, 1/3 and 2/3 at their starts
        at_share(trainer, epoch)
        betas.append(trainer.model.cycle_beta)
    assert betas == pytest.approx([0.2, 0.2 * (1 - (1 / 3) / 0.5), 0.0])
    constant = Trainer(tiny_config(cycle_beta=0.2))
    at_share(constant, 3)
    assert constant.model.cycle_beta == 0.2


@pytest.mark.parametrize("options,match", [({"lambda_cycle_ramp": 1.5}, "lambda_cycle_ramp"),
                                           ({"lambda_cycle_start": -0.1}, "lambda_cycle_start"),
                                           ({"cycle_beta": -0.1}, "cycle_beta"),
                                           ({"cycle_beta_decay": 2.0}, "cycle_beta_decay"),
                                           ({"cycle_beta_blur": 8}, "cycle_beta_blur"),
                                           ({"cycle_beta": 0.1, "cycle_beta_blur": -1}, "cycle_beta_blur"),
                                           ({"cycle_beta": 0.1, "cycle_beta_blur": 80, "crop_size": 64},
                                            "cycle_beta_blur 80 is a window"),
                                           ({"model": "cut", "lambda_NCE": 1.0, "lambda_identity": 0,
                                             "cycle_beta": 0.1}, "cycle_beta")])
def test_a_ramp_outside_the_schedule_or_a_negative_start_is_refused(options, match):
    with pytest.raises(ValueError, match=match):
        build_experiment(options)
