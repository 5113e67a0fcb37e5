"""cyclegan: unpaired image-to-image translation (Zhu, Park, Isola, Efros, ICCV 2017).

Heavy modules (torch) load on first use, so that ``import cyclegan`` and ``cyclegan --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig

__version__ = "0.1.0"

_LAZY = {
    "load_generator": "checkpoint",
    "Checkpoint": "checkpoint",
    "build_generator": "models",
    "build_discriminator": "models",
    "CycleGAN": "objective",
    "Pix2Pix": "objective",
    "CUT": "objective",
    "Trainer": "training",
    "fit": "run",
    "build_cyclegan": "objective",
    "build_pix2pix": "objective",
    "build_cut": "objective",
    "push_run": "sharing",
    "ImagePool": "image_pool",
    "GANLoss": "losses",
    "Translator": "translate",
    "load_official_generator": "official",
    "load_official_discriminator": "official",
}

__all__ = ["DataConfig", "ExperimentConfig", "ModelConfig", "TrainConfig", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'cyclegan' has no attribute {name!r}")
