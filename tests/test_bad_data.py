"""Bad images and bad losses: reported with the file and the problem, and nothing is lost."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan import cli
from cyclegan.checkpoint import LATEST
from cyclegan.images import ImageReadError, image_problem, scan_images
from cyclegan.run import fit, make_dataset
from cyclegan.training import NonFiniteLossError, Trainer

from conftest import write_images


def png_bytes(size=(40, 44), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A valid PNG header that declares 100000 x 100000 pixels."""
    data = bytearray(png_bytes((8, 8)))
    ihdr = bytearray(data[16:29])  # width, height, depth, colour type, compression, filter, interlace
    ihdr[0:8] = struct.pack(">II", 100_000, 100_000)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_bytes(size=(40, 44)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


BAD_FILES = {
    "truncated.jpg": lambda: jpeg_bytes()[:300],
    "truncated.png": lambda: png_bytes()[:200],
    "empty.png": lambda: b"",
    "page.jpg": lambda: b"<html><body>404 Not Found</body></html>",
    "bomb.png": bomb_png,
}
GOOD_MODES = ("P", "CMYK", "LA", "RGBA", "I;16", "F", "L", "1")


def write_bad_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in BAD_FILES.items():
        (folder / name).write_bytes(make())
    return [folder / name for name in BAD_FILES]


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_each_bad_file_is_named_with_its_problem(tmp_path, name):
    path = write_bad_files(tmp_path)[list(BAD_FILES).index(name)]
    problem = image_problem(path)
    assert problem, name
    with pytest.raises(ImageReadError, match=f"bad image {path}"):
        scan_images([path], on_bad="fail")


def test_images_too_small_to_crop_are_bad_only_when_cropping(tmp_path):
    (tmp_path / "small.png").write_bytes(png_bytes((20, 50)))
    assert image_problem(tmp_path / "small.png", min_side=32) == "20x50 is smaller than crop_size 32"
    assert image_problem(tmp_path / "small.png") is None


@pytest.mark.parametrize("mode", GOOD_MODES)
def test_unusual_modes_are_usable(tmp_path, mode):
    path = tmp_path / f"image.{'tif' if mode in ('CMYK', 'I;16', 'F') else 'png'}"
    Image.new(mode, (36, 40)).save(path)
    assert image_problem(path) is None


def test_training_skips_bad_images_lists_them_and_says_how_many(tiny_config, dataroot, caplog):
    bad = write_bad_files(dataroot / "trainA")
    trainer = Trainer(tiny_config())
    dataset = make_dataset(trainer)
    assert len(dataset.paths_a) == 3 and all(p.name.startswith("img_") for p in dataset.paths_a)
    listing = (trainer.run_dir / "bad_images.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listing) == sorted(str(p) for p in bad)
    assert all(line.split("\t")[1] for line in listing)
    assert f"skipped {len(bad)} of {len(bad) + 5} training images" in caplog.text


def test_training_fails_fast_on_a_bad_image_when_asked(tiny_config, dataroot):
    write_bad_files(dataroot / "trainB")
    with pytest.raises(ImageReadError, match=r"bad image .*trainB/(bomb|empty|page|truncated)"):
        make_dataset(Trainer(tiny_config(on_bad_image="fail")))


def test_a_domain_of_only_bad_images_is_an_error_before_training(tmp_path, capsys):
    root = tmp_path / "data"
    write_images(root / "trainA", 2)
    write_bad_files(root / "trainB")
    code = cli.main(["train", "--dataroot", str(root), "--checkpoints_dir", str(tmp_path / "c"), "--name", "x",
                     "--ngf", "4", "--ndf", "4", "--load_size", "36", "--crop_size", "32", "--num_threads", "0"])
    assert code == 2
    assert "trainB holds no usable image: all 5 failed" in capsys.readouterr().err


def test_translate_fails_on_a_bad_image_by_default_and_skips_when_asked(tmp_path, tiny_config, capsys, caplog):
    config = tiny_config()
    Trainer(config).save(config.run_dir / LATEST)
    inputs = tmp_path / "inputs"
    write_images(inputs, 2)
    for name, make in BAD_FILES.items():  # one folder each: truncated.jpg and .png would both become .png
        folder = inputs / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_bytes(make())
    args = ["translate", "--checkpoint", str(config.run_dir), str(inputs), "--output", str(tmp_path / "out"), "--quiet"]
    assert cli.main(args) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert cli.main([*args, "--on_bad_image", "skip"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["img_000.png", "img_001.png"]
    assert "skipped 5 unreadable images" in caplog.text


def poison(trainer: Trainer, when: int) -> None:
    """Make the generator losses NaN at iteration ``when``."""
    original = trainer.model.generator_losses

    def losses(images, colour=None):
        out = original(images, colour)
        if trainer.total_iters + 1 == when:
            out["G_A"] = out["G_A"] * float("nan")
        return out

    trainer.model.generator_losses = losses


def test_a_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tiny_config):
    config = tiny_config(save_latest_freq=2)
    trainer = Trainer(config)
    poison(trainer, when=4)
    with pytest.raises(NonFiniteLossError, match=r"generator loss became non-finite at iteration 4 .*G_A nan"):
        fit(trainer, show_progress=False)
    saved = (config.run_dir / LATEST).read_bytes()
    from cyclegan.checkpoint import Checkpoint

    assert Checkpoint(config.run_dir).info["total_iters"] == 3  # the epoch end after iteration 3; nothing later
    resumed = Trainer.resume(config.run_dir)
    assert resumed.total_iters == 3 and (config.run_dir / LATEST).read_bytes() == saved


def test_a_nan_loss_can_be_skipped(tiny_config, caplog):
    trainer = Trainer(tiny_config(on_nonfinite="skip", max_iters=4))
    poison(trainer, when=2)
    before = {k: v.clone() for k, v in trainer.model.g_ab.state_dict().items()}
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    trainer.train_step(a, b)  # iteration 1: applied
    after_first = {k: v.clone() for k, v in trainer.model.g_ab.state_dict().items()}
    trainer.total_iters = 1
    trainer.train_step(a, b)  # iteration 2: the generator update is skipped
    assert any(not torch.equal(before[k], after_first[k]) for k in before)
    assert all(torch.equal(after_first[k], v) for k, v in trainer.model.g_ab.state_dict().items())
    assert "non-finite generator loss" in caplog.text and "update skipped" in caplog.text



def test_a_domain_with_a_single_image_is_an_error_before_training(tiny_config, dataroot):
    for extra in list((dataroot / "trainB").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(ValueError, match=r"trainB holds a single usable image \(img_000.png\)"):
        make_dataset(Trainer(tiny_config()))


def test_symlink_loops_and_dangling_links_are_not_images(tmp_path):
    from cyclegan.images import find_images

    write_images(tmp_path / "a", 2)
    (tmp_path / "a" / "up").symlink_to("..")  # a loop
    (tmp_path / "a" / "dangling.png").symlink_to("missing.png")
    (tmp_path / "a" / "self.png").symlink_to("self.png")
    assert [p.name for p in find_images(tmp_path / "a")] == ["img_000.png", "img_001.png"]


def test_output_paths_never_escape_the_output_folder(tmp_path):
    from cyclegan.translate import plan_outputs

    odd = tmp_path / "in" / "sub"
    odd.mkdir(parents=True)
    for name in ("we ird #1 é.png", "..hidden.png", "new\nline.png"):
        (odd / name).write_bytes(png_bytes((8, 8)))
    out = tmp_path / "out"
    pairs = plan_outputs([tmp_path / "in"], out)
    assert all(target.resolve().is_relative_to(out.resolve()) for _, target in pairs) and len(pairs) == 3
    pattern = str(tmp_path / "in" / "*" / ".." / ".." / "in" / "sub" / "*.png")  # matches, but leads out
    with pytest.raises(ValueError, match="outside --output"):
        plan_outputs([pattern], out)


@pytest.fixture
def rgb_run(tmp_path_factory):
    from cyclegan.config import build_experiment

    root = tmp_path_factory.mktemp("rgb")
    config = build_experiment({"netG": "resnet_6blocks", "ngf": 4, "ndf": 4, "checkpoints_dir": str(root), "name": "r"})
    Trainer(config, device="cpu").save(config.run_dir / LATEST)
    return config.run_dir


def gradient16(width=48, height=40) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return (x * 1300 + y * 37).astype(np.uint16)  # uses the high byte and the low byte


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_grayscale_in_gives_16_bit_grayscale_out(tmp_path, rgb_run, suffix):
    from cyclegan.translate import Translator

    source = tmp_path / f"scan.{suffix}"
    Image.fromarray(gradient16()).save(source)
    translator = Translator.from_checkpoint(rgb_run, device="cpu")
    written = translator.translate_files([(source, tmp_path / "out" / f"scan.{suffix}")])
    out = Image.open(written[0])
    assert out.mode == "I;16" and out.size == (48, 40)
    values = np.asarray(out)
    assert len(np.unique(values % 256)) > 16  # real 16-bit values, not 8-bit ones scaled up


def test_16_bit_values_are_read_from_their_real_range(tmp_path):
    from cyclegan.images import load_image, match_channels, to_tensor

    Image.fromarray(gradient16()).save(tmp_path / "g.png")
    tensor = match_channels(to_tensor(load_image(tmp_path / "g.png")), 3)
    expected = gradient16().astype(np.float64) / 65535 * 2 - 1
    assert tensor.shape == (3, 40, 48)
    assert np.allclose(tensor[0].numpy(), expected, atol=1e-6) and torch.equal(tensor[0], tensor[2])
    floats = np.linspace(-3, 5, 40 * 48, dtype=np.float32).reshape(40, 48)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tif")
    stretched = to_tensor(load_image(tmp_path / "f.tif"))
    assert float(stretched.min()) == pytest.approx(-1) and float(stretched.max()) == pytest.approx(1)


def test_grayscale_photos_come_out_gray_from_an_rgb_model(tmp_path, rgb_run):
    from cyclegan.translate import Translator

    out = Translator.from_checkpoint(rgb_run, device="cpu")(Image.new("L", (32, 24), 128))
    assert out.mode == "L" and out.size == (32, 24)


def test_16_bit_images_train(tmp_path, tiny_config):
    root = tmp_path / "deep"
    for domain in ("trainA", "trainB"):
        (root / domain).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(gradient16() + i * 100).save(root / domain / f"{i}.png")
    trainer = Trainer(tiny_config(dataroot=str(root), max_iters=2))
    fit(trainer, show_progress=False)
    assert trainer.total_iters == 2


def test_rgba_palette_and_gray_images_train_together(tmp_path, tiny_config):
    root = tmp_path / "mixed"
    write_images(root / "trainA", 2, mode="RGB")
    for path in (root / "trainA").iterdir():
        Image.open(path).convert("RGBA").save(path)  # 4 channels: the alpha is dropped for training
    write_images(root / "trainB", 2, mode="L", seed=3)
    Image.open(root / "trainB" / "img_000.png").convert("P").save(root / "trainB" / "img_000.png")
    trainer = Trainer(tiny_config(dataroot=str(root), max_iters=2))
    sample = make_dataset(trainer)[0]
    assert sample["A"].shape == (3, 32, 32) and sample["B"].shape == (3, 32, 32)
    fit(trainer, show_progress=False)
    assert trainer.total_iters == 2
