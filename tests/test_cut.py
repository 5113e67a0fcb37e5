"""--model cut: the official CUT / FastCUT defaults, the official step bit for bit, and everything
downstream of a one-generator unpaired checkpoint (resume, translate, test, evaluate, export)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from cyclegan import cli
from cyclegan.checkpoint import Checkpoint
from cyclegan.config import build_experiment
from cyclegan.evaluate import evaluate_run
from cyclegan.heldout import run_test
from cyclegan.losses import patch_nce_loss
from cyclegan.metrics import psnr
from cyclegan.objective import CUT, set_requires_grad
from cyclegan.official import export_official
from cyclegan.run import fit
from cyclegan.training import Trainer
from cyclegan.translate import Translator

from conftest import check_one_way_translate, write_images

CUT_TINY = {"model": "cut", "num_patches": 16, "pool_size": 0}  # CUT has no pool (the tiny runs have one)


@pytest.fixture
def cut_config(tiny_config):
    def make(**overrides):
        return tiny_config(**{**CUT_TINY, "name": "cut", **overrides})

    return make


# ---- options ----------------------------------------------------------------------------------

def test_model_cut_brings_the_official_cut_defaults_beneath_the_options_given():
    t = build_experiment({"model": "cut"}).train
    assert (t.lambda_NCE, t.nce_idt, t.pool_size, t.lambda_identity, t.gan_mode) == (1.0, True, 0, 0.0, "lsgan")
    assert (t.n_epochs, t.n_epochs_decay) == (200, 200)
    fast = build_experiment({"model": "cut", "CUT_mode": "FastCUT"}).train
    assert (fast.lambda_NCE, fast.nce_idt, fast.flip_equivariance, fast.n_epochs, fast.n_epochs_decay) == \
        (10.0, False, True, 150, 50)
    assert not t.flip_equivariance
    given = build_experiment({"model": "cut", "CUT_mode": "FastCUT", "lambda_NCE": 3.0, "nce_idt": True}).train
    assert (given.lambda_NCE, given.nce_idt) == (3.0, True)
    assert build_experiment({"model": "cut", "recipe": "fast", "CUT_mode": "FastCUT"}).model.global_residual


@pytest.mark.parametrize("options,words", [
    ({"lambda_identity": 0.5}, "cut has no lambda_identity"),
    ({"lambda_colour": 3.0}, "cut has no lambda_colour"),
    ({"lambda_paired": 10.0}, "cut has no lambda_paired"),
    ({"lambda_NCE": 0.0}, "needs --lambda_NCE above 0"),
    ({"netG": "unet_128", "crop_size": 128, "load_size": 128}, "ResNet generator"),
    ({"model": "cycle_gan", "CUT_mode": "FastCUT"}, "options of --model cut"),
    ({"model": "cycle_gan", "nce_idt": False}, "options of --model cut"),
    ({"model": "cycle_gan", "flip_equivariance": True}, "options of --model cut"),
    ({"CUT_mode": "SlowCUT"}, "CUT_mode"),
])
def test_what_cut_does_not_have_is_refused_with_the_option_named(cut_config, options, words):
    with pytest.raises(ValueError, match=words):
        cut_config(**options)


# ---- the step -----------------------------------------------------------------------------------

def official_cut_step(model: CUT, opt_g, opt_d, real_a, real_b, *, lambda_nce: float, nce_idt: bool,
                      flip: bool) -> dict:
    """cut_model.CUTModel.optimize_parameters written out: forward on A and B in one batch, D on the
    detached fake, then G and netF (F's Adam is a separate optimizer there: per-parameter, the same update).

    The official code computes PatchNCE after D's update; it does not depend on D, so it is the same number
    before, where ours computes it (inside G's one forward, for DistributedDataParallel). Computing it here
    at the same point keeps autograd's sums over G's uses in the same order, so the steps agree bit for bit."""
    g, d, head = model.g_ab, model.d_b, model.h_ab
    real = torch.cat([real_a, real_b]) if nce_idt else real_a
    flipped = flip and bool(torch.rand(()) < 0.5)  # the official draws from numpy; here torch's RNG, in our order
    both = g(torch.flip(real, [3]) if flipped else real)
    fake_b, idt_b = both[: len(real_a)], both[len(real_a):]

    def nce(src, tgt):  # calculate_NCE_loss: keys from the source, queries from the translation, same patches
        feat_k, ids = head(g.encode(src), 16)
        feat_q = g.encode(tgt)
        if flipped:
            feat_q = [torch.flip(fq, [3]) for fq in feat_q]
        feat_q, _ = head(feat_q, 16, ids)
        total = 0.0
        for q, k in zip(feat_q, feat_k):
            total += patch_nce_loss(q, k, images=1, temperature=0.07) * lambda_nce
        return total / len(feat_q)

    loss_nce = nce(real_a, fake_b)
    loss_nce_y = nce(real_b, idt_b) if nce_idt else None
    set_requires_grad([d], True)  # update D
    opt_d.zero_grad()
    pred_fake = d(fake_b.detach())
    loss_d_fake = F.mse_loss(pred_fake, torch.zeros_like(pred_fake))
    pred_real = d(real_b)
    loss_d_real = F.mse_loss(pred_real, torch.ones_like(pred_real))
    ((loss_d_fake + loss_d_real) * 0.5).backward()
    opt_d.step()
    set_requires_grad([d], False)  # update G and F
    opt_g.zero_grad()
    pred_fake = d(fake_b)
    loss_g_gan = F.mse_loss(pred_fake, torch.ones_like(pred_fake))
    losses = {"G_GAN": loss_g_gan, "NCE": loss_nce, "D_real": loss_d_real, "D_fake": loss_d_fake}
    if nce_idt:
        losses["NCE_Y"] = loss_nce_y
        (loss_g_gan + (loss_nce + loss_nce_y) * 0.5).backward()
    else:
        (loss_g_gan + loss_nce).backward()
    opt_g.step()
    return {k: v.item() for k, v in losses.items()}


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["CUT", "FastCUT"])
def test_trainer_steps_are_the_official_cut_steps_bit_for_bit(cut_config, mode):
    """Losses and weights after three steps against cut_model's order written out, for CUT and FastCUT
    (PatchNCE itself is checked against its formula in test_nce)."""
    trainer = Trainer(cut_config(CUT_mode=mode), device="cpu")
    t = trainer.config.train
    reference = copy.deepcopy(trainer.model)
    adam = dict(lr=2e-4, betas=(0.5, 0.999), fused=True)
    opt_g = torch.optim.Adam([*reference.g_ab.parameters(), *reference.h_ab.parameters()], **adam)
    opt_d = torch.optim.Adam(reference.d_b.parameters(), **adam)
    torch.manual_seed(7)
    batches = [(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1) for _ in range(4)]
    for step, (a, b) in enumerate(batches):
        torch.manual_seed(100 + step)  # the same flips and patches drawn (FastCUT: seeds 100-102 flip, 103 does not)
        ours = trainer.train_step(a, b)
        torch.manual_seed(100 + step)
        theirs = official_cut_step(reference, opt_g, opt_d, a, b, lambda_nce=t.lambda_NCE, nce_idt=t.nce_idt,
                                   flip=t.flip_equivariance)
        assert ours == theirs, step
    expected = reference.state_dict()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_the_identity_patch_nce_changes_what_g_learns(cut_config):
    """NCE_Y is really in G's loss: the same first step with and without it moves G differently."""
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    weights = []
    for idt in (True, False):
        trainer = Trainer(cut_config(nce_idt=idt), device="cpu")
        torch.manual_seed(3)
        losses = trainer.train_step(a, b)
        assert ("NCE_Y" in losses) == idt
        weights.append(trainer.model.g_ab.state_dict())
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ---- a run and what reads it ----------------------------------------------------------------------

def test_a_cut_run_resumes_exactly_and_holds_one_generator(cut_config):
    whole = Trainer(cut_config(name="whole", max_iters=4))
    fit(whole, show_progress=False)
    part = Trainer(cut_config(name="part", max_iters=2))
    fit(part, show_progress=False)
    resumed = Trainer.resume(part.run_dir, overrides={"max_iters": 4})
    fit(resumed, show_progress=False)
    assert set(whole.networks()) == {"g_ab", "d_b", "h_ab"}
    for name, net in whole.networks().items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, resumed.networks()[name].state_dict()[key]), (name, key)
    checkpoint = Checkpoint(whole.run_dir)
    assert checkpoint.has_network("g_ab") and checkpoint.has_network("h_ab") and not checkpoint.has_network("g_ba")
    last = (whole.run_dir / "metrics.jsonl").read_text().strip().splitlines()[-1]
    assert all(f'"{name}"' in last for name in ("G_GAN", "NCE", "NCE_Y", "D_real", "D_fake"))
    assert (whole.run_dir / "plots" / "nce.svg").is_file()
    width, height = Image.open(sorted((whole.run_dir / "samples").glob("*.png"))[-1]).size
    assert height == 32 and 4 * 32 <= width < 5 * 32  # real A | fake B | real B | G(real B)


def test_translate_test_evaluate_and_export_take_the_one_direction(cut_config, tmp_path, capsys):
    root = tmp_path / "data"
    write_images(root / "testA", 2, size=(36, 28), seed=5)
    write_images(root / "testB", 2, size=(36, 28), seed=6)
    truth = tmp_path / "truth"
    for path in sorted((root / "testA").glob("*.png")):  # the "truth" of A's images: their negatives
        truth.mkdir(exist_ok=True)
        Image.fromarray(255 - np.array(Image.open(path))).save(truth / path.name)
    run = fit(Trainer(cut_config(max_iters=2)), show_progress=False)  # root is its dataroot too

    check_one_way_translate(run, tmp_path, capsys, size=(29, 37), refusal="cut model")

    page = run_test(run)
    assert len(list((page.parent / "images" / "AtoB").glob("*_fake.png"))) == 2
    assert not (page.parent / "images" / "BtoA").exists()

    report = evaluate_run(run, fid=False, truth=truth)
    assert list(report["results"]) == ["AtoB"]
    result = report["results"]["AtoB"]
    assert result["images"] == 2 and result["cycle_l1_255"] is None
    translator = Translator.from_checkpoint(run)
    expected = []
    for path in sorted((root / "testA").glob("*.png")):
        load = lambda p: torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1).float() / 127.5 - 1  # noqa: E731
        expected.append(psnr(translator.translate_tensor(load(path)), load(truth / path.name)))
    assert result["truth"]["psnr_db"] == pytest.approx(float(np.mean(expected)), abs=1e-4)
    with pytest.raises(ValueError, match="AtoB only"):
        evaluate_run(run, fid=False, direction="BtoA")
    with pytest.raises(ValueError, match="anti-aliasing"):
        export_official(run, tmp_path / "official")


