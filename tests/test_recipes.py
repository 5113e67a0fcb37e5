"""--recipe paper|fast and the options of the fast recipe: warm-up, per-iteration cosine,
identity-weight decay and the generators' moving average (EMA)."""

import json

import pytest
import torch

from cyclegan.checkpoint import Checkpoint, load_generator
from cyclegan.cli import main
from cyclegan.config import RECIPES, ExperimentConfig, build_experiment
from cyclegan.schedules import cosine_factor, ema_weight, linear_decay, warmup_factor
from cyclegan.run import fit
from cyclegan.training import Trainer

from conftest import straight_and_resumed


def test_paper_recipe_is_the_default_and_changes_nothing():
    assert ExperimentConfig().train.recipe == "paper"
    assert build_experiment({"recipe": "paper"}) == ExperimentConfig()
    t, m = ExperimentConfig().train, ExperimentConfig().model
    assert (t.warmup_iters, t.lambda_identity_decay_iters, t.ema_decay, t.lr_policy, t.lambda_identity) == (0, 0, 0.0, "linear", 0.5)
    assert (m.global_residual, m.upsample, m.norm_D) == (False, "transpose", "same")


def test_fast_recipe_fills_in_its_bundle_beneath_explicit_options():
    config = build_experiment({"recipe": "fast"})
    for key, value in RECIPES["fast"].items():
        assert config.option(key) == value, key
    mixed = build_experiment({"recipe": "fast", "lambda_identity": 0.5, "ema_decay": 0.0})
    assert mixed.train.lambda_identity == 0.5 and mixed.train.ema_decay == 0.0  # explicit options win
    assert mixed.model.global_residual  # the rest of the bundle stays


def test_saved_config_of_a_fast_run_rebuilds_the_same_config():
    config = build_experiment({"recipe": "fast", "upsample": "transpose"})
    assert ExperimentConfig.from_dict(json.loads(config.to_json())) == config


def test_a_fast_run_saved_before_an_option_joined_the_bundle_loads_as_it_trained():
    saved = json.loads(build_experiment({"recipe": "fast"}).to_json())
    del saved["model"]["colour_path"], saved["train"]["lambda_colour"]  # as saved before they existed
    old = ExperimentConfig.from_dict(saved)
    assert old.model.colour_path == 0 and old.train.lambda_colour == 0.0
    assert old.model.global_residual and old.train.ema_decay == 0.999


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ValueError, match="paper, fast"):
        build_experiment({"recipe": "quick"})


def test_cli_train_with_the_fast_recipe(tiny_config, tmp_path):
    config = tiny_config()
    assert main(["train", "--recipe", "fast", "--dataroot", config.data.dataroot, "--checkpoints_dir", str(tmp_path),
                 "--name", "f", "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "36",
                 "--crop_size", "32", "--num_threads", "0", "--max_iters", "2", "--quiet"]) == 0
    saved = json.loads((tmp_path / "f" / "config.json").read_text())
    assert saved["train"]["recipe"] == "fast" and saved["model"]["global_residual"] and saved["train"]["ema_decay"] == 0.999
    assert Checkpoint(tmp_path / "f").has_network("g_ab_ema")


def test_fast_recipe_generators_start_as_the_identity(tiny_config):
    trainer = Trainer(tiny_config(recipe="fast"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(trainer.model.g_ab(x), x) and torch.equal(trainer.ema["g_ba_ema"](x), x)


def test_schedule_factors():
    assert [warmup_factor(i, warmup_iters=4) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, warmup_iters=0) == 1.0
    assert [linear_decay(i, decay_iters=4) for i in (0, 2, 4, 9)] == [1.0, 0.5, 0.0, 0.0]
    assert linear_decay(10**6, decay_iters=0) == 1.0
    assert cosine_factor(1.5, total_epochs=2) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 4)).item()))
    assert [ema_weight(n, decay=0.999) for n in (0, 90)] == [pytest.approx(0.1), pytest.approx(0.91)]
    assert ema_weight(10**6, decay=0.999) == 0.999


def lrs_of_a_run(trainer):
    records = [json.loads(line) for line in (fit(trainer, show_progress=False) / "metrics.jsonl").read_text().splitlines()]
    return [r["lr"] for r in records]


def test_warmup_ramps_the_lr_over_the_first_iterations(tiny_config):
    # 3 images per epoch, 3 epochs, linear policy (1 constant epoch, then 2 decaying); print_freq 1
    lrs = lrs_of_a_run(Trainer(tiny_config(warmup_iters=4)))
    lr = 2e-4
    assert lrs == pytest.approx([lr / 4, lr / 2, 3 * lr / 4, lr * 2 / 3, lr * 2 / 3, lr * 2 / 3, lr / 3, lr / 3, lr / 3])


def test_cosine_lr_moves_at_every_iteration(tiny_config):
    lrs = lrs_of_a_run(Trainer(tiny_config(lr_policy="cosine")))
    expected = [2e-4 * cosine_factor(1 + i / 3, total_epochs=3) for i in range(9)]
    assert lrs == pytest.approx(expected)
    assert len(set(lrs)) == 9  # a new lr at each of the 9 iterations, not once per epoch


def test_identity_weight_decays_linearly(tiny_config):
    trainer = Trainer(tiny_config(lambda_identity=0.5, lambda_identity_decay_iters=4, max_iters=2))
    fit(trainer, show_progress=False)
    trainer.set_learning_rate()  # as before the next update
    assert trainer.model.lambda_identity == pytest.approx(0.5 * (1 - 2 / 4))
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["idt_A"] > 0


@pytest.mark.numerics
def test_ema_follows_the_generator_by_its_weight(tiny_config):
    trainer = Trainer(tiny_config(ema_decay=0.999))
    before = {k: v.clone() for k, v in trainer.ema["g_ab_ema"].state_dict().items()}
    trainer.train_step(*(torch.rand(1, 3, 32, 32) * 2 - 1 for _ in range(2)))
    live = trainer.model.g_ab.state_dict()
    w = ema_weight(0, decay=0.999)
    changed = 0
    for key, value in trainer.ema["g_ab_ema"].state_dict().items():
        assert torch.allclose(value, w * before[key] + (1 - w) * live[key], atol=1e-7), key
        changed += not torch.equal(value, before[key])
    assert changed > 0


@pytest.mark.numerics
def test_translation_uses_the_ema_and_resume_restores_it(tiny_config):
    straight, resumed = straight_and_resumed(tiny_config, ema_decay=0.99)
    run = straight.run_dir
    ema = load_generator(run, "AtoB")
    live = load_generator(run, "AtoB", ema=False)
    for (key, e), l in zip(ema.state_dict().items(), live.state_dict().values()):
        assert torch.equal(e, straight.ema["g_ab_ema"].state_dict()[key])
    assert any(not torch.equal(e, l) for e, l in zip(ema.state_dict().values(), live.state_dict().values()))

    for name in ("g_ab_ema", "g_ba_ema"):
        for key, value in straight.ema[name].state_dict().items():
            assert torch.equal(value, resumed.ema[name].state_dict()[key]), (name, key)


def test_fit_callback_sees_every_iteration_and_can_stop_the_run(tiny_config):
    seen = []
    trainer = Trainer(tiny_config())
    fit(trainer, show_progress=False, callback=lambda t: seen.append(t.total_iters) or t.total_iters == 4)
    assert seen == [1, 2, 3, 4] and trainer.total_iters == 4
    assert Checkpoint(trainer.run_dir).info["total_iters"] == 4  # stopped like max_iters: saved, resumable
