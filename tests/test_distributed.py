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
from cyclegan.objective import LOSS_NAMES, set_requires_grad
from cyclegan.training import Trainer

from conftest import torch_threads

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from ddp_worker import rank_batch  # noqa: E402

pytestmark = pytest.mark.numerics

STEPS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER_THREADS = 1  # each of the two ranks gets one of the machine's cores


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(WORKER_THREADS), "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def averaged_step(trainer: Trainer, batches) -> list[dict[str, float]]:
    """One iteration in one process, done the way DistributedDataParallel does it over len(batches)
    ranks: each rank's gradient computed on its own images, then averaged, then one update."""
    model, world = trainer.model, len(batches)
    set_requires_grad([model.d_a, model.d_b], False)
    trainer.opt_g.zero_grad(set_to_none=True)
    outcomes = []
    for a, b in batches:
        images, losses = trainer.g_side(a, b)
        (sum(losses.values()) / world).backward()
        outcomes.append((images, losses))
    trainer.opt_g.step()
    set_requires_grad([model.d_a, model.d_b], True)
    trainer.opt_d.zero_grad(set_to_none=True)
    for images, losses in outcomes:  # no pools: the discriminators see this step's fakes
        losses.update(trainer.d_side(images["real_a"], images["real_b"], images["fake_a"], images["fake_b"]))
        ((losses["D_A"] + losses["D_B"]) / world).backward()
    trainer.opt_d.step()
    return [{name: float(losses[name].detach()) for name in LOSS_NAMES} for _, losses in outcomes]


def test_two_ranks_train_like_one_process_averaging_their_gradients(tiny_config, tmp_path):
    options = {"pool_size": 0, "ngf": 8, "ndf": 8}  # no pools: a rank's pool would hold only its own fakes
    config = tiny_config(**options)
    (tmp_path / "config.json").write_text(config.to_json())
    torchrun(str(Path(__file__).parent / "helpers" / "ddp_worker.py"), str(tmp_path / "config.json"), str(tmp_path), str(STEPS))
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # every rank holds the same weights
    rank_losses = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # The reference runs with the workers' thread count, so every kernel splits its sums as theirs do:
    # then the only arithmetic left to differ is the averaging, which is exact (halving a float is,
    # and a sum of two terms does not depend on their order). So nothing may differ, on any CPU; a
    # tolerance would not hold across CPUs, because Adam turns the rounding noise of the gradients
    # that instance norm cancels into full lr steps, and ReLU and L1 kinks then amplify it.
    with torch_threads(WORKER_THREADS):
        single = Trainer(tiny_config(**options), device="cpu")
        losses = [averaged_step(single, [rank_batch(0, step), rank_batch(1, step)]) for step in range(STEPS)]
    for step in range(STEPS):
        for r in (0, 1):
            assert losses[step][r] == rank_losses[r][step], (step, r)
    weights = single.model.state_dict()
    assert len(weights) == len(ranks[0]) > 20
    for key, value in weights.items():
        assert torch.equal(value, ranks[0][key]), key


def test_first_step_of_two_ranks_is_one_step_on_both_ranks_images(tiny_config, tmp_path):
    """The other way to see it: with batch means, two ranks of 1 image are one process with a batch of 2."""
    options = {"pool_size": 0, "ngf": 8, "ndf": 8}
    config = tiny_config(**options)
    (tmp_path / "config.json").write_text(config.to_json())
    torchrun(str(Path(__file__).parent / "helpers" / "ddp_worker.py"), str(tmp_path / "config.json"), str(tmp_path), "1")
    rank_losses = [json.loads((tmp_path / f"rank{r}.json").read_text())[0] for r in (0, 1)]
    single = Trainer(tiny_config(batch_size=2, **options), device="cpu")
    (a0, b0), (a1, b1) = rank_batch(0, 0), rank_batch(1, 0)
    losses = single.train_step(torch.cat([a0, a1]), torch.cat([b0, b1]))
    for name in LOSS_NAMES:
        assert losses[name] == pytest.approx((rank_losses[0][name] + rank_losses[1][name]) / 2, rel=1e-5), name
    # A batch of 2 rounds differently from two batches of 1. Adam's first step moves each weight by
    # lr * sign(gradient), so where a gradient is rounding noise (the conv biases that instance norm
    # cancels) the two may step apart: no weight can differ by more than 2 lr.
    ranks = load_file(str(tmp_path / "rank0.safetensors"))
    lr = single.config.train.lr
    for key, value in single.model.state_dict().items():
        assert (value - ranks[key]).abs().max() <= 2 * lr * 1.001, key


