"""ResNet generator of the CycleGAN paper (Johnson et al. style), with optional fast-recipe parts."""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bias, cubic_features, cubic_terms, norm_factory


class ResnetBlock(nn.Module):
    """x + [pad, conv3, norm, ReLU, (dropout), pad, conv3, norm](x)."""

    def __init__(self, channels: int, *, norm: str = "instance", dropout: bool = False):
        super().__init__()
        make_norm, bias = norm_factory(norm), conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(channels),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _upsample_layer(in_channels: int, out_channels: int, *, kind: str, bias: bool) -> list[nn.Module]:
    """Double the resolution: a transposed conv (paper) or nearest resize + conv (no checkerboard)."""
    if kind == "transpose":
        return [nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=bias)]
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                nn.Conv2d(in_channels, out_channels, 3, bias=bias)]
    raise ValueError(f"unknown upsample {kind!r}; valid: resize, transpose")


def _colour_branch(in_channels: int, out_channels: int, hidden: int) -> nn.Sequential:
    """A per-pixel MLP (1x1 convs, no normalisation): the same colour curve for every image.

    The trunk's instance norm rescales each image's features by that image's own statistics, so
    through the trunk a given colour maps differently in a dark image than in a bright one; a tone
    curve (gamma, lifted shadows) needs a path that sees absolute values.
    """
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.LeakyReLU(0.2, True),
                         nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(0.2, True),
                         nn.Conv2d(hidden, out_channels, 1))


class ColourMap(nn.Module):
    """One cubic polynomial of the channels, applied to every pixel of every image: a global colour map.

    It starts as the identity; ``--colour_transfer_start`` sets it to the unpaired colour transfer between
    the training domains before the first step, and it is trained with the rest of the generator. A 1x1
    conv over the cubic's terms, so that it exports as plain convolution.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if in_channels != out_channels:
            raise ValueError("a colour map needs in_channels == out_channels")
        self.terms = nn.Conv2d(len(cubic_terms(in_channels)), out_channels, 1)
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        nn.init.zeros_(self.terms.weight)
        nn.init.zeros_(self.terms.bias)
        with torch.no_grad():  # the first terms are the channels themselves
            self.terms.weight[:, :self.terms.out_channels, 0, 0] = torch.eye(self.terms.out_channels)

    @torch.no_grad()
    def set_cubic(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Take a cubic fitted elsewhere ((C_out, terms) and (C_out,), the layout of ``colour_transfer.fit_cubic``)."""
        self.terms.weight.copy_(weight.reshape(self.terms.weight.shape))
        self.terms.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.terms(cubic_features(x, dim=1))


