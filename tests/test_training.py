import json
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from cyclegan.checkpoint import Checkpoint
from cyclegan.config import ExperimentConfig
from cyclegan.schedules import linear_factor as linear_lr_factor
from cyclegan.run import fit
from cyclegan.objective import LOSS_NAMES
from cyclegan.training import Trainer


def batch(seed=0, n=1, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1, torch.rand(n, 3, size, size, generator=g) * 2 - 1


def weights(trainer):
    return {f"{name}.{k}": v.clone() for name, net in trainer.model.networks().items() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("epoch, factor", [(1, 1.0), (100, 1.0), (101, 1 - 1 / 101), (150, 1 - 50 / 101), (200, 1 / 101)])
def test_linear_lr_factor_at_the_boundaries(epoch, factor):
    assert linear_lr_factor(epoch, n_epochs=100, n_epochs_decay=100) == pytest.approx(factor)


def test_generator_step_gives_the_frozen_discriminators_no_gradient(tiny_config):
    trainer = Trainer(tiny_config())
    trainer.generator_step(*batch())
    for d in (trainer.model.d_a, trainer.model.d_b):
        assert all(p.grad is None for p in d.parameters())
        assert all(p.requires_grad for p in d.parameters())  # unfrozen again for their own step
    for g in (trainer.model.g_ab, trainer.model.g_ba):
        assert all(p.grad is not None for p in g.parameters())


@pytest.mark.numerics
def test_losses_equal_a_hand_computation(tiny_config):
    trainer = Trainer(tiny_config(lambda_A=10.0, lambda_B=7.0, lambda_identity=0.5))
    m = trainer.model
    a, b = batch(1)
    with torch.no_grad():
        fake_b, fake_a = m.g_ab(a), m.g_ba(b)
        rec_a, rec_b = m.g_ba(fake_b), m.g_ab(fake_a)
        expected = {
            "G_A": ((m.d_b(fake_b) - 1) ** 2).mean(),
            "G_B": ((m.d_a(fake_a) - 1) ** 2).mean(),
            "cycle_A": 10.0 * (rec_a - a).abs().mean(),
            "cycle_B": 7.0 * (rec_b - b).abs().mean(),
            "idt_A": 0.5 * 7.0 * (m.g_ab(b) - b).abs().mean(),
            "idt_B": 0.5 * 10.0 * (m.g_ba(a) - a).abs().mean(),
            # the pool is empty, so each discriminator sees this step's fakes; D is unchanged by the G step
            "D_A": 0.5 * (((m.d_b(b) - 1) ** 2).mean() + (m.d_b(fake_b) ** 2).mean()),
            "D_B": 0.5 * (((m.d_a(a) - 1) ** 2).mean() + (m.d_a(fake_a) ** 2).mean()),
        }
    losses = trainer.train_step(a, b)
    assert set(losses) == set(LOSS_NAMES)
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value.item(), rel=1e-5), name


def test_vanilla_gan_mode_uses_cross_entropy(tiny_config):
    trainer = Trainer(tiny_config(gan_mode="vanilla"))
    a, b = batch(2)
    with torch.no_grad():
        logits = trainer.model.d_b(trainer.model.g_ab(a))
        expected = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    assert trainer.train_step(a, b)["G_A"] == pytest.approx(expected.item(), rel=1e-5)


def test_one_iteration_changes_every_network_and_gives_finite_losses(tiny_config):
    trainer = Trainer(tiny_config())
    before = weights(trainer)
    losses = trainer.train_step(*batch())
    after = weights(trainer)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    for name in ("g_ab", "g_ba", "d_a", "d_b"):
        changed = [k for k in before if k.startswith(name) and not torch.equal(before[k], after[k])]
        assert changed, f"{name} did not change"


def test_identity_loss_off_when_lambda_is_zero(tiny_config):
    losses = Trainer(tiny_config(lambda_identity=0.0)).train_step(*batch())
    assert losses["idt_A"] == losses["idt_B"] == 0.0


@pytest.mark.numerics
def test_same_seed_gives_identical_first_losses(tiny_config):
    first = Trainer(tiny_config(seed=3)).train_step(*batch())
    again = Trainer(tiny_config(seed=3)).train_step(*batch())
    other = Trainer(tiny_config(seed=4)).train_step(*batch())
    assert first == again
    assert first != other


def test_adam_uses_the_configured_lr_and_betas(tiny_config):
    trainer = Trainer(tiny_config(lr=0.001, beta1=0.3))
    for optimizer in (trainer.opt_g, trainer.opt_d):
        assert optimizer.param_groups[0]["lr"] == 0.001
        assert optimizer.param_groups[0]["betas"] == (0.3, 0.999)
    assert len(trainer.opt_g.param_groups[0]["params"]) == len(list(trainer.model.g_ab.parameters())) * 2


def test_fit_writes_the_run_folder(tiny_config):
    config = tiny_config(display_freq=2, print_freq=2)
    trainer = Trainer(config)
    run = fit(trainer, show_progress=False)
    assert json.loads((run / "config.json").read_text())["model"]["ngf"] == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [2, 4, 6, 8]  # 3 epochs of max(3, 2) = 3 images
    assert all(set(LOSS_NAMES) <= set(r) for r in records)
    assert [r["lr"] for r in records] == pytest.approx([2e-4, 2e-4 * 2 / 3, 2e-4 * 2 / 3, 2e-4 / 3])  # iters 4-6 are epoch 2
    # every display_freq iterations, and at every epoch's end (iterations 3, 6, 9)
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        f"epoch_{e:04d}_iter_{i:07d}.png" for e, i in ((1, 2), (1, 3), (2, 4), (2, 6), (3, 8), (3, 9))]
    assert sorted(p.name for p in run.glob("epoch_*.safetensors")) == ["epoch_0001.safetensors", "epoch_0002.safetensors", "epoch_0003.safetensors"]
    assert Checkpoint(run).info["total_iters"] == 9 and Checkpoint(run).info["epoch"] == 4


