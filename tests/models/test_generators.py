import pytest
import torch
from torch import nn

from cyclegan.config import ModelConfig
from cyclegan.models import ResnetGenerator, build_generator


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



def test_every_network_name_the_options_offer_builds():
    from cyclegan.models import build_discriminator
    from cyclegan.names import DISCRIMINATOR_NAMES, GENERATOR_NAMES

    for name in GENERATOR_NAMES:
        assert isinstance(build_generator(ModelConfig(netG=name, ngf=2)), torch.nn.Module), name
    for name in DISCRIMINATOR_NAMES:
        assert isinstance(build_discriminator(ModelConfig(netD=name, ndf=2), in_channels=3), torch.nn.Module), name


def test_global_residual_head_sees_the_input_colour():
    # Instance norm makes the features blind to a global brightness change; the head must not be.
    net = build_generator(ModelConfig(ngf=8, global_residual=True))
    torch.nn.init.normal_(net.head[-1].weight, 0.0, 0.05)
    x = torch.rand(1, 3, 32, 32) * 0.5 - 0.25
    with torch.no_grad():
        change_dark = net(x - 0.5) - (x - 0.5)
        change_bright = net(x + 0.5) - (x + 0.5)
    assert not torch.allclose(change_dark, change_bright, atol=1e-3)


@pytest.mark.parametrize("name, expected", [("unet_256", 54_409_603), ("unet_128", 41_825_667)])
def test_unet_parameter_counts_match_the_official_networks(name, expected):
    assert n_params(build_generator(ModelConfig(netG=name))) == expected


@pytest.mark.parametrize("name, size", [("unet_256", 256), ("unet_128", 128)])
def test_unet_keeps_shape_and_concatenates_skips(name, size):
    net = build_generator(ModelConfig(netG=name, ngf=4, input_nc=1, output_nc=3)).eval()
    assert net.size_multiple == size
    with torch.no_grad():
        out = net(torch.randn(1, 1, size, size))
    assert out.shape == (1, 3, size, size) and out.abs().max() <= 1
    skip = net.model.model[1]  # the level below the outermost returns its input beside its output
    with torch.no_grad():
        inner = skip(torch.randn(1, 4, size // 2, size // 2))
    assert inner.shape == (1, 8, size // 2, size // 2)


def test_unet_dropout_follows_no_dropout():
    with_dropout = build_generator(ModelConfig(netG="unet_256", ngf=4, no_dropout=False))
    without = build_generator(ModelConfig(netG="unet_256", ngf=4))
    assert sum(isinstance(m, nn.Dropout) for m in with_dropout.modules()) == 3  # the three middle ngf*8 levels
    assert not any(isinstance(m, nn.Dropout) for m in without.modules())
    assert all(m.p == 0.5 for m in with_dropout.modules() if isinstance(m, nn.Dropout))


def test_unet_refuses_fast_recipe_parts():
    with pytest.raises(ValueError, match="U-Net"):
        build_generator(ModelConfig(netG="unet_128", upsample="resize"))


@pytest.mark.parametrize("kind", ["normal", "xavier", "kaiming", "orthogonal"])
def test_every_init_type_initialises_every_conv(kind):
    torch.manual_seed(0)
    net = build_generator(ModelConfig(netG="resnet_6blocks", ngf=8, init_type=kind, init_gain=0.02))
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)
    stds = [float(c.weight.detach().std()) for c in convs]
    if kind == "normal":
        assert all(0.015 < s < 0.025 for s in stds)
    elif kind == "orthogonal":
        w = convs[3].weight.flatten(1)  # (out, in*k*k) rows are orthogonal, scaled by the gain
        gram = w @ w.T
        assert torch.allclose(gram, 0.02**2 * torch.eye(len(gram)), atol=1e-6)
    else:  # xavier (gain 0.02) is tiny, kaiming (fan_in, gain sqrt 2) is large
        assert (max(stds) < 0.01) if kind == "xavier" else (min(stds) > 0.05)


def test_colour_path_generator_starts_as_identity():
    net = build_generator(ModelConfig(ngf=8, global_residual=True, upsample="resize", colour_path=16))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(net(x), x)
    assert net.colour[-1].weight.shape == (3, 16, 1, 1)


def test_colour_path_maps_a_colour_the_same_in_every_image():
    # The instance-normalised trunk changes a colour by the statistics of the image around it; the
    # colour branch gives one curve for all images, which a tone change such as a gamma needs.
    torch.manual_seed(0)
    net = build_generator(ModelConfig(ngf=8, global_residual=True, colour_path=16))
    for conv in net.colour:
        if isinstance(conv, nn.Conv2d):
            nn.init.normal_(conv.weight, 0.0, 0.3)
    dark, bright = torch.full((1, 3, 32, 32), -0.8), torch.full((1, 3, 32, 32), 0.7)
    dark[..., 16, 16] = bright[..., 16, 16] = torch.tensor([0.1, -0.2, 0.3])
    with torch.no_grad():
        change_dark, change_bright = net(dark) - dark, net(bright) - bright
    assert torch.allclose(change_dark[..., 16, 16], change_bright[..., 16, 16], atol=1e-6)
    assert change_dark[..., 16, 16].abs().max() > 1e-3  # the branch does change it
    net.head[-1].weight.data.normal_(0.0, 0.05)  # the trunk, by contrast, sees the surroundings
    with torch.no_grad():
        change_dark, change_bright = net(dark) - dark, net(bright) - bright
    assert not torch.allclose(change_dark[..., 16, 16], change_bright[..., 16, 16], atol=1e-3)


def test_colour_path_needs_the_global_residual():
    with pytest.raises(ValueError, match="global_residual"):
        build_generator(ModelConfig(colour_path=8))
    from cyclegan.config import build_experiment

    with pytest.raises(ValueError, match="--colour_path adds to the global residual"):
        build_experiment({"colour_path": 8, "dataroot": "d"})
    with pytest.raises(ValueError, match="positive number of channels"):
        build_experiment({"colour_path": -1, "global_residual": True, "dataroot": "d"})