class ResnetGenerator(nn.Module):
    """c7s1-k, two stride-2 downsamplings, ``n_blocks`` residual blocks, two upsamplings, c7s1-out.

    Spatial sizes that are multiples of ``size_multiple`` (4) come back unchanged.
    """

    size_multiple = 4  # two stride-2 downsamplings

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        *,
        base_channels: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: bool = False,
        upsample: str = "transpose",
        global_residual: bool = False,
        colour_path: int = 0,
        colour_map: bool = False,
    ):
        super().__init__()
        if global_residual and in_channels != out_channels:
            raise ValueError("global_residual needs in_channels == out_channels")
        if colour_path and not global_residual:
            raise ValueError("colour_path needs global_residual=True")
        if colour_map and not global_residual:
            raise ValueError("colour_map needs global_residual=True")
        make_norm, bias = norm_factory(norm), conv_bias(norm)
        c = base_channels
        self.global_residual = global_residual
        self.stem = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c, 7, bias=bias), make_norm(c), nn.ReLU(True)
        )
        self.down = nn.Sequential(
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), make_norm(2 * c), nn.ReLU(True),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1, bias=bias), make_norm(4 * c), nn.ReLU(True),
        )
        self.blocks = nn.Sequential(*[ResnetBlock(4 * c, norm=norm, dropout=dropout) for _ in range(n_blocks)])
        self.up = nn.Sequential(
            *_upsample_layer(4 * c, 2 * c, kind=upsample, bias=bias), make_norm(2 * c), nn.ReLU(True),
            *_upsample_layer(2 * c, c, kind=upsample, bias=bias), make_norm(c), nn.ReLU(True),
        )
        # With a global residual the head also sees the input itself: instance norm hides absolute
        # colour and brightness from the features, and a tone or colour change needs them.
        head_in = c + in_channels if global_residual else c
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(head_in, out_channels, 7))
        self.colour = _colour_branch(in_channels, out_channels, colour_path) if colour_path else None
        # The residual is added to a global colour map of the input instead of the input itself.
        self.colour_map = ColourMap(in_channels, out_channels) if colour_map else None

    def start_as_identity(self) -> None:
        """Zero the last conv so that a global-residual generator starts as the identity map."""
        if not self.global_residual:
            raise ValueError("start_as_identity needs global_residual=True")
        lasts = [self.head[-1]] + ([self.colour[-1]] if self.colour is not None else [])
        for last in lasts:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        if self.colour_map is not None:
            self.colour_map.reset_to_identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.up(self.blocks(self.down(self.stem(x)))), x)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder features CUT's PatchNCE compares (the official nce_layers 0, 4, 8, 12, 16): the input,
        the first stride-2 conv's output, the second's normalised output, and the outputs of residual blocks
        3 and 7 (the last one, in shorter trunks)."""
        features = [x]
        h = self.down[0](self.stem(x))
        features.append(h)
        for layer in self.down[1:5]:
            h = layer(h)
        features.append(h)
        h = self.down[5](h)
        taps = {min(2, len(self.blocks) - 1), min(6, len(self.blocks) - 1)}
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index in taps:
                features.append(h)
        return features

    def encoder_channels(self) -> list[int]:
        """The channels of ``encode``'s features."""
        c = self.stem[1].out_channels
        taps = len({min(2, len(self.blocks) - 1), min(6, len(self.blocks) - 1)})
        return [self.stem[1].in_channels, 2 * c, 4 * c] + [4 * c] * taps

    def finish(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The output from the trunk's features ``h`` (B, base_channels, H, W) and the input ``x``; a
        method of its own so that tiled translation can run the trunk layer by layer and end here."""
        if self.global_residual:
            residual = self.head(torch.cat([h, x], dim=1))  # (B, out_channels, H, W)
            if self.colour is not None:
                residual = residual + self.colour(x)
            return (self.base(x) + residual).clamp(-1.0, 1.0)
        return torch.tanh(self.head(h))

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """What a global-residual generator adds its residual to: the input, or its global colour map of it."""
        if not self.global_residual:
            raise ValueError("only a global-residual generator has a base under its residual")
        return x if self.colour_map is None else self.colour_map(x)


class UnetSkipBlock(nn.Module):
    """One level of the U-Net: down, the inner levels, up; its input is concatenated to its output.

    The module layout (``model`` Sequential, the same indices) is the official code's, so that
    official U-Net weights load key for key.
    """

    def __init__(self, outer_channels: int, inner_channels: int, *, in_channels: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False, innermost: bool = False,
                 norm: str = "batch", dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        make_norm, bias = norm_factory(norm), conv_bias(norm)
        in_channels = outer_channels if in_channels is None else in_channels
        down_conv = nn.Conv2d(in_channels, inner_channels, 4, stride=2, padding=1, bias=bias)
        if outermost:
            up = [nn.ReLU(True), nn.ConvTranspose2d(inner_channels * 2, outer_channels, 4, stride=2, padding=1), nn.Tanh()]
            layers = [down_conv, submodule, *up]
        elif innermost:
            up_conv = nn.ConvTranspose2d(inner_channels, outer_channels, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), up_conv, make_norm(outer_channels)]
        else:
            up_conv = nn.ConvTranspose2d(inner_channels * 2, outer_channels, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down_conv, make_norm(inner_channels), submodule,
                      nn.ReLU(True), up_conv, make_norm(outer_channels)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)  # (B, outer + outer, H, W): the skip connection


class UnetGenerator(nn.Module):
    """The pix2pix U-Net: ``num_downs`` stride-2 levels (8 for 256 px, 7 for 128 px) with skips.

    Spatial sizes must be multiples of 2**num_downs (``size_multiple``); one multiple is enough
    (``smallest_side``): the innermost level, at 1x1, has no norm and no padding.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, *, num_downs: int = 8, base_channels: int = 64,
                 norm: str = "batch", dropout: bool = False, upsample: str = "transpose", global_residual: bool = False,
                 colour_path: int = 0, colour_map: bool = False):
        super().__init__()
        if upsample != "transpose" or global_residual or colour_path or colour_map:
            raise ValueError("the U-Net generators support only --upsample transpose without --global_residual, "
                             "--colour_path or --colour_transfer_start")
        c = base_channels
        block = UnetSkipBlock(c * 8, c * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipBlock(c * 8, c * 8, submodule=block, norm=norm, dropout=dropout)
        for outer in (4, 2, 1):
            block = UnetSkipBlock(c * outer, c * outer * 2, submodule=block, norm=norm)
        self.model = UnetSkipBlock(out_channels, c, in_channels=in_channels, submodule=block, outermost=True, norm=norm)
        self.size_multiple = self.smallest_side = 2**num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchProjection(nn.Module):
    """CUT's projection head (the official netF, ``mlp_sample``): for each encoder layer, a two-layer MLP
    (width 256) applied to features sampled at the same random locations in two images, L2-normalised."""

    def __init__(self, channels: list[int], width: int = 256):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, width), nn.ReLU(), nn.Linear(width, width)) for c in channels)

    def forward(self, features: list[torch.Tensor], patches: int, locations: list[torch.Tensor] | None = None):
        """([(B * patches, width) per layer], the locations used): at ``locations`` when given, else drawn."""
        out, used = [], []
        for index, (mlp, feature) in enumerate(zip(self.mlps, features)):
            flat = feature.flatten(2).transpose(1, 2)  # (B, H*W, C)
            ids = locations[index] if locations is not None else torch.randperm(
                flat.shape[1], device=flat.device)[:patches]
            picked = mlp(flat[:, ids, :].flatten(0, 1))
            out.append(nn.functional.normalize(picked, dim=1))
            used.append(ids)
        return out, used
