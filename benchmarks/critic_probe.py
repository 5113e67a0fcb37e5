"""What a trained run's critic of domain B says about real B, the true translation T(a), the run's own
translation G(a), and a itself: whether the GAN would reward the truth, and how far G stayed from it.

    python benchmarks/critic_probe.py /tmp/nt/dusk/dusk_fast /tmp/nt/dusk/data

RUN is a run folder (or checkpoint) holding d_b; DATA a learning-benchmark data folder with testA/,
testA_truth/ and trainB/. Each figure is D_B's mean output (lsgan: 1 = real, 0 = fake) over the held-out
crops (and as many trainB crops, cut to the held-out size).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cyclegan.checkpoint import Checkpoint
from cyclegan.images import find_images, load_image, to_tensor
from cyclegan.models import build_discriminator

from machine import describe_machine


def crops(folder: Path, count: int, size: int) -> torch.Tensor:
    """``count`` images spread over ``folder``, each cut to its top-left ``size`` square, as one batch."""
    paths = find_images(folder)
    paths = paths[::max(1, len(paths) // count)][:count]
    return torch.stack([to_tensor(load_image(p))[..., :size, :size] for p in paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    args = parser.parse_args()
    print(describe_machine(), flush=True)
    checkpoint = Checkpoint(args.run)
    critic = checkpoint.load_network("d_b", build_discriminator(checkpoint.config.model, in_channels=3)).eval()
    held_out = find_images(args.data / "testA")
    real_a = torch.stack([to_tensor(load_image(p)) for p in held_out])
    truth = torch.stack([to_tensor(load_image(args.data / "testA_truth" / p.name)) for p in held_out])
    with torch.inference_mode():
        translated = checkpoint.generator("AtoB")(real_a)
        shown = {"real B (trainB)": crops(args.data / "trainB", len(real_a), real_a.shape[-1]),
                 "the truth T(a)": truth, "the run's G(a)": translated, "a itself": real_a}
        for name, images in shown.items():
            print(f"  D_B on {name:18s} {critic(images).mean().item():.3f}")


if __name__ == "__main__":
    main()
