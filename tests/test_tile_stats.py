"""Whole-image instance-norm statistics over tiles: the staged one-pass program computes what the
layer-by-layer measurement computes, bit for bit, at a fraction of its work, in memory or spilled."""

from __future__ import annotations

import tempfile

import pytest
import torch
from torch import nn

from cyclegan import tile_stats
from cyclegan.config import ModelConfig
from cyclegan.models import build_generator
from cyclegan.tile_stats import KeptStates, TileState, flatten, run_steps
from cyclegan.tiling import TileOptions, TilePlan, blend, run_tiled, tile_outputs

GENERATORS = {
    "resnet": dict(netG="resnet_6blocks", ngf=8),
    "global_residual_colour": dict(netG="resnet_6blocks", ngf=8, global_residual=True, colour_path=8,
                                   colour_transfer_start="joint"),
    "resize_upsampling_dropout": dict(netG="resnet_9blocks", ngf=4, upsample="resize", no_dropout=False),
    "unet_instance": dict(netG="unet_128", ngf=4, norm="instance"),
}


class Opaque(nn.Module):
    """A wrapper the program does not know: tiling falls back to measuring layer by layer."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def generator(name: str) -> nn.Module:
    torch.manual_seed(0)
    net = build_generator(ModelConfig(**GENERATORS[name])).eval()
    if getattr(net, "global_residual", False):  # it starts as the identity, which no statistics change
        for last in (net.head[-1], net.colour[-1], net.colour_map.terms):
            nn.init.normal_(last.weight, 0.0, 0.1)
    return net


def image_and_tiles(net: nn.Module) -> tuple[torch.Tensor, TileOptions, int]:
    multiple = getattr(net, "size_multiple", 4)
    if multiple > 4:  # the U-Net: tiles of two strides
        return torch.rand(1, 3, 3 * multiple, 4 * multiple) * 2 - 1, TileOptions(tile=2 * multiple, overlap=16), multiple
    return torch.rand(1, 3, 120, 176) * 2 - 1, TileOptions(tile=64, overlap=16), multiple


@pytest.mark.numerics
@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("spill", [False, True], ids=["as_configured", "every_state_kept_and_spilled"])
def test_the_staged_pass_is_the_layer_by_layer_measurement_bit_for_bit(name, spill, monkeypatch):
    net = generator(name)
    x, options, multiple = image_and_tiles(net)
    assert flatten(net) is not None and flatten(Opaque(net)) is None
    if spill:
        monkeypatch.setattr(tile_stats, "STATE_MEMORY_BUDGET", 0)
        monkeypatch.setattr(tile_stats, "KEEP_MACS_PER_ELEMENT", 0)
    folders, temporary_directory = [], tempfile.TemporaryDirectory
    monkeypatch.setattr(tempfile, "TemporaryDirectory", lambda **kw: folders.append(temporary_directory(**kw)) or folders[-1])
    with torch.inference_mode():
        staged = run_tiled(net, x, options=options, multiple=multiple)
        layer_by_layer = run_tiled(Opaque(net), x, options=options, multiple=multiple)
        plan = TilePlan.make(*x.shape[-2:], tile=options.tile, overlap=16, multiple=multiple)
        own_statistics = blend(plan, tile_outputs(net, x, plan, "cpu"), 1)
    assert torch.equal(staged, layer_by_layer)
    assert len(folders) == spill  # the spilled states went through a temporary folder
    assert not torch.equal(staged, own_statistics)  # the tiles do take statistics from elsewhere


@pytest.mark.parametrize("name", GENERATORS)
def test_the_program_of_a_generator_computes_its_forward(name):
    net = generator(name)
    x, _, _ = image_and_tiles(net)
    steps = flatten(net)
    own = {}  # every norm layer given the statistics it would take itself: the program is the forward
    with torch.inference_mode():
        for i, step in enumerate(steps):
            if step.kind == "norm":
                h = run_steps(steps[:i], TileState(x), own).h
                own[id(step.module)] = (h.mean((-2, -1)), h.var((-2, -1), unbiased=False))
        assert torch.allclose(run_steps(steps, TileState(x), own).h, net(x), atol=1e-5)


def multiply_adds_of_convolutions(net: nn.Module, run) -> int:
    """Multiply-adds the convolutions of ``net`` do while ``run()`` runs, counted by hooks."""
    total = 0

    def count(layer, inputs, output):
        nonlocal total
        spatial = inputs[0] if isinstance(layer, nn.ConvTranspose2d) else output
        total += layer.weight.numel() * spatial.shape[0] * spatial.shape[-2] * spatial.shape[-1]

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.inference_mode():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _work_of_tiling(ngf: int) -> dict[str, int]:
    torch.manual_seed(0)
    net = build_generator(ModelConfig(netG="resnet_9blocks", ngf=ngf)).eval()
    x, options = torch.rand(1, 3, 200, 296) * 2 - 1, TileOptions(tile=128, overlap=16)
    plan = TilePlan.make(200, 296, tile=128, overlap=16, multiple=4)
    return {"plain": multiply_adds_of_convolutions(net, lambda: blend(plan, tile_outputs(net, x, plan, "cpu"), 1)),
            "staged": multiply_adds_of_convolutions(net, lambda: run_tiled(net, x, options=options, multiple=4)),
            "by_layer": multiply_adds_of_convolutions(net, lambda: run_tiled(Opaque(net), x, options=options, multiple=4))
            if ngf < 64 else 0}


def test_exact_statistics_cost_what_plain_tiles_cost(monkeypatch):
    small = _work_of_tiling(ngf=8)  # every state fits in memory: one pass over the network
    assert small["staged"] == small["plain"]
    assert small["by_layer"] > 8 * small["plain"]  # what it replaces: a pass up to every norm layer
    monkeypatch.setattr(tile_stats, "STATE_MEMORY_BUDGET", 0)  # every state to a file: cheap stages recomputed
    paper = _work_of_tiling(ngf=64)
    assert paper["plain"] < paper["staged"] <= 1.05 * paper["plain"]


def test_kept_states_spill_to_a_temporary_folder_and_come_back_as_they_were(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    states = KeptStates(tiles=2, budget=100)
    small = TileState(torch.arange(6.0).reshape(1, 2, 3))  # 24 bytes x 2 tiles: in memory
    large = TileState(torch.randn(1, 4, 5, 7), [torch.randn(1, 3, 2, 2).to(torch.bfloat16), torch.arange(5)])
    states.put(0, small)
    states.put(1, large)
    assert states.get(0).h is small.h
    [folder] = tmp_path.iterdir()
    assert [p.name for p in folder.iterdir()] == ["1.bin"]
    back = states.get(1)
    assert torch.equal(back.h, large.h) and len(back.skips) == 2
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(back.skips, large.skips))
    shorter = TileState(torch.randn(1, 2, 5, 7))  # the next stage's state, written over the longer file
    states.put(1, shorter)
    assert torch.equal(states.get(1).h, shorter.h) and not states.get(1).skips
    states.close()
    assert not list(tmp_path.iterdir())
