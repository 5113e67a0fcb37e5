"""Run by the distributed tests under torchrun: k training steps on rank-specific images.

usage: torchrun --nproc_per_node 2 tests/helpers/ddp_worker.py CONFIG_JSON OUT_DIR STEPS [SIZE]

Each rank trains on its own images (seeded by its rank), then saves its networks' weights
and its per-step losses to OUT_DIR/rank<R>.safetensors / .json.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from cyclegan.config import ExperimentConfig
from cyclegan.distributed import close_distributed, init_distributed
from cyclegan.training import Trainer


def rank_batch(rank: int, step: int, size: int = 32):
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1, torch.rand(1, 3, size, size, generator=g) * 2 - 1


def main() -> None:
    config = ExperimentConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    out, steps = Path(sys.argv[2]), int(sys.argv[3])
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    distributed = init_distributed("cpu")
    trainer = Trainer(config, distributed=distributed)
    losses = [trainer.train_step(*rank_batch(distributed.rank, step, size)) for step in range(steps)]
    weights = {f"{name}.{k}": v.contiguous() for name, net in trainer.model.networks().items() for k, v in net.state_dict().items()}
    save_file(weights, str(out / f"rank{distributed.rank}.safetensors"))
    (out / f"rank{distributed.rank}.json").write_text(json.dumps(losses))
    close_distributed(distributed)


if __name__ == "__main__":
    main()
