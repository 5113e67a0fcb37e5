"""Network registries and the two builders that turn a ModelConfig into initialised networks."""

from __future__ import annotations

from functools import partial

from torch import nn

from ..config import ModelConfig
from ..names import BASIC_D_LAYERS
from .discriminators import MultiscaleDiscriminator, NLayerDiscriminator, PixelDiscriminator
from .generators import ColourMap, ResnetBlock, ResnetGenerator, UnetGenerator, UnetSkipBlock
from .layers import init_weights, lookup

GENERATORS = {
    "resnet_9blocks": partial(ResnetGenerator, n_blocks=9),
    "resnet_6blocks": partial(ResnetGenerator, n_blocks=6),
    "unet_256": partial(UnetGenerator, num_downs=8),
    "unet_128": partial(UnetGenerator, num_downs=7),
}

DISCRIMINATORS = {
    "basic": lambda in_channels, *, n_layers, **kw: NLayerDiscriminator(in_channels, n_layers=BASIC_D_LAYERS, **kw),
    "n_layers": lambda in_channels, *, n_layers, **kw: NLayerDiscriminator(in_channels, n_layers=n_layers, **kw),
    "pixel": lambda in_channels, *, n_layers, **kw: PixelDiscriminator(in_channels, **kw),
}


def build_generator(cfg: ModelConfig, *, in_channels: int | None = None, out_channels: int | None = None) -> nn.Module:
    """An initialised generator; channels default to input_nc -> output_nc (pass them swapped for G_BA)."""
    make = lookup(GENERATORS, cfg.netG, "netG")
    net = make(
        cfg.input_nc if in_channels is None else in_channels,
        cfg.output_nc if out_channels is None else out_channels,
        base_channels=cfg.ngf,
        norm=cfg.norm,
        dropout=not cfg.no_dropout,
        upsample=cfg.upsample,
        global_residual=cfg.global_residual,
        colour_path=cfg.colour_path,
        colour_map=cfg.colour_transfer_start != "off",
    )
    init_weights(net, cfg.init_type, cfg.init_gain)
    if cfg.global_residual:
        net.start_as_identity()
    return net


def generator_for(cfg: ModelConfig, direction: str) -> nn.Module:
    """An initialised generator that translates ``direction``: G_A (AtoB) or G_B (BtoA)."""
    in_channels, out_channels = cfg.generator_channels(direction)
    return build_generator(cfg, in_channels=in_channels, out_channels=out_channels)


def build_discriminator(cfg: ModelConfig, *, in_channels: int) -> nn.Module:
    """An initialised discriminator judging images with ``in_channels`` channels (at --num_D scales)."""
    make = lookup(DISCRIMINATORS, cfg.netD, "netD")
    norm = cfg.norm if cfg.norm_D == "same" else cfg.norm_D
    one = partial(make, in_channels, n_layers=cfg.n_layers_D, base_channels=cfg.ndf, norm=norm)
    net = one() if cfg.num_D == 1 else MultiscaleDiscriminator(one, cfg.num_D)  # one scale keeps the official keys
    init_weights(net, cfg.init_type, cfg.init_gain)
    return net


__all__ = [
    "ColourMap",
    "DISCRIMINATORS",
    "GENERATORS",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetGenerator",
    "UnetSkipBlock",
    "build_discriminator",
    "build_generator",
    "generator_for",
    "init_weights",
]
