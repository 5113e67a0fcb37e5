"""The metrics against hand computations and reference implementations."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from cyclegan.metrics import (
    colour_sample, colour_swd_255, feature_statistics, fid_from_features, frechet_distance, kid_from_features, l1_255,
    polynomial_mmd2_unbiased, psnr, ssim,
)
from cyclegan.evaluate import evaluate_latest
from cyclegan.run import fit


def test_psnr_and_l1_by_hand():
    x = torch.zeros(3, 8, 8)  # 0.5 on the [0, 1] scale
    y = x + 0.2  # 0.6: every pixel off by 0.1
    assert psnr(x, y) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert l1_255(x, y) == pytest.approx(0.1 * 255)
    assert psnr(x, x) == math.inf


def test_ssim_by_hand_and_against_scikit_image():
    assert ssim(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16)) == pytest.approx(1.0)
    # Constant images: the variance terms cancel, leaving (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
    m1, m2, c1 = 0.25, 0.75, 0.01**2
    a, b = torch.full((1, 16, 16), m1 * 2 - 1), torch.full((1, 16, 16), m2 * 2 - 1)
    assert ssim(a, b) == pytest.approx((2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1))
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    x = rng.random((40, 48))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    theirs = metrics.structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False)
    ours = ssim(torch.from_numpy(x)[None] * 2 - 1, torch.from_numpy(y)[None] * 2 - 1)
    assert ours == pytest.approx(theirs, abs=0.01)  # scikit-image also averages the border positions


def test_colour_distance_is_the_wasserstein_distance_on_one_channel():
    # On one channel every direction is +1 or -1, so the sliced distance is the 1-D Wasserstein-1 distance:
    # for a shift it is the shift; for y = 2x it is the mean of x.
    x = np.random.default_rng(0).uniform(0, 100, size=(20_000, 1))
    assert colour_swd_255(x, x + 7) == pytest.approx(7, abs=1e-9)
    assert colour_swd_255(x, 2 * x) == pytest.approx(float(x.mean()), rel=0.01)
    shuffled = np.random.default_rng(1).permutation(x)[:15_000]  # a different sample of the same distribution
    assert colour_swd_255(x, shuffled) < 1.0


def test_colour_distance_grows_with_the_colour_difference_and_ignores_the_layout():
    rgb = np.random.default_rng(0).uniform(0, 200, size=(10_000, 3))
    near, far = rgb + [5, 0, 0], rgb + [20, 0, 0]
    assert 0 < colour_swd_255(rgb, near) < colour_swd_255(rgb, far)
    assert colour_swd_255(rgb, far) == pytest.approx(4 * colour_swd_255(rgb, near), rel=1e-6)
    image = torch.rand(3, 50, 50) * 2 - 1
    flipped = image.flip(-1).transpose(-1, -2)  # the same colours elsewhere: no content enters the distance
    assert colour_swd_255(colour_sample(image, count=2000), colour_sample(flipped, count=2000)) < 3.0
    assert colour_sample(image, count=2000).shape == (2000, 3) and colour_sample(image).shape == (2500, 3)
    assert colour_sample(image).max() <= 255 and colour_sample(image).min() >= 0
    with pytest.raises(ValueError, match="the same C"):
        colour_swd_255(rgb, rgb[:, :1])


def _sqrtm_frechet(mu1, s1, mu2, s2) -> float:
    from scipy import linalg

    root = linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root.real))


@pytest.mark.parametrize("near_singular", [False, True])
def test_frechet_distance_matches_scipy_sqrtm(near_singular):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    d = 12
    a = rng.normal(size=(200, d))
    b = rng.normal(0.3, 1.2, size=(200, d)) @ rng.normal(size=(d, d)) * 0.3
    if near_singular:
        a[:, -1] = a[:, 0] * (1 + 1e-9)  # two columns almost equal: a near-singular covariance
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_sqrtm_frechet(mu1, s1, mu2, s2), rel=1e-6, abs=1e-6)


def test_fid_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(2).normal(size=(64, 16))
    assert abs(fid_from_features(features, features)) < 1e-8


def test_kid_matches_a_direct_unbiased_mmd():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 4)), rng.normal(1.0, 1.0, size=(5, 4))
    k = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    direct = (sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
              + sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
              - 2 * sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30)
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(direct)
    mean, error = kid_from_features(x[:5], y, subsets=1, subset_size=10)  # one subset: all of both sets
    assert mean == pytest.approx(polynomial_mmd2_unbiased(x[:5], y)) and error == 0.0
    same = rng.normal(size=(400, 8))
    near, _ = kid_from_features(same[:200], same[200:], subsets=20, subset_size=100)
    far, error = kid_from_features(same[:200], same[200:] + 0.5, subsets=20, subset_size=100)
    assert abs(near) < 0.1 * far and error > 0  # two halves of one distribution vs a shifted one


def test_evaluate_command_end_to_end(tmp_path, tiny_config, capsys):
    import json

    from PIL import Image

    from conftest import write_images
    from cyclegan import cli
    from cyclegan.checkpoint import LATEST
    from cyclegan.images import load_image, to_tensor
    from cyclegan.training import Trainer
    from cyclegan.translate import Translator

    config = tiny_config(global_residual=True)  # starts as the identity: translations equal their inputs
    Trainer(config).save(config.run_dir / LATEST)
    data = tmp_path / "eval"
    write_images(data / "testA", 3, size=(36, 28), seed=4)
    write_images(data / "testB", 2, size=(20, 24), seed=5)
    truth = tmp_path / "truth"
    truth.mkdir()
    for path in sorted((data / "testA").iterdir())[:2]:  # the third has no truth
        Image.open(path).point(lambda v: min(255, v + 10)).save(truth / path.name)
    assert cli.main(["evaluate", "--checkpoint", str(config.run_dir), "--dataroot", str(data), "--truth", str(truth),
                     "--quiet", "--no_fid"]) == 0
    table = capsys.readouterr().out
    assert "AtoB" in table and "BtoA" in table
    report = json.loads((config.run_dir / "eval_0.json").read_text())
    a, b = report["results"]["AtoB"], report["results"]["BtoA"]
    assert (a["images"], b["images"]) == (3, 2) and report["protocol"]["images"] == {"AtoB": 3, "BtoA": 2}
    assert a["cycle_l1_255"] == pytest.approx(0, abs=1e-3)  # identity generators reconstruct exactly
    assert a["truth"]["matched"] == 2 and a["truth"]["missing"] == 1 and "truth" not in b
    translator = Translator.from_checkpoint(config.run_dir, device="cpu")
    expected = np.mean([psnr(translator.translate_tensor(to_tensor(load_image(p))), to_tensor(load_image(truth / p.name)))
                        for p in sorted((data / "testA").iterdir())[:2]])
    assert a["truth"]["psnr_db"] == pytest.approx(expected)
    assert report["protocol"]["fid_kid"] == "not computed (--no_fid)" and "fid" not in a
    seed = config.train.seed  # the identity's translations are the inputs: their colours against testB's, by hand
    colours = {d: np.concatenate([colour_sample(to_tensor(load_image(p)), seed=seed) for p in sorted((data / d).iterdir())])
               for d in ("testA", "testB")}
    assert a["colour_swd_255"] == pytest.approx(colour_swd_255(colours["testA"], colours["testB"], seed=seed))
    assert b["colour_swd_255"] == pytest.approx(colour_swd_255(colours["testB"], colours["testA"], seed=seed))


class TinyFeatures(torch.nn.Module):
    """A random-weight stand-in for the Inception network: (B, 3, H, W) -> (B, 2048)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 8 * 8, 2048)

    def forward(self, x):
        return self.proj(torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear").flatten(1))


def test_evaluate_computes_fid_and_kid_with_an_injected_network(tmp_path, tiny_config):
    from conftest import write_images
    from cyclegan.checkpoint import LATEST
    from cyclegan.evaluate import evaluate_run, fid_between_folders, format_report
    from cyclegan.training import Trainer

    config = tiny_config()
    Trainer(config).save(config.run_dir / LATEST)
    data = tmp_path / "eval"
    write_images(data / "testA", 4, size=(32, 32), seed=4)
    write_images(data / "testB", 4, size=(32, 32), seed=5)
    report = evaluate_run(config.run_dir, dataroot=data, feature_net=TinyFeatures(), cache_dir=tmp_path / "cache",
                          device="cpu")
    for direction in ("AtoB", "BtoA"):
        r = report["results"][direction]
        assert r["fid"] > 0 and np.isfinite(r["kid"]) and r["kid_std_error"] >= 0
    assert "FID" in format_report(report)
    same = fid_between_folders(data / "testA", data / "testA", feature_net=TinyFeatures(), cache_dir=tmp_path / "c2")
    assert abs(same["fid"]) < 1e-3  # 4 images in 2048 dimensions: a rank-3 covariance


def test_feature_cache_is_used_and_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    import os

    from conftest import write_images
    from cyclegan import evaluate

    folder = tmp_path / "real"
    paths = write_images(folder, 3, size=(16, 16))
    net, calls = TinyFeatures(), []
    original = evaluate.tensor_features
    monkeypatch.setattr(evaluate, "tensor_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = evaluate.folder_features(net, folder, cache_dir=tmp_path / "cache", weights_id="w")
    again = evaluate.folder_features(net, folder, cache_dir=tmp_path / "cache", weights_id="w")
    assert len(calls) == 1 and np.array_equal(first, again)
    write_images(tmp_path / "other", 1, size=(16, 16), seed=9)[0].replace(paths[1])
    os.utime(paths[1], ns=(1, 1))
    changed = evaluate.folder_features(net, folder, cache_dir=tmp_path / "cache", weights_id="w")
    assert len(calls) == 2 and not np.array_equal(first, changed)
    evaluate.folder_features(net, folder, cache_dir=tmp_path / "cache", weights_id="other weights")
    assert len(calls) == 3  # another network: another cache entry


def test_fid_command_offline_without_weights_says_where_to_put_them(tmp_path, monkeypatch, capsys):
    from conftest import write_images
    from cyclegan import cli

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("cyclegan.inception.WEIGHTS_URL", "http://127.0.0.1:9/none.pth")  # nothing listens there
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "b", 2)
    assert cli.main(["fid", str(tmp_path / "a"), str(tmp_path / "b"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "pt_inception-2015-12-05-6726825d.pth" in err and str(tmp_path / "hub" / "checkpoints") in err


@pytest.mark.parametrize("number", ["AtoB_cycle_l1_255", "AtoB_colour_swd_255"])
def test_evaluation_during_training_logs_plots_and_keeps_the_best(tmp_path, tiny_config, dataroot, monkeypatch, number):
    import json

    from conftest import write_images
    from cyclegan.checkpoint import Checkpoint
    from cyclegan.training import Trainer

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no Inception weights: cheap metrics
    write_images(dataroot / "testA", 2, size=(32, 32), seed=7)
    write_images(dataroot / "testB", 2, size=(32, 32), seed=8)
    trainer = Trainer(tiny_config(eval_freq=1, keep_best=number))
    with pytest.raises(ValueError, match="no evaluate hook"):
        fit(trainer, show_progress=False)
    run = fit(trainer, show_progress=False, evaluate=evaluate_latest)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if f"eval_{number}" in r]
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    assert all("eval_AtoB_cycle_l1_255" in r and "eval_BtoA_colour_swd_255" in r for r in evals)
    assert sorted(p.name for p in run.glob("eval_*.json")) == ["eval_1.json", "eval_2.json", "eval_3.json"]
    best = Checkpoint(run / "best.safetensors")
    values = [r[f"eval_{number}"] for r in evals]
    assert best.info["best"][number] == pytest.approx(min(values)) == pytest.approx(trainer.best)
    assert not best.has_training_state
    page = (run / "index.html").read_text()
    assert 'src="plots/eval_cycle.svg"' in page and 'src="plots/eval_colour.svg"' in page


def test_keep_best_of_a_number_the_evaluation_lacks_is_an_error(tmp_path, tiny_config, dataroot, monkeypatch):
    from conftest import write_images
    from cyclegan.training import Trainer

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    write_images(dataroot / "testA", 1, size=(32, 32))
    write_images(dataroot / "testB", 1, size=(32, 32))
    with pytest.raises(ValueError, match="--keep_best AtoB_psnr_db: the evaluation has no such number"):
        fit(Trainer(tiny_config(eval_freq=1, keep_best="AtoB_psnr_db")), show_progress=False, evaluate=evaluate_latest)


def test_keeping_the_lowest_cycle_l1_of_an_identity_start_is_warned_about(tiny_config, caplog):
    from cyclegan.run import fit, keep_best_caveat
    from cyclegan.training import Trainer

    assert "start as the identity" in keep_best_caveat(tiny_config(keep_best="AtoB_cycle_l1_255", global_residual=True))
    assert keep_best_caveat(tiny_config(keep_best="AtoB_colour_swd_255", global_residual=True)) is None
    assert keep_best_caveat(tiny_config(keep_best="BtoA_cycle_l1_255", global_residual=False)) is None
    with caplog.at_level(logging.WARNING, logger="cyclegan.run"):
        fit(Trainer(tiny_config(keep_best="BtoA_cycle_l1_255", global_residual=True, max_iters=1)), show_progress=False)
    assert any("--keep_best BtoA_cycle_l1_255 with --global_residual" in r.getMessage() for r in caplog.records)
