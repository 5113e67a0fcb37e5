"""The multi-scale discriminator (--num_D): its scales, its loss, the size check, and training with it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cyclegan.checkpoint import load_generator
from cyclegan.config import ModelConfig, build_experiment, smallest_patch_input
from cyclegan.losses import GANLoss, gradient_penalty
from cyclegan.models import MultiscaleDiscriminator, NLayerDiscriminator, build_discriminator
from cyclegan.run import fit
from cyclegan.training import Trainer

SCALES = {"netD": "n_layers", "n_layers_D": 2, "num_D": 2}  # a 2-layer PatchGAN judges a 32 px crop at 32 and 16 px


def test_one_scale_is_the_plain_patchgan_with_the_official_keys():
    plain = build_discriminator(ModelConfig(ndf=8), in_channels=3)
    assert isinstance(plain, NLayerDiscriminator) and "model.0.weight" in plain.state_dict()


def test_each_scale_judges_the_image_pooled_once_more():
    torch.manual_seed(0)
    net = build_discriminator(ModelConfig(ndf=8, num_D=3), in_channels=3)
    assert isinstance(net, MultiscaleDiscriminator) and len(net.scales) == 3
    x = torch.rand(1, 3, 96, 96)
    outputs = net(x)
    assert [o.shape[-1] for o in outputs] == [10, 4, 1]  # 96, 48 and 24 px inputs: side / 8 - 2
    coarse = F.avg_pool2d(F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), 3, 2, 1, count_include_pad=False)
    assert torch.equal(outputs[2], net.scales[2](coarse))
    assert not torch.equal(net.scales[0].model[0].weight, net.scales[1].model[0].weight)  # separately initialised


def test_the_gan_loss_of_several_scales_is_the_mean_of_their_losses():
    torch.manual_seed(0)
    fine, coarse = torch.randn(1, 1, 6, 6), torch.randn(1, 1, 2, 2)
    for mode in ("lsgan", "vanilla", "wgangp"):
        loss = GANLoss(mode)
        assert torch.allclose(loss([fine, coarse], True), (loss(fine, True) + loss(coarse, True)) / 2)
    lsgan = GANLoss("lsgan")([fine, coarse], False)
    assert torch.allclose(lsgan, ((fine ** 2).mean() + (coarse ** 2).mean()) / 2)


def test_the_gradient_penalty_reaches_every_scale():
    torch.manual_seed(0)
    net = build_discriminator(ModelConfig(ndf=4, num_D=2, netD="n_layers", n_layers_D=2), in_channels=3)
    penalty = gradient_penalty(net, torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    penalty.backward()
    assert all(scale.model[0].weight.grad.abs().sum() > 0 for scale in net.scales)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_smallest_patch_input_is_the_smallest_side_a_patchgan_judges(n_layers):
    net = NLayerDiscriminator(3, base_channels=4, n_layers=n_layers)
    side = smallest_patch_input(n_layers)
    assert net(torch.rand(1, 3, side, side)).shape[-1] == 1
    with pytest.raises((RuntimeError, ValueError)):  # no output left, or instance norm over one pixel
        net(torch.rand(1, 3, side - 1, side - 1))


def test_scales_too_coarse_for_the_patchgan_are_refused_before_training():
    build_experiment({"crop_size": 64, "load_size": 72, "num_D": 2})  # 32 px at the coarse scale: fine
    with pytest.raises(ValueError, match=r"--num_D 3: the coarsest scale of a 64 px crop is 16 px.*24 px"):
        build_experiment({"crop_size": 64, "load_size": 72, "num_D": 3})
    with pytest.raises(ValueError, match="num_D"):
        build_experiment({"num_D": 0})
    build_experiment({"crop_size": 64, "load_size": 72, "num_D": 5, "netD": "pixel"})  # a PixelGAN judges any size


def test_training_with_two_scales_trains_both_and_resumes_exactly(tiny_config):
    whole = Trainer(tiny_config(name="whole", max_iters=4, **SCALES))
    before = {k: v.clone() for k, v in whole.model.d_b.state_dict().items()}
    fit(whole, show_progress=False)
    after = whole.model.d_b.state_dict()
    for scale in (0, 1):
        assert not torch.equal(before[f"scales.{scale}.model.0.weight"], after[f"scales.{scale}.model.0.weight"])
    parts = Trainer(tiny_config(name="parts", max_iters=2, **SCALES))
    fit(parts, show_progress=False)
    resumed = Trainer.resume(parts.run_dir, overrides={"max_iters": 4})
    assert resumed.config.model.num_D == 2  # from the checkpoint, no flag
    fit(resumed, show_progress=False)
    for name, net in whole.networks().items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, resumed.networks()[name].state_dict()[key]), (name, key)
    load_generator(whole.run_dir, "AtoB")  # the generator loads with no architecture flags
