"""PatchGAN discriminator: the 70x70 one of the paper (n_layers=3) and its deeper/shallower kin; the
multi-scale wrapper of pix2pixHD (--num_D)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .layers import conv_bias, norm_factory


class NLayerDiscriminator(nn.Module):
    """conv4-s2 (no norm), LeakyReLU; ``n_layers - 1`` more conv4-s2 and one conv4-s1 with norm; conv4-s1 to 1.

    Outputs one logit per overlapping patch: 30x30 for a 256x256 input at ``n_layers=3``.
    """

    def __init__(self, in_channels: int = 3, *, base_channels: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        make_norm, bias = norm_factory(norm), conv_bias(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        channels = base_channels
        for n in range(1, n_layers + 1):
            stride = 2 if n < n_layers else 1
            out = base_channels * min(2**n, 8)
            layers += [nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=bias), make_norm(out), nn.LeakyReLU(0.2, True)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # (B, 1, H', W') patch logits


class MultiscaleDiscriminator(nn.Module):
    """``scales`` discriminators of one kind; the k-th judges the input average-pooled by 2, k times.

    pix2pixHD's multi-scale critic: the coarse copies see more of the image per patch at no cost in
    depth. The output is the list of each scale's patch logits, finest first; ``GANLoss`` averages
    the scales' losses, so the weight of the adversarial term is that of one discriminator.
    """

    def __init__(self, make: Callable[[], nn.Module], scales: int):
        super().__init__()
        self.scales = nn.ModuleList(make() for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for k, judge in enumerate(self.scales):
            if k:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(judge(x))
        return outputs


class PixelDiscriminator(nn.Module):
    """1x1 PixelGAN: judges every pixel on its own (conv1, LeakyReLU, conv1, norm, LeakyReLU, conv1)."""

    def __init__(self, in_channels: int = 3, *, base_channels: int = 64, norm: str = "instance"):
        super().__init__()
        make_norm, bias = norm_factory(norm), conv_bias(norm)
        c = base_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, 2 * c, 1, bias=bias), make_norm(2 * c), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * c, 1, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, H, W) per-pixel logits
