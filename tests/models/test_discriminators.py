import pytest
import torch
from torch import nn

from cyclegan.config import ModelConfig
from cyclegan.models import build_discriminator


def test_patchgan_parameter_count():
    net = build_discriminator(ModelConfig(), in_channels=3)
    assert sum(p.numel() for p in net.parameters()) == 2_764_737


@pytest.mark.parametrize("size, out", [(256, 30), (64, 6), (70, 6)])
def test_patch_output_size(size, out):
    net = build_discriminator(ModelConfig(ndf=8), in_channels=3)
    assert net(torch.randn(2, 3, size, size)).shape == (2, 1, out, out)


def test_layers_follow_the_70x70_patchgan():
    net = build_discriminator(ModelConfig(ndf=64), in_channels=3)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.kernel_size[0], c.padding[0]) for c in convs] == [
        (3, 64, 2, 4, 1), (64, 128, 2, 4, 1), (128, 256, 2, 4, 1), (256, 512, 1, 4, 1), (512, 1, 1, 4, 1)]
    assert all(c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.Sigmoid) for m in net.modules())
    layers = list(net.model)
    assert isinstance(layers[1], nn.LeakyReLU) and layers[1].negative_slope == 0.2
    assert not isinstance(layers[1], nn.InstanceNorm2d)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in layers) == 3


def test_70x70_receptive_field():
    net = build_discriminator(ModelConfig(ndf=4, norm="none"), in_channels=1)  # a norm would mix all pixels
    x = torch.randn(1, 1, 140, 140, requires_grad=True)
    net(x)[0, 0, 5, 5].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert rows.max() - rows.min() + 1 == 70


def test_n_layers_variant_depth():
    net = build_discriminator(ModelConfig(netD="n_layers", n_layers_D=2, ndf=8), in_channels=3)
    assert len([m for m in net.modules() if isinstance(m, nn.Conv2d)]) == 4


def test_norm_d_overrides_the_discriminator_norm_only():
    from cyclegan.models import build_generator

    cfg = ModelConfig(ndf=8, ngf=4, norm_D="none")
    d = build_discriminator(cfg, in_channels=3)
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in d.modules())
    assert all(c.bias is not None for c in d.modules() if isinstance(c, nn.Conv2d))
    assert any(isinstance(m, nn.InstanceNorm2d) for m in build_generator(cfg).modules())


@pytest.mark.parametrize("norm, layer, bias", [("instance", nn.InstanceNorm2d, True), ("batch", nn.BatchNorm2d, False),
                                               ("none", None, True)])
def test_norm_choice_and_conv_bias(norm, layer, bias):
    d = build_discriminator(ModelConfig(ndf=8, norm=norm), in_channels=3)
    middle = [m for m in d.modules() if isinstance(m, nn.Conv2d)][1:-1]
    assert all((c.bias is not None) == bias for c in middle)
    norms = [m for m in d.modules() if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d))]
    assert (len(norms) == 3 and all(isinstance(m, layer) for m in norms)) if layer else not norms


@pytest.mark.parametrize("netD, k, expected", [("n_layers", 3, 2_764_737), ("n_layers", 4, 6_959_553), ("pixel", 3, 8_705)])
def test_discriminator_parameter_counts_match_the_official_networks(netD, k, expected):
    net = build_discriminator(ModelConfig(netD=netD, n_layers_D=k), in_channels=3)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_pixel_discriminator_judges_every_pixel():
    net = build_discriminator(ModelConfig(netD="pixel", ndf=8), in_channels=3)
    x = torch.randn(1, 3, 20, 24)
    out = net(x)
    assert out.shape == (1, 1, 20, 24)
    x2 = x.clone()
    x2[..., 5, 7] += 1.0
    changed = (net(x2) != out)[0, 0]
    # with instance norm every output moves a little; without it only the one pixel would
    assert changed[5, 7]
    plain = build_discriminator(ModelConfig(netD="pixel", ndf=8, norm="none"), in_channels=3)
    assert ((plain(x2) != plain(x))[0, 0]).nonzero().tolist() == [[5, 7]]
