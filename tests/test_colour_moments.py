"""The colour-moment loss (--lambda_colour) and the colour branch of the fast recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cyclegan.losses import add_sums, colour_moment_loss, colour_moments, colour_sums
from cyclegan.run import fit, make_dataset
from cyclegan.training import Trainer

from conftest import assert_same_networks, straight_and_resumed


def test_colour_moments_are_the_mean_and_covariance_of_the_pixels():
    images = torch.rand(3, 3, 8, 5) * 2 - 1
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    moments = colour_moments(colour_sums(images)).double().numpy()
    covariance = np.cov(pixels.T, bias=True)
    assert np.allclose(moments[:3], pixels.mean(0), atol=1e-6)
    assert np.allclose(moments[3:], covariance[np.triu_indices(3)], atol=1e-5)
    halves = add_sums(colour_sums(images[:1]), colour_sums(images[1:]))
    assert torch.allclose(colour_moments(halves), colour_moments(colour_sums(images)), atol=1e-6)
    grey = torch.rand(2, 1, 4, 4)
    assert colour_moments(colour_sums(grey)).shape == (2,)  # mean and variance


def test_colour_moment_loss_measures_the_whole_set_but_moves_only_the_batch():
    torch.manual_seed(0)
    history_images = torch.rand(4, 3, 6, 6) - 0.5
    fake = (torch.rand(1, 3, 6, 6) - 0.5).requires_grad_(True)
    target = torch.tensor([0.2, 0.1, 0.0, 0.1, 0.0, 0.0, 0.1, 0.0, 0.1])
    loss = colour_moment_loss(fake, target, colour_sums(history_images), 10.0)
    mismatch = colour_moments(colour_sums(torch.cat([history_images, fake.detach()]))) - target
    assert loss.item() == pytest.approx(10.0 * float(mismatch.pow(2).sum()), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, fake)
    (expected,) = torch.autograd.grad(20.0 * (colour_moments(colour_sums(fake)) * mismatch).sum(), fake)
    assert torch.allclose(grad, expected, atol=1e-6)
    # Without a history it is the plain squared distance of the batch's own moments.
    alone = colour_moment_loss(fake, target, None, 10.0)
    plain = 10.0 * (colour_moments(colour_sums(fake)) - target).pow(2).sum()
    assert torch.allclose(torch.autograd.grad(alone, fake)[0], torch.autograd.grad(plain, fake)[0], atol=1e-6)


def test_colour_moment_loss_recovers_a_colour_change_from_unpaired_statistics():
    # Images of one domain go through a learnable colour matrix and offset, one image per step, with
    # a history of the last outputs, as in training; the target is the other domain's moments only.
    # A smooth problem (no ReLU or L1 kinks): the rounding of one CPU's kernels does not compound over
    # the 1,500 steps, so the margins below hold on any CPU.
    torch.manual_seed(0)
    true_matrix = torch.tensor([[0.7, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.9]])
    true_offset = torch.tensor([0.1, 0.15, 0.25])

    def colour(images, matrix, offset):
        return torch.einsum("ij,njhw->nihw", matrix, images) + offset[:, None, None]

    domain_a = torch.rand(200, 3, 8, 8) * 1.6 - 0.8
    other_a = torch.rand(200, 3, 8, 8) * 1.6 - 0.8  # unpaired: B is made from different images
    target = colour_moments(colour_sums(colour(other_a, true_matrix, true_offset)))
    matrix, offset = torch.eye(3).requires_grad_(True), torch.zeros(3).requires_grad_(True)
    optimiser = torch.optim.Adam([matrix, offset], lr=0.001)
    history: list[torch.Tensor] = []
    for step in range(1500):
        fake = colour(domain_a[step % 200][None], matrix, offset)
        sums = colour_sums(torch.cat(history)) if history else None
        optimiser.zero_grad()
        colour_moment_loss(fake, target, sums, 10.0).backward()
        optimiser.step()
        history = (history + [fake.detach()])[-50:]
    with torch.no_grad():
        reached = colour_moments(colour_sums(colour(domain_a, matrix, offset)))
        start = colour_moments(colour_sums(domain_a))
    assert (reached - target).abs().max() < 0.2 * (start - target).abs().max()
    assert (reached[:3] - target[:3]).abs().max() < 0.03  # the mean colour is matched


def test_trainer_measures_the_targets_and_logs_the_colour_losses(tiny_config):
    trainer = Trainer(tiny_config(lambda_colour=10.0, global_residual=True, colour_path=8, max_iters=3))
    with pytest.raises(ValueError, match="colour moments"):
        trainer.train_step(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    dataset = make_dataset(trainer)
    fit(trainer, dataset, show_progress=False)
    images = torch.stack(list(dataset.spread_sample("b", 10_000, trainer.config.train.seed)))
    assert torch.allclose(trainer.colour_targets["b"], colour_moments(colour_sums(images)), atol=1e-6)
    assert len(images) == len(dataset.paths_b)
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "colour_A" in r]
    assert losses and all(r["colour_A"] > 0 and r["colour_B"] > 0 for r in losses)
    assert (trainer.run_dir / "plots" / "colour.svg").is_file()


def test_colour_weight_decays_linearly_and_then_stops_the_loss(tiny_config):
    trainer = Trainer(tiny_config(lambda_colour=10.0, lambda_colour_decay_iters=4, global_residual=True, max_iters=6,
                                  print_freq=1))
    fit(trainer, make_dataset(trainer), show_progress=False)
    trainer.total_iters = 3
    trainer.set_learning_rate()  # as before the fourth update
    assert trainer.model.lambda_colour == pytest.approx(10.0 * (1 - 3 / 4))
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    weighted = [r["colour_A"] for r in records if "colour_A" in r]
    assert len(weighted) == 4 and all(value > 0 for value in weighted)  # iterations 0-3, then the weight is 0
    assert len(records) == 6 and "colour_A" not in records[-1]


@pytest.mark.numerics
def test_resume_is_exact_with_the_colour_loss(tiny_config):
    options = {"lambda_colour": 10.0, "global_residual": True, "colour_path": 8, "pool_size": 3}
    assert_same_networks(*straight_and_resumed(tiny_config, **options))
