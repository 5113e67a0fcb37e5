import pytest
import torch
from torch import nn

from cyclegan.config import ModelConfig
from cyclegan.models import GENERATORS, ResnetGenerator, build_generator


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name, expected", [("resnet_9blocks", 11_378_179), ("resnet_6blocks", 7_837_699)])
def test_parameter_counts_match_the_official_networks(name, expected):
    assert n_params(build_generator(ModelConfig(netG=name))) == expected


@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_output_keeps_shape_and_lies_in_tanh_range(size):
    net = ResnetGenerator(3, 3, base_channels=8, n_blocks=2)
    x = torch.randn(2, 3, *size)
    y = net(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0


def test_grayscale_to_rgb_channels():
    net = ResnetGenerator(1, 3, base_channels=8, n_blocks=1)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_layer_sequence_follows_the_paper():
    net = ResnetGenerator(3, 3, base_channels=8, n_blocks=2)
    stem = list(net.stem)
    assert isinstance(stem[0], nn.ReflectionPad2d) and stem[0].padding == (3, 3, 3, 3)
    assert stem[1].kernel_size == (7, 7) and stem[1].bias is not None
    downs = [m for m in net.down if isinstance(m, nn.Conv2d)]
    assert [(c.stride, c.out_channels) for c in downs] == [((2, 2), 16), ((2, 2), 32)]
    ups = [m for m in net.up if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.stride, u.padding, u.output_padding, u.out_channels) for u in ups] == [
        ((2, 2), (1, 1), (1, 1), 16), ((2, 2), (1, 1), (1, 1), 8)]
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not n.affine and not n.track_running_stats for n in norms)
    assert all(m.padding_mode == "zeros" and m.padding in ((0, 0), (1, 1)) for m in net.modules() if isinstance(m, nn.Conv2d))
    block = net.blocks[0].conv_block
    assert [type(m).__name__ for m in block] == [
        "ReflectionPad2d", "Conv2d", "InstanceNorm2d", "ReLU", "ReflectionPad2d", "Conv2d", "InstanceNorm2d"]


def test_residual_block_adds_its_input():
    net = ResnetGenerator(3, 3, base_channels=4, n_blocks=1)
    block = net.blocks[0]
    for p in block.parameters():
        nn.init.zeros_(p)
    x = torch.randn(1, 16, 8, 8)
    assert torch.equal(block(x), x)


def test_init_is_normal_with_gain_and_zero_bias():
    torch.manual_seed(0)
    net = build_generator(ModelConfig(ngf=16, init_gain=0.02))
    weights = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    biases = torch.cat([m.bias.flatten() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert torch.count_nonzero(biases) == 0


def test_global_residual_generator_starts_as_identity():
    net = build_generator(ModelConfig(ngf=8, global_residual=True, upsample="resize"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(net(x), x)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())


def test_dropout_only_when_asked():
    with_dropout = build_generator(ModelConfig(ngf=4, no_dropout=False))
    without = build_generator(ModelConfig(ngf=4))
    assert any(isinstance(m, nn.Dropout) for m in with_dropout.modules())
    assert not any(isinstance(m, nn.Dropout) for m in without.modules())


def test_unknown_generator_lists_valid_names():
    with pytest.raises(ValueError, match="resnet_6blocks"):
        build_generator(ModelConfig(netG="unet_999"))
    assert set(GENERATORS) == {"resnet_9blocks", "resnet_6blocks"}


def test_global_residual_head_sees_the_input_colour():
    # Instance norm makes the features blind to a global brightness change; the head must not be.
    net = build_generator(ModelConfig(ngf=8, global_residual=True))
    torch.nn.init.normal_(net.head[-1].weight, 0.0, 0.05)
    x = torch.rand(1, 3, 32, 32) * 0.5 - 0.25
    with torch.no_grad():
        change_dark = net(x - 0.5) - (x - 0.5)
        change_bright = net(x + 0.5) - (x + 0.5)
    assert not torch.allclose(change_dark, change_bright, atol=1e-3)
