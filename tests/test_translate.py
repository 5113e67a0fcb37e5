"""Inference at any size: padding, tiling with whole-image instance norm, batching, files and the API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan import cli
from cyclegan.checkpoint import LATEST, load_generator
from cyclegan.config import ModelConfig
from cyclegan.models import build_generator
from cyclegan.names import TILE_STATS
from cyclegan.training import Trainer
from cyclegan.tiling import TileOptions, TilePlan, blend_window, padding_for, reflect_pad
from cyclegan.translate import Resize, Translator, plan_outputs

from conftest import TINY_OPTIONS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from cyclegan.config import build_experiment

    root = tmp_path_factory.mktemp("translate")
    config = build_experiment({**TINY_OPTIONS, "ngf": 8, "checkpoints_dir": str(root), "name": "run",
                               "lambda_identity": 0.0, "input_nc": 3, "output_nc": 1})
    trainer = Trainer(config, device="cpu")
    trainer.save(config.run_dir / LATEST)
    return config.run_dir


def photo(width: int, height: int, *, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth test picture with edges (random noise would hide seams in its own variation)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    channels = [127 + 100 * np.sin(x / (9 + 5 * c) + y / (13 + 3 * c) + rng.uniform(0, 6)) for c in range(3)]
    image = np.stack(channels, -1)
    image[(x // 40 + y // 50) % 3 == 0] *= 0.5
    return Image.fromarray(image.clip(0, 255).astype(np.uint8)).convert(mode)


def random_net(netG: str = "resnet_6blocks", ngf: int = 8):
    torch.manual_seed(0)
    return build_generator(ModelConfig(netG=netG, ngf=ngf))


# ---- padding and tile geometry ------------------------------------------------------------

def test_padding_reaches_the_stride_multiple_and_reflect_pads_tiny_images():
    assert padding_for(97, 4) == (1, 2) and padding_for(100, 4) == (0, 0) and padding_for(5, 4) == (1, 2)
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    padded = reflect_pad(x, 3, 3, 4, 5)  # more padding than the image is wide: several passes
    assert padded.shape == (1, 1, 8, 12)
    assert torch.equal(padded[..., 3:5, 4:7], x)


@pytest.mark.parametrize("length,tile,overlap", [(1024, 256, 64), (768, 256, 64), (1000, 300, 60), (256, 256, 64)])
def test_tiles_cover_the_image_and_blend_weights_sum_to_one(length, tile, overlap):
    plan = TilePlan.make(length, length, tile=tile, overlap=overlap, multiple=4)
    assert plan.starts_y[0] == 0 and plan.starts_y[-1] + plan.tile_h == length
    cores = [c for pair in plan.cores_y for c in pair]
    assert cores[0] == 0 and cores[-1] == length and all(a == b for a, b in zip(cores[1:-1:2], cores[2::2]))
    assert all(c % 4 == 0 for c in cores)
    total = plan.weight_sum()
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)  # raised-cosine ramps are complementary
    window = blend_window(plan.starts_y, 0, plan.tile_h)
    assert window[0] == 1 and (len(plan.starts_y) == 1 or window[-1] < 0.01)


# ---- translate_tensor ---------------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(97, 130), (20, 5000), (4, 4), (64, 64)])
def test_every_size_comes_back_unchanged(height, width):
    translator = Translator(random_net(), device="cpu")
    out = translator.translate_tensor(torch.rand(3, height, width) * 2 - 1)
    assert out.shape == (3, height, width) and out.abs().max() <= 1


@pytest.mark.numerics
def test_a_multiple_of_four_is_exactly_the_generator_output():
    net = random_net()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    out = Translator(net, device="cpu").translate_tensor(x)
    with torch.no_grad():
        assert torch.allclose(out, net.eval()(x), atol=1e-6)
    assert torch.is_inference(out) and not net.training


@pytest.mark.parametrize("height,width", [(1, 1), (3, 100)])
def test_too_small_images_are_a_clear_error(height, width):
    with pytest.raises(ValueError, match=f"{width}x{height} pixels; .* at least 4"):
        Translator(random_net(), device="cpu").translate_tensor(torch.zeros(1, 3, height, width))


def test_wrong_channel_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected a \(B, 3, H, W\) tensor"):
        Translator(random_net(), device="cpu").translate_tensor(torch.zeros(1, 1, 16, 16))


@pytest.mark.parametrize("tile,overlap,message", [(30, 8, "multiple of 4"), (64, 40, "half the tile"), (64, 0, "positive")])
def test_bad_tile_options_are_refused(tile, overlap, message):
    with pytest.raises(ValueError, match=message):
        Translator(random_net(), device="cpu", tiles=TileOptions(tile=tile, overlap=overlap))


def _jumps(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Mean absolute difference between neighbouring columns (axis -1) or rows (axis -2)."""
    return x.diff(dim=axis).abs().mean(dim=(0, -2 if axis == -1 else -1))


