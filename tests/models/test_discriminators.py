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
