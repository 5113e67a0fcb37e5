"""Weights of the official code (junyanz/pytorch-CycleGAN-and-pix2pix) in and out.

Official checkpoints are plain state dicts, ``<epoch>_net_<G_A|G_B|D_A|D_B>.pth`` (pix2pix:
``<epoch>_net_<G|D>.pth``), read here with ``torch.load(weights_only=True)``: a file that would need
to unpickle code is refused.

Key layouts: the official ResNet generator is one ``nn.Sequential`` named ``model`` (index map in
``resnet_key_pairs``); the U-Net, PatchGAN and PixelGAN modules here keep the official layout, so
their keys are the same on both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import LATEST, CheckpointError, save_checkpoint, stored_network
from .config import ExperimentConfig, ModelConfig, build_experiment
from .models import build_discriminator, build_generator, generator_for
from .names import BASIC_D_LAYERS

# official file name part -> (our network name, role)
OFFICIAL_NETWORKS = {"G_A": "g_ab", "G_B": "g_ba", "D_A": "d_b", "D_B": "d_a"}
OFFICIAL_PIX2PIX_NETWORKS = {"G": "g_ab", "D": "d_b"}  # netG, and netD, which judges input and output stacked
# What the official options default to, for what neither the caller nor the weights say.
OFFICIAL_GENERATOR_DEFAULTS = {"netG": "resnet_9blocks", "ngf": 64, "norm": "instance", "no_dropout": True,
                               "input_nc": 3, "output_nc": 3}
STALE_INSTANCE_NORM_KEYS = ("running_mean", "running_var", "num_batches_tracked")
OFFICIAL_ARCHITECTURE = {"upsample": "transpose", "global_residual": False, "colour_path": 0,
                         "colour_transfer_start": "off", "norm_D": "same"}


def resnet_key_pairs(n_blocks: int) -> list[tuple[str, str]]:
    """(our prefix, official prefix) for the ResNet generator with ``n_blocks`` residual blocks."""
    b = n_blocks
    pairs = [("stem.1.", "model.1."), ("stem.2.", "model.2."), ("down.0.", "model.4."), ("down.1.", "model.5."),
             ("down.3.", "model.7."), ("down.4.", "model.8."), ("up.0.", f"model.{10 + b}."),
             ("up.1.", f"model.{11 + b}."), ("up.3.", f"model.{13 + b}."), ("up.4.", f"model.{14 + b}."),
             ("head.1.", f"model.{17 + b}.")]
    return pairs + [(f"blocks.{k}.", f"model.{10 + k}.") for k in range(b)]


def _key_pairs(model: ModelConfig, network: str) -> list[tuple[str, str]]:
    if network.startswith("g") and model.netG.startswith("resnet_"):
        return resnet_key_pairs(int(model.netG.split("_")[1].removesuffix("blocks")))
    return []  # same layout on both sides


def _rename(state: dict[str, torch.Tensor], pairs: list[tuple[str, str]], *, to_official: bool) -> dict[str, torch.Tensor]:
    if not pairs:
        return dict(state)
    out = {}
    for key, value in state.items():
        for ours, theirs in pairs:
            source, target = (ours, theirs) if to_official else (theirs, ours)
            if key.startswith(source):
                out[target + key[len(source):]] = value
                break
        else:
            out[key] = value  # left as is: reported as unexpected when loading
    return out


def check_official_architecture(model: ModelConfig) -> None:
    different = {k: getattr(model, k) for k, v in OFFICIAL_ARCHITECTURE.items() if getattr(model, k) != v}
    if different:
        options = ", ".join(f"{k}={v}" for k, v in different.items())
        raise ValueError(f"the official code has no network with {options}; only the official architectures "
                         f"convert ({', '.join(f'{k}={v}' for k, v in OFFICIAL_ARCHITECTURE.items())})")


# ---- reading official files -----------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a .pth file, loaded with ``weights_only=True`` (no code is run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"official weights {path} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; none may run code here
        raise CheckpointError(f"{path} is not a plain state dict that loads with weights_only=True "
                              f"(refused to unpickle anything else): {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of named tensors")
    if all(k.startswith("module.") for k in state):  # saved from inside DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_official_weights(net: nn.Module, state: dict[str, torch.Tensor], *, model: ModelConfig, network: str,
                          source: str | Path) -> nn.Module:
    """Load an official state dict into our ``network`` (g_ab, g_ba, d_a, d_b), with clear errors."""
    ours = _rename(state, _key_pairs(model, network), to_official=False)
    expected = net.state_dict()
    ours = {k: v for k, v in ours.items() if k in expected or not k.endswith(STALE_INSTANCE_NORM_KEYS)}
    architecture = _describe(model, network)
    for key, value in expected.items():
        if key not in ours:
            raise CheckpointError(f"{source} does not fit {architecture}: it has no weight for "
                                  f"{_official_name(key, model, network)}")
        if ours[key].shape != value.shape:
            raise CheckpointError(f"{source} does not fit {architecture}: {_official_name(key, model, network)} has "
                                  f"shape {tuple(ours[key].shape)}, expected {tuple(value.shape)}")
    unexpected = sorted(set(ours) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source} does not fit {architecture}: unexpected weight "
                              f"{_official_name(unexpected[0], model, network)}")
    net.load_state_dict(ours, strict=True)
    return net


def _official_name(key: str, model: ModelConfig, network: str) -> str:
    renamed = _rename({key: torch.empty(0)}, _key_pairs(model, network), to_official=True)
    return next(iter(renamed))


def _describe(model: ModelConfig, network: str) -> str:
    if network.startswith("g"):
        return (f"netG={model.netG} ngf={model.ngf} norm={model.norm} no_dropout={model.no_dropout} "
                f"input_nc={model.input_nc} output_nc={model.output_nc}")
    return f"netD={model.netD} n_layers_D={model.n_layers_D} ndf={model.ndf} norm={model.norm}"


def _generator_config(netG: str, ngf: int, norm: str, no_dropout: bool, input_nc: int, output_nc: int) -> ModelConfig:
    return ModelConfig(netG=netG, ngf=ngf, norm=norm, no_dropout=no_dropout, input_nc=input_nc, output_nc=output_nc)


def load_official_generator(path: str | Path, *, netG: str | None = None, ngf: int | None = None,
                            norm: str | None = None, no_dropout: bool | None = None, input_nc: int | None = None,
                            output_nc: int | None = None) -> nn.Module:
    """Our generator (eval mode) holding an official ``*_net_G*.pth`` (a CycleGAN G_A / G_B, or a pix2pix
    netG: U-Net, batch norm with its running statistics); same output as the official one. Options left
    None are read from the weights (``infer_generator_options``), else the official defaults; dropout
    cannot be read from weights (it has none), so pass ``no_dropout=False`` for a pix2pix generator that
    will run in train mode."""
    state = read_state_dict(path)
    given = {k: v for k, v in dict(netG=netG, ngf=ngf, norm=norm, no_dropout=no_dropout, input_nc=input_nc,
                                   output_nc=output_nc).items() if v is not None}
    model = _generator_config(**{**OFFICIAL_GENERATOR_DEFAULTS, **infer_generator_options(state), **given})
    net = build_generator(model)
    return load_official_weights(net, state, model=model, network="g_ab", source=path).eval()


def load_official_discriminator(path: str | Path, *, netD: str = "basic", n_layers_D: int = 3, ndf: int = 64,
                                norm: str = "instance", input_nc: int = 3) -> nn.Module:
    """Our discriminator holding an official ``*_net_D*.pth``."""
    model = ModelConfig(netD=netD, n_layers_D=n_layers_D, ndf=ndf, norm=norm, input_nc=input_nc)
    net = build_discriminator(model, in_channels=input_nc)
    return load_official_weights(net, read_state_dict(path), model=model, network="d_b", source=path).eval()


# ---- the architecture, read from the weights ------------------------------------------------------

def infer_generator_options(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """netG, ngf, norm, no_dropout, input_nc, output_nc of an official generator state dict."""
    if "model.1.weight" in state and any(".conv_block." in k for k in state):  # ResNet
        blocks = {int(k.split(".")[1]) for k in state if ".conv_block." in k}
        last = f"model.{17 + len(blocks)}.weight"
        return {"netG": f"resnet_{len(blocks)}blocks", "ngf": state["model.1.weight"].shape[0],
                "input_nc": state["model.1.weight"].shape[1], "output_nc": state[last].shape[0] if last in state else 3,
                "norm": "batch" if "model.2.weight" in state else "instance",
                "no_dropout": not any(".conv_block.6." in k for k in state)}
    if "model.model.0.weight" in state:  # U-Net: level L's keys hold L + 1 "model" parts
        depth = max(k.split(".").count("model") for k in state) - 1
        first = state["model.model.0.weight"]
        # Dropout has no weights: whether the official run used it cannot be read (eval mode ignores it).
        return {"netG": f"unet_{2 ** depth}", "ngf": first.shape[0], "input_nc": first.shape[1],
                "output_nc": state["model.model.3.weight"].shape[1],
                "norm": "batch" if "model.model.1.model.2.weight" in state else "instance"}
    return {}


def infer_discriminator_options(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """netD, n_layers_D, ndf of an official discriminator state dict."""
    if "net.0.weight" in state:
        return {"netD": "pixel", "ndf": state["net.0.weight"].shape[0]}
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("model.") and k.endswith(".weight")
                   and state[k].dim() == 4)
    if not convs:
        return {}
    n_layers = len(convs) - 2
    return {"netD": "basic" if n_layers == BASIC_D_LAYERS else "n_layers", "n_layers_D": n_layers, "ndf": state["model.0.weight"].shape[0]}


# ---- whole runs -----------------------------------------------------------------------------

def official_files(source: Path, epoch: str = "latest") -> dict[str, Path]:
    """{our network name: file} for an official run folder, or for one generator file (as g_ab). A folder
    with ``<epoch>_net_G.pth`` and ``<epoch>_net_D.pth`` is a pix2pix run (g_ab and d_b)."""
    if source.is_file():
        return {"g_ab": source}
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is neither an official run folder nor a .pth file")
    found = {ours: source / f"{epoch}_net_{theirs}.pth" for theirs, ours in OFFICIAL_NETWORKS.items()}
    found = {ours: path for ours, path in found.items() if path.is_file()}
    if not found:
        pix2pix = {ours: source / f"{epoch}_net_{theirs}.pth" for theirs, ours in OFFICIAL_PIX2PIX_NETWORKS.items()}
        pix2pix = {ours: path for ours, path in pix2pix.items() if path.is_file()}
        if "g_ab" in pix2pix:  # a pix2pix run, or a pretrained zoo model (G alone)
            return pix2pix
        names = sorted(p.name for p in source.glob("*.pth"))
        raise FileNotFoundError(f"{source} holds no {epoch}_net_G_A.pth (or G_B, D_A, D_B, G)"
                                + (f"; it holds {', '.join(names[:8])}" if names else "; pass --epoch to pick another"))
    return found


def import_official(source: str | Path, options: dict[str, Any], *, epoch: str = "latest", direction: str = "AtoB") -> Path:
    """Turn an official run folder or generator file into ``checkpoints_dir/name/latest.safetensors``.

    The architecture is read from the weights (netG, ngf, norm, dropout, channels, netD, ndf);
    ``options`` (official option names) override what was read. A single generator file is
    stored as g_ab (``direction`` AtoB) or g_ba (BtoA).
    """
    source = Path(source)
    files = official_files(source, epoch)
    if set(files) == {"g_ab", "d_b"} and files["d_b"].name.endswith("_net_D.pth"):
        options = {"model": "pix2pix", **options}  # a pix2pix run folder: netG and its conditional netD
    elif source.is_file() or set(files) == {"g_ab"}:
        files = {("g_ab" if direction == "AtoB" else "g_ba"): next(iter(files.values()))}
    states = {name: read_state_dict(path) for name, path in files.items()}
    inferred: dict[str, Any] = {}
    for name, state in states.items():
        inferred.update(infer_generator_options(state) if name.startswith("g") else infer_discriminator_options(state))
    if "g_ba" in states and "g_ab" not in states:  # G_B alone maps output_nc -> input_nc
        inferred["input_nc"], inferred["output_nc"] = inferred.get("output_nc", 3), inferred.get("input_nc", 3)
    config = build_experiment({**inferred, **options})  # flags given explicitly win
    check_official_architecture(config.model)
    networks = {name: load_official_weights(_network(config, name), state, model=config.model, network=name,
                                            source=files[name])
                for name, state in states.items()}
    target = config.run_dir / LATEST
    if target.exists():
        raise ValueError(f"{target} exists already; choose another --name")
    info = {"imported_from": str(source.resolve()), "official_epoch": epoch, "epoch": 1, "epoch_iter": 0,
            "total_iters": 0}
    return save_checkpoint(target, config=config, networks=networks, info=info)


def _network(config: ExperimentConfig, name: str) -> nn.Module:
    m = config.model
    if name in ("g_ab", "g_ba"):
        return generator_for(m, "AtoB" if name == "g_ab" else "BtoA")
    if m.model == "pix2pix":
        return build_discriminator(m, in_channels=m.input_nc + m.output_nc)
    return build_discriminator(m, in_channels=m.input_nc if name == "d_a" else m.output_nc)


def export_official(run: str | Path, destination: str | Path, *, epoch: str = "latest",
                    ema: bool = True) -> dict[Path, str]:
    """Write a checkpoint's networks as official ``<epoch>_net_<G_A|G_B|D_A|D_B>.pth`` state dicts (pix2pix:
    ``<epoch>_net_<G|D>.pth``).

    The generators are the moving averages when the run kept them (what ``translate`` and ``test``
    use), unless ``ema`` is False. Returns {file written: the checkpoint network it holds}.
    """
    from .checkpoint import Checkpoint

    checkpoint = Checkpoint(run)
    model = checkpoint.config.model
    if model.model == "cut":
        raise ValueError(f"{checkpoint.path} is a CUT model: the official CUT code's generator down- and upsamples "
                         f"with anti-aliasing filters that this one does not have, so its weights do not convert")
    check_official_architecture(model)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    written = {}
    names = OFFICIAL_PIX2PIX_NETWORKS if model.model == "pix2pix" else OFFICIAL_NETWORKS
    for theirs, ours in names.items():
        source = stored_network(checkpoint, ours, ema=ema)
        weights = checkpoint.tensors(f"{source}.")
        if not weights:
            continue
        state = _rename(weights, _key_pairs(model, ours), to_official=True)
        path = destination / f"{epoch}_net_{theirs}.pth"
        torch.save(state, path)
        written[path] = source
    return written
