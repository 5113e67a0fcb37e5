"""The speed-ups change nothing that is computed: the trainer's step equals the official one."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from cyclegan.devices import check_precision
from cyclegan.image_pool import ImagePool
from cyclegan.reference import reference_optimizers, reference_step
from cyclegan.training import LOSS_NAMES, Trainer


@pytest.mark.parametrize("options", [{}, {"lambda_identity": 0.0, "gan_mode": "vanilla"}],
                         ids=["default", "no-identity-vanilla"])
def test_trainer_step_equals_the_reference_step(tiny_config, options):
    trainer = Trainer(tiny_config(ngf=8, ndf=8, **options), device="cpu")
    assert all(g["fused"] for opt in (trainer.opt_g, trainer.opt_d) for g in opt.param_groups)
    reference = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
    opt_g, opt_d = reference_optimizers(reference)
    pool_a, pool_b = ImagePool(2, torch.Generator().manual_seed(1)), ImagePool(2, torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    batches = [(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1) for _ in range(3)]
    for a, b in batches:
        fast = trainer.train_step(a, b)
        slow = reference_step(reference, opt_g, opt_d, pool_a, pool_b, a, b)
        for name in LOSS_NAMES:
            assert fast[name] == pytest.approx(slow[name], rel=1e-4, abs=1e-6), name
    ours, theirs = trainer.model.state_dict(), reference.state_dict()
    noise = biases_before_instance_norm(trainer.model)
    assert len(noise) > 10 and "g_ab.head.1.bias" not in noise
    for key in ours:
        if key not in noise:
            assert torch.allclose(ours[key], theirs[key], rtol=1e-4, atol=1e-6), key


def test_channels_last_step_computes_the_same_losses_and_gradients(tiny_config):
    """channels_last rounds differently. Adam's first step is lr * g / |g| (a sign step), so an element
    whose gradient is rounding noise may move +lr here and -lr there: weights agree within 2 lr."""
    trainer = Trainer(tiny_config(ngf=8, ndf=8, memory_format="channels_last"), device="cpu")
    assert trainer.model.g_ab.stem[1].weight.is_contiguous(memory_format=torch.channels_last)
    reference = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
    opt_g, opt_d = reference_optimizers(reference)
    pool_a, pool_b = ImagePool(2, torch.Generator().manual_seed(1)), ImagePool(2, torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    fast = trainer.train_step(a, b)
    slow = reference_step(reference, opt_g, opt_d, pool_a, pool_b, a, b)
    assert fast == pytest.approx(slow, rel=1e-4, abs=1e-6)
    ours, theirs = trainer.model.state_dict(), reference.state_dict()
    lr = trainer.config.train.lr
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) <= 2 * lr * 1.001


def biases_before_instance_norm(model: torch.nn.Module) -> set[str]:
    """Conv biases that instance norm cancels: their gradient is 0 in exact arithmetic, so Adam,
    which divides by its running size, turns rounding noise into full-size steps of random sign
    (in the official code as much as here). Their values say nothing about equal computation."""
    found = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Sequential):
            for i, (layer, following) in enumerate(zip(module, list(module)[1:])):
                if isinstance(following, torch.nn.InstanceNorm2d) and getattr(layer, "bias", None) is not None:
                    found.add(f"{name}.{i}.bias")
    return found


def test_bf16_is_refused_on_a_cpu_that_only_emulates_it(monkeypatch, tiny_config):
    monkeypatch.setattr("cyclegan.devices.cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(ValueError, match="no native bf16"):
        check_precision(torch.device("cpu"), "bf16")
    check_precision(torch.device("cpu"), "bf16", allow_emulated=True)
    monkeypatch.setattr("cyclegan.devices.cpu_flags", lambda: {"avx512_bf16"})
    check_precision(torch.device("cpu"), "bf16")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        check_precision(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="no native bf16"):
        monkeypatch.setattr("cyclegan.devices.cpu_flags", lambda: set())
        Trainer(tiny_config(precision="bf16"), device="cpu")


def test_emulated_bf16_trains_when_allowed(tiny_config):
    trainer = Trainer(tiny_config(precision="bf16", allow_emulated_precision=True), device="cpu")
    losses = trainer.train_step(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert trainer.model.g_ab.stem[1].weight.dtype == torch.float32  # autocast: fp32 master weights


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_when_idle_unless_the_user_says_otherwise(preset, expected):
    code = ("import os, cyclegan.cli as c\n"
            "c.main(['--version']) if False else c.quiet_thread_waits()\n"
            "print(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected
