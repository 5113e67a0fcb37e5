"""--precision auto: bf16 where the hardware trains faster in it (CUDA with bf16, a CPU with AMX), fp32
elsewhere, and the log says which."""

from __future__ import annotations

import logging

import pytest
import torch

from cyclegan.devices import check_precision, resolve_precision
from cyclegan.run import fit
from cyclegan.training import Trainer

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags, forced, expected, why", [
    ({"avx2", "avx512f", "avx512_bf16"}, None, "fp32", "this CPU has avx512_bf16 but no amx_bf16, and without AMX"),
    ({"avx2", "amx_bf16", "avx512_bf16"}, None, "bf16", "this CPU has amx_bf16 and avx512_bf16"),
    ({"avx2", "fma"}, None, "fp32", "no avx512_bf16 or amx_bf16"),
    ({"avx2", "avx512_bf16"}, "avx2", "fp32", "ATEN_CPU_CAPABILITY=avx2 forces kernels without bf16"),
])
def test_auto_takes_bf16_only_where_the_cpu_has_amx(monkeypatch, flags, forced, expected, why):
    monkeypatch.setattr("cyclegan.devices.cpu_flags", lambda: flags)
    if forced:
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", forced)
    else:
        monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    precision, reason = resolve_precision(CPU, "auto")
    assert precision == expected and why in reason and reason.startswith("--precision auto")
    assert resolve_precision(CPU, "fp32") == ("fp32", "--precision fp32")


def test_explicit_bf16_is_refused_where_the_forced_kernels_would_emulate_it(monkeypatch):
    monkeypatch.setattr("cyclegan.devices.cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    with pytest.raises(ValueError, match="ATEN_CPU_CAPABILITY=avx2 forces kernels without bf16"):
        check_precision(CPU, "bf16")


@pytest.mark.parametrize("native", [True, False])
def test_the_trainer_resolves_auto_once_and_the_start_up_log_says_why(tiny_config, monkeypatch, caplog, native):
    monkeypatch.setattr("cyclegan.devices.cpu_flags", lambda: {"amx_bf16", "avx512_bf16"} if native else {"avx2"})
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    caplog.set_level(logging.INFO)
    trainer = Trainer(tiny_config(precision="auto", max_iters=1), device="cpu")
    assert trainer.precision == ("bf16" if native else "fp32")
    fit(trainer, show_progress=False)
    expected = "this CPU has amx_bf16 and avx512_bf16" if native else "this CPU has no avx512_bf16 or amx_bf16"
    assert f"precision: {trainer.precision} (--precision auto: {expected})" in caplog.text
    assert trainer.model.g_ab.stem[1].weight.dtype == torch.float32  # autocast keeps fp32 master weights
    assert trainer.config.train.precision == "auto"  # the saved config keeps the choice, not its outcome


def test_compile_with_bf16_on_a_cpu_is_refused_and_auto_falls_back_to_fp32(tiny_config, monkeypatch):
    monkeypatch.setattr("cyclegan.devices.cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    with pytest.raises(ValueError, match="--compile with bf16 on a CPU gives non-finite generator gradients"):
        Trainer(tiny_config(compile=True, precision="bf16"), device="cpu")
    trainer = Trainer(tiny_config(compile=True, precision="auto"), device="cpu")  # compiles lazily: nothing runs here
    assert trainer.precision == "fp32" and "but --compile with bf16 on a CPU" in trainer.precision_reason
