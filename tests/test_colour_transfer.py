"""The unpaired colour transfer and --colour_transfer_start: generators that start from it, not the identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan import cli
from cyclegan.checkpoint import load_generator
from cyclegan.colour_transfer import channel_transfer, distribution_transfer, fit_cubic, transfer_as_cubic
from cyclegan.losses import residual_loss
from cyclegan.metrics import psnr
from cyclegan.models import ColourMap
from cyclegan.models.layers import cubic_features, cubic_terms
from cyclegan.run import fit, make_dataset
from cyclegan.training import Trainer

from conftest import assert_same_networks, straight_and_resumed


def test_distribution_transfer_recovers_a_colour_change_from_unpaired_samples():
    rng = np.random.default_rng(0)

    def photo_colours(n):  # correlated, photo-like colours
        base = rng.beta(2, 3, size=(n, 1))
        return np.clip(base + rng.normal(0, 0.08, size=(n, 3)), 0, 1)

    def look(x):  # desaturate, tint, lift
        grey = x.mean(axis=1, keepdims=True)
        return 0.1 + 0.8 * (0.6 * x + 0.4 * grey) * np.array([0.9, 1.0, 1.1])

    source, target = photo_colours(50_000), look(photo_colours(50_000))  # unpaired: different samples
    held_out = photo_colours(5_000)
    transfer = distribution_transfer(source, target, iterations=20)
    error = np.sqrt(((transfer(held_out) - look(held_out)) ** 2).mean())
    assert error < 0.25 * np.sqrt(((held_out - look(held_out)) ** 2).mean())
    assert error < 0.02


def test_channel_transfer_matches_each_channel_and_only_each_channel():
    rng = np.random.default_rng(0)
    source, other = rng.random((50_000, 3)), rng.random((50_000, 3))
    curves = lambda x: np.stack([x[:, 0] ** 2, np.sqrt(x[:, 1]), 0.2 + 0.6 * x[:, 2]], axis=1)  # noqa: E731
    held_out = rng.random((5_000, 3))
    assert np.abs(channel_transfer(source, curves(other))(held_out) - curves(held_out)).max() < 0.01
    swapped = channel_transfer(source, other[:, ::-1] * [1.0, 0.5, 1.0])(held_out)  # channels taken from each other
    assert np.abs(swapped[:, 1] - held_out[:, 1] * 0.5).max() < 0.01  # it still maps each channel from itself


def test_a_colour_map_starts_as_the_identity_and_holds_a_fitted_cubic():
    assert len(cubic_terms(3)) == 19 and len(cubic_terms(1)) == 3
    x = torch.rand(2, 3, 5, 7) * 2 - 1
    colour_map = ColourMap(3, 3)
    assert torch.allclose(colour_map(x), x, atol=1e-6)
    truth = lambda c: torch.stack([c[:, 0] ** 3 - 0.2 * c[:, 1] * c[:, 2], 0.5 * c[:, 1] + 0.1, c[:, 2] ** 2], 1)  # noqa: E731
    pixels = torch.rand(5000, 3) * 2 - 1
    weight, bias = fit_cubic(pixels, truth(pixels), ridge=0.0)  # exact: the ridge would shrink it a little
    colour_map.set_cubic(weight.float(), bias.float())
    assert torch.allclose(colour_map(x), truth(x), atol=1e-4)
    assert torch.allclose(cubic_features(pixels.double(), dim=1) @ weight.T + bias, truth(pixels.double()), atol=1e-8)


def dusk(x: np.ndarray) -> np.ndarray:
    """A global tone change on [0, 1]: darker mid-tones, warmer."""
    return np.clip(x ** 1.6 * np.array([1.0, 0.9, 0.75]), 0, 1)


def smooth_images(count: int, seed: int) -> list[np.ndarray]:
    """Photo-like images (H, W, 3) on [0, 1]: smooth random colour fields, each with a colour cast of its own."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        small = rng.random((5, 5, 3)) * 0.6 + rng.random(3) * 0.4
        big = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((40, 40), Image.BICUBIC)) / 255.0
        images.append(big)
    return images


def write(folder, images) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / f"{index:03d}.png")


@pytest.fixture
def tone_task(tmp_path):
    """Unpaired data of a global tone task: trainB is the tone applied to other images than trainA's."""
    root = tmp_path / "tone"
    write(root / "trainA", smooth_images(24, seed=1))
    write(root / "trainB", [dusk(image) for image in smooth_images(24, seed=2)])
    return root


def held_out_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack(smooth_images(6, seed=3))[:, 4:36, 4:36]
    to_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() * 2 - 1  # noqa: E731
    return to_tensor(images), to_tensor(dusk(images))


@pytest.mark.parametrize("kind", ["channels", "joint"])
def test_generators_start_from_the_unpaired_colour_transfer(tiny_config, tone_task, kind):
    trainer = Trainer(tiny_config(dataroot=str(tone_task), global_residual=True, colour_transfer_start=kind,
                                  ema_decay=0.999))
    a, truth = held_out_pairs()
    with torch.no_grad():
        assert torch.equal(trainer.model.g_ab(a), a)  # the identity until the start is fitted
    moved = trainer.start_from_colour_transfer(make_dataset(trainer))
    assert set(moved) == {"g_ab", "g_ba"} and all(value > 0.05 for value in moved.values())
    with torch.no_grad():
        translated, back = trainer.model.g_ab(a), trainer.model.g_ba(truth)
        averaged = trainer.ema["g_ab_ema"](a)
    assert psnr(translated, truth) > psnr(a, truth) + 8  # most of the way to the tone, from unpaired colours
    assert psnr(back, a) > psnr(truth, a) + 8  # and the other generator most of the way back
    assert torch.equal(averaged, translated)



def test_the_one_sided_cut_model_starts_its_one_generator_from_the_transfer(tiny_config, tone_task):
    trainer = Trainer(tiny_config(dataroot=str(tone_task), model="cut", lambda_identity=0.0, lambda_NCE=1.0,
                                  num_patches=16, global_residual=True, colour_transfer_start="joint"))
    assert set(trainer.start_from_colour_transfer(make_dataset(trainer))) == {"g_ab"}
    a, truth = held_out_pairs()
    with torch.no_grad():
        assert psnr(trainer.model.g_ab(a), truth) > psnr(a, truth) + 8


def test_a_run_fits_its_start_once_and_reloads_without_flags(tiny_config, tone_task):
    options = dict(dataroot=str(tone_task), global_residual=True, colour_transfer_start="joint", pool_size=3)
    trainer = Trainer(tiny_config(**options, max_iters=2))
    fit(trainer, show_progress=False)
    a, truth = held_out_pairs()
    generator = load_generator(trainer.run_dir, "AtoB")
    with torch.no_grad():
        assert psnr(generator(a), truth) > psnr(a, truth) + 8
    fitted = {k: v.clone() for k, v in trainer.model.g_ab.colour_map.state_dict().items()}
    resumed = Trainer.resume(trainer.run_dir, overrides={"max_iters": 3})
    assert all(torch.equal(v, resumed.model.g_ab.colour_map.state_dict()[k]) for k, v in fitted.items())
    refits = []
    resumed.start_from_colour_transfer = lambda dataset: refits.append(dataset)  # a resumed run keeps its maps
    fit(resumed, show_progress=False)
    assert not refits and resumed.total_iters == 3


def test_a_start_fitted_before_fit_is_not_fitted_again(tiny_config, tone_task):
    trainer = Trainer(tiny_config(dataroot=str(tone_task), global_residual=True, colour_transfer_start="channels",
                                  pool_size=3, max_iters=1))
    trainer.start_from_colour_transfer(make_dataset(trainer))  # as the learning benchmark scores the start
    trainer.start_from_colour_transfer = lambda dataset: pytest.fail("fit() fitted the start a second time")
    fit(trainer, show_progress=False)
    assert trainer.total_iters == 1