def test_the_cli_trains_fastcut(tmp_path, dataroot):
    runs = tmp_path / "runs"
    args = ["train", "--model", "cut", "--CUT_mode", "FastCUT", "--dataroot", str(dataroot), "--checkpoints_dir",
            str(runs), "--name", "fastcut", "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "36",
            "--crop_size", "32", "--max_iters", "2", "--num_patches", "8", "--num_threads", "0", "--print_freq", "1"]
    assert cli.main(args) == 0
    t = Checkpoint(runs / "fastcut").config.train
    assert (t.CUT_mode, t.nce_idt, t.lambda_NCE) == ("FastCUT", False, 10.0)
    assert '"NCE_Y"' not in (runs / "fastcut" / "metrics.jsonl").read_text()


def test_export_onnx_and_serve_take_the_one_direction(cut_config, tmp_path):
    pytest.importorskip("onnxruntime")
    from cyclegan.export import OnnxGenerator, export_generator
    from cyclegan.serve import TranslationService

    run = fit(Trainer(cut_config(max_iters=1)), show_progress=False)
    path = export_generator(run, tmp_path / "g.onnx", direction="AtoB", fmt="onnx")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(OnnxGenerator(path)(x), Checkpoint(run).generator("AtoB")(x), atol=1e-5)
    with pytest.raises(Exception, match="no BtoA generator"):
        export_generator(run, tmp_path / "f.onnx", direction="BtoA", fmt="onnx")
    service = TranslationService(run)
    assert list(service.translators) == ["AtoB"] and service.describe()["model"] == "cut"
