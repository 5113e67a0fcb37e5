"""kill -9 at several points of a real training process; --resume then ends where an uninterrupted run ends.

Each child runs the real ``cyclegan train`` command, with a hook that writes a marker file and
sleeps at one chosen point (mid-iteration, or inside a checkpoint write), so the parent kills it
exactly there: no timing guesses. The children get the test process's thread count, so that their
weights can be compared bit for bit with the uninterrupted run's, computed in the test process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cyclegan.checkpoint import LATEST, Checkpoint

from conftest import TINY_OPTIONS, same_threads_env

pytestmark = pytest.mark.numerics

ITERS = 6

DRIVER = r"""
import sys, time
from pathlib import Path
marker, point, at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
import cyclegan.checkpoint as checkpoint
import cyclegan.training as training

def pause():
    marker.write_text("here")
    time.sleep(60)

if point == "sigterm":  # a scheduler's preemption, sent by the process to itself mid-run
    import os, signal
    step = training.Trainer.train_step_tensors
    def hooked(self, *batch):
        losses = step(self, *batch)
        if self.total_iters + 1 == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return losses
    training.Trainer.train_step_tensors = hooked
elif point == "iteration":
    step = training.Trainer.train_step_tensors
    def hooked(self, *batch):
        losses = step(self, *batch)
        if self.total_iters + 1 == at:
            pause()  # the update is applied in memory, the counters not yet advanced, nothing saved
        return losses
    training.Trainer.train_step_tensors = hooked
elif point in ("write", "rename"):
    save = checkpoint.save_file
    calls = []
    def hooked(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == at:
            if point == "write":  # half a file, then death
                Path(filename).write_bytes(b"\0" * 1000)
                pause()
            save(tensors, filename, metadata=metadata)
            pause()  # written in full, not yet renamed over latest
        return save(tensors, filename, metadata=metadata)
    checkpoint.save_file = hooked

from cyclegan.cli import main
sys.exit(main(sys.argv[4:]))
"""


def train_args(dataroot: Path, runs: Path, *extra: str) -> list[str]:
    options = {**TINY_OPTIONS, "save_latest_freq": 2, "max_iters": ITERS}
    flags = [f"--{k}={v}" for k, v in options.items()]
    return ["train", "--dataroot", str(dataroot), "--checkpoints_dir", str(runs), "--name", "run", "--quiet", *flags, *extra]


def run_until_killed(tmp_path: Path, args: list[str], point: str, at: int) -> None:
    marker = tmp_path / f"marker-{point}-{at}"
    child = subprocess.Popen([sys.executable, "-c", DRIVER, str(marker), point, str(at), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=same_threads_env())
    deadline = time.time() + 120
    while not marker.exists():
        if child.poll() is not None:
            raise AssertionError(f"the child ended before reaching {point} {at}: {child.stderr.read().decode()[-2000:]}")
        assert time.time() < deadline, "the child never reached its kill point"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL


def resume(runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cyclegan", "train", "--resume", str(runs / "run"), "--quiet"],
                          capture_output=True, text=True, env=same_threads_env())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The weights of a run that was never killed."""
    from conftest import write_images

    root = tmp_path_factory.mktemp("whole")
    write_images(root / "data" / "trainA", 3, seed=1)
    write_images(root / "data" / "trainB", 2, seed=2)
    from cyclegan.cli import main

    assert main(train_args(root / "data", root / "runs")) == 0
    return Checkpoint(root / "runs" / "run").tensors()


# (where, which occurrence). Checkpoint files are written at iteration 2 (latest), 3 (latest and
# epoch_0001 at the epoch's end), 4 (latest), 6 (...). Kill in iterations 3 and 5, and inside the
# 2nd, 3rd and 4th writes, with half a file written or a whole one not yet renamed into place.
KILL_POINTS = [("iteration", 3), ("iteration", 5), ("write", 2), ("rename", 3), ("write", 4)]


@pytest.mark.parametrize("point, at", KILL_POINTS, ids=[f"{p}-{a}" for p, a in KILL_POINTS])
def test_kill_9_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path, dataroot, uninterrupted, point, at):
    runs = tmp_path / "runs"
    run_until_killed(tmp_path, train_args(dataroot, runs), point, at)
    latest = runs / "run" / LATEST
    assert latest.exists()  # every kill point lies after the first complete checkpoint
    before = Checkpoint(latest).info["total_iters"]
    assert before < ITERS
    result = resume(runs)
    assert result.returncode == 0, result.stderr[-2000:]
    final = Checkpoint(latest)
    assert final.info["total_iters"] == ITERS
    weights = final.tensors()
    assert weights.keys() == uninterrupted.keys()
    for key in weights:
        assert torch.equal(weights[key], uninterrupted[key]), key
    assert not list((runs / "run").glob(".*.tmp-*")), "a stray temporary file was left"


def test_killed_before_any_checkpoint_resume_says_so(tmp_path, dataroot):
    runs = tmp_path / "runs"
    run_until_killed(tmp_path, train_args(dataroot, runs), "write", 1)
    result = resume(runs)
    assert result.returncode == 2
    assert "has no latest.safetensors" in result.stderr


def test_sigterm_saves_says_how_to_resume_and_resume_matches(tmp_path, dataroot, uninterrupted):
    runs = tmp_path / "runs"
    marker = tmp_path / "unused"
    child = subprocess.run([sys.executable, "-c", DRIVER, str(marker), "sigterm", "5", *train_args(dataroot, runs)],
                           capture_output=True, text=True, timeout=120, env=same_threads_env())
    assert child.returncode == 0, child.stderr[-2000:]
    assert f"Resume with: cyclegan train --resume {runs / 'run'}" in child.stderr
    assert Checkpoint(runs / "run").info["total_iters"] == 5  # saved on the way out, nothing lost
    assert resume(runs).returncode == 0
    weights = Checkpoint(runs / "run").tensors()
    assert all(torch.equal(weights[k], uninterrupted[k]) for k in weights)
