"""Seconds per training iteration: the trainer as configured against the official step, side by side.

In one process, for each size, the reference step (eager, NCHW, fp32, the official order of
operations, the official for-loop Adam: ``official_step.py`` beside it) and the trainer's step run on
identical copies of the same networks, interleaved A B A B; each round gives a paired ratio.

    python benchmarks/train_speed.py                  # 128 px resnet_6blocks and 256 px resnet_9blocks
    python benchmarks/train_speed.py --quick          # 64 px resnet_6blocks
    python benchmarks/train_speed.py --option memory_format=channels_last --option compile=true
    python benchmarks/train_speed.py --json

A timed call during which other processes used more than a fifth of a core is flagged: its time
does not count for much.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the cyclegan command does, before torch loads

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cyclegan.config import build_experiment  # noqa: E402
from cyclegan.image_pool import ImagePool  # noqa: E402
from cyclegan.training import Trainer  # noqa: E402
from machine import describe_machine  # noqa: E402
from official_step import reference_optimizers, reference_step  # noqa: E402

SIZES = {"full": [(128, "resnet_6blocks"), (256, "resnet_9blocks")], "quick": [(64, "resnet_6blocks")]}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used (Linux /proc/stat; 0 where it is missing)."""
    try:
        with open("/proc/stat") as f:
            user, nice, system = (int(v) for v in f.readline().split()[1:4])
        return (user + nice + system) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA runs asynchronously: time the work, not its launch


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds other processes used meanwhile, as a share of the wall time)."""
    synchronize(device)
    wall, own, busy = time.perf_counter(), cpu_seconds(), machine_busy_seconds()
    fn()
    synchronize(device)
    wall, own, busy = time.perf_counter() - wall, cpu_seconds() - own, machine_busy_seconds() - busy
    return wall, max(0.0, busy - own) / wall


def parse_options(items: list[str]) -> dict:
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return options


def bench_size(size: int, netG: str, rounds: int, options: dict, device: str = "cpu") -> dict:
    config = build_experiment({"netG": netG, "crop_size": size, "load_size": size, "dataroot": "unused", **options})
    trainer = Trainer(config, device=device)
    reference = copy.deepcopy(trainer.model).to(memory_format=torch.contiguous_format)
    opt_g, opt_d = reference_optimizers(reference)
    pools = ImagePool(50, torch.Generator().manual_seed(1)), ImagePool(50, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    batches = [(torch.rand(1, 3, size, size) * 2 - 1, torch.rand(1, 3, size, size) * 2 - 1) for _ in range(rounds + 1)]
    batches = [(a.to(trainer.device), b.to(trainer.device)) for a, b in batches]
    steps = {"reference": lambda a, b: reference_step(reference, opt_g, opt_d, *pools, a, b),
             "trainer": lambda a, b: trainer.train_step(a, b)}
    with FlopCounterMode(display=False) as counter:
        steps["reference"](*batches[0])  # also the reference's warm-up
    flops = counter.get_total_flops()
    started = time.perf_counter()
    steps["trainer"](*batches[0])  # warm-up (and, with compile=true, the compilation)
    synchronize(trainer.device)
    first_trainer_step = time.perf_counter() - started
    times: dict[str, list[float]] = {"reference": [], "trainer": []}
    busy_rounds = 0
    for r, (a, b) in enumerate(batches[1:]):
        order = ("reference", "trainer") if r % 2 == 0 else ("trainer", "reference")
        for name in order:
            wall, others = timed(lambda: steps[name](a, b), trainer.device)
            times[name].append(wall)
            busy_rounds += others > 0.2  # other processes used over a fifth of a core meanwhile
    ratios = [ref / fast for ref, fast in zip(times["reference"], times["trainer"])]
    return {
        "size": size, "netG": netG, "options": options, "threads": torch.get_num_threads(), "device": str(trainer.device),
        "gflop_per_iter": flops / 1e9, "first_trainer_step_s": first_trainer_step,
        **{f"{name}_s": {"median": statistics.median(t), "min": min(t), "max": max(t)} for name, t in times.items()},
        "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "gflops": {name: flops / 1e9 / statistics.median(t) for name, t in times.items()},
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "timed_calls_with_cpu_contention": busy_rounds,
    }


def report(r: dict) -> str:
    ref, fast = r["reference_s"], r["trainer_s"]
    lines = [f"{r['size']} px {r['netG']} on {r['device']} ({r['gflop_per_iter']:.0f} GFLOP/iter, {r['threads']} threads, "
             f"options {r['options'] or 'defaults'})",
             f"  reference {ref['median']:.2f} s/iter (min {ref['min']:.2f}, max {ref['max']:.2f}), "
             f"{r['gflops']['reference']:.0f} GFLOP/s",
             f"  trainer   {fast['median']:.2f} s/iter (min {fast['min']:.2f}, max {fast['max']:.2f}), "
             f"{r['gflops']['trainer']:.0f} GFLOP/s; first step {r['first_trainer_step_s']:.1f} s",
             f"  speed-up  {r['ratio']['median']:.2f}x (paired rounds: min {r['ratio']['min']:.2f}, max {r['ratio']['max']:.2f}); "
             f"peak RSS {r['peak_rss_gib']:.2f} GiB"]
    if r["timed_calls_with_cpu_contention"]:
        lines.append(f"  WARNING: during {r['timed_calls_with_cpu_contention']} timed calls another process used the "
                     f"CPU; rerun on a quiet machine")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 px only")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per size (default 4)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a trainer option, e.g. memory_format=channels_last, compile=true, fused_adam=false")
    parser.add_argument("--json", action="store_true", help="one JSON object per size instead of the table")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N; the reference runs there too")
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    for size, netG in SIZES["quick" if args.quick else "full"]:
        result = bench_size(size, netG, args.rounds, parse_options(args.option), args.device)
        print(json.dumps(result) if args.json else report(result), flush=True)


if __name__ == "__main__":
    main()