def cli_train(dataroot: Path, runs: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return torchrun("-m", "cyclegan", "train", "--dataroot", str(dataroot), "--checkpoints_dir", str(runs), "--name", name,
                    "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--load_size", "36", "--crop_size", "32",
                    "--num_threads", "0", "--pool_size", "2", "--n_epochs", "2", "--n_epochs_decay", "2",
                    "--print_freq", "1", "--device", "cpu", "--quiet", *extra)


def test_torchrun_trains_shards_the_data_writes_once_and_resumes_exactly(dataroot, tmp_path):
    runs = tmp_path / "runs"
    # with the colour-moment loss, which reads each rank's own pool
    colour = ("--global_residual", "--lambda_colour", "3")
    straight = cli_train(dataroot, runs, "straight", "--max_iters", "4", *colour)
    assert "effective batch 2" in straight.stderr and straight.stderr.count("effective batch") == 1
    cli_train(dataroot, runs, "halves", "--max_iters", "2", *colour)
    checkpoint = Checkpoint(runs / "halves")
    assert len(checkpoint.training_state()["ranks"]) == 2  # each rank's own pools and RNGs
    cli_train(dataroot, runs, "ignored", "--resume", str(runs / "halves"), "--max_iters", "4", *colour)

    a, b = Checkpoint(runs / "straight"), Checkpoint(runs / "halves")
    # 3 images of A over 2 ranks: 2 each (DistributedSampler pads), so iteration 4 ends epoch 2
    assert a.info["total_iters"] == b.info["total_iters"] == 4
    assert (a.info["epoch"], a.info["epoch_iter"]) == (2, 2)  # one process would be at (2, 1)
    for name in ("g_ab", "g_ba", "d_a", "d_b"):
        left, right = a.tensors(f"{name}."), b.tensors(f"{name}.")
        for key in left:
            assert torch.equal(left[key], right[key]), (name, key)
    records = [json.loads(line) for line in (runs / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records] == [1, 2, 3, 4]  # one writer: no line twice
    assert all(r["colour_A"] > 0 for r in records)


@pytest.mark.parametrize("options, words", [({"norm": "batch"}, "SyncBatchNorm, which runs on CUDA only"),
                                            ({"gan_mode": "wgangp"}, "not supported under torchrun")])
def test_what_ddp_cannot_do_on_this_machine_is_refused_at_start(tiny_config, options, words):
    from cyclegan.distributed import Distributed

    with pytest.raises(ValueError, match=words):
        Trainer(tiny_config(**options), device="cpu", distributed=Distributed(rank=0, world_size=2, backend="gloo"))


def averaged_pix2pix_step(trainer: Trainer, batches) -> list[dict[str, float]]:
    """One pix2pix iteration in one process as two DDP ranks do it: every rank's G(a), then D's gradient
    averaged over the ranks and one D update, then G's averaged and one G update."""
    model, world = trainer.model, len(batches)
    fakes = [model.g_ab(a) for a, _ in batches]
    trainer.opt_d.zero_grad(set_to_none=True)
    outcomes = []
    for (a, b), fake in zip(batches, fakes):
        losses = model.discriminator_losses(a, b, torch.cat([a, fake], 1))
        (model.discriminator_total(losses) / world).backward()
        outcomes.append(losses)
    trainer.opt_d.step()
    set_requires_grad([model.d_b], False)
    trainer.opt_g.zero_grad(set_to_none=True)
    for (a, b), fake, losses in zip(batches, fakes, outcomes):
        losses.update(model.generator_losses({"real_a": a, "fake_b": fake, "real_b": b}))
        (sum(losses[name] for name in ("G_GAN", "G_L1")) / world).backward()
    trainer.opt_g.step()
    set_requires_grad([model.d_b], True)
    return [{name: float(losses[name].detach()) for name in model.loss_names} for losses in outcomes]


def test_pix2pix_under_two_ranks_is_one_process_averaging_their_gradients(tmp_path):
    """Instance norm and no dropout, so that the ranks share nothing but the averaged gradients."""
    from cyclegan.config import build_experiment

    config = build_experiment({"model": "pix2pix", "netG": "unet_128", "ngf": 4, "ndf": 4, "norm": "instance",
                               "no_dropout": True, "crop_size": 128, "load_size": 128, "dataroot": str(tmp_path),
                               "checkpoints_dir": str(tmp_path / "runs")})
    (tmp_path / "config.json").write_text(config.to_json())
    torchrun(str(Path(__file__).parent / "helpers" / "ddp_worker.py"), str(tmp_path / "config.json"), str(tmp_path),
             str(STEPS), "128")
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])
    rank_losses = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    with torch_threads(WORKER_THREADS):
        single = Trainer(config, device="cpu")
        losses = [averaged_pix2pix_step(single, [rank_batch(0, step, 128), rank_batch(1, step, 128)])
                  for step in range(STEPS)]
    for step in range(STEPS):
        for r in (0, 1):
            assert losses[step][r] == rank_losses[r][step], (step, r)
    for key, value in single.model.state_dict().items():
        assert torch.equal(value, ranks[0][key]), key