def fitted_maps_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Wrap ``trainer``'s start so that, when fit() runs it, the returned dict receives copies of G_A's fitted map."""
    fitted = {}
    start = trainer.start_from_colour_transfer

    def recording(dataset):
        moved = start(dataset)
        fitted.update({name: p.detach().clone() for name, p in trainer.model.g_ab.colour_map.named_parameters()})
        return moved

    trainer.start_from_colour_transfer = recording
    return fitted


@pytest.mark.parametrize("colour_map_lr", [0.0, 1.0])
def test_colour_map_lr_zero_keeps_the_fitted_start_and_trains_the_rest(tiny_config, tone_task, colour_map_lr):
    trainer = Trainer(tiny_config(dataroot=str(tone_task), global_residual=True, colour_transfer_start="channels",
                                  colour_map_lr=colour_map_lr, ema_decay=0.5, pool_size=3, max_iters=3))
    fitted = fitted_maps_of(trainer)
    first_conv = trainer.model.g_ab.stem[1].weight.detach().clone()
    fit(trainer, show_progress=False)
    kept = [torch.equal(p, fitted[name]) for name, p in trainer.model.g_ab.colour_map.named_parameters()]
    kept_in_average = [torch.equal(p, fitted[name]) for name, p in trainer.ema["g_ab_ema"].colour_map.named_parameters()]
    assert all(kept) == all(kept_in_average) == (colour_map_lr == 0)
    assert not torch.equal(trainer.model.g_ab.stem[1].weight, first_conv)  # the residual trains either way


def test_the_colour_map_group_runs_at_its_share_of_the_lr(tiny_config, tone_task):
    trainer = Trainer(tiny_config(dataroot=str(tone_task), global_residual=True, colour_transfer_start="joint",
                                  colour_map_lr=0.25, warmup_iters=4))
    trunk, maps = trainer.opt_g.param_groups
    assert {id(p) for p in maps["params"]} == {id(p) for name in ("g_ab", "g_ba")
                                                for p in getattr(trainer.model, name).colour_map.parameters()}
    for _ in range(3):
        trainer.total_iters += 1
        trainer.set_learning_rate()
        assert trunk["lr"] > 0 and maps["lr"] == pytest.approx(0.25 * trunk["lr"])
    assert trainer.used_lr == trunk["lr"]
    assert len(trainer.opt_d.param_groups) == 1


def residual_size(trainer: Trainer, images: torch.Tensor) -> float:
    """Mean |G_A(x) - base(x)| over ``images``: how far G_A's residual has taken it from its base."""
    g_ab = trainer.model.g_ab
    with torch.no_grad():
        return residual_loss(g_ab(images), g_ab.base(images), 1.0).item()


def test_the_residual_loss_holds_each_generator_near_its_fitted_start(tiny_config, tone_task):
    sizes = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        trainer = Trainer(tiny_config(dataroot=str(tone_task), global_residual=True, colour_transfer_start="channels",
                                      colour_map_lr=0.0, lambda_residual=weight, pool_size=3, max_iters=20))
        fit(trainer, show_progress=False)
        sizes[weight] = residual_size(trainer, held_out_pairs()[0])
    assert sizes[0.0] > 0.01  # free, the residual moves the output away from the fitted transfer
    assert sizes[10.0] < 0.3 * sizes[0.0]


def test_the_residual_loss_is_zero_at_an_identity_start_and_logged_by_a_step(tiny_config):
    trainer = Trainer(tiny_config(global_residual=True, lambda_residual=5.0))
    real_a, real_b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    trainer.model.g_ab.start_as_identity()
    trainer.model.g_ba.start_as_identity()
    losses = trainer.model.generator_losses(trainer.model.translate_both(real_a, real_b))
    assert losses["residual_A"].item() == losses["residual_B"].item() == 0.0
    trainer.train_step(real_a, real_b)
    logged = trainer.train_step(real_a, real_b)  # after one update the residual is no longer zero
    assert logged["residual_A"] > 0 and logged["residual_B"] > 0


@pytest.mark.numerics
@pytest.mark.parametrize("colour_map_lr", [1.0, 0.5])
def test_resume_is_exact_with_the_colour_transfer_start(tiny_config, tone_task, colour_map_lr):
    options = {"dataroot": str(tone_task), "global_residual": True, "colour_transfer_start": "joint", "pool_size": 3,
               "colour_map_lr": colour_map_lr}
    assert_same_networks(*straight_and_resumed(tiny_config, **options))


