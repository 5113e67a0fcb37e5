"""What OpenMP's wait policy costs when two torch processes share the CPU.

Runs a small training-like workload (generator forward + backward) alone, then two copies at
once, under OMP_WAIT_POLICY=ACTIVE (spin) and PASSIVE (sleep, what ``cyclegan`` sets):

    python benchmarks/thread_contention.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from machine import describe_machine

WORK = """
import time, torch
from cyclegan.config import ModelConfig
from cyclegan.models import build_generator
torch.manual_seed(0)
g = build_generator(ModelConfig(netG="resnet_6blocks", ngf=32))
x = torch.rand(1, 3, 64, 64)
g(x).sum().backward()
start = time.perf_counter()
for _ in range({iters}):
    g(x).sum().backward()
print((time.perf_counter() - start) / {iters})
"""


def run(policy: str, copies: int, iters: int) -> list[float]:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    procs = [subprocess.Popen([sys.executable, "-c", WORK.format(iters=iters)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(copies)]
    return [float(p.communicate()[0].strip()) for p in procs]


def main() -> None:
    print(describe_machine(), flush=True)
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    results = {}
    for policy in ("PASSIVE", "ACTIVE"):
        alone = run(policy, 1, iters)[0]
        shared = max(run(policy, 2, iters))
        results[policy] = {"alone_s": alone, "two_at_once_s": shared, "slowdown": shared / alone}
        print(f"{policy:8s} alone {alone:.3f} s/iter, two processes at once {shared:.3f} s/iter "
              f"({shared / alone:.1f}x slower)", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
