"""pix2pix: the official defaults, the official step bit for bit, the aligned data, and everything
downstream of a pix2pix checkpoint (resume, translate, test, evaluate, export, official weights)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from cyclegan import cli
from cyclegan.checkpoint import Checkpoint, CheckpointError
from cyclegan.config import build_experiment
from cyclegan.data import PairedDataset, Preprocess, find_pairs, paired_dataset_from_folders
from cyclegan.evaluate import evaluate_run
from cyclegan.heldout import run_test
from cyclegan.metrics import psnr
from cyclegan.objective import Pix2Pix, set_requires_grad
from cyclegan.official import export_official, import_official, load_official_generator
from cyclegan.run import fit, make_dataset
from cyclegan.training import Trainer
from cyclegan.translate import Translator

from conftest import TINY_OPTIONS, check_one_way_translate

SIZE = 128  # unet_128 needs sides that are multiples of 128
PIX2PIX_TINY = {**TINY_OPTIONS, "model": "pix2pix", "netG": "unet_128", "load_size": 136, "crop_size": SIZE,
                "ngf": 4, "ndf": 4, "pool_size": 0}


def write_aligned(folder: Path, count: int, *, seed: int = 0, size: int = 136) -> list[Path]:
    """Side-by-side A|B images whose B half is the negative of the A half."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / f"pair_{i:02d}.png"
        Image.fromarray(np.concatenate([a, 255 - a], axis=1)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def aligned(tmp_path: Path) -> Path:
    root = tmp_path / "aligned"
    write_aligned(root / "train", 4, seed=1)
    write_aligned(root / "test", 2, seed=2, size=SIZE)
    return root


@pytest.fixture
def pix2pix_config(aligned: Path, tmp_path: Path):
    def make(**overrides):
        return build_experiment({**PIX2PIX_TINY, "dataroot": str(aligned), "checkpoints_dir": str(tmp_path / "runs"),
                                 "name": "p2p", **overrides})

    return make


# ---- options ----------------------------------------------------------------------------------

def test_model_pix2pix_brings_the_official_defaults_beneath_the_options_given():
    config = build_experiment({"model": "pix2pix"})
    m, t = config.model, config.train
    assert (m.netG, m.norm, m.no_dropout, m.netD) == ("unet_256", "batch", False, "basic")
    assert (t.gan_mode, t.lambda_L1, t.pool_size, t.lambda_identity) == ("vanilla", 100.0, 0, 0.0)
    assert (t.lr, t.beta1, t.n_epochs, t.n_epochs_decay, t.lr_policy) == (0.0002, 0.5, 100, 100, "linear")
    given = build_experiment({"model": "pix2pix", "netG": "resnet_6blocks", "gan_mode": "lsgan"})
    assert (given.model.netG, given.train.gan_mode, given.model.norm) == ("resnet_6blocks", "lsgan", "batch")
    assert build_experiment({}).model.model == "cycle_gan" and build_experiment({}).train.gan_mode == "lsgan"


@pytest.mark.parametrize("option", ["lambda_identity", "lambda_colour", "lambda_paired"])
def test_cyclegan_only_losses_are_refused_for_pix2pix(option):
    with pytest.raises(ValueError, match=f"pix2pix has no {option}"):
        build_experiment({"model": "pix2pix", option: 1.0})


def test_the_discriminator_is_conditional(pix2pix_config):
    trainer = Trainer(pix2pix_config(input_nc=1, output_nc=3, netD="n_layers", n_layers_D=2))
    assert sorted(trainer.model.networks()) == ["d_b", "g_ab"]
    assert trainer.model.d_b.model[0].in_channels == 4  # input and output stacked
    assert trainer.model.g_ab(torch.zeros(1, 1, SIZE, SIZE)).shape == (1, 3, SIZE, SIZE)


# ---- the official step ---------------------------------------------------------------------------

def official_pix2pix_step(net_g, net_d, opt_g, opt_d, real_a, real_b, lambda_l1: float) -> dict[str, float]:
    """The official Pix2PixModel.optimize_parameters, written out: forward, D update, then G update."""
    fake_b = net_g(real_a)  # forward()
    set_requires_grad([net_d], True)
    opt_d.zero_grad()
    pred_fake = net_d(torch.cat((real_a, fake_b), 1).detach())  # backward_D()
    loss_d_fake = F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
    pred_real = net_d(torch.cat((real_a, real_b), 1))
    loss_d_real = F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real))
    ((loss_d_fake + loss_d_real) * 0.5).backward()
    opt_d.step()
    set_requires_grad([net_d], False)
    opt_g.zero_grad()
    pred_fake = net_d(torch.cat((real_a, fake_b), 1))  # backward_G()
    loss_g_gan = F.binary_cross_entropy_with_logits(pred_fake, torch.ones_like(pred_fake))
    loss_g_l1 = F.l1_loss(fake_b, real_b) * lambda_l1
    (loss_g_gan + loss_g_l1).backward()
    opt_g.step()
    return {"G_GAN": loss_g_gan.item(), "G_L1": loss_g_l1.item(), "D_real": loss_d_real.item(),
            "D_fake": loss_d_fake.item()}