def test_the_colour_transfer_start_needs_the_global_residual_and_unpaired_data(tiny_config):
    with pytest.raises(ValueError, match="--colour_transfer_start.*--global_residual"):
        tiny_config(colour_transfer_start="joint")
    with pytest.raises(ValueError, match="colour_transfer_start"):
        tiny_config(colour_transfer_start="joint", global_residual=True, netG="unet_128", crop_size=128, load_size=128)
    with pytest.raises(ValueError, match="pix2pix has no --colour_transfer_start"):
        tiny_config(colour_transfer_start="joint", global_residual=True, model="pix2pix", lambda_identity=0.0)
    with pytest.raises(ValueError, match="--colour_map_lr .*add --colour_transfer_start"):
        tiny_config(colour_map_lr=0.0, global_residual=True)
    with pytest.raises(ValueError, match="--colour_map_lr must not be negative"):
        tiny_config(colour_map_lr=-1.0, colour_transfer_start="joint", global_residual=True)
    with pytest.raises(ValueError, match="option 'lambda_residual' must not be negative"):
        tiny_config(lambda_residual=-1.0, global_residual=True)
    with pytest.raises(ValueError, match="--lambda_residual weighs the global residual: it needs --global_residual"):
        tiny_config(lambda_residual=1.0)
    with pytest.raises(ValueError, match="cut has no lambda_residual"):
        tiny_config(lambda_residual=1.0, global_residual=True, model="cut", lambda_identity=0.0, lambda_NCE=1.0)


def test_a_start_fitted_to_nearly_collinear_colours_stays_bounded_off_them():
    # A toned domain (sepia): its colours lie near one curve, with a little noise across it.
    rng = np.random.default_rng(0)
    level = rng.random((50_000, 1))
    toned = np.clip(level ** np.array([0.9, 1.0, 1.2]) + rng.normal(0, 0.002, (50_000, 3)), 0, 1)
    grey = np.repeat(rng.random((50_000, 1)), 3, axis=1)
    for kind in ("channels", "joint"):
        weight, bias = transfer_as_cubic(torch.from_numpy(toned) * 2 - 1, torch.from_numpy(grey) * 2 - 1, kind=kind)
        assert weight.abs().max() < 5, kind  # the plain least squares: coefficients in the tens of thousands
        off_curve = torch.rand(1_000, 3, dtype=torch.float64) * 2 - 1
        assert (cubic_features(off_curve, dim=1) @ weight.T + bias).abs().max() < 3, kind


def test_transfer_as_cubic_works_on_the_networks_scale():
    rng = np.random.default_rng(0)
    source = torch.from_numpy(rng.random((20_000, 3))) * 2 - 1
    target = torch.from_numpy(dusk(rng.random((20_000, 3)))) * 2 - 1
    held_out = torch.from_numpy(rng.random((2_000, 3)))
    for kind in ("channels", "joint"):
        weight, bias = transfer_as_cubic(source, target, kind=kind)
        mapped = cubic_features(held_out * 2 - 1, dim=1) @ weight.T + bias
        error = ((mapped + 1) / 2 - torch.from_numpy(dusk(held_out.numpy()))).abs().mean()
        assert error < 0.02, kind
    with pytest.raises(ValueError, match="unknown colour transfer 'other'; valid: channels, joint"):
        transfer_as_cubic(source, target, kind="other")


@pytest.mark.numerics
def test_a_generator_with_a_colour_map_exports_to_onnx(tiny_config, tone_task, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra (make test installs it)")
    trainer = Trainer(tiny_config(dataroot=str(tone_task), global_residual=True, colour_transfer_start="joint", max_iters=1))
    fit(trainer, show_progress=False)
    path = tmp_path / "g.onnx"
    assert cli.main(["export", "--checkpoint", str(trainer.run_dir), "--format", "onnx", "--output", str(path)]) == 0
    a, _ = held_out_pairs()
    with torch.no_grad():
        expected = load_generator(trainer.run_dir, "AtoB")(a).numpy()
    got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": a.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-4
