"""16-bit colour and any channel count, end to end: reading, training, translating, serving, exporting."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from cyclegan import cli
from cyclegan.checkpoint import LATEST
from cyclegan.data import Preprocess, UnpairedDataset
from cyclegan.images import ImageReadError, load_image, open_image, peek_size, save_image
from cyclegan.rasters import Bands
from cyclegan.training import Trainer
from cyclegan.translate import Translator

from conftest import TINY_OPTIONS


class Identity(nn.Module):
    size_multiple = 4

    def forward(self, x):
        return x


def colour16(height=37, width=53, channels=3, seed=0) -> np.ndarray:
    """Every 16-bit value used: the low bytes are as varied as the high ones."""
    return np.random.default_rng(seed).integers(0, 65536, (height, width, channels), dtype=np.uint16)


def write_png16(path, array):
    cv2.imwrite(str(path), array[:, :, [2, 1, 0, *range(3, array.shape[2])]])
    return path


def read16(path) -> np.ndarray:
    """The stored values of a written file, read by tifffile / OpenCV themselves (RGB order)."""
    if path.suffix == ".tif":
        return tifffile.imread(path)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return array[:, :, [2, 1, 0, *range(3, array.shape[2])]]


@pytest.mark.numerics
@pytest.mark.parametrize("suffix,channels", [("png", 3), ("tif", 3), ("png", 4), ("tif", 4)])
def test_16_bit_colour_through_an_identity_generator_comes_back_16_bit_within_one_lsb(tmp_path, suffix, channels):
    """RGB, and RGBA with the alpha carried over (PNG, TIFF with an unassociated alpha sample)."""
    source = tmp_path / f"photo.{suffix}"
    values = colour16(channels=channels)
    if suffix == "png":
        write_png16(source, values)
    else:
        tifffile.imwrite(source, values, photometric="rgb", extrasamples=["unassalpha"] if channels == 4 else None)
    assert peek_size(source) == (53, 37)
    translator = Translator(Identity(), in_channels=3, device="cpu")
    written = translator.translate_files([(source, tmp_path / "out" / f"photo.{suffix}")])
    out = read16(written[0])
    assert out.dtype == np.uint16 and out.shape == values.shape
    assert np.abs(out.astype(int) - values).max() <= 1


def test_16_bit_colour_training_data_keeps_its_precision_into_the_network(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    values = [colour16(32, 32, seed=s) for s in range(2)]
    paths = [write_png16(folder / "0.png", values[0])]
    tifffile.imwrite(folder / "1.tif", values[1], photometric="rgb")
    paths.append(folder / "1.tif")
    dataset = UnpairedDataset(paths, paths, preprocess=Preprocess(mode="none", flip=False), serial=True)
    for index, expected in enumerate(values):
        tensor = dataset[index]["A"]
        exact = torch.from_numpy(expected.transpose(2, 0, 1).astype(np.float64) / 65535 * 2 - 1).float()
        assert tensor.shape == (3, 32, 32)
        assert (tensor - exact).abs().max() < 1e-6  # 8-bit quantisation would be 1/255 off
        assert len(np.unique(expected % 256)) > 200


def test_a_4_band_tiff_trains_translates_and_exports_to_4_channels(tmp_path):
    root = tmp_path / "sat"
    for domain, seed in (("trainA", 1), ("trainB", 2)):
        (root / domain).mkdir(parents=True)
        for i in range(2):
            tifffile.imwrite(root / domain / f"tile{i}.tif", colour16(40, 44, 4, seed=seed * 10 + i),
                             photometric="minisblack", planarconfig="contig")
    runs = tmp_path / "runs"
    train = ["train", "--dataroot", str(root), "--checkpoints_dir", str(runs), "--name", "sat",
             "--input_nc", "4", "--output_nc", "4", "--max_iters", "2", "--quiet", "--device", "cpu"]
    for key in ("netG", "ngf", "ndf", "load_size", "crop_size", "pool_size"):
        train += [f"--{key}", str(TINY_OPTIONS[key])]
    assert cli.main(train) == 0
    run = runs / "sat"
    source = root / "trainA" / "tile0.tif"
    assert cli.main(["translate", "--checkpoint", str(run), str(source), "--output", str(tmp_path / "out"),
                     "--quiet", "--device", "cpu"]) == 0
    out = tifffile.imread(tmp_path / "out" / "tile0.tif")  # tif chosen: PNG holds no 4 plain channels
    assert out.shape == (40, 44, 4) and out.dtype == np.uint16
    assert len(np.unique(out[..., 3])) > 100  # the fourth band is translated, not a constant alpha

    translator = Translator.from_checkpoint(run, device="cpu")
    direct = translator(open_image(source))
    assert isinstance(direct, Bands) and direct.channels == 4
    assert np.abs(np.round(direct.array() / 255 * 65535) - out).max() <= 1

    assert cli.main(["translate", "--checkpoint", str(run), str(source), "--output", str(tmp_path / "png"),
                     "--format", "png", "--quiet"]) == 2  # refused before any work, naming the fix
    assert not (tmp_path / "png").exists()


@pytest.mark.openvino  # onnx export shares the process with OpenVINO's tests (make test runs them apart)
def test_a_4_channel_model_exports_to_onnx_with_its_channels(tmp_path):
    pytest.importorskip("onnxruntime")
    from cyclegan.config import build_experiment
    from cyclegan.export import OnnxGenerator

    config = build_experiment({**TINY_OPTIONS, "input_nc": 4, "output_nc": 2, "lambda_identity": 0,
                               "checkpoints_dir": str(tmp_path), "name": "four"})
    Trainer(config, device="cpu").save(config.run_dir / LATEST)
    onnx_path = tmp_path / "g.onnx"
    assert cli.main(["export", "--checkpoint", str(config.run_dir), "--output", str(onnx_path)]) == 0
    onnx = OnnxGenerator(onnx_path)
    assert (onnx.in_channels, onnx.out_channels) == (4, 2)
    image = Bands.from_array(colour16(36, 40, 4).astype(np.float32) / 257)
    from_onnx = Translator(onnx, in_channels=4, out_channels=2)(image)
    from_torch = Translator.from_checkpoint(config.run_dir, device="cpu")(image)
    assert from_onnx.channels == 2 and np.abs(from_onnx.array() - from_torch.array()).max() < 0.05


def test_channel_counts_the_model_does_not_take_are_named(tmp_path, caplog):
    four = tmp_path / "four.tif"
    tifffile.imwrite(four, colour16(36, 36, 4), photometric="minisblack", planarconfig="contig")
    with pytest.raises(ImageReadError, match=r"four.tif: has 4 channels; the model takes 3"):
        load_image(four, channels=3)
    with pytest.raises(ImageReadError, match=r"four.tif.*has 4 channels; the model takes 3"):
        Translator(Identity(), in_channels=3).translate_files([(four, tmp_path / "o.png")])

    from cyclegan.data import unpaired_dataset_from_folders

    root = tmp_path / "mixed"
    for domain in ("trainA", "trainB"):
        (root / domain).mkdir(parents=True)
        for i in range(2):
            write_png16(root / domain / f"{i}.png", colour16(36, 36, seed=i))
    tifffile.imwrite(root / "trainA" / "band4.tif", colour16(36, 36, 4), photometric="minisblack", planarconfig="contig")
    bad: list = []
    dataset = unpaired_dataset_from_folders(root, preprocess=Preprocess(load_size=36, crop_size=32), bad_images=bad)
    assert [p.name for p in dataset.paths_a] == ["0.png", "1.png"]
    assert [(p.name, why) for p, why in bad] == [("band4.tif", "has 4 channels; the model takes 3")]


def test_16_bit_gray_and_2_channel_tiffs_round_trip(tmp_path):
    """Microscopy: two stains in one 16-bit TIFF, stored as separate planes."""
    stains = colour16(30, 34, 2)
    source = tmp_path / "cells.tif"
    tifffile.imwrite(source, stains.transpose(2, 0, 1), photometric="minisblack", planarconfig="separate")
    image = load_image(source, channels=2)
    assert isinstance(image, Bands) and image.channels == 2 and image.size == (34, 30)
    translator = Translator(Identity(), in_channels=2, device="cpu")
    out = save_image(translator(image), tmp_path / "out.tif")
    assert np.abs(tifffile.imread(out).astype(int) - stains).max() <= 1


def test_tiff_orientation_is_applied(tmp_path):
    values = colour16(20, 30, 3)
    source = tmp_path / "turned.tif"
    tifffile.imwrite(source, values, photometric="rgb", extratags=[(274, 3, 1, 6, True)])  # 6: rotate 90 clockwise
    assert peek_size(source) == (20, 30)
    upright = np.round(open_image(source).array() / 255 * 65535)
    assert np.array_equal(upright, np.rot90(values, -1))


def test_the_server_answers_a_4_band_upload_with_a_4_band_tiff(tmp_path):
    from cyclegan.config import build_experiment
    from cyclegan.serve import TranslationService

    config = build_experiment({**TINY_OPTIONS, "input_nc": 4, "output_nc": 4, "checkpoints_dir": str(tmp_path),
                               "name": "four"})
    Trainer(config, device="cpu").save(config.run_dir / LATEST)
    upload = io.BytesIO()
    tifffile.imwrite(upload, colour16(24, 28, 4), photometric="minisblack", planarconfig="contig")
    body, kind = TranslationService(config.run_dir, device="cpu").translate(upload.getvalue(), "tile.tif", "AtoB")
    assert kind == "tiff" and tifffile.imread(io.BytesIO(body)).shape == (24, 28, 4)