@pytest.mark.numerics
def test_trainer_steps_are_the_official_pix2pix_steps_bit_for_bit(pix2pix_config):
    """U-Net with batch norm and dropout, conditional PatchGAN with batch norm: losses, weights and the
    running statistics must be the official ones exactly after several steps (same Adam kernel; dropout
    from the same global RNG state)."""
    trainer = Trainer(pix2pix_config(), device="cpu")
    assert isinstance(trainer.model, Pix2Pix) and any(isinstance(m, nn.Dropout) for m in trainer.model.g_ab.modules())
    reference = copy.deepcopy(trainer.model)
    adam = dict(lr=2e-4, betas=(0.5, 0.999), fused=True)
    opt_g, opt_d = torch.optim.Adam(reference.g_ab.parameters(), **adam), torch.optim.Adam(reference.d_b.parameters(), **adam)
    torch.manual_seed(7)
    batches = [(torch.rand(1, 3, SIZE, SIZE) * 2 - 1, torch.rand(1, 3, SIZE, SIZE) * 2 - 1) for _ in range(3)]
    for step, (a, b) in enumerate(batches):
        torch.manual_seed(100 + step)
        ours = trainer.train_step(a, b)
        torch.manual_seed(100 + step)
        assert ours == official_pix2pix_step(reference.g_ab, reference.d_b, opt_g, opt_d, a, b, 100.0)
    theirs = reference.state_dict()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, theirs[key]), key


# ---- aligned data ------------------------------------------------------------------------------------

def test_side_by_side_halves_get_the_same_crop_and_flip(aligned):
    dataset = paired_dataset_from_folders(aligned, preprocess=Preprocess("crop", crop_size=64))
    flips = set()
    for epoch in (1, 2, 3):
        dataset.set_epoch(epoch)
        for item in (dataset[i] for i in range(len(dataset))):
            assert item["A"].shape == item["B"].shape == (3, 64, 64)
            assert torch.allclose(item["B"], -item["A"], atol=1e-6)  # B is A's negative, pixel for pixel
            source = np.asarray(Image.open(item["A_path"]))[:, :136]
            flips.add(_found_at(item["A"], source))
    assert flips == {False, True}  # both flipped and unflipped crops were drawn


