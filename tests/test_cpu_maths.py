"""A fresh process's first element-wise maths on several threads is as accurate as its later calls.

MKL resolves each vector-maths (VML) kernel on its first call; when that first call runs on several
threads at once, one thread can compute its chunk with a low-accuracy kernel (pytorch/pytorch#188792).
It made a killed-and-resumed run end a few bits away from the uninterrupted one now and then (the
README's resume section gives the rate). ``settle_cpu_maths`` resolves every kernel on one thread first.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cyclegan.checkpoint
import cyclegan.training
from cyclegan.run import fit
from cyclegan.training import Trainer

pytestmark = pytest.mark.numerics

# A fresh process gets one chance at the race, its first VML call: here sin on 3,072 elements, which
# ATen splits between the two threads. The children run one after another: run side by side on two
# cores, their threads seldom overlap and the race seldom strikes.
CHILD = r"""
import torch
from cyclegan.devices import settle_cpu_maths
settle_cpu_maths()
x = torch.linspace(-3, 3, 3072)
first = torch.sin(x)
later = [torch.sin(x) for _ in range(3)][-1]
print("same" if torch.equal(first, later) else f"differs by {(first - later).abs().max().item():.3g}")
"""

# The race strikes a minority of fresh processes, so this detects unsettled code often, not always;
# a failure here is never noise.
PROCESSES = 16


def test_after_settling_the_first_threaded_call_equals_the_later_ones():
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    results = [subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=120)
               for _ in range(PROCESSES)]
    assert all(result.returncode == 0 for result in results), [result.stderr[-500:] for result in results]
    assert [result.stdout.strip() for result in results] == ["same"] * PROCESSES


def test_the_trainer_settles_the_maths_before_it_builds_the_networks(tiny_config, monkeypatch):
    calls = []
    monkeypatch.setattr(cyclegan.training, "settle_cpu_maths", lambda: calls.append("settled"))
    monkeypatch.setattr(cyclegan.training, "build_objective", lambda config: calls.append("built") or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        Trainer(tiny_config(), device="cpu")
    assert calls == ["settled", "built"]


def test_a_loaded_generator_is_settled_before_it_translates(tiny_config, monkeypatch):
    trainer = Trainer(tiny_config(max_iters=1), device="cpu")
    fit(trainer, show_progress=False)
    calls = []
    monkeypatch.setattr(cyclegan.checkpoint, "settle_cpu_maths", lambda: calls.append("settled"))
    cyclegan.checkpoint.Checkpoint(trainer.run_dir).generator("AtoB")
    assert calls == ["settled"]
