"""Peak memory and time of full-resolution translation, variants side by side.

Each variant runs in its own process, so that its peak resident memory (ru_maxrss) is its own:

    python benchmarks/translate_memory.py            # ~20 min on 2 CPU cores
    python benchmarks/translate_memory.py --ngf 16   # a smaller generator, for a quick look
    python benchmarks/translate_memory.py --only tiled_4000x3000_own tiled_4000x3000_exact

1024x768 is translated whole, and in 512-px tiles with exact and with estimated statistics (the
price of exactness); 4000x3000 in the default 1024-px tiles (the memory bound), with exact and
estimated statistics and with plain tiles ("own": each tile normalised by its own statistics, the
seams that whole-image statistics remove; the yardstick of the tiles' price).

The generator is resnet_9blocks (the paper's 256-px model) with random weights: memory and time
do not depend on the weights. "model" is the process after importing torch and building the net.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from machine import describe_machine

VARIANTS = {
    # name: (width, height, tile, statistics)
    "whole_1024x768": (1024, 768, 1024, "exact"),
    "tiles512_1024x768_estimate": (1024, 768, 512, "estimate"),
    "tiles512_1024x768_exact": (1024, 768, 512, "exact"),
    "tiled_4000x3000_estimate": (4000, 3000, 1024, "estimate"),
    "tiled_4000x3000_exact": (4000, 3000, 1024, "exact"),
    "tiled_4000x3000_own": (4000, 3000, 1024, "own"),
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(name: str, ngf: int) -> dict:
    import torch

    from cyclegan.config import ModelConfig
    from cyclegan.models import build_generator
    from cyclegan.tiling import TileOptions
    from cyclegan.translate import Translator

    width, height, tile, stats = VARIANTS[name]
    torch.manual_seed(0)
    net = build_generator(ModelConfig(netG="resnet_9blocks", ngf=ngf))
    translator = Translator(net, device="cpu", tiles=TileOptions(tile=tile, stats="exact" if stats == "own" else stats))
    model_mib = peak_rss_mib()
    image = torch.rand(3, height, width) * 2 - 1
    started = time.perf_counter()
    out = plain_tiles(net.eval(), image, tile) if stats == "own" else translator.translate_tensor(image)
    seconds = time.perf_counter() - started
    assert out.shape == image.shape
    return {"variant": name, "megapixels": width * height / 1e6, "seconds": seconds,
            "peak_rss_mib": peak_rss_mib(), "model_rss_mib": model_mib}


def plain_tiles(net, image, tile: int):
    """Tiles each normalised by its own statistics: the price of tiling without whole-image statistics."""
    import torch

    from cyclegan.tiling import TilePlan, blend, tile_outputs

    plan = TilePlan.make(image.shape[-2], image.shape[-1], tile=tile, overlap=64, multiple=4)
    with torch.inference_mode():
        return blend(plan, tile_outputs(net, image[None], plan, "cpu"), 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run only these variants")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.ngf)))
        return
    print(describe_machine(), flush=True)
    names = args.only or list(VARIANTS)
    results = []
    for name in names:
        run = subprocess.run([sys.executable, __file__, "--child", name, "--ngf", str(args.ngf)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{r['variant']:26s} {r['megapixels']:5.1f} MP  {r['seconds']:7.1f} s  "
              f"{r['megapixels'] / r['seconds']:6.3f} MP/s  peak RSS {r['peak_rss_mib'] / 1024:5.2f} GiB "
              f"(model alone {r['model_rss_mib'] / 1024:4.2f} GiB)", flush=True)
    by_name = {r["variant"]: r for r in results}
    pairs = [("tiles512_1024x768_estimate", "whole_1024x768"), ("tiles512_1024x768_exact", "whole_1024x768"),
             ("tiled_4000x3000_exact", "tiled_4000x3000_own"), ("tiled_4000x3000_estimate", "tiled_4000x3000_own")]
    for variant, yardstick in pairs:
        if variant in by_name and yardstick in by_name:
            a, b = by_name[variant], by_name[yardstick]
            print(f"{variant} / {yardstick}: time {a['seconds'] / b['seconds']:.2f}x, "
                  f"peak memory {a['peak_rss_mib'] / b['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
