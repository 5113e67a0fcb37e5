"""Export a trained generator for deployment: ONNX (for onnxruntime) or TorchScript.

Both files take any batch size, height and width (multiples of the generator's ``size_multiple``;
``translate --onnx`` pads to them as it does for PyTorch), carry the run's description in their
metadata, and hold the generator ``load_generator`` would use (the moving average when the run
kept one).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from .checkpoint import Checkpoint, generator_name
from .names import EXPORT_FORMATS

ONNX_OPSET = 17
METADATA_KEY = "cyclegan"


def export_metadata(checkpoint: Checkpoint, direction: str, generator: nn.Module) -> dict:
    """What a deployed file says about itself: the network, its training, and what it expects."""
    model = checkpoint.config.model
    return {
        "direction": direction,
        "network": generator_name(checkpoint, direction),
        "in_channels": model.generator_channels(direction)[0],
        "out_channels": model.generator_channels(direction)[1],
        "size_multiple": getattr(generator, "size_multiple", 4),
        "smallest_side": getattr(generator, "smallest_side", 2 * getattr(generator, "size_multiple", 4)),
        "input_range": [-1.0, 1.0],
        "layout": "NCHW",
        "config": checkpoint.config.to_dict(),
        "info": checkpoint.info,
    }


def _example_input(metadata: dict) -> torch.Tensor:
    size = max(64, 2 * metadata["size_multiple"])
    return torch.zeros(1, metadata["in_channels"], size, size)


def export_generator(checkpoint: str | Path | Checkpoint, output: str | Path, *, direction: str = "AtoB",
                     fmt: str = "onnx") -> Path:
    """Write the generator for ``direction`` of ``checkpoint`` (a run folder, file or opened one) to ``output``."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    opened = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint)
    generator = opened.generator(direction)
    metadata = export_metadata(opened, direction, generator)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the exporters' notes on constant folding and TorchScript's future
        warnings.simplefilter("ignore")
        (_export_onnx if fmt == "onnx" else _export_torchscript)(generator, metadata, output)
    return output


def _export_torchscript(generator: nn.Module, metadata: dict, output: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(generator, _example_input(metadata), check_trace=False)
    torch.jit.save(traced, str(output), _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})


def _export_onnx(generator: nn.Module, metadata: dict, output: Path) -> None:
    import onnx

    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(generator, (_example_input(metadata),), str(output), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": dynamic, "output": dynamic},
                          opset_version=ONNX_OPSET, dynamo=False)
    model = onnx.load(str(output))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(model, str(output))


def read_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """A TorchScript export and its metadata (TorchScript files hold code: load only files you trust)."""
    extra = {f"{METADATA_KEY}.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    return module, json.loads(extra[f"{METADATA_KEY}.json"] or "{}")


class OnnxGenerator(nn.Module):
    """An exported ONNX generator run by onnxruntime, usable wherever a generator module is.

    It has no parameters and no instance-norm layers that ``translate`` could see, so tiles of
    images larger than ``--tile`` get their own instance-norm statistics.
    """

    def __init__(self, path: str | Path, *, threads: int = 0):
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("running ONNX files needs onnxruntime: pip install 'cyclegan[export]'") from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own error types for a bad file
            raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = json.loads(props.get(METADATA_KEY, "{}"))
        self.size_multiple = int(self.metadata.get("size_multiple", 4))
        self.smallest_side = int(self.metadata.get("smallest_side", 2 * self.size_multiple))
        self.in_channels = int(self.metadata.get("in_channels", 3))
        self.out_channels = int(self.metadata.get("out_channels", 3))
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)
