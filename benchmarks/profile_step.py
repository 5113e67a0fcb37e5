"""Where a training step's time goes: convolutions against everything around them, per precision.

    python benchmarks/profile_step.py                       # 128 px resnet_6blocks, fp32 and bf16
    python benchmarks/profile_step.py --size 256 --netG resnet_9blocks
    python benchmarks/profile_step.py --precisions bf16 --top 25

For each precision, one warm-up step and ``--steps`` profiled steps of the trainer (torch.profiler,
CPU self time per operator). Operators are grouped: convolution (forward and backward), norm,
padding, casts and copies, element-wise, optimizer, other. A precision whose convolutions got
faster but whose step did not is paying for the work around them.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the cyclegan command does, before torch loads

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from cyclegan.config import build_experiment  # noqa: E402
from cyclegan.training import Trainer  # noqa: E402
from machine import describe_machine  # noqa: E402

GROUPS = [  # (group, substrings of operator names), first match wins
    ("convolution", ("convolution", "conv2d", "conv_transpose", "mkldnn_conv", "onednn_conv")),
    ("norm", ("instance_norm", "batch_norm", "native_batch_norm", "layer_norm", "var_mean", "norm_backward")),
    ("padding", ("reflection_pad", "pad")),
    ("casts and copies", ("copy_", "_to_copy", "to", "clone", "contiguous", "cat", "empty_strided")),
    ("optimizer", ("_fused_adam", "adam", "_foreach")),
    ("element-wise", ("add", "mul", "sub", "div", "relu", "threshold", "tanh", "leaky", "mse", "l1", "abs", "sign",
                      "sum", "mean", "pow", "sqrt", "where", "fill", "zero", "neg", "clamp", "lerp")),
]


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, keys in GROUPS:
        if any(key in lowered for key in keys):
            return group
    return "other"


def profile_precision(size: int, netG: str, precision: str, steps: int) -> tuple[float, dict, list]:
    config = build_experiment({"netG": netG, "crop_size": size, "load_size": size, "dataroot": "unused",
                               "precision": precision})
    trainer = Trainer(config, device="cpu")
    torch.manual_seed(0)
    a, b = torch.rand(1, 3, size, size) * 2 - 1, torch.rand(1, 3, size, size) * 2 - 1
    trainer.train_step(a, b)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.train_step(a, b)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / steps
    groups: dict[str, float] = defaultdict(float)
    for e in events:
        groups[group_of(e.key)] += e.self_cpu_time_total / 1e6 / steps
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)
    return total, dict(groups), [(e.key, e.self_cpu_time_total / 1e6 / steps, e.count // steps) for e in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--netG", default="resnet_6blocks")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=12, help="operators to list per precision")
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    results = {}
    for precision in args.precisions:
        total, groups, top = profile_precision(args.size, args.netG, precision, args.steps)
        results[precision] = (total, groups)
        print(f"\n{args.size} px {args.netG}, {precision}: {total:.2f} s of operator time per step")
        for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
            print(f"  {group:18s} {seconds:6.2f} s  {100 * seconds / total:5.1f}%")
        print("  top operators (self time per step, calls per step):")
        for name, seconds, calls in top[:args.top]:
            print(f"    {name:44s} {seconds:6.3f} s  x{calls}")
    if "fp32" in results and len(results) > 1:
        base_total, base_groups = results["fp32"]
        for precision, (total, groups) in results.items():
            if precision != "fp32":
                conv = base_groups.get("convolution", 0) / max(groups.get("convolution", 1e-9), 1e-9)
                print(f"\n{precision} against fp32: step {base_total / total:.2f}x, convolutions {conv:.2f}x, "
                      f"the rest {(base_total - base_groups.get('convolution', 0)) / max(total - groups.get('convolution', 0), 1e-9):.2f}x")


if __name__ == "__main__":
    main()
