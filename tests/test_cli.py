"""The command line as a user runs it: real subprocesses, exit codes, files on disk."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cyclegan.checkpoint import Checkpoint
from cyclegan.cli import main
from cyclegan.config import SECTIONS

from conftest import TINY_OPTIONS


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cyclegan", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def tiny_flags(dataroot, runs, name, **extra):
    options = {**TINY_OPTIONS, "dataroot": dataroot, "checkpoints_dir": runs, "name": name, **extra}
    return [part for key, value in options.items() for part in (f"--{key}", str(value))]


def test_train_help_lists_every_option_with_default_and_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for section in SECTIONS.values():
        for f in section.__dataclass_fields__.values():
            assert f"--{f.name}" in text
            assert f"(default: {f.default})" in text
    assert "{resnet_9blocks,resnet_6blocks,unet_256,unet_128}" in text and "{lsgan,vanilla,wgangp}" in text
    assert "--resume" in text and "--continue_train" in text and "--config" in text


def test_help_is_fast_because_torch_loads_lazily():
    started = time.perf_counter()
    result = run_cli("--help")
    assert result.returncode == 0 and "train" in result.stdout
    probe = subprocess.run([sys.executable, "-c", "import sys, cyclegan.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False"
    assert time.perf_counter() - started < 20  # generous: a loaded CI machine; the point is no torch import


@pytest.mark.parametrize("args, message", [
    (["train", "--netG", "unet_1"], "invalid choice"),
    (["train", "--ngf", "x"], "invalid int value"),
])
def test_bad_flags_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_dataroot_is_a_clear_error_before_any_work(tmp_path, capsys):
    code = main(["train", "--dataroot", str(tmp_path / "nope"), "--checkpoints_dir", str(tmp_path), "--name", "x"])
    assert code == 2
    assert "nope does not exist" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_config_file_then_flags_override_it(tmp_path, dataroot, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("ngf: 6\nndf: 6\nlambda_A: 3.0\n")
    flags = tiny_flags(dataroot, tmp_path / "runs", "cfg", max_iters=1)
    # TINY_OPTIONS passes --ngf 4 --ndf 4 as flags: they must win over the file
    assert main(["train", "--config", str(config), "--quiet", *flags]) == 0
    saved = json.loads((tmp_path / "runs" / "cfg" / "config.json").read_text())
    assert saved["model"]["ngf"] == 4 and saved["model"]["ndf"] == 4 and saved["train"]["lambda_A"] == 3.0


def test_existing_run_is_not_overwritten(tmp_path, dataroot, capsys):
    flags = tiny_flags(dataroot, tmp_path / "runs", "once", max_iters=1)
    assert main(["train", "--quiet", *flags]) == 0
    assert main(["train", "--quiet", *flags]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.numerics
def test_stop_and_resume_through_the_cli_matches_one_uninterrupted_run(tmp_path, dataroot):
    runs = tmp_path / "runs"
    straight = run_cli("train", "--quiet", *tiny_flags(dataroot, runs, "straight", max_iters=5))
    assert straight.returncode == 0, straight.stderr
    first = run_cli("train", "--quiet", *tiny_flags(dataroot, runs, "split", max_iters=2))
    assert first.returncode == 0, first.stderr
    assert "--resume" in first.stderr  # says how to continue
    resumed = run_cli("train", "--quiet", "--resume", runs / "split", "--max_iters", 4)
    assert resumed.returncode == 0, resumed.stderr
    # the official spelling works too
    again = run_cli("train", "--quiet", "--continue_train", "--name", "split", "--checkpoints_dir", runs, "--max_iters", 5)
    assert again.returncode == 0, again.stderr
    one, two = Checkpoint(runs / "straight"), Checkpoint(runs / "split")
    assert two.info["total_iters"] == 5
    w1, w2 = one.tensors(), two.tensors()
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_resume_refuses_an_architecture_change(tmp_path, dataroot, capsys):
    assert main(["train", "--quiet", *tiny_flags(dataroot, tmp_path / "runs", "r", max_iters=1)]) == 0
    assert main(["train", "--resume", str(tmp_path / "runs" / "r"), "--ngf", "16"]) == 2
    assert "cannot change ngf" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "cyclegan"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("cyclegan ")
