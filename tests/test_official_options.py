"""Every choice the official code offers trains here: generators, discriminators, GAN modes, lr
policies and preprocessing, including the ones the official code documents but gets wrong."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from cyclegan.data import Preprocess
from cyclegan.losses import GANLoss, gradient_penalty
from cyclegan.schedules import Plateau, cosine_factor, linear_factor, step_factor
from cyclegan.run import fit
from cyclegan.training import Trainer


def one_iteration(tiny_config, **options):
    trainer = Trainer(tiny_config(**options))
    crop = trainer.config.data.crop_size
    a, b = torch.rand(1, 3, crop, crop) * 2 - 1, torch.rand(1, 3, crop, crop) * 2 - 1
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    losses = trainer.train_step(a, b)
    after = trainer.model.state_dict()
    changed = {name for name in ("g_ab", "g_ba", "d_a", "d_b")
               if any(not torch.equal(before[k], after[k]) for k in before if k.startswith(name + "."))}
    return losses, changed


@pytest.mark.parametrize("options", [
    {"netG": "unet_128", "load_size": 128, "crop_size": 128},
    {"netG": "unet_256", "load_size": 256, "crop_size": 256, "ngf": 2, "no_dropout": False},
    {"netG": "resnet_9blocks"},
    {"netD": "n_layers", "n_layers_D": 2},
    {"netD": "n_layers", "n_layers_D": 4, "load_size": 64, "crop_size": 64},
    {"netD": "pixel"},
    {"gan_mode": "vanilla"},
    {"gan_mode": "wgangp"},
    {"norm": "batch"},
    {"norm": "none"},
    {"init_type": "orthogonal"},
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_one_training_iteration_per_choice(tiny_config, options):
    losses, changed = one_iteration(tiny_config, **options)
    assert all(math.isfinite(v) for v in losses.values())
    assert changed == {"g_ab", "g_ba", "d_a", "d_b"}


def test_wgangp_critic_loss_and_its_penalty():
    loss = GANLoss("wgangp")
    prediction = torch.tensor([[1.0, 3.0]])
    assert loss(prediction, True) == -2.0 and loss(prediction, False) == 2.0
    # A critic D(x) = sum(w * x) has gradient w everywhere: the penalty is weight * (|w| - 1)^2.
    critic = torch.nn.Conv2d(1, 1, 2, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]]))
    penalty = gradient_penalty(critic, torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2), weight=10.0)
    assert penalty.item() == pytest.approx(10.0 * (5.0 - 1.0) ** 2)
    penalty.backward()
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0  # it trains the critic


def test_wgangp_penalty_is_part_of_both_discriminator_losses(tiny_config):
    torch.manual_seed(0)
    model = Trainer(tiny_config(gan_mode="wgangp", lambda_gp=0.0)).model
    real, fake = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    for d in (model.d_a, model.d_b):
        torch.manual_seed(1)
        without = model.discriminator_loss(d, real, fake).item()
        model.lambda_gp = 10.0
        torch.manual_seed(1)
        with_penalty = model.discriminator_loss(d, real, fake).item()
        model.lambda_gp = 0.0
        assert with_penalty > without


@pytest.mark.parametrize("epoch, factor", [(1, 1.0), (50, 1.0), (51, 0.1), (101, 0.01)])
def test_step_policy_divides_by_ten_every_lr_decay_iters_epochs(epoch, factor):
    assert step_factor(epoch, lr_decay_iters=50) == pytest.approx(factor)


def test_cosine_policy_reaches_zero_at_the_end_of_the_run():
    factors = [cosine_factor(e, total_epochs=200) for e in range(1, 201)]
    assert factors[0] == 1.0 and factors[100] == pytest.approx(0.5) and 0 < factors[-1] < 1e-3
    assert all(a > b for a, b in zip(factors, factors[1:]))
    assert linear_factor(150, n_epochs=100, n_epochs_decay=100) == pytest.approx(1 - 50 / 101)


def test_plateau_policy_cuts_the_lr_after_five_epochs_without_improvement():
    plateau = Plateau()
    factors = [plateau.end_epoch(metric) for metric in [1.0, 0.9, 0.895, 0.9, 0.9, 0.9, 0.9, 0.9]]
    # 0.895 is less than 1% better than 0.9, so no improvement: the sixth bad epoch in a row cuts the lr
    assert factors == [1.0] * 7 + [0.2]
    plateau.load_state_dict(Plateau(factor=0.04, best=0.5, bad_epochs=2).state_dict())
    assert plateau.factor == 0.04 and plateau.bad_epochs == 2


def test_trainer_steps_the_plateau_policy_on_the_epochs_mean_cycle_loss(tiny_config):
    trainer = Trainer(tiny_config(lr_policy="plateau", n_epochs=2, n_epochs_decay=0))
    fit(trainer, show_progress=False)
    assert trainer.plateau.best < math.inf and trainer.plateau.bad_epochs in (0, 1)
    resumed = Trainer.resume(trainer.run_dir)
    assert resumed.plateau == trainer.plateau


@pytest.mark.parametrize("policy", ["step", "cosine"])
def test_trainer_applies_the_policy(tiny_config, policy):
    trainer = Trainer(tiny_config(lr_policy=policy, lr_decay_iters=1, n_epochs=2, n_epochs_decay=0))
    trainer.epoch = 2
    trainer.set_learning_rate()
    expected = {"step": 0.1, "cosine": cosine_factor(2, total_epochs=2)}[policy]
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(2e-4 * expected)


def test_scale_width_keeps_the_aspect_ratio_and_at_least_the_crop_height():
    generator = torch.Generator().manual_seed(0)
    wide = Image.new("RGB", (400, 100))
    out = Preprocess("scale_width", load_size=200, crop_size=64, flip=False)(wide, generator)
    assert out.shape == (3, 64, 200)  # 200 x 50 would be shorter than the crop: raised to 64
    tall = Image.new("RGB", (100, 300))
    assert Preprocess("scale_width", load_size=50, crop_size=32, flip=False)(tall, generator).shape == (3, 150, 50)
    cropped = Preprocess("scale_width_and_crop", load_size=50, crop_size=32, flip=False)(tall, generator)
    assert cropped.shape == (3, 32, 32)


def test_scale_width_options_are_checked_at_start(tiny_config):
    with pytest.raises(ValueError, match="cannot share a batch"):
        tiny_config(preprocess="scale_width", batch_size=2)
    with pytest.raises(ValueError, match="wider than load_size"):
        tiny_config(preprocess="scale_width_and_crop", load_size=32, crop_size=40)


def test_crop_size_must_suit_the_generator(tiny_config):
    with pytest.raises(ValueError, match="--crop_size 200 is not a multiple of 256, the size unet_256 needs"):
        tiny_config(netG="unet_256", load_size=286, crop_size=200)
    with pytest.raises(ValueError, match="not a multiple of 4"):
        tiny_config(crop_size=30)


def test_unet_translates_any_size_and_tiles():
    from cyclegan.config import ModelConfig
    from cyclegan.models import build_generator
    from cyclegan.tiling import TileOptions
    from cyclegan.translate import Translator

    torch.manual_seed(0)
    net = build_generator(ModelConfig(netG="unet_128", ngf=2))
    x = torch.rand(3, 100, 70) * 2 - 1
    assert Translator(net, device="cpu").translate_tensor(x).shape == (3, 100, 70)
    big = torch.rand(3, 300, 520) * 2 - 1
    whole = Translator(net, device="cpu", tiles=TileOptions(tile=1024)).translate_tensor(big)
    tiled = Translator(net, device="cpu", tiles=TileOptions(tile=256, overlap=64)).translate_tensor(big)
    assert tiled.shape == big.shape
    assert (tiled - whole).abs()[:, 16:-16, 16:-16].mean() < 2 / 255
