"""The benchmarks' analysis (benchmarks/analysis.py): the per-pixel ceiling, the checkerboard
measure, the unpaired colour transfer and the etching task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import (ETCHING, GREY_PHOTOS, colour_mapping_ceiling, etching_look, global_part,
                      periodic_peak)
from cyclegan.demo import PHOTOS, build_demo_dataset, score, translate_test_crops


def smooth_images(n=6, size=48, seed=0):
    """Photo-like test images: random noise blurred a lot (a falling spectrum, no periodic pattern)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1


def test_ceiling_recovers_a_per_pixel_mapping_and_not_a_spatial_one():
    images = list(smooth_images())
    unit = [(x + 1) / 2 for x in images]
    # a colour mapping: channel mixing and a curve -> a cubic fits it almost exactly
    mapped = [(0.2 + 0.6 * u[[1, 2, 0]] ** 1.5 + 0.1 * u) * 2 - 1 for u in unit]
    exact = colour_mapping_ceiling(images, mapped)
    assert exact["best_psnr_db"] > 40 and exact["best_psnr_db"] == max(exact["lut_psnr_db"], exact["cubic_psnr_db"])
    # a shift by 3 pixels is not a function of the pixel's own colour
    shifted = [torch.roll(x, 3, dims=-1) for x in images]
    spatial = colour_mapping_ceiling(images, shifted)
    assert spatial["best_psnr_db"] < exact["best_psnr_db"] - 15


def test_checkerboard_peak_finds_a_period_2_pattern_and_transposed_conv_artifacts():
    from cyclegan.models.generators import _upsample_layer

    images = smooth_images()
    clean = periodic_peak(images, 2)
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    pattern = 0.03 * ((yy + xx) % 2 * 2 - 1).float()  # a faint pixel checkerboard
    assert clean < 5 and periodic_peak(images + pattern, 2) > 50 * clean

    # upsampled with the same smooth (uniform) 3x3 kernel: the stride-2 transposed conv overlaps its
    # kernel unevenly and leaves a period-2 peak (Odena et al. 2016); resize + conv does not
    low = torch.nn.functional.avg_pool2d((images + 1) / 2, 2)  # positive, like features after a ReLU
    peaks = {}
    for kind in ("transpose", "resize"):
        layer = torch.nn.Sequential(*_upsample_layer(3, 3, kind=kind, bias=False))
        torch.nn.init.constant_(layer[-1].weight, 1 / 9)
        with torch.no_grad():
            peaks[kind] = periodic_peak(layer(low), 2)
    assert peaks["transpose"] > 5 * peaks["resize"]


def test_second_task_uses_other_photos_and_a_spatial_transform(tmp_path):
    assert not set(GREY_PHOTOS) & set(PHOTOS)
    root = build_demo_dataset(tmp_path / "etching", train_per_photo=2, test_per_photo=2, task=ETCHING)
    assert json.loads((root / "demo_dataset.json").read_text())["task"] == "etching"
    held_out = score(translate_test_crops(lambda a: a, root))
    assert held_out.images == 2 * len(GREY_PHOTOS) and 12 < held_out.identity_psnr < 25
    for path in (root / "testA").glob("*.png"):
        with Image.open(path) as a, Image.open(root / "testA_truth" / path.name) as truth:
            assert np.array_equal(np.asarray(etching_look(a.convert("RGB"))), np.asarray(truth))
    # ink along edges and local contrast: no per-pixel colour mapping gets close, unlike for the winter look
    ceilings = {}
    for task, folder in (("etching", root), ("winter", build_demo_dataset(tmp_path / "w", train_per_photo=2, test_per_photo=2))):
        crops = translate_test_crops(lambda a: a, folder)
        ceilings[task] = colour_mapping_ceiling([c.real for c in crops], [c.truth for c in crops])["best_psnr_db"]
    assert ceilings["etching"] < ceilings["winter"] - 5
    with pytest.raises(ValueError, match="valid: winter"):
        build_demo_dataset(tmp_path / "x", task="summer")


def test_global_part_tells_a_short_global_mapping_from_one_that_varies_with_the_image():
    images = list(smooth_images())
    truth = [((x + 1) / 2) ** 1.5 * 2 - 1 for x in images]  # a global tone curve
    halfway = [x + 0.5 * (t - x) for x, t in zip(images, truth)]  # the right mapping, half the way
    short = global_part(images, halfway, truth)
    assert short["reach"] == pytest.approx(0.5)
    assert short["global_share_psnr_db"] > 40  # halfway is one mapping of the pixel's colour
    assert abs(short["global_part_psnr_db"] - short["translation_psnr_db"]) < 0.5
    # all the way on average, but each image off by its own offset: a global part better than G itself
    offsets = [0.3 * (-1) ** i for i in range(len(images))]
    varying = [t + o for t, o in zip(truth, offsets)]
    split = global_part(images, varying, truth)
    assert split["reach"] == pytest.approx(1.0, abs=0.1)
    assert split["global_share_psnr_db"] < 25
    assert split["global_part_psnr_db"] > split["translation_psnr_db"] + 6
