"""Shared fixtures: tiny image folders made in tmp_path and a tiny, fast experiment config."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.config import build_experiment

# The benchmarks' importable modules (analysis, official_step), which tests check too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

TINY_OPTIONS = {
    "netG": "resnet_6blocks", "ngf": 4, "ndf": 4, "load_size": 36, "crop_size": 32,
    "n_epochs": 1, "n_epochs_decay": 2, "num_threads": 0, "pool_size": 2,
    "print_freq": 1, "display_freq": 1000, "save_latest_freq": 1000, "save_epoch_freq": 1,
}


def write_images(folder: Path, count: int, *, size=(40, 44), seed: int = 0, mode: str = "RGB") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    return paths


def straight_and_resumed(tiny_config, **options):
    """Two tiny runs of ``options``: 4 iterations straight, and 2 then resumed to 4 (for resume-is-exact tests)."""
    from cyclegan.run import fit
    from cyclegan.training import Trainer

    straight = Trainer(tiny_config(**options, max_iters=4))
    fit(straight, show_progress=False)
    halves = Trainer(tiny_config(**options, max_iters=2, name="halves"))
    fit(halves, show_progress=False)
    resumed = Trainer.resume(halves.run_dir, overrides={"max_iters": 4})
    fit(resumed, show_progress=False)
    return straight, resumed


def assert_same_networks(straight, resumed) -> None:
    """Every network of the two trainers holds the same tensors, bit for bit."""
    for name, net in straight.model.networks().items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, resumed.model.networks()[name].state_dict()[key]), (name, key)


def check_one_way_translate(run: Path, folder: Path, capsys, *, size: tuple[int, int], refusal: str) -> None:
    """``cyclegan translate`` of a one-generator model keeps an odd-sized image's size; BtoA is refused with ``refusal``."""
    from cyclegan import cli

    odd = folder / "odd.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(odd)
    assert cli.main(["translate", str(odd), "--checkpoint", str(run), "--output", str(folder / "out"), "--quiet"]) == 0
    assert Image.open(folder / "out" / "odd.png").size == size
    assert cli.main(["translate", str(odd), "--checkpoint", str(run), "--direction", "BtoA",
                     "--output", str(folder / "out2"), "--quiet"]) != 0
    assert refusal in capsys.readouterr().err


@pytest.fixture
def dataroot(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_images(root / "trainA", 3, seed=1)
    write_images(root / "trainB", 2, seed=2)
    return root


@pytest.fixture
def tiny_config(dataroot: Path, tmp_path: Path):
    def make(**overrides):
        options = {**TINY_OPTIONS, "dataroot": str(dataroot), "checkpoints_dir": str(tmp_path / "runs"), "name": "tiny"}
        options.update(overrides)
        return build_experiment(options)

    return make


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by playwright (never ``playwright install``); skipped, saying why, without it."""
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: install it with 'apt-get install chromium' to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev extra; make test installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` intra-op threads: a kernel's sums are split by its thread count, so
    two computations are bit-equal only at the same count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def same_threads_env() -> dict[str, str]:
    """The environment for a child process whose numbers are compared bit for bit with this one's:
    it gets this process's thread count, whatever torch would pick by itself."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
