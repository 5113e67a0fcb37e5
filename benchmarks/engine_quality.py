"""What an engine and precision do to a trained generator's translations: PSNR against the ground truth
and against PyTorch's fp32 output, on the held-out crops of a demo-style data folder.

    python benchmarks/engine_quality.py demo/runs/winter demo/data      # after make demo

DATA holds testA/ and testA_truth/ (files named alike), as the demo's data and the learning
benchmark's --data folders do. The speed of the same engines is benchmarks/translate_speed.py's.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from cyclegan.images import find_images, load_image, to_tensor
from cyclegan.metrics import psnr
from cyclegan.translate import Translator

from machine import describe_machine

VARIANTS = ("torch", "onnxruntime", "openvino", "openvino:bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="ENGINE[:PRECISION]")
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    paths = find_images(args.data / "testA")
    crops = [(to_tensor(load_image(p)), to_tensor(load_image(args.data / "testA_truth" / p.name))) for p in paths]
    reference = Translator.from_checkpoint(args.run, device="cpu")
    with torch.inference_mode():
        fp32 = [reference.translate_tensor(a) for a, _ in crops]
    print(f"{len(crops)} held-out crops of {args.data}; generator of {args.run}")
    for spec in args.variants:
        engine, _, precision = spec.partition(":")
        translator = Translator.on_engine(args.run, engine=engine, precision=precision or "fp32", device="cpu")
        with torch.inference_mode():
            outputs = [translator.translate_tensor(a) for a, _ in crops]
        truth = statistics.mean(psnr(out, t) for out, (_, t) in zip(outputs, crops))
        against_fp32 = statistics.mean(min(psnr(out, ref), 99.0) for out, ref in zip(outputs, fp32))
        largest = max(float((out - ref).abs().max()) for out, ref in zip(outputs, fp32))
        print(f"  {spec:16s} PSNR against the truth {truth:7.3f} dB; against torch fp32 {against_fp32:6.2f} dB "
              f"(capped at 99), largest difference {largest:.2e} on [-1, 1]", flush=True)


if __name__ == "__main__":
    main()