@pytest.mark.numerics
def test_tiled_output_matches_the_whole_image_and_has_no_seams():
    net = random_net()
    x = torch.from_numpy(np.array(photo(1024, 768))).permute(2, 0, 1).float() / 127.5 - 1
    whole = Translator(net, device="cpu", tiles=TileOptions(tile=1024)).translate_tensor(x)
    tiled = Translator(net, device="cpu", tiles=TileOptions(tile=256, overlap=64)).translate_tensor(x)
    interior = (tiled - whole).abs()[:, 16:-16, 16:-16] * 127.5  # in [0, 255] units
    assert interior.mean() < 1.0
    plan = TilePlan.make(768, 1024, tile=256, overlap=64, multiple=4)
    edges = sorted({s for s in plan.starts_x[1:]} | {s + 256 for s in plan.starts_x[:-1]})
    jump_tiled, jump_whole = _jumps(tiled, -1), _jumps(whole, -1)
    for edge in edges:  # the step across a tile's edge is the network's own, not a seam
        assert jump_tiled[edge - 1] <= jump_whole[edge - 1] * 1.1 + 1 / 255, edge

    # The same check catches what plain tiling does: each tile normalised by its own statistics.
    naive = torch.zeros_like(whole)
    with torch.inference_mode():
        for top, left, _ in plan.tiles():
            tile = net(x[None, :, top:top + 256, left:left + 256])[0]
            naive[:, top:top + 256, left:left + 256] += tile * plan.weights(top, left)
    assert (naive - whole).abs()[:, 16:-16, 16:-16].mean() * 127.5 > 5 * interior.mean()


def test_estimated_statistics_are_one_for_all_tiles():
    net = random_net()
    x = torch.from_numpy(np.array(photo(256, 192))).permute(2, 0, 1).float() / 127.5 - 1
    tiled = Translator(net, device="cpu", tiles=TileOptions(tile=64, overlap=16, stats="estimate")).translate_tensor(x)
    assert tiled.shape == x.shape and torch.isfinite(tiled).all()
    assert "estimate" in TILE_STATS and "exact" in TILE_STATS


@pytest.mark.numerics
def test_batch_norm_and_no_norm_tile_without_statistics():
    for norm in ("batch", "none"):
        torch.manual_seed(0)
        net = build_generator(ModelConfig(netG="resnet_6blocks", ngf=4, norm=norm)).eval()
        x = torch.rand(3, 96, 128) * 2 - 1
        whole = Translator(net, device="cpu", tiles=TileOptions(tile=256)).translate_tensor(x)
        tiled = Translator(net, device="cpu", tiles=TileOptions(tile=64, overlap=24)).translate_tensor(x)
        assert (whole - tiled).abs()[:, 8:-8, 8:-8].mean() < 1 / 255


# ---- images, files and the API -------------------------------------------------------------

def test_from_checkpoint_rebuilds_the_generator_and_keeps_its_channels(run_dir):
    import cyclegan

    forward = cyclegan.Translator.from_checkpoint(run_dir, "AtoB", device="cpu")
    back = Translator.from_checkpoint(run_dir, direction="BtoA", device="cpu")
    assert not forward.generator.training
    assert forward.translate_tensor(torch.zeros(3, 20, 24)).shape == (1, 20, 24)  # 3 -> 1 channel
    assert back.translate_tensor(torch.zeros(1, 20, 24)).shape == (3, 20, 24)
    reference = load_generator(run_dir, "AtoB")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(forward.translate_tensor(x), reference(x), atol=1e-6)


def test_pil_images_of_any_mode_keep_size_and_alpha(run_dir):
    back = Translator.from_checkpoint(run_dir, "BtoA", device="cpu")  # 1 -> 3 channels
    rgba = photo(37, 29, mode="RGBA")
    alpha = Image.fromarray(np.tile(np.arange(37, dtype=np.uint8) * 6, (29, 1)))
    rgba.putalpha(alpha)
    out = back(rgba)
    assert out.size == (37, 29) and out.mode == "RGBA"
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(alpha))
    for mode in ("L", "RGB", "P"):
        out = back(photo(23, 41).convert(mode))
        assert out.size == (23, 41) and out.mode == "RGB"
    deep = back(photo(23, 41).convert("I;16"))  # 16-bit gray in, 16-bit colour out: Pillow holds no such image
    assert deep.size == (23, 41) and (deep.mode, deep.channels, deep.depth) == ("bands", 3, "16")


