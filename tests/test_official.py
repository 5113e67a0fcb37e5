"""Official weights in and out: key layouts, the same outputs, clear errors, no code run on load."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from cyclegan import cli
from cyclegan.checkpoint import Checkpoint, CheckpointError, load_generator
from cyclegan.official import (
    export_official, infer_generator_options, load_official_discriminator, load_official_generator, read_state_dict,
)
from cyclegan.run import fit


class OfficialResnetBlock(nn.Module):
    def __init__(self, dim: int, dropout: bool):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True)]
        layers += [nn.Dropout(0.5)] if dropout else []
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class OfficialLayout(nn.Module):
    """A network laid out as the official code lays it out: one Sequential named ``model``."""

    def __init__(self, layers):
        super().__init__()
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def official_resnet(ngf=4, n_blocks=6, input_nc=3, output_nc=3, dropout=False) -> nn.Module:
    """The official ResnetGenerator's layer list (instance norm: convs keep their bias)."""
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
    for mult in (1, 2):
        layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1), nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
    layers += [OfficialResnetBlock(ngf * 4, dropout) for _ in range(n_blocks)]
    for mult in (4, 2):
        layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1),
                   nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
    return randomised(OfficialLayout(layers))


def official_patchgan(ndf=4, input_nc=3) -> nn.Module:
    layers = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    for i, stride in enumerate((2, 2, 1)):
        layers += [nn.Conv2d(ndf * 2**i, ndf * 2 ** (i + 1), 4, stride, 1), nn.InstanceNorm2d(ndf * 2 ** (i + 1)),
                   nn.LeakyReLU(0.2, True)]
    layers.append(nn.Conv2d(ndf * 8, 1, 4, 1, 1))
    return randomised(OfficialLayout(layers))


def randomised(net: nn.Module) -> nn.Module:
    torch.manual_seed(len(list(net.parameters())))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)  # biases too, so that a misplaced bias shows
    return net.eval()


def save(net: nn.Module, path: Path, extra: dict | None = None) -> Path:
    state = dict(net.state_dict())
    state.update(extra or {})
    torch.save(state, path)
    return path


def official_run(folder: Path, epoch: str = "latest") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, net in (("G_A", official_resnet()), ("G_B", official_resnet()), ("D_A", official_patchgan()),
                      ("D_B", official_patchgan())):
        save(net, folder / f"{epoch}_net_{name}.pth")
    return folder


def test_official_generator_gives_the_same_output(tmp_path):
    official = official_resnet(ngf=4, n_blocks=6)
    stale = {"model.2.running_mean": torch.zeros(4), "model.2.running_var": torch.ones(4),
             "model.2.num_batches_tracked": torch.tensor(0)}  # what old InstanceNorm files carry
    path = save(official, tmp_path / "latest_net_G.pth", stale)
    ours = load_official_generator(path, netG="resnet_6blocks", ngf=4)
    assert not ours.training
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(ours(x), official(x), atol=1e-6)


def test_official_generator_with_dropout_and_grayscale(tmp_path):
    official = official_resnet(ngf=4, n_blocks=9, input_nc=1, output_nc=3, dropout=True)
    path = save(official, tmp_path / "g.pth")
    assert infer_generator_options(read_state_dict(path)) == {
        "netG": "resnet_9blocks", "ngf": 4, "input_nc": 1, "output_nc": 3, "norm": "instance", "no_dropout": False}
    ours = load_official_generator(path, netG="resnet_9blocks", ngf=4, no_dropout=False, input_nc=1, output_nc=3)
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(ours(x), official(x), atol=1e-6)


def test_official_discriminator_gives_the_same_output(tmp_path):
    official = official_patchgan(ndf=4)
    ours = load_official_discriminator(save(official, tmp_path / "d.pth"), ndf=4)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), official(x), atol=1e-6)


def test_a_mismatched_architecture_names_the_key_and_the_architecture(tmp_path):
    path = save(official_resnet(ngf=4, n_blocks=6), tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match=r"does not fit netG=resnet_9blocks ngf=4 .*no weight for model\.16\."):
        load_official_generator(path, netG="resnet_9blocks", ngf=4)
    with pytest.raises(CheckpointError, match=r"model\.1\.weight has shape \(4, 3, 7, 7\), expected \(8, 3, 7, 7\)"):
        load_official_generator(path, netG="resnet_6blocks", ngf=8)


