"""Images per second of ``translate`` on each engine against a one-at-a-time eager loop, same files.

The loop is what people write around the official generator: open, convert, translate under
``no_grad``, save, one image after another. ``translate`` batches images of one size, decodes the
next batch and encodes outputs in threads, and runs under ``inference_mode``; with an engine
(``--engines torch openvino:bf16 ...``) the generator runs there. Everything writes PNGs: end to
end, decode to PNG. Variants are interleaved round by round; ratios are paired.

    python benchmarks/translate_speed.py               # 16 images of 256x256, 2 of 1024x768, torch only
    python benchmarks/translate_speed.py --engines torch onnxruntime openvino openvino:bf16
    python benchmarks/translate_speed.py --ngf 16      # a smaller generator, for a quick look

4000x3000 images (tiled, bounded memory) are measured by benchmarks/translate_memory.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cyclegan.checkpoint import save_checkpoint  # noqa: E402
from cyclegan.config import ExperimentConfig, ModelConfig  # noqa: E402
from cyclegan.images import to_image, to_tensor  # noqa: E402
from cyclegan.models import build_generator  # noqa: E402
from cyclegan.translate import Translator, plan_outputs  # noqa: E402

from machine import describe_machine  # noqa: E402


def make_images(folder: Path, count: int, size: tuple[int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def eager_loop(net, sources: list[Path], out: Path, device: torch.device) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for path in sources:
            x = to_tensor(Image.open(path).convert("RGB")).unsqueeze(0).to(device)
            to_image(net(x)[0]).save(out / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=None, help="default: the translator's (1 on a CPU)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--engines", nargs="+", default=["torch"], metavar="ENGINE[:PRECISION]",
                        help="torch, onnxruntime, openvino, openvino:bf16 (default: torch)")
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    torch.manual_seed(0)
    model = ModelConfig(netG="resnet_9blocks", ngf=args.ngf)
    net = build_generator(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / "run" / "latest.safetensors", config=ExperimentConfig(model=model),
                                     networks={"g_ab": net}, info={})
        translators = {}
        for spec in args.engines:
            engine, _, precision = spec.partition(":")
            translators[f"translate {spec}"] = Translator.on_engine(checkpoint, engine=engine, precision=precision or "fp32",
                                                                    device=args.device)
        device = next(iter(translators.values())).device
        net = net.to(device)
        for count, size in ((16, (256, 256)), (2, (1024, 768))):
            folder = make_images(Path(tmp) / f"in_{size[0]}x{size[1]}", count, size)
            sources = sorted(folder.glob("*.png"))
            jobs = plan_outputs([folder], Path(tmp) / "out_translate")
            eager_loop(net, sources[:1], Path(tmp) / "warm", device)  # warm-up
            for translator in translators.values():
                translator.translate_files(jobs[:1], batch_size=args.batch_size)
            names = ["eager loop", *translators]
            times = {name: [] for name in names}
            for r in range(args.rounds):
                for name in (names if r % 2 == 0 else names[::-1]):
                    started = time.perf_counter()
                    if name == "eager loop":
                        eager_loop(net, sources, Path(tmp) / "out_eager", device)
                    else:
                        translators[name].translate_files(jobs, batch_size=args.batch_size)
                    times[name].append(time.perf_counter() - started)
            print(f"{count} images of {size[0]}x{size[1]}, resnet_9blocks ngf {args.ngf}, on {device}:")
            for name, t in times.items():
                ratios = [e / v for e, v in zip(times["eager loop"], t)]
                shown = "" if name == "eager loop" else (f"  {statistics.median(ratios):.2f}x the eager loop "
                                                         f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
                print(f"  {name:26s} {count / statistics.median(t):6.2f} images/s{shown}", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