def test_resize_is_opt_in():
    assert Resize.parse(None) is None and Resize.parse("0") is None
    assert Resize.parse("128").target(400, 200) == (256, 128)
    assert Resize.parse("64x48").target(400, 200) == (64, 48)
    with pytest.raises(ValueError, match="expected N"):
        Resize.parse("big")
    translator = Translator(random_net(), device="cpu", resize=Resize.parse("32"))
    assert translator(photo(64, 96)).size == (32, 48)


@pytest.mark.numerics
def test_mixed_sizes_are_batched_by_size_and_match_one_at_a_time(tmp_path):
    sizes = [(40, 30), (64, 48), (40, 30), (97, 13), (40, 30), (64, 48)]
    for i, (w, h) in enumerate(sizes):
        photo(w, h, seed=i).save(tmp_path / f"in_{i}.png")
    translator = Translator(random_net(), device="cpu")
    jobs = plan_outputs([tmp_path], tmp_path / "out")
    groups = translator.plan_batches([s for s, _ in jobs], batch_size=2)
    assert sorted(len(g) for g in groups) == [1, 1, 2, 2]  # three of 40x30 -> 2 + 1; two of 64x48; one 97x13
    written = translator.translate_files(jobs, batch_size=2)
    assert len(written) == 6
    for i, (w, h) in enumerate(sizes):
        out = Image.open(tmp_path / "out" / f"in_{i}.png")
        assert out.size == (w, h)
        alone = np.asarray(translator(Image.open(tmp_path / f"in_{i}.png")), dtype=np.int16)
        assert np.abs(np.asarray(out, dtype=np.int16) - alone).max() <= 1