def test_files_that_are_not_state_dicts_are_refused(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        read_state_dict(tmp_path / "text.pth")


class RunsCode:
    """Unpickling this calls os.system: a hostile 'checkpoint'."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pth_whose_unpickling_would_run_code_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model.1.weight": torch.zeros(1), "payload": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_official_generator(path)
    assert not marker.exists()
    assert cli.main(["import-official", str(path), "--name", "x", "--checkpoints_dir", str(tmp_path / "c")]) == 2
    assert not marker.exists()


@pytest.mark.numerics
def test_import_official_run_needs_no_flags_and_translates_like_the_official_g_a(tmp_path):
    source = official_run(tmp_path / "official" / "horse2zebra")
    runs = tmp_path / "checkpoints"
    assert cli.main(["import-official", str(source), "--name", "h2z", "--checkpoints_dir", str(runs)]) == 0
    checkpoint = Checkpoint(runs / "h2z")
    assert (checkpoint.config.model.netG, checkpoint.config.model.ngf, checkpoint.config.model.ndf) == ("resnet_6blocks", 4, 4)
    official_g_a = official_resnet()
    x = torch.rand(1, 3, 36, 28) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(load_generator(runs / "h2z", "AtoB")(x), official_g_a(x), atol=1e-6)
    assert cli.main(["translate", "--checkpoint", str(runs / "h2z"), str(source), "--output", str(tmp_path / "o"),
                     "--quiet"]) == 2  # .pth files are no images: nothing to translate, said plainly


def test_export_then_import_is_exact_and_keeps_official_keys(tmp_path):
    source = official_run(tmp_path / "official")
    runs = tmp_path / "checkpoints"
    assert cli.main(["import-official", str(source), "--name", "one", "--checkpoints_dir", str(runs)]) == 0
    assert cli.main(["export-official", str(runs / "one"), str(tmp_path / "exported"), "--epoch", "7"]) == 0
    for name in ("G_A", "G_B", "D_A", "D_B"):
        original = torch.load(source / f"latest_net_{name}.pth", weights_only=True)
        exported = torch.load(tmp_path / "exported" / f"7_net_{name}.pth", weights_only=True)
        assert original.keys() == exported.keys()
        assert all(torch.equal(original[k], exported[k]) for k in original)
    assert cli.main(["import-official", str(tmp_path / "exported"), "--epoch", "7", "--name", "two",
                     "--checkpoints_dir", str(runs)]) == 0
    one, two = Checkpoint(runs / "one").tensors(), Checkpoint(runs / "two").tensors()
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.numerics
def test_an_ema_run_exports_the_generators_it_translates_with(tmp_path, tiny_config, caplog):
    from cyclegan.training import Trainer

    caplog.set_level(logging.INFO)
    config = tiny_config(ema_decay=0.9, max_iters=2)
    fit(Trainer(config), show_progress=False)
    runs = tmp_path / "back"
    x = torch.rand(1, 3, 32, 28) * 2 - 1
    for flags, ema in (([], True), (["--live"], False)):
        out = tmp_path / f"exported{'-live' * (not ema)}"
        caplog.clear()
        assert cli.main(["export-official", str(config.run_dir), str(out), *flags]) == 0
        assert ("from g_ab_ema (the moving average" in caplog.text) == ema
        name = f"reimported{'-live' * (not ema)}"
        assert cli.main(["import-official", str(out), "--name", name, "--checkpoints_dir", str(runs)]) == 0
        with torch.no_grad():
            for direction in ("AtoB", "BtoA"):
                expected = load_generator(config.run_dir, direction, ema=ema)(x)
                assert torch.equal(load_generator(runs / name, direction)(x), expected), (flags, direction)
    with torch.no_grad():  # two iterations leave the average apart from the live weights
        assert not torch.equal(load_generator(runs / "reimported", "AtoB")(x), load_generator(runs / "reimported-live", "AtoB")(x))


def test_a_single_zoo_generator_imports_for_either_direction(tmp_path):
    path = save(official_resnet(), tmp_path / "latest_net_G.pth")
    runs = tmp_path / "c"
    assert cli.main(["import-official", str(path), "--name", "z", "--checkpoints_dir", str(runs), "--direction", "BtoA"]) == 0
    assert load_generator(runs / "z", "BtoA") is not None
    with pytest.raises(CheckpointError, match="holds no weights for g_ab"):
        load_generator(runs / "z", "AtoB")


def test_export_refuses_architectures_the_official_code_lacks(tmp_path, tiny_config):
    from cyclegan.training import Trainer

    config = tiny_config(global_residual=True, upsample="resize")
    Trainer(config).save(config.run_dir / "latest.safetensors")
    with pytest.raises(ValueError, match="official code has no network with upsample=resize, global_residual=True"):
        export_official(config.run_dir, tmp_path / "out")


def test_test_page_of_a_single_generator_shows_real_and_translated(tmp_path):
    from conftest import write_images

    runs = tmp_path / "c"
    path = save(official_resnet(), tmp_path / "latest_net_G.pth")
    assert cli.main(["import-official", str(path), "--name", "zoo", "--checkpoints_dir", str(runs)]) == 0
    write_images(tmp_path / "data" / "testA", 2, size=(20, 16))
    write_images(tmp_path / "data" / "testB", 2, size=(20, 16))
    assert cli.main(["test", "--checkpoint", str(runs / "zoo"), "--dataroot", str(tmp_path / "data"), "--quiet"]) == 0
    page = (runs / "zoo" / "test_0" / "index.html").read_text()
    assert page.count("<tr>") == 1 + 2 and "reconstructed" not in page and "B to A" not in page