def assert_same_training_state(one: Trainer, two: Trainer):
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys()
    for key in w1:
        assert torch.equal(w1[key], w2[key]), key
    for o1, o2 in ((one.opt_g, two.opt_g), (one.opt_d, two.opt_d)):
        for s1, s2 in zip(o1.state_dict()["state"].values(), o2.state_dict()["state"].values()):
            assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert len(one.pool_a.images) == len(two.pool_a.images)
    assert all(torch.equal(x, y) for x, y in zip(one.pool_b.images, two.pool_b.images))
    assert (one.epoch, one.epoch_iter, one.total_iters) == (two.epoch, two.epoch_iter, two.total_iters)


@pytest.mark.numerics
@pytest.mark.parametrize("k", [4, 3])  # stop mid-epoch, and exactly at an epoch's end
def test_resume_is_exact(tiny_config, k):
    # Dropout draws from torch's global RNG, and a pool of 2 fills at once, so both must come back.
    options = dict(no_dropout=False, n_epochs=1, n_epochs_decay=3)
    straight = Trainer(tiny_config(name="straight", max_iters=2 * k, **options))
    fit(straight, show_progress=False)

    first = Trainer(tiny_config(name="split", max_iters=k, **options))
    run = fit(first, show_progress=False)
    torch.manual_seed(12345)  # whatever happens between the two processes must not matter
    resumed = Trainer.resume(run, overrides={"max_iters": 2 * k})
    assert resumed.total_iters == k
    fit(resumed, show_progress=False)
    assert_same_training_state(straight, resumed)
    metrics = [json.loads(line)["iter"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(1, 2 * k + 1))


def test_resume_refuses_to_change_the_architecture(tiny_config):
    run = fit(Trainer(tiny_config(max_iters=1)), show_progress=False)
    with pytest.raises(ValueError, match="cannot change ngf"):
        Trainer.resume(run, overrides={"ngf": 8})
    assert Trainer.resume(run, overrides={"ngf": 4, "n_epochs": 5}).config.train.n_epochs == 5


def test_interrupt_saves_a_resumable_checkpoint(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config())
    step = trainer.train_step_tensors

    def step_then_interrupt(*batch):
        losses = step(*batch)
        if trainer.total_iters == 1:  # counted after the step returns: this is the 2nd iteration
            os.kill(os.getpid(), signal.SIGINT)
        return losses

    monkeypatch.setattr(trainer, "train_step_tensors", step_then_interrupt)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background (nohup, &)
    run = fit(trainer, show_progress=False)
    assert trainer.total_iters == 2
    assert Checkpoint(run).info["total_iters"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the handler fit() installed is taken down again


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no GPU exists")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(tiny_config):
    with pytest.raises(ValueError, match="no CUDA device"):
        Trainer(tiny_config(device="cuda"))


@pytest.mark.parametrize("cores, requested, expected", [(2, -1, 2), (1, -1, 1), (16, -1, 4), (2, 8, 8), (2, 0, 0)])
def test_auto_data_workers_never_exceed_the_cores(monkeypatch, cores, requested, expected):
    from cyclegan import devices

    monkeypatch.setattr(devices, "usable_cores", lambda: cores)
    assert devices.data_workers(requested) == expected
    assert f"{expected} worker process" in devices.describe_data_workers(requested)


def test_default_data_workers_train_without_a_warning_and_say_how_many(tiny_config, monkeypatch, caplog, recwarn):
    import logging

    assert ExperimentConfig().data.num_threads == -1  # auto by default
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)  # a 1-core machine, for us and torch
    caplog.set_level(logging.INFO)
    fit(Trainer(tiny_config(num_threads=-1, max_iters=1)), show_progress=False)
    assert "data loading: 1 worker process (--num_threads auto: the official 4, capped at the CPU cores" in caplog.text
    assert not [w for w in recwarn if "worker" in str(w.message)]  # torch warns of more workers than cores