def test_output_paths_keep_relative_folders_and_refuse_to_overwrite(tmp_path):
    for rel in ("a/x.jpg", "a/sub/y.png", "b/x.jpg", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("not an image")
        else:
            photo(8, 8).save(tmp_path / rel)
    out = tmp_path / "out"
    pairs = plan_outputs([tmp_path / "a"], out)
    assert sorted(str(t.relative_to(out)) for _, t in pairs) == ["sub/y.png", "x.png"]
    pairs = plan_outputs([str(tmp_path / "*" / "x.jpg")], out, format="webp")
    assert sorted(str(t.relative_to(out)) for _, t in pairs) == ["a/x.webp", "b/x.webp"]
    with pytest.raises(ValueError, match="would both be written to"):
        plan_outputs([tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"], out)
    with pytest.raises(ValueError, match="would overwrite an input"):
        plan_outputs([tmp_path / "a"], tmp_path / "a", format="png")
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        plan_outputs([tmp_path / "missing*.png"], out)
    with pytest.raises(ValueError, match="unknown --format"):
        plan_outputs([tmp_path / "a"], out, format="gif")


def test_inputs_differing_only_by_extension_are_all_written_none_overwritten(tmp_path, run_dir, caplog):
    import logging

    caplog.set_level(logging.INFO)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("x.jpg", "x.png", "y.jpeg", "y.webp", "z.jpg"):
        photo(8, 8).save(folder / name)
    out = tmp_path / "out"
    pairs = plan_outputs([folder], out)
    assert {s.name: str(t.relative_to(out)) for s, t in pairs} == {
        "x.jpg": "x.jpg.png", "x.png": "x.png", "y.jpeg": "y.jpeg.png", "y.webp": "y.webp.png", "z.jpg": "z.png"}
    assert "x.jpg and another input differ only by extension: writing x.jpg.png" in caplog.text
    (folder / "x.jpg.png").write_bytes((folder / "x.png").read_bytes())  # an input already named so
    with pytest.raises(ValueError, match="would both be written to"):
        plan_outputs([folder], out)
    (folder / "x.jpg.png").unlink()
    assert cli.main(["translate", "--checkpoint", str(run_dir), str(folder), "--output", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.png", "x.png", "y.jpeg.png", "y.webp.png", "z.png"]


def test_translate_folder_writes_every_image(tmp_path, run_dir):
    for i in range(3):
        photo(30 + i, 20, seed=i).save(tmp_path / f"{i}.jpg")
    translator = Translator.from_checkpoint(run_dir, device="cpu")
    written = translator.translate_folder(tmp_path, tmp_path / "out")
    assert [p.name for p in sorted(written)] == ["0.png", "1.png", "2.png"]
    assert [Image.open(p).size for p in sorted(written)] == [(30, 20), (31, 20), (32, 20)]


# ---- the command line ---------------------------------------------------------------------

def test_translate_command(tmp_path, run_dir, capsys):
    photo(97, 130).save(tmp_path / "big.png")
    photo(20, 16, mode="L").save(tmp_path / "gray.png")
    args = ["translate", "--checkpoint", str(run_dir), str(tmp_path / "*.png"), "--output", str(tmp_path / "out"),
            "--format", "jpg", "--quiet", "--device", "cpu"]
    assert cli.main(args) == 0
    assert Image.open(tmp_path / "out" / "big.jpg").size == (97, 130)
    assert Image.open(tmp_path / "out" / "gray.jpg").size == (20, 16)
    stamp = (tmp_path / "out" / "big.jpg").stat().st_mtime_ns
    assert cli.main([*args, "--skip_existing"]) == 0
    assert (tmp_path / "out" / "big.jpg").stat().st_mtime_ns == stamp
    assert cli.main([*args[:-2], "--load_size", "32", "--output", str(tmp_path / "sq")]) == 0
    assert Image.open(tmp_path / "sq" / "big.jpg").size == (32, 32)


@pytest.mark.parametrize("problem,message", [
    ("no_checkpoint", "does not exist"),
    ("tiny_image", "1x1 pixels"),
    ("not_an_image", "cannot read image"),
    ("no_input", "matches nothing"),
])
def test_translate_command_errors_exit_2_naming_the_problem(tmp_path, run_dir, capsys, problem, message):
    checkpoint = tmp_path / "none" if problem == "no_checkpoint" else run_dir
    source = tmp_path / "in.png"
    if problem == "tiny_image":
        Image.new("RGB", (1, 1)).save(source)
    elif problem == "not_an_image":
        source.write_text("<html>not an image</html>")
    elif problem != "no_input":
        photo(16, 16).save(source)
    code = cli.main(["translate", "--checkpoint", str(checkpoint), str(source), "--output", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_test_command_writes_one_row_per_test_image(tmp_path, run_dir):
    from conftest import write_images

    data = tmp_path / "data"
    write_images(data / "testA", 3, size=(40, 44), seed=1)
    write_images(data / "testA" / "more", 1, size=(37, 21), seed=2)
    write_images(data / "testB", 2, size=(33, 30), seed=3, mode="L")
    assert cli.main(["test", "--checkpoint", str(run_dir), "--dataroot", str(data), "--quiet", "--device", "cpu"]) == 0
    out = run_dir / "test_0"
    page = (out / "index.html").read_text()
    assert page.count("<tr>") == (1 + 4) + (1 + 2)  # a header and one row per image, in each direction
    assert "more/img_000.png" in page
    for kind in ("real", "fake", "rec"):
        assert Image.open(out / "images" / "AtoB" / "more" / f"img_000_{kind}.png").size == (37, 21)
        assert Image.open(out / "images" / "BtoA" / f"img_001_{kind}.png").size == (33, 30)
    assert Image.open(out / "images" / "AtoB" / "img_000_fake.png").mode == "L"  # 3 -> 1 channel model


def test_test_command_without_test_folders_is_a_clear_error(tmp_path, run_dir, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["test", "--checkpoint", str(run_dir), "--dataroot", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "neither testA/ nor testB/" in capsys.readouterr().err


@pytest.mark.numerics
def test_one_pass_statistics_equal_layer_by_layer_measurement_of_one_part():
    from functools import partial

    from cyclegan.tracking import progress
    from cyclegan.tile_stats import WholeImageInstanceNorm
    from cyclegan.tiling import measure_tiles

    net = random_net().eval()
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    plan = TilePlan.make(32, 48, tile=64, overlap=16, multiple=4)  # one part: the whole image
    norms = WholeImageInstanceNorm(net)
    with torch.inference_mode(), norms:
        norms.measure_whole(net, x)
        one_pass = norms.frozen
        norms.measure_layers(partial(measure_tiles, net, norms, x, plan, x.device,
                                     progress(None, total=1, description="", enabled=False)))
        layer_by_layer = norms.frozen
        assert len(one_pass) == len(layer_by_layer) == len(norms.layers) == 1 + 2 + 2 * 6 + 2
        for (m1, v1), (m2, v2) in zip(one_pass, layer_by_layer):
            assert torch.allclose(m1, m2, atol=1e-5) and torch.allclose(v1, v2, rtol=1e-4, atol=1e-6)
        frozen_output = net(x)  # every layer now normalises with the measured statistics
    with torch.inference_mode():
        assert torch.allclose(frozen_output, net(x), atol=1e-5)  # ... which are the image's own
