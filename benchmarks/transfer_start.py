"""What --colour_transfer_start's generators score before their first step, on a learning-benchmark task.

    python benchmarks/transfer_start.py /tmp/l162/dusk/data_162_scenes /tmp/l162/split_tone/data_162_scenes

DATA is a learning-benchmark data folder (trainA/, trainB/, testA/, testA_truth/). For each start (channels,
joint) a Trainer of the fast recipe with that start fits its colour maps exactly as training does, and G_A,
which is its colour map alone until the first step (the residual starts at zero), is scored against the truth
on the held-out crops, beside doing nothing. Comparing it with where a run ends tells whether training took
the translation further from the start or away from it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cyclegan.config import build_experiment
from cyclegan.demo import score, translate_test_crops
from cyclegan.run import make_dataset
from cyclegan.training import Trainer

from learning import CURVE_RUNS
from machine import describe_machine


def start_psnr(data: Path, kind: str, workdir: Path) -> float:
    config = build_experiment({**CURVE_RUNS["fast"], "colour_transfer_start": kind, "dataroot": str(data),
                               "checkpoints_dir": str(workdir), "name": f"start_{kind}"})
    trainer = Trainer(config)
    trainer.start_from_colour_transfer(make_dataset(trainer))
    with torch.no_grad():
        return score(translate_test_crops(trainer.model.g_ab.eval(), data)).trained_psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="+")
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for data in args.data:
            nothing = score(translate_test_crops(lambda a: a, data)).trained_psnr
            starts = {kind: start_psnr(data, kind, Path(workdir)) for kind in ("channels", "joint")}
            print(f"{data}: doing nothing {nothing:.2f} dB; the start, channels {starts['channels']:.2f} dB, "
                  f"joint {starts['joint']:.2f} dB", flush=True)


if __name__ == "__main__":
    main()
