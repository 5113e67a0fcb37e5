"""Self-describing checkpoints: one safetensors file holds weights, config and training state.

Nothing is unpickled. Tensors (weights, Adam moments, pooled images, RNG states) are safetensors
entries; everything else (the config, counters, the shape of the training state) is JSON in the
file's metadata. Writes go to a temporary file that is renamed over the target, so a crash during
a save never leaves a broken checkpoint behind.

Tensor keys: ``g_ab.*``, ``g_ba.*``, ``d_a.*``, ``d_b.*`` for the networks, ``state/...`` for the
training state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import ExperimentConfig, flatten_config_dict
from .devices import settle_cpu_maths
from .hub import HubModel, fetch_checkpoint, is_hub_name
from .models import generator_for
from .names import GENERATOR_FOR_DIRECTION, ONE_WAY_MODELS

FORMAT = "cyclegan"
CHECKPOINT_VERSION = 1
LATEST = "latest.safetensors"
EMA_SUFFIX = "_ema"  # g_ab_ema, g_ba_ema: the moving averages of the generators (--ema_decay)
HUB_RESULTS = Path("results")  # what is made from a Hub model (test pages, evaluations) goes in results/OWNER--NAME


class CheckpointError(ValueError):
    """A file that is not a readable cyclegan checkpoint; the message names it and says why."""


# ---- training state <-> (tensors, JSON skeleton) ----------------------------------------------

def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "state") -> Any:
    """Move every tensor of a nested structure into ``tensors``; return a JSON-able skeleton."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[key, flatten_state(value, tensors, f"{prefix}/{key}")] for key, value in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``flatten_state``."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        return {key: unflatten_state(value, tensors) for key, value in skeleton["__dict__"]}
    return skeleton


# ---- writing ------------------------------------------------------------------------------