def _found_at(crop: torch.Tensor, source: np.ndarray) -> bool:
    """Whether ``crop`` is a mirrored window of ``source`` (and assert it is a window at all)."""
    pixels = np.rint((crop.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    for flipped in (False, True):
        window = pixels[:, ::-1] if flipped else pixels
        hits = np.argwhere((source[:, :, 0] == window[0, 0, 0]))
        for top, left in hits:
            if top + 64 <= source.shape[0] and left + 64 <= source.shape[1] and \
                    np.array_equal(source[top:top + 64, left:left + 64], window):
                return flipped
    raise AssertionError("the crop is not a window of its source half")


def test_btoa_takes_the_right_half_as_the_input(aligned):
    forward = PairedDataset(find_pairs(aligned)[0], preprocess=Preprocess("crop", crop_size=64, flip=False), serial=True)
    swapped = PairedDataset(find_pairs(aligned, direction="BtoA")[0], preprocess=Preprocess("crop", crop_size=64, flip=False),
                            swap=True, serial=True)
    assert torch.equal(forward[0]["A"], swapped[0]["B"]) and torch.equal(forward[0]["B"], swapped[0]["A"])


def test_two_folders_pair_by_name_and_a_missing_partner_is_reported_and_skipped(tmp_path, pix2pix_config):
    root = tmp_path / "named"
    for i, stem in enumerate(("x", "y", "only_in_a")):
        a = np.full((136, 136, 3), 20 * i, np.uint8)
        (root / "trainA").mkdir(parents=True, exist_ok=True)
        (root / "trainB").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / "trainA" / f"{stem}.png")
        if stem != "only_in_a":
            Image.fromarray(255 - a).save(root / "trainB" / f"{stem}.bmp")  # another extension, the same name
    Image.fromarray(np.zeros((136, 136, 3), np.uint8)).save(root / "trainB" / "only_in_b.png")
    trainer = Trainer(pix2pix_config(dataroot=str(root)))
    dataset = make_dataset(trainer)
    assert [(a.name, b.name) for a, b in dataset.pairs] == [("x.png", "x.bmp"), ("y.png", "y.bmp")]
    listing = (trainer.run_dir / "bad_images.txt").read_text()
    assert "only_in_a.png\tno partner named only_in_a.* in" in listing and "only_in_b.png\tno partner" in listing
    item = dataset[0]
    assert torch.allclose(item["B"], -item["A"], atol=1e-6)
    with pytest.raises(Exception, match="only_in_a.png: no partner"):
        make_dataset(Trainer(pix2pix_config(dataroot=str(root), on_bad_image="fail", name="strict")))


def test_a_folder_with_neither_layout_says_what_it_needs(tmp_path, pix2pix_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither train/ .* nor trainA/ and trainB/"):
        make_dataset(Trainer(pix2pix_config(dataroot=str(tmp_path / "empty"))))


# ---- a pix2pix run and everything downstream ----------------------------------------------------------

@pytest.mark.numerics
def test_pix2pix_resumes_exactly(pix2pix_config):
    options = dict(n_epochs=1, n_epochs_decay=2)
    straight = Trainer(pix2pix_config(name="straight", max_iters=6, **options))
    fit(straight, show_progress=False)
    first = Trainer(pix2pix_config(name="split", max_iters=3, **options))
    run = fit(first, show_progress=False)
    torch.manual_seed(999)  # whatever happens in between must not matter
    resumed = Trainer.resume(run, overrides={"max_iters": 6})
    fit(resumed, show_progress=False)
    ours, theirs = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    for one, two in ((straight.opt_g, resumed.opt_g), (straight.opt_d, resumed.opt_d)):
        for s1, s2 in zip(one.state_dict()["state"].values(), two.state_dict()["state"].values()):
            assert all(torch.equal(s1[k], s2[k]) for k in s1)
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in losses] == list(range(1, 7)) and {"G_GAN", "G_L1", "D_real", "D_fake"} <= set(losses[0])


def test_train_command_translates_any_size_tests_and_evaluates(aligned, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["train", "--model", "pix2pix", "--dataroot", str(aligned), "--checkpoints_dir", str(runs), "--name", "cli",
            "--netG", "unet_128", "--ngf", "4", "--ndf", "4", "--load_size", "136", "--crop_size", str(SIZE),
            "--n_epochs", "1", "--n_epochs_decay", "0", "--num_threads", "0", "--print_freq", "1"]
    assert cli.main(args) == 0
    run = runs / "cli"
    assert Checkpoint(run).config.model.model == "pix2pix"
    assert "G_L1" in (run / "index.html").read_text() or (run / "plots" / "l1.svg").is_file()
    samples = sorted((run / "samples").glob("*.png"))
    width, height = Image.open(samples[-1]).size
    assert height == SIZE and 3 * SIZE <= width < 4 * SIZE  # one row: real A | fake B | real B
    check_one_way_translate(run, tmp_path, capsys, size=(97, 130), refusal="no BtoA generator")

    page = run_test(run)
    rows = list((page.parent / "images").glob("*_truth.png"))
    assert len(rows) == 2 and "ground truth" in page.read_text()

    report = evaluate_run(run, fid=False)
    translator = Translator.from_checkpoint(run)
    expected = []
    for path in sorted((aligned / "test").glob("*.png")):
        both = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 127.5 - 1
        a, b = both[:, :, :SIZE], both[:, :, SIZE:]
        expected.append(psnr(translator.translate_tensor(a), b))
    assert report["results"]["AtoB"]["truth"]["psnr_db"] == pytest.approx(float(np.mean(expected)), abs=1e-4)
    assert list(report["results"]) == ["AtoB"] and report["results"]["AtoB"]["cycle_l1_255"] is None


def test_evaluate_with_an_injected_feature_network_gives_fid_against_the_partners(pix2pix_config):
    from test_evaluate import TinyFeatures

    run = fit(Trainer(pix2pix_config(max_iters=1)), show_progress=False)
    result = evaluate_run(run, feature_net=TinyFeatures())["results"]["AtoB"]
    assert result["fid"] > 0 and "kid" in result and result["truth"]["matched"] == 2


def test_train_mode_uses_each_images_statistics_and_dropout(pix2pix_config):
    run = fit(Trainer(pix2pix_config(max_iters=2)), show_progress=False)
    x = torch.rand(3, SIZE, SIZE) * 2 - 1
    evaluated = Translator.from_checkpoint(run)
    assert torch.equal(evaluated.translate_tensor(x), evaluated.translate_tensor(x))
    official_test = Translator.from_checkpoint(run, train_mode=True)
    before = {k: v.clone() for k, v in official_test.generator.state_dict().items()}
    first, second = official_test.translate_tensor(x), official_test.translate_tensor(x)
    assert not torch.equal(first, second)  # dropout as noise
    assert all(torch.equal(before[k], v) for k, v in official_test.generator.state_dict().items()
               if "num_batches" not in k)  # running statistics unchanged
    with pytest.raises(ValueError, match="PyTorch generator"):
        Translator.on_engine(run, engine="onnxruntime", train_mode=True)


def test_export_onnx_serves_the_one_direction(pix2pix_config, tmp_path):
    pytest.importorskip("onnxruntime")
    from cyclegan.export import OnnxGenerator, export_generator
    from cyclegan.serve import TranslationService

    run = fit(Trainer(pix2pix_config(max_iters=1)), show_progress=False)
    path = export_generator(run, tmp_path / "g.onnx", direction="AtoB", fmt="onnx")
    x = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(OnnxGenerator(path)(x), Checkpoint(run).generator("AtoB")(x), atol=1e-5)
    from_file = Translator(OnnxGenerator(path), in_channels=3).translate_tensor(x[0])  # padded alike: one multiple
    assert torch.allclose(from_file, Translator.from_checkpoint(run).translate_tensor(x[0]), atol=1e-5)
    service = TranslationService(run)
    assert list(service.translators) == ["AtoB"] and service.describe()["model"] == "pix2pix"


# ---- official pix2pix weights ------------------------------------------------------------------------

class OfficialUnetBlock(nn.Module):
    """The official UnetSkipConnectionBlock, written out (batch norm, so convs without bias)."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 use_dropout=False):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=False)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), nn.BatchNorm2d(inner_nc)
        uprelu, upnorm = nn.ReLU(True), nn.BatchNorm2d(outer_nc)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            model += [nn.Dropout(0.5)] if use_dropout else []
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class OfficialUnet(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, num_downs=8, ngf=4):
        super().__init__()
        block = OfficialUnetBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = OfficialUnetBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=True)
        block = OfficialUnetBlock(ngf * 4, ngf * 8, submodule=block)
        block = OfficialUnetBlock(ngf * 2, ngf * 4, submodule=block)
        block = OfficialUnetBlock(ngf, ngf * 2, submodule=block)
        self.model = OfficialUnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x):
        return self.model(x)


def trained_looking(net: nn.Module) -> nn.Module:
    """Random weights and running statistics, as a trained network would have."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return net.eval()


@pytest.mark.parametrize("num_downs, input_nc", [(8, 3), (7, 1)])
def test_an_official_pix2pix_generator_loads_with_no_flags_and_gives_the_official_output(tmp_path, num_downs, input_nc):
    official = trained_looking(OfficialUnet(input_nc=input_nc, num_downs=num_downs))
    path = tmp_path / "latest_net_G.pth"
    torch.save(official.state_dict(), path)
    ours = load_official_generator(path)
    x = torch.rand(1, input_nc, 2 ** num_downs, 2 ** num_downs) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(ours(x), official(x), atol=1e-5)


def test_a_pix2pix_run_folder_imports_and_exports_as_official_g_and_d(tmp_path):
    official_g = trained_looking(OfficialUnet(num_downs=7))
    run = tmp_path / "official_run"
    run.mkdir()
    torch.save(official_g.state_dict(), run / "latest_net_G.pth")
    d_config = build_experiment({"model": "pix2pix", "ndf": 4})
    from cyclegan.models import build_discriminator

    official_d = build_discriminator(d_config.model, in_channels=6)  # the official NLayerDiscriminator keys
    torch.save(official_d.state_dict(), run / "latest_net_D.pth")
    path = import_official(run, {"name": "imported", "checkpoints_dir": str(tmp_path / "runs")})
    checkpoint = Checkpoint(path)
    assert checkpoint.config.model.model == "pix2pix" and checkpoint.config.model.netG == "unet_128"
    assert checkpoint.config.model.no_dropout is False and checkpoint.has_network("d_b")
    written = export_official(path, tmp_path / "back")
    assert sorted(p.name for p in written) == ["latest_net_D.pth", "latest_net_G.pth"]
    again = torch.load(tmp_path / "back" / "latest_net_G.pth", weights_only=True)
    assert again.keys() == official_g.state_dict().keys()
    assert all(torch.equal(again[k], v) for k, v in official_g.state_dict().items())
    with pytest.raises(CheckpointError, match="no BtoA generator"):
        checkpoint.generator("BtoA")


# ---- CycleGAN with a few known pairs (--lambda_paired) ------------------------------------------------

def test_known_pairs_come_with_their_a_images_crop_and_flip(tmp_path, tiny_config):
    from conftest import write_images

    root = tmp_path / "semi"
    paths_a = write_images(root / "trainA", 4, seed=1)
    for own in write_images(root / "trainB", 3, seed=2):
        own.rename(own.with_name(f"b_{own.name}"))  # B's own images: no A image has their names
    for path in paths_a[:2]:  # two of the four A images have their partner in B, under the same name
        Image.fromarray(255 - np.asarray(Image.open(path))).save(root / "trainB" / f"{path.stem}.png")
    trainer = Trainer(tiny_config(dataroot=str(root), lambda_paired=5.0, preprocess="crop"))
    dataset = make_dataset(trainer)
    assert sorted(p.name for p in dataset.partners) == ["img_000.png", "img_001.png"]
    seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        known = Path(item["A_path"]) in dataset.partners
        assert item["has_partner"] is known
        assert torch.allclose(item["partner_b"], -item["A"], atol=1e-6) if known else not item["partner_b"].any()
        seen.add(known)
    assert seen == {True, False}
    run = fit(trainer, dataset, show_progress=False)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"paired_A", "paired_B"} <= set(record)
    for path in paths_a[:2]:
        (root / "trainB" / path.name).unlink()
    with pytest.raises(ValueError, match="no image of .* has a partner of the same name"):
        make_dataset(Trainer(tiny_config(dataroot=str(root), lambda_paired=1.0, name="no_pairs")))


def test_the_paired_loss_counts_only_the_items_whose_partner_is_known(tiny_config):
    model = Trainer(tiny_config(lambda_paired=2.0)).model
    torch.manual_seed(0)
    real_a, partner, fake_b = (torch.rand(2, 3, 32, 32) for _ in range(3))
    images = {"real_a": real_a, "fake_b": fake_b, "partner_b": partner, "has_partner": torch.tensor([False, True])}
    losses = model.paired_losses(images)
    assert torch.allclose(losses["paired_A"], 2.0 * (fake_b[1] - partner[1]).abs().mean())
    with torch.no_grad():
        assert torch.allclose(losses["paired_B"], 2.0 * (model.g_ba(partner[1:]) - real_a[1:]).abs().mean())
    none = model.paired_losses({**images, "has_partner": torch.tensor([False, False])})
    assert float(none["paired_A"]) == float(none["paired_B"]) == 0.0


def test_the_fast_recipe_with_the_default_unet_says_what_to_change():
    with pytest.raises(ValueError, match="--netG unet_256 has no --global_residual.*pass --netG resnet_9blocks"):
        build_experiment({"model": "pix2pix", "recipe": "fast"})
    assert build_experiment({"model": "pix2pix", "recipe": "fast", "netG": "resnet_9blocks"}).model.global_residual
