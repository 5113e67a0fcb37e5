"""Where a trained generator runs for inference: eager PyTorch, onnxruntime or OpenVINO, behind one call.

``engine_generator(checkpoint, direction, engine=...)`` gives an ``nn.Module`` that translates
(B, C, H, W) tensors in [-1, 1] like the PyTorch generator. The ONNX and OpenVINO forms are made
once per checkpoint and kept under ``RUN/engines/`` (or the user cache when the run folder is
read-only), named by the checkpoint's hash, so a changed checkpoint is converted again.

The exported graphs hold no instance-norm layers that ``tiling`` could give whole-image statistics,
so ``Translator`` sends images that need tiles with exact statistics to the PyTorch generator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .checkpoint import Checkpoint
from .export import METADATA_KEY, OnnxGenerator, export_generator
from .names import ENGINES
from .tracking import sha256_of, user_cache_dir

OPENVINO_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_engine(choice: str) -> tuple[str, str]:
    """(torch | onnxruntime | openvino, why): ``auto`` is OpenVINO when it is installed, else PyTorch."""
    if choice not in ENGINES:
        raise ValueError(f"unknown --engine {choice!r}; valid: {', '.join(ENGINES)}")
    if choice != "auto":
        return choice, f"--engine {choice}"
    if openvino_installed():
        return "openvino", "--engine auto: OpenVINO is installed"
    return "torch", "--engine auto: OpenVINO is not installed (pip install 'cyclegan[openvino]')"


def engine_generator(checkpoint: Checkpoint, direction: str, *, engine: str, precision: str = "fp32") -> nn.Module:
    """The generator of ``checkpoint`` for ``direction`` on ``engine`` (torch, onnxruntime or openvino)."""
    if engine == "torch":
        return checkpoint.generator(direction)
    onnx_file = _cached_onnx(checkpoint, direction)
    if engine == "onnxruntime":
        return OnnxGenerator(onnx_file)
    if engine == "openvino":
        return OpenVinoGenerator(onnx_file, precision=precision)
    raise ValueError(f"unknown engine {engine!r}; valid: torch, onnxruntime, openvino")


def _cached_onnx(checkpoint: Checkpoint, direction: str) -> Path:
    """The ONNX export of ``direction``'s generator, made on first use, named by the checkpoint's hash."""
    path = engine_folder(checkpoint) / f"{sha256_of(checkpoint.path)[:16]}-{direction}.onnx"
    if not path.is_file():
        partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        export_generator(checkpoint, partial, direction=direction, fmt="onnx")
        partial.replace(path)  # atomic: a reader never sees half a file
    return path


def engine_folder(checkpoint: Checkpoint) -> Path:
    """RUN/engines/, or the user cache when the run folder cannot be written."""
    beside = checkpoint.output_dir / "engines"
    try:
        beside.mkdir(parents=True, exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    cache = user_cache_dir("engines")
    cache.mkdir(parents=True, exist_ok=True)
    return cache


class OpenVinoGenerator(nn.Module):
    """An exported ONNX generator compiled by OpenVINO for the CPU, usable wherever a generator module is.

    ``precision`` fp32 keeps OpenVINO's arithmetic in fp32 (its default on a CPU with bf16 would be
    bf16); bf16 asks for it. The OpenVINO form (IR) is saved beside the ONNX file on first use.
    """

    def __init__(self, onnx_file: str | Path, *, precision: str = "fp32"):
        super().__init__()
        try:
            import openvino as ov
        except ImportError:
            raise ImportError("the OpenVINO engine needs openvino: pip install 'cyclegan[openvino]'") from None
        if precision not in OPENVINO_PRECISION_HINTS:
            raise ValueError(f"the OpenVINO engine runs fp32 or bf16, not {precision!r}")
        onnx_file = Path(onnx_file)
        core = ov.Core()
        model = core.read_model(str(self._converted(ov, core, onnx_file)))
        self.metadata = _onnx_metadata(onnx_file)
        self.size_multiple = int(self.metadata.get("size_multiple", 4))
        self.in_channels = int(self.metadata.get("in_channels", 3))
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINTS[precision]})

    @staticmethod
    def _converted(ov, core, onnx_file: Path) -> Path:
        ir = onnx_file.with_suffix(".xml")
        if not ir.is_file():
            partial = ir.with_name(f".{ir.stem}.tmp-{os.getpid()}.xml")
            ov.save_model(core.read_model(str(onnx_file)), str(partial), compress_to_fp16=False)
            partial.with_suffix(".bin").replace(ir.with_suffix(".bin"))
            partial.replace(ir)
        return ir

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compiled(x.detach().to("cpu", torch.float32).contiguous().numpy())[self.compiled.output(0)]
        return torch.from_numpy(out.copy()).to(x.device)


def _onnx_metadata(path: Path) -> dict:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}.get(METADATA_KEY, "{}"))
