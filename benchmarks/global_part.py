"""How much of a run's translation is one global colour mapping, and whether that mapping is the true one.

    python benchmarks/global_part.py /tmp/l162/dusk/dusk_fast_colour1 /tmp/l162/dusk/data_162_scenes

RUN is a run folder (or checkpoint); DATA a learning-benchmark data folder with testA/ and testA_truth/.
A global colour mapping g (a cubic polynomial of the channels) is fitted to the run's own translations
G(a) of the held-out crops (all of them together). Printed: G(a) against the truth T(a); g(a) against T(a),
what G's average colour mapping would score alone; g(a) against G(a), how far G is such a mapping at all
(all mean PSNRs); and the reach, the least-squares k of G(a) - a = k (T(a) - a): 1 all the way to the
truth, below 1 short of it. For a run with --colour_transfer_start it also prints what the generator's
colour map m scores alone, without the residual the trunk adds. On a per-pixel task (dusk, split_tone) a
g(a) far above G(a) means that the mapping G learnt on average is right and its error varies from image to
image; a g(a) near G(a) with a reach below 1 means the mapping is right in kind and stops short.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cyclegan.checkpoint import Checkpoint
from cyclegan.demo import score, translate_test_crops

from analysis import global_part
from machine import describe_machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    generator = Checkpoint(args.run).generator("AtoB")
    held_out = translate_test_crops(generator, args.data)
    split = global_part([t.real for t in held_out], [t.fake for t in held_out], [t.truth for t in held_out])
    print(f"{args.run}: G(a) {split['translation_psnr_db']:.2f} dB against the truth; its global part g(a) "
          f"{split['global_part_psnr_db']:.2f} dB; g(a) against G(a) {split['global_share_psnr_db']:.2f} dB; "
          f"reach {split['reach']:.2f} of the way from a to T(a)")
    if getattr(generator, "colour_map", None) is not None:  # --colour_transfer_start: the learnt map, without the residual
        alone = translate_test_crops(lambda a: generator.colour_map(a).clamp(-1.0, 1.0), args.data)
        print(f"  its colour map m(a) alone: {score(alone).trained_psnr:.2f} dB against the truth")


if __name__ == "__main__":
    main()
