"""The speed-ups change nothing that is computed: the trainer's step equals the official one."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from cyclegan.devices import check_precision
from cyclegan.image_pool import ImagePool
from cyclegan.training import Trainer

from official_step import reference_optimizers, reference_step


STEPS = 3


def reference_setup(trainer: Trainer, *, fused: bool):
    """A copy of the trainer's networks with the official step's optimizers (for-loop Adam) or the
    trainer's own fused Adam, and pools seeded as the trainer's are."""
    reference = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
    optimizers = reference_optimizers(reference, fused=fused)
    pools = ImagePool(2, torch.Generator().manual_seed(1)), ImagePool(2, torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    batches = [(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1) for _ in range(STEPS)]
    return reference, optimizers, pools, batches


@pytest.mark.numerics
@pytest.mark.parametrize("options", [{}, {"lambda_identity": 0.0, "gan_mode": "vanilla"}],
                         ids=["default", "no-identity-vanilla"])
def test_trainer_steps_are_the_reference_steps_bit_for_bit(tiny_config, options):
    """Same process, same threads, same Adam kernel: the trainer's steps must be the official steps'
    arithmetic exactly, pools and optimizer state included, so nothing may differ after several steps."""
    trainer = Trainer(tiny_config(ngf=8, ndf=8, **options), device="cpu")
    reference, (opt_g, opt_d), (pool_a, pool_b), batches = reference_setup(trainer, fused=True)
    for a, b in batches:
        assert trainer.train_step(a, b) == reference_step(reference, opt_g, opt_d, pool_a, pool_b, a, b)
    theirs = reference.state_dict()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, theirs[key]), key


@pytest.mark.numerics
@pytest.mark.parametrize("options", [{}, {"lambda_identity": 0.0, "gan_mode": "vanilla"}],
                         ids=["default", "no-identity-vanilla"])
def test_fused_adam_step_is_the_official_for_loop_adam_step_up_to_rounding(tiny_config, options):
    """The fused kernel orders Adam's few operations differently from the official for-loop one. One step
    from equal weights and equal gradients: each weight may differ by the rounding of its own value and
    of the update (a few units in the last place of lr, since Adam's first step is lr * sign(g)).
    After more steps no such bound holds (the gradients then differ, and ReLU and L1 kinks amplify it)."""
    trainer = Trainer(tiny_config(ngf=8, ndf=8, **options), device="cpu")
    assert all(g["fused"] for opt in (trainer.opt_g, trainer.opt_d) for g in opt.param_groups)
    reference, (opt_g, opt_d), (pool_a, pool_b), [(a, b), *_] = reference_setup(trainer, fused=False)
    assert trainer.train_step(a, b) == reference_step(reference, opt_g, opt_d, pool_a, pool_b, a, b)
    lr, eps = trainer.config.train.lr, torch.finfo(torch.float32).eps
    theirs = reference.state_dict()
    differ = 0
    for key, value in trainer.model.state_dict().items():
        assert ((value - theirs[key]).abs() <= eps * (theirs[key].abs() + 4 * lr)).all(), key
        differ += not torch.equal(value, theirs[key])
    assert differ < len(theirs)


@pytest.mark.numerics
def test_channels_last_step_computes_the_same_losses_and_gradients(tiny_config):
    """channels_last rounds differently. Adam's first step is lr * g / |g| (a sign step), so an element
    whose gradient is rounding noise may move +lr here and -lr there: weights agree within 2 lr."""
    trainer = Trainer(tiny_config(ngf=8, ndf=8, memory_format="channels_last"), device="cpu")
    assert trainer.model.g_ab.stem[1].weight.is_contiguous(memory_format=torch.channels_last)
    reference, (opt_g, opt_d), (pool_a, pool_b), [(a, b), *_] = reference_setup(trainer, fused=False)
    fast = trainer.train_step(a, b)
    slow = reference_step(reference, opt_g, opt_d, pool_a, pool_b, a, b)
    assert fast == pytest.approx(slow, rel=1e-4, abs=1e-6)
    ours, theirs = trainer.model.state_dict(), reference.state_dict()
    lr = trainer.config.train.lr
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) <= 2 * lr * 1.001


@pytest.mark.numerics
def test_the_kernels_make_test_isa_forces_are_the_ones_that_run():
    """make test-isa reruns the numerics tests with the AVX2 kernels; a torch that ignored the
    variable would rerun the same kernels and test nothing new."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    ran = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "AVX2"
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    if forced:  # this very run is make test-isa's
        assert torch.backends.cpu.get_cpu_capability() == forced.upper()


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
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected
