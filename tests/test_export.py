"""cyclegan export (ONNX, TorchScript) and translate --onnx: the same numbers as PyTorch at any size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.checkpoint import load_generator
from cyclegan.cli import main
from cyclegan.run import fit
from cyclegan.training import Trainer

pytestmark = pytest.mark.numerics

onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra: pip install 'cyclegan[export]' (make test installs it)")

SIZES = [(1, 64, 64), (2, 96, 160)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TINY_OPTIONS, write_images
    from cyclegan.config import build_experiment

    root = tmp_path_factory.mktemp("export")
    write_images(root / "data" / "trainA", 2, seed=1)
    write_images(root / "data" / "trainB", 2, seed=2)
    config = build_experiment({**TINY_OPTIONS, "ngf": 8, "dataroot": str(root / "data"), "checkpoints_dir": str(root / "runs"),
                               "name": "tiny", "max_iters": 2, "ema_decay": 0.9})
    fit(Trainer(config), show_progress=False)
    return config.run_dir


def inputs(batch, height, width):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height)) * 2 - 1


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_onnx_export_matches_pytorch_at_two_sizes(run, tmp_path, direction):
    path = tmp_path / f"g_{direction}.onnx"
    assert main(["export", "--checkpoint", str(run), "--direction", direction, "--format", "onnx", "--output", str(path)]) == 0
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = load_generator(run, direction)
    for shape in SIZES:
        x = inputs(*shape)
        with torch.no_grad():
            expected = generator(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4, shape
    meta = session.get_modelmeta().custom_metadata_map
    assert '"direction": "%s"' % direction in meta["cyclegan"] and '"network": "g_' in meta["cyclegan"]


def test_torchscript_export_matches_pytorch_at_two_sizes(run, tmp_path):
    from cyclegan.export import read_torchscript

    path = tmp_path / "g.pt"
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", "--output", str(path)]) == 0
    module, metadata = read_torchscript(path)
    assert metadata["network"] == "g_ab_ema" and metadata["size_multiple"] == 4  # the moving average is exported
    generator = load_generator(run, "AtoB")
    for shape in SIZES:
        x = inputs(*shape)
        with torch.no_grad():
            assert (module(x) - generator(x)).abs().max() <= 1e-4, shape


def test_translate_with_onnx_gives_the_pytorch_images(run, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (70, 50)), ("b.png", (33, 41))):  # sizes that need padding
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(source / name)
    onnx_file = tmp_path / "g.onnx"
    assert main(["export", "--checkpoint", str(run), "--output", str(onnx_file)]) == 0
    assert main(["translate", "--onnx", str(onnx_file), str(source), "--output", str(tmp_path / "onnx"), "--quiet"]) == 0
    assert main(["translate", "--checkpoint", str(run), str(source), "--output", str(tmp_path / "torch"), "--quiet"]) == 0
    for name in ("a.png", "b.png"):
        with Image.open(tmp_path / "onnx" / name) as x, Image.open(tmp_path / "torch" / name) as y:
            assert x.size == y.size
            assert np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max() <= 1


def test_onnx_of_the_other_direction_and_missing_files_are_clear_errors(run, tmp_path, capsys):
    onnx_file = tmp_path / "g.onnx"
    main(["export", "--checkpoint", str(run), "--direction", "BtoA", "--output", str(onnx_file)])
    source = tmp_path / "in"
    source.mkdir()
    Image.new("RGB", (16, 16)).save(source / "x.png")
    assert main(["translate", "--onnx", str(onnx_file), str(source), "--output", str(tmp_path / "o")]) == 2
    assert "translates BtoA, not AtoB" in capsys.readouterr().err
    assert main(["translate", "--onnx", str(tmp_path / "nope.onnx"), str(source), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["translate", str(source), "--output", str(tmp_path / "o")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
