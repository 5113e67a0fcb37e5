"""What the first training steps do to a generator that starts near the truth: G_A scored iteration by iteration.

    python benchmarks/early_steps.py /tmp/l162/dusk/data_162_scenes fast_transfer_fixed
    python benchmarks/early_steps.py DATA fast_transfer_fixed --option lambda_A=0 --option lambda_B=0
    python benchmarks/early_steps.py DATA fast_transfer_fixed --hold_generators 100

DATA is a learning-benchmark data folder (trainA/, trainB/, testA/, testA_truth/); RECIPE one of the learning
benchmark's curve recipes, with --option changes on top. The run trains ITERS iterations and scores the live
generator and its moving average against the truth on the held-out crops after the iterations listed, so a
fall from a good start (a --colour_transfer_start recipe) is seen where it happens, not at the curves' first
half minute. --hold_generators N keeps the generators' learning rate at zero for the first N iterations, while
the discriminators learn: whether a trained critic spares the start.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cyclegan.config import build_experiment
from cyclegan.demo import score, translate_test_crops
from cyclegan.run import fit
from cyclegan.training import Trainer

from learning import CURVE_RUNS
from machine import describe_machine

SCORED_AT = (1, 10, 50, 100, 110, 150, 200, 300, 400)


def hold_generators(trainer: Trainer, iterations: int) -> None:
    """Zero the generators' lr for the first ``iterations`` (the schedule still runs, so warm-up ends as usual)."""
    schedule = trainer.set_learning_rate

    def held() -> None:
        schedule()
        if trainer.total_iters < iterations:
            for group in trainer.opt_g.param_groups:
                group["lr"] = 0.0

    trainer.set_learning_rate = held
    held()


def scores(trainer: Trainer, data: Path) -> str:
    live = trainer.model.g_ab
    live.eval()
    with torch.no_grad():
        figures = {"live": score(translate_test_crops(live, data)).trained_psnr}
        if trainer.ema:
            figures["ema"] = score(translate_test_crops(trainer.ema["g_ab_ema"], data)).trained_psnr
    live.train()
    return ", ".join(f"{kind} {value:.2f} dB" for kind, value in figures.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("recipe", choices=list(CURVE_RUNS))
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a training option to change")
    parser.add_argument("--hold_generators", type=int, default=0, metavar="N")
    parser.add_argument("--iters", type=int, default=SCORED_AT[-1])
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        options = {**CURVE_RUNS[args.recipe], "dataroot": str(args.data), "checkpoints_dir": workdir,
                   "name": "early", "max_iters": args.iters, **dict(o.partition("=")[::2] for o in args.option)}
        trainer = Trainer(build_experiment(options))
        hold_generators(trainer, args.hold_generators)

        def report(trainer: Trainer) -> bool:
            if trainer.total_iters in SCORED_AT:
                print(f"iteration {trainer.total_iters} (lr of G {trainer.opt_g.param_groups[0]['lr']:.1e}): "
                      f"{scores(trainer, args.data)}", flush=True)
            return False

        print(f"{args.data} {args.recipe} {' '.join(args.option)} held for {args.hold_generators}", flush=True)
        fit(trainer, show_progress=False, callback=report)


if __name__ == "__main__":
    main()
