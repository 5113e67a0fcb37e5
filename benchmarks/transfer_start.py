"""What --colour_transfer_start's generators score before their first step, on a learning-benchmark task.

    python benchmarks/transfer_start.py /tmp/l162/dusk/data_162_scenes /tmp/l162/split_tone/data_162_scenes

DATA is a learning-benchmark data folder (trainA/, trainB/, testA/, testA_truth/). For each start (channels,
joint) a Trainer of the fast recipe with that start fits its colour maps exactly as training does, and G_A,
which is its colour map alone until the first step (the residual starts at zero), is scored against the truth
on the held-out crops, beside doing nothing. Comparing it with where a run ends tells whether training took
the translation further from the start or away from it. Beside it: the held-out cycle error |F(G(a)) - a| of
the start, and that of the truth's own mapping with its best cubic inverse (analysis.truth_round_trip).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from cyclegan.config import build_experiment
from cyclegan.demo import score, translate_test_crops
from cyclegan.run import make_dataset
from cyclegan.training import Trainer

from analysis import truth_round_trip
from learning import CURVE_RUNS
from machine import describe_machine


def start_scores(data: Path, kind: str, workdir: Path) -> tuple[float, float]:
    """G_A's PSNR against the truth and the held-out cycle L1 |F(G(a)) - a| (of 255), at the start."""
    config = build_experiment({**CURVE_RUNS["fast"], "colour_transfer_start": kind, "dataroot": str(data),
                               "checkpoints_dir": str(workdir), "name": f"start_{kind}"})
    trainer = Trainer(config)
    trainer.start_from_colour_transfer(make_dataset(trainer))
    g_ab, g_ba = trainer.model.g_ab.eval(), trainer.model.g_ba.eval()
    with torch.no_grad():
        crops = translate_test_crops(g_ab, data)
        cycle = [float((g_ba(crop.fake).clamp(-1, 1) - crop.real).abs().mean() * 127.5) for crop in crops]
    return score(crops).trained_psnr, float(np.mean(cycle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, nargs="+")
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for data in args.data:
            crops = translate_test_crops(lambda a: a, data)
            truth_cycle = truth_round_trip([c.real for c in crops], [c.truth for c in crops])
            starts = {kind: start_scores(data, kind, Path(workdir)) for kind in ("channels", "joint")}
            print(f"{data}: doing nothing {score(crops).trained_psnr:.2f} dB; the start, channels "
                  f"{starts['channels'][0]:.2f} dB, joint {starts['joint'][0]:.2f} dB; held-out cycle L1 of the start, "
                  f"channels {starts['channels'][1]:.2f}, joint {starts['joint'][1]:.2f}, of the truth with its best "
                  f"cubic inverse {truth_cycle:.2f} (of 255)", flush=True)


if __name__ == "__main__":
    main()