def averaged_cut_step(trainer: Trainer, batches) -> list[dict[str, float]]:
    """One CUT iteration in one process as two DDP ranks do it. Every rank starts from the same seed, so each
    draws the same PatchNCE patches: each rank's forward here starts from the same RNG state."""
    model, world = trainer.model, len(batches)
    state = torch.get_rng_state()
    trainer.opt_g.zero_grad(set_to_none=True)
    sides = []
    for a, b in batches:
        torch.set_rng_state(state)
        sides.append(model.translate(a, b))
    trainer.opt_d.zero_grad(set_to_none=True)
    outcomes = []
    for (a, b), (images, early) in zip(batches, sides):
        losses = model.discriminator_losses(a, b, images["fake_b"])
        (model.discriminator_total(losses) / world).backward()
        outcomes.append({**early, **losses})
    trainer.opt_d.step()
    set_requires_grad([model.d_b], False)
    for (images, _), losses in zip(sides, outcomes):
        losses.update(model.generator_losses(images))
        (model.generator_total(losses) / world).backward()
    trainer.opt_g.step()
    set_requires_grad([model.d_b], True)
    return [{name: float(losses[name].detach()) for name in model.loss_names if name in losses} for losses in outcomes]


def test_cut_under_two_ranks_is_one_process_averaging_their_gradients(tmp_path):
    """G, its PatchNCE head and D stay in step over the ranks: PatchNCE runs inside G's one forward."""
    from cyclegan.config import build_experiment

    config = build_experiment({"model": "cut", "netG": "resnet_6blocks", "ngf": 4, "ndf": 4, "num_patches": 16,
                               "crop_size": 32, "load_size": 32, "dataroot": str(tmp_path),
                               "checkpoints_dir": str(tmp_path / "runs")})
    (tmp_path / "config.json").write_text(config.to_json())
    torchrun(str(Path(__file__).parent / "helpers" / "ddp_worker.py"), str(tmp_path / "config.json"), str(tmp_path),
             str(STEPS))
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert any(key.startswith("h_ab.") for key in ranks[0])
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])
    rank_losses = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    with torch_threads(WORKER_THREADS):
        single = Trainer(config, device="cpu")
        losses = [averaged_cut_step(single, [rank_batch(0, step), rank_batch(1, step)]) for step in range(STEPS)]
    for step in range(STEPS):
        for r in (0, 1):
            assert losses[step][r] == rank_losses[r][step], (step, r)
    for key, value in single.model.state_dict().items():
        assert torch.equal(value, ranks[0][key]), key
