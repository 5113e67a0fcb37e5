"""Building blocks shared by the generators and discriminators: norms, initialisation, cubic colour terms."""

from __future__ import annotations

import itertools
from functools import partial
from typing import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]

NORM_LAYERS: dict[str, NormFactory] = {
    # The official code: InstanceNorm without affine parameters or running statistics.
    "instance": partial(nn.InstanceNorm2d, affine=False, track_running_stats=False),
    "batch": partial(nn.BatchNorm2d, affine=True, track_running_stats=True),
    "none": lambda channels: nn.Identity(),
}


def cubic_terms(channels: int) -> list[tuple[int, ...]]:
    """The monomials of a cubic in ``channels`` variables, without the constant: each a tuple of channel
    indices whose product it is ((0,), (1,), ..., (0, 0), (0, 1), ..., (2, 2, 2): 19 for RGB)."""
    return [combo for degree in (1, 2, 3) for combo in itertools.combinations_with_replacement(range(channels), degree)]


def cubic_features(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Every monomial of ``cubic_terms`` of the channels along ``dim``, stacked along ``dim`` (no constant)."""
    channels = x.unbind(dim)
    columns = []
    for combo in cubic_terms(len(channels)):
        product = channels[combo[0]]
        for index in combo[1:]:
            product = product * channels[index]
        columns.append(product)
    return torch.stack(columns, dim)


def norm_factory(name: str) -> NormFactory:
    """The constructor of a norm layer by name."""
    return lookup(NORM_LAYERS, name, "norm")


def conv_bias(norm: str) -> bool:
    """Whether convs followed by this norm carry a bias: all but batch norm, whose shift replaces it.

    The official code also drops the bias with ``--norm none``, which leaves such a network without
    any bias; here it keeps one.
    """
    return norm != "batch"


def lookup(registry: dict, name: str, what: str):
    """``registry[name]``, or a ValueError listing the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(sorted(registry))}") from None


def _init_normal(weight: torch.Tensor, gain: float) -> None:
    nn.init.normal_(weight, 0.0, gain)


def _init_xavier(weight: torch.Tensor, gain: float) -> None:
    nn.init.xavier_normal_(weight, gain=gain)


def _init_kaiming(weight: torch.Tensor, gain: float) -> None:
    nn.init.kaiming_normal_(weight, a=0, mode="fan_in")


def _init_orthogonal(weight: torch.Tensor, gain: float) -> None:
    nn.init.orthogonal_(weight, gain=gain)


WEIGHT_INITS = {
    "normal": _init_normal,
    "xavier": _init_xavier,
    "kaiming": _init_kaiming,
    "orthogonal": _init_orthogonal,
}


@torch.no_grad()
def init_weights(module: nn.Module, kind: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights by ``kind`` (biases 0) and batch-norm scales N(1, gain)."""
    init_weight = lookup(WEIGHT_INITS, kind, "init_type")
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            init_weight(layer.weight, gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, gain)
            nn.init.zeros_(layer.bias)
    return module


def batch_statistics_mode(net: nn.Module) -> nn.Module:
    """``net`` in eval mode except its batch-norm and dropout layers, which run as in training: each batch
    normalised by its own statistics, dropout as noise (the official pix2pix test without --eval). The
    running statistics are left as they are (momentum 0), so a later eval-mode use is unchanged."""
    net.eval()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0
            module.train()
        elif isinstance(module, nn.Dropout):
            module.train()
    return net
