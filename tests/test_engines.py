"""Translation engines: onnxruntime and OpenVINO give PyTorch's numbers, are converted once per
checkpoint, and leave images that need tiles to PyTorch's whole-image statistics."""

from __future__ import annotations

import logging

import pytest
import torch

from cyclegan import cli
from cyclegan.checkpoint import LATEST
from cyclegan.engines import resolve_engine
from cyclegan.metrics import psnr
from cyclegan.run import fit
from cyclegan.tiling import TileOptions
from cyclegan.training import Trainer
from cyclegan.translate import Translator

pytest.importorskip("onnxruntime", reason="the export extra: pip install 'cyclegan[export]' (make test installs it)")
pytest.importorskip("openvino", reason="the openvino extra: pip install 'cyclegan[openvino]' (make test installs it)")

# In a pytest process of their own (make test runs them apart): OpenVINO loaded beside everything else the
# suite loads made the process crash at exit (README: Performance).
pytestmark = pytest.mark.openvino


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TINY_OPTIONS, write_images
    from cyclegan.config import build_experiment

    root = tmp_path_factory.mktemp("engines")
    write_images(root / "data" / "trainA", 2, seed=1)
    write_images(root / "data" / "trainB", 2, seed=2)
    config = build_experiment({**TINY_OPTIONS, "ngf": 8, "dataroot": str(root / "data"),
                               "checkpoints_dir": str(root / "runs"), "name": "tiny", "max_iters": 2})
    fit(Trainer(config), show_progress=False)
    return config.run_dir


def inputs(batch, height, width, seed=0):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_auto_is_openvino_when_installed_else_torch(monkeypatch):
    assert resolve_engine("auto")[0] == "openvino"
    monkeypatch.setattr("cyclegan.engines.openvino_installed", lambda: False)
    name, why = resolve_engine("auto")
    assert name == "torch" and "pip install 'cyclegan[openvino]'" in why
    with pytest.raises(ValueError, match="valid: auto, torch, openvino, onnxruntime"):
        resolve_engine("tensorrt")


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_engines_give_the_pytorch_translation(run, engine):
    torch_translator = Translator.from_checkpoint(run, device="cpu")
    fast = Translator.on_engine(run, engine=engine, device="cpu")
    assert fast.engine is not None and fast.engine_choice.startswith(f"{engine}, fp32")
    for shape in [(1, 64, 64), (2, 96, 160), (1, 37, 50)]:  # the last is padded to the stride and cropped back
        x = inputs(*shape)
        assert (fast.translate_tensor(x) - torch_translator.translate_tensor(x)).abs().max() <= 1e-4, shape


def test_conversion_is_kept_beside_the_run_and_redone_for_another_checkpoint(run):
    Translator.on_engine(run, engine="openvino", device="cpu")
    files = sorted((run / "engines").iterdir())
    assert {f.suffix for f in files} == {".onnx", ".xml", ".bin"} and not [f for f in files if f.name.startswith(".")]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    Translator.on_engine(run, engine="openvino", device="cpu")
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # converted once
    trainer = Trainer.resume(run)
    trainer.total_iters += 1  # another checkpoint: other bytes, another hash
    trainer.save(run / "other.safetensors")
    Translator.on_engine(run / "other.safetensors", engine="openvino", device="cpu")
    assert len(list((run / "engines").glob("*.onnx"))) == 2


def test_images_that_need_tiles_run_on_pytorch_with_whole_image_statistics(run):
    tiles = TileOptions(tile=32, overlap=8)
    x = inputs(1, 64, 96)
    on_torch = Translator.from_checkpoint(run, device="cpu", tiles=tiles).translate_tensor(x)
    assert torch.equal(Translator.on_engine(run, engine="openvino", device="cpu", tiles=tiles).translate_tensor(x), on_torch)


def test_bf16_on_openvino_stays_close_to_fp32_and_needs_openvino(run):
    x = inputs(2, 64, 64, seed=3)
    fp32 = Translator.on_engine(run, engine="openvino", device="cpu").translate_tensor(x)
    bf16 = Translator.on_engine(run, engine="openvino", precision="bf16", device="cpu").translate_tensor(x)
    assert psnr(bf16, fp32) > 30  # a 0.8% error on [-1, 1] (bf16 keeps 8 bits of mantissa)
    with pytest.raises(ValueError, match="needs the OpenVINO engine"):
        Translator.on_engine(run, engine="torch", precision="bf16", device="cpu")


def test_translate_command_says_which_engine_it_runs(run, tmp_path, caplog):
    from PIL import Image

    caplog.set_level(logging.INFO)
    Image.new("RGB", (40, 36), (120, 30, 200)).save(tmp_path / "x.png")
    assert cli.main(["translate", "--checkpoint", str(run / LATEST), str(tmp_path / "x.png"), "--output",
                     str(tmp_path / "out"), "--engine", "openvino", "--quiet"]) == 0
    assert "engine: openvino, fp32 (--engine openvino)" in caplog.text
    assert Image.open(tmp_path / "out" / "x.png").size == (40, 36)
