import json
import logging

import av
import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.cli import main
from cyclegan.demo import (
    PHOTOS, REGIONS, build_demo_dataset, crop_boxes, ground_truth_clips, psnr, score, translate_test_crops, winter_look,
)
from cyclegan.run import fit


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "data", train_per_photo=4, test_per_photo=2)


def test_dataset_layout(demo_data):
    counts = {sub: len(list((demo_data / sub).glob("*.png"))) for sub in ("trainA", "trainB", "testA", "testB", "testA_truth")}
    n = len(PHOTOS)
    assert counts == {"trainA": 4 * n, "trainB": 4 * n, "testA": 2 * n, "testB": 2 * n, "testA_truth": 2 * n}


def test_domains_and_test_crops_come_from_disjoint_regions():
    (a0, a1), (t0, t1), (b0, b1) = REGIONS
    assert a1 <= t0 and t1 <= b0  # A, held-out test and B columns do not overlap
    rng = np.random.default_rng(0)
    for x_range in ((0, 90), (90, 166), (166, 256)):
        for left, top, right, bottom in crop_boxes(200, 64, x_range, 256, rng):
            assert x_range[0] <= left and right <= x_range[1] and 0 <= top and bottom <= 256
    with pytest.raises(ValueError, match="does not fit"):
        crop_boxes(1, 72, (0, 50), 256, rng)


def test_ground_truth_is_the_winter_look_of_each_test_crop(demo_data):
    for path in (demo_data / "testA").glob("*.png"):
        with Image.open(path) as a, Image.open(demo_data / "testA_truth" / path.name) as truth:
            assert np.array_equal(np.asarray(winter_look(a.convert("RGB"))), np.asarray(truth))


def test_winter_look_changes_colour_enough_to_measure():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    out = np.asarray(winter_look(image), dtype=np.float32)
    assert out.min() >= 0.1 * 255 - 1  # lifted blacks
    assert out[..., 2].mean() > out[..., 0].mean()  # cooler


def test_build_is_deterministic_and_skipped_when_done(demo_data, tmp_path):
    again = build_demo_dataset(tmp_path / "again", train_per_photo=4, test_per_photo=2)
    for path in sorted((demo_data / "trainB").glob("*.png")):
        assert path.read_bytes() == (again / "trainB" / path.name).read_bytes()
    stamp = (again / "trainA").stat().st_mtime_ns
    build_demo_dataset(tmp_path / "again", train_per_photo=4, test_per_photo=2)
    assert (again / "trainA").stat().st_mtime_ns == stamp


def test_psnr_and_do_nothing_score(demo_data):
    x = torch.zeros(1, 3, 4, 4)
    assert psnr(x, x + 0.2) == pytest.approx(10 * np.log10(1 / 0.01))
    held_out = score(translate_test_crops(lambda a: a, demo_data))
    assert held_out.trained_psnr == held_out.identity_psnr and 12 < held_out.identity_psnr < 25


def test_demo_command_trains_and_reports(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr("cyclegan.demo.build_demo_dataset",
                        lambda root: build_demo_dataset(root, train_per_photo=2, test_per_photo=1))
    assert main(["demo", "--output", str(tmp_path / "d"), "--iters", "3", "--quiet"]) == 0
    out = caplog.text
    assert "doing nothing" in out and "index.html" in out
    page = (tmp_path / "d" / "index.html").read_text()
    assert page.count("<tr>") == 1 + len(PHOTOS) and "dB" in page
    report = json.loads((tmp_path / "d" / "results.json").read_text())
    assert report["iterations"] == 3 and report["test_images"] == len(PHOTOS)
    assert (tmp_path / "d" / "results.png").stat().st_size > 0
    assert set(report["video"]) == {"frame", "clip"} and "video.mp4" in out
    for scores in report["video"].values():  # against the true look of every frame of the clips
        assert 10 < scores["psnr_db"] < 40 and scores["temporal_error"] > scores["tone_flicker"] > 0
    with av.open(str(tmp_path / "d" / "video.mp4")) as clip:
        assert sum(1 for _ in clip.decode(video=0)) == sum(len(frames) for frames in ground_truth_clips().values())


def test_demo_sets_aside_a_run_trained_with_other_options(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr("cyclegan.demo.build_demo_dataset",
                        lambda root: build_demo_dataset(root, train_per_photo=2, test_per_photo=1))
    output = tmp_path / "d"
    assert main(["demo", "--output", str(output), "--iters", "2", "--quiet"]) == 0
    assert main(["demo", "--output", str(output), "--iters", "3", "--quiet"]) == 0  # same options: resumed
    assert "moved it" not in caplog.text
    assert json.loads((output / "results.json").read_text())["iterations"] == 3
    # a demo run left by an older version, with the old recipe's options
    from cyclegan.config import ExperimentConfig
    from cyclegan.checkpoint import Checkpoint
    from cyclegan.training import Trainer

    old = Checkpoint(output / "runs" / "winter").config
    stale = ExperimentConfig.from_dict({**json.loads(old.to_json()), "train": {**json.loads(old.to_json())["train"],
                                        "lr_policy": "linear", "ema_decay": 0.0, "recipe": "paper", "max_iters": 1}})
    import shutil

    shutil.rmtree(output / "runs" / "winter")
    fit(Trainer(stale), show_progress=False)
    assert main(["demo", "--output", str(output), "--iters", "2", "--quiet"]) == 0
    assert "moved it" in caplog.text
    assert len(list((output / "runs").glob("winter.old-*"))) == 1
    assert Checkpoint(output / "runs" / "winter").config.train.ema_decay == 0.999
