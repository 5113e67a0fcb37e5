"""The number to watch when anything in training changes: held-out ground-truth PSNR and SSIM.

Trains the demo's fast recipe on the embedded demo task (photo -> "winter look", built from the
photos inside scikit-image) for a fixed number of iterations, then scores G_A's translations of the
held-out crops against their true winter look, next to doing nothing (the input itself):

    python benchmarks/learning.py                   # 600 iterations, about 2-3 minutes on 2 cores
    python benchmarks/learning.py --iters 1944      # the whole demo (8 epochs)
    python benchmarks/learning.py --option lr=0.0004
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from cyclegan.checkpoint import load_generator  # noqa: E402
from cyclegan.config import build_experiment  # noqa: E402
from cyclegan.demo import FAST_RECIPE, build_demo_dataset, translate_test_crops  # noqa: E402
from cyclegan.evaluate import psnr, ssim  # noqa: E402
from cyclegan.training import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a training option to change")
    parser.add_argument("--data", type=Path, default=None, help="where to build the demo data (default: a temporary folder)")
    args = parser.parse_args()
    changes = {}
    for item in args.option:
        key, _, value = item.partition("=")
        changes[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        dataroot = build_demo_dataset((args.data or Path(tmp)) / "data")
        config = build_experiment({**FAST_RECIPE, "dataroot": str(dataroot), "checkpoints_dir": tmp, "name": "learning",
                                   "max_iters": args.iters, **changes})
        started = time.time()
        Trainer(config).fit(show_progress=False)
        minutes = (time.time() - started) / 60
        held_out = translate_test_crops(load_generator(config.run_dir, "AtoB"), dataroot)
    trained_psnr = np.mean([psnr(t.fake, t.truth) for t in held_out])
    nothing_psnr = np.mean([psnr(t.real, t.truth) for t in held_out])
    trained_ssim = np.mean([ssim(t.fake, t.truth) for t in held_out])
    nothing_ssim = np.mean([ssim(t.real, t.truth) for t in held_out])
    print(f"{args.iters} iterations in {minutes:.1f} min ({', '.join(args.option) or 'the fast recipe'}), "
          f"{len(held_out)} held-out crops:")
    print(f"  trained:    PSNR {trained_psnr:6.2f} dB   SSIM {trained_ssim:.3f}")
    print(f"  do nothing: PSNR {nothing_psnr:6.2f} dB   SSIM {nothing_ssim:.3f}")


if __name__ == "__main__":
    main()