def save_checkpoint(
    path: str | Path,
    *,
    config: ExperimentConfig,
    networks: dict[str, nn.Module],
    info: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Atomically write networks (+ training state when given) with the config and ``info``."""
    tensors: dict[str, torch.Tensor] = {}
    for name, net in networks.items():
        for key, value in net.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()
    metadata = checkpoint_metadata(config, info, sorted(networks))
    if training_state is not None:
        metadata["state"] = json.dumps(flatten_state(training_state, tensors))
    return write_checkpoint_file(Path(path), tensors, metadata)


def checkpoint_metadata(config: ExperimentConfig, info: dict[str, Any], networks: list[str]) -> dict[str, str]:
    return {"format": FORMAT, "version": str(CHECKPOINT_VERSION), "config": config.to_json(), "info": json.dumps(info),
            "networks": json.dumps(networks)}


def write_checkpoint_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write atomically: a temporary file renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, read-only folder, quota
        kept = f"{path} still holds the previous checkpoint" if path.exists() else f"nothing was written to {path}"
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}; {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---- reading ------------------------------------------------------------------------------

def resolve_checkpoint(path_or_run_dir: str | Path) -> Path:
    """A checkpoint file: the path itself, ``latest.safetensors`` inside a run folder, or the weights of a Hub
    model ``hf://owner/name[@revision]`` in the Hub's cache."""
    if is_hub_name(path_or_run_dir):
        return fetch_checkpoint(path_or_run_dir)
    path = Path(path_or_run_dir)
    if path.is_dir():
        latest = path / LATEST
        if latest.is_file():
            return latest
        found = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f"; it holds {', '.join(found)}" if found else ""
        raise CheckpointError(f"run folder {path} has no {LATEST}{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


class Checkpoint:
    """A checkpoint file opened for reading: its config, info and (lazily) its tensors."""

    def __init__(self, path_or_run_dir: str | Path):
        self.path = resolve_checkpoint(path_or_run_dir)
        self.hub = HubModel.parse(path_or_run_dir) if is_hub_name(path_or_run_dir) else None
        # Where what is made from it goes (test pages, evaluations, converted engines): beside it, or for a
        # Hub model (whose file lives in the Hub's cache) results/OWNER--NAME.
        self.output_dir = HUB_RESULTS / self.hub.folder_name if self.hub else self.path.parent
        try:
            with safe_open(str(self.path), framework="pt") as f:
                self.metadata = f.metadata() or {}
                self.keys = list(f.keys())
        except Exception as exc:  # safetensors raises several types for a bad header
            raise CheckpointError(f"{self.path} is not a readable safetensors checkpoint: {exc}") from None
        if self.metadata.get("format") != FORMAT:
            raise CheckpointError(f"{self.path} is not a cyclegan checkpoint (no format={FORMAT} in its metadata)")
        version = int(self.metadata.get("version", "0"))
        if version > CHECKPOINT_VERSION:
            raise CheckpointError(f"{self.path} has checkpoint version {version}; this cyclegan reads up to "
                                  f"{CHECKPOINT_VERSION}: upgrade cyclegan")
        self.config = ExperimentConfig.from_dict(flatten_config_dict(json.loads(self.metadata["config"])))
        self.info: dict[str, Any] = json.loads(self.metadata.get("info", "{}"))

    def has_network(self, name: str) -> bool:
        return any(key.startswith(f"{name}.") for key in self.keys)

    def has_generator(self, direction: str) -> bool:
        """Whether it can translate ``direction``: the generator's weights, or their moving average, are in it
        (an imported zoo model has one generator; a pushed Hub model may hold only the averages)."""
        name = GENERATOR_FOR_DIRECTION[direction]
        return self.has_network(name) or self.has_network(name + EMA_SUFFIX)

    @property
    def has_training_state(self) -> bool:
        return "state" in self.metadata

    def tensors(self, prefix: str = "", *, strip: bool = True) -> dict[str, torch.Tensor]:
        """The tensors whose key starts with ``prefix``, with the prefix removed when ``strip``."""
        out = {}
        with safe_open(str(self.path), framework="pt") as f:
            for key in self.keys:
                if key.startswith(prefix):
                    out[key[len(prefix):] if strip else key] = f.get_tensor(key)
        return out

    def load_network(self, name: str, net: nn.Module) -> nn.Module:
        weights = self.tensors(f"{name}.")
        if not weights:
            raise CheckpointError(f"{self.path} holds no weights for {name}")
        net.load_state_dict(weights, strict=True)
        return net

    def generator(self, direction: str = "AtoB", *, ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
        """The trained generator for ``direction`` (AtoB = G_A, BtoA = G_B) in eval mode: its moving
        average when the run kept one, unless ``ema`` is False. Its input channels are
        ``config.model.generator_channels(direction)[0]``."""
        settle_cpu_maths()  # so that the first image translated is as exact as the next
        net = generator_for(self.config.model, direction)
        self.load_network(generator_name(self, direction, ema=ema), net)
        return net.to(device).eval()

    def write_weights(self, path: Path, networks: list[str]) -> Path:
        """A checkpoint of ``networks`` alone (no training state), with this one's config and info."""
        missing = [name for name in networks if not self.has_network(name)]
        if missing:
            raise CheckpointError(f"{self.path} holds no weights for {', '.join(missing)}")
        tensors = {key: value for name in networks for key, value in self.tensors(f"{name}.", strip=False).items()}
        return write_checkpoint_file(Path(path), tensors, checkpoint_metadata(self.config, self.info, sorted(networks)))

    def training_state(self) -> dict[str, Any]:
        if not self.has_training_state:
            raise CheckpointError(f"{self.path} holds weights only, no training state to resume from; "
                                  f"resume from the run's {LATEST}")
        return unflatten_state(json.loads(self.metadata["state"]), self.tensors("state/", strip=False))


def generator_name(checkpoint: Checkpoint, direction: str, *, ema: bool = True) -> str:
    """The stored network that translates ``direction``: its moving average when the run kept one."""
    if direction not in GENERATOR_FOR_DIRECTION:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(GENERATOR_FOR_DIRECTION)}")
    model = checkpoint.config.model.model
    if direction == "BtoA" and model in ONE_WAY_MODELS:
        raise CheckpointError(f"{checkpoint.path} is a {model} model: its one generator translates AtoB (trained "
                              f"with --direction {checkpoint.config.data.direction}); there is no BtoA generator")
    return stored_network(checkpoint, GENERATOR_FOR_DIRECTION[direction], ema=ema)


def stored_network(checkpoint: Checkpoint, network: str, *, ema: bool = True) -> str:
    """The stored weights to use for ``network``: its moving average when the run kept one and ``ema``."""
    return network + EMA_SUFFIX if ema and checkpoint.has_network(network + EMA_SUFFIX) else network


def load_generator(path_or_run_dir: str | Path, direction: str = "AtoB", *, device: str | torch.device = "cpu",
                   ema: bool = True) -> nn.Module:
    """The trained generator for ``direction`` (AtoB = G_A, BtoA = G_B), in eval mode, no flags needed.

    A run trained with --ema_decay also holds the generators' moving averages; they are used unless
    ``ema`` is False.
    """
    return Checkpoint(path_or_run_dir).generator(direction, ema=ema, device=device)
