"""Peak memory and time of full-resolution translation, variants side by side.

Each variant runs in its own process, so that its peak resident memory (ru_maxrss) is its own:

    python benchmarks/translate_memory.py            # ~10 min on 2 CPU cores
    python benchmarks/translate_memory.py --exact    # also 4000x3000 with exact statistics (an hour on a CPU)
    python benchmarks/translate_memory.py --ngf 16   # a smaller generator, for a quick look

1024x768 is translated whole, and in 512-px tiles with exact and with estimated statistics (the
price of exactness); 4000x3000 in the default 1024-px tiles (the memory bound).

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
    translator = Translator(build_generator(ModelConfig(netG="resnet_9blocks", ngf=ngf)), device="cpu",
                            tiles=TileOptions(tile=tile, stats=stats))
    model_mib = peak_rss_mib()
    image = torch.rand(3, height, width) * 2 - 1
    started = time.perf_counter()
    out = translator.translate_tensor(image)
    seconds = time.perf_counter() - started
    assert out.shape == image.shape
    return {"variant": name, "megapixels": width * height / 1e6, "seconds": seconds,
            "peak_rss_mib": peak_rss_mib(), "model_rss_mib": model_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--exact", action="store_true", help="also run 4000x3000 with exact statistics")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.ngf)))
        return
    print(describe_machine(), flush=True)
    names = ["whole_1024x768", "tiles512_1024x768_estimate", "tiles512_1024x768_exact", "tiled_4000x3000_estimate"]
    if args.exact:
        names.append("tiled_4000x3000_exact")
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
    whole = by_name["whole_1024x768"]
    for stats in ("estimate", "exact"):
        tiled = by_name[f"tiles512_1024x768_{stats}"]
        print(f"512-px tiles with {stats} statistics / whole image, 1024x768: time {tiled['seconds'] / whole['seconds']:.1f}x, "
              f"peak memory {tiled['peak_rss_mib'] / whole['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
