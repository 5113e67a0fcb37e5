"""Training under torchrun with 2 gloo processes on the CPU: the same arithmetic as one process
with both ranks' images in one batch, identical weights on every rank, and an exact resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cyclegan.checkpoint import Checkpoint
from cyclegan.training import LOSS_NAMES, Trainer

from test_speed import biases_before_instance_norm

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ddp_worker import rank_batch  # noqa: E402

STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_two_ranks_equal_one_process_with_both_ranks_images_in_its_batch(tiny_config, tmp_path):
    config = tiny_config(pool_size=0, ngf=8, ndf=8)  # no pool: a rank's pool would see only its own fakes
    (tmp_path / "config.json").write_text(config.to_json())
    torchrun(str(Path(__file__).parent / "helpers" / "ddp_worker.py"), str(tmp_path / "config.json"), str(tmp_path), str(STEPS))
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # every rank holds the same weights

    single = Trainer(tiny_config(pool_size=0, ngf=8, ndf=8, batch_size=2), device="cpu")
    rank_losses = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for step in range(STEPS):
        (a0, b0), (a1, b1) = rank_batch(0, step), rank_batch(1, step)
        losses = single.train_step(torch.cat([a0, a1]), torch.cat([b0, b1]))
        for name in LOSS_NAMES:  # a batch mean is the mean of the two ranks' means
            expected = (rank_losses[0][step][name] + rank_losses[1][step][name]) / 2
            assert losses[name] == pytest.approx(expected, rel=1e-4, abs=1e-6), (step, name)
    noise = biases_before_instance_norm(single.model)  # rounding noise that Adam turns into +-lr steps
    compared = 0
    for key, value in single.model.state_dict().items():
        if key not in noise:
            assert torch.allclose(value, ranks[0][key], rtol=1e-4, atol=1e-6), key
            compared += 1
    assert compared > 20


def cli_train(dataroot: Path, runs: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return torchrun("-m", "cyclegan", "train", "--dataroot", str(dataroot), "--checkpoints_dir", str(runs), "--name", name,
                    "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "36", "--crop_size", "32",
                    "--num_threads", "0", "--pool_size", "2", "--n_epochs", "2", "--n_epochs_decay", "2",
                    "--print_freq", "1", "--device", "cpu", "--quiet", *extra)


def test_torchrun_trains_shards_the_data_writes_once_and_resumes_exactly(dataroot, tmp_path):
    runs = tmp_path / "runs"
    straight = cli_train(dataroot, runs, "straight", "--max_iters", "4")
    assert "effective batch 2" in straight.stderr and straight.stderr.count("effective batch") == 1
    cli_train(dataroot, runs, "halves", "--max_iters", "2")
    checkpoint = Checkpoint(runs / "halves")
    assert len(checkpoint.training_state()["ranks"]) == 2  # each rank's own pools and RNGs
    cli_train(dataroot, runs, "ignored", "--resume", str(runs / "halves"), "--max_iters", "4")

    a, b = Checkpoint(runs / "straight"), Checkpoint(runs / "halves")
    # 3 images of A over 2 ranks: 2 each (DistributedSampler pads), so 2 iterations per epoch
    assert a.info["total_iters"] == b.info["total_iters"] == 4 and a.info["epoch"] == 3
    for name in ("g_ab", "g_ba", "d_a", "d_b"):
        left, right = a.tensors(f"{name}."), b.tensors(f"{name}.")
        for key in left:
            assert torch.equal(left[key], right[key]), (name, key)
    records = [json.loads(line) for line in (runs / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]  # one writer: no line twice
