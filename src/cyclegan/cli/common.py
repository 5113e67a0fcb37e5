"""What every subcommand module shares: the errors it raises, flags generated from the config
dataclasses, and the device flag."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

from ..config import SECTIONS, ExperimentConfig
from ..hub import HubError, HubModel, is_hub_name
from ..names import ENGINES, TRANSLATE_PRECISIONS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("cyclegan")


class CommandError(Exception):
    """A problem the user can fix; printed without a traceback."""


CHECKPOINT_HELP = "a run folder (its latest.safetensors), a .safetensors checkpoint file, or a Hub model hf://owner/name[@revision]"


def checkpoint_argument(value: str) -> str | Path:
    """--checkpoint: a Hub name stays a string (a Path would fold hf:// into hf:/), anything else is a path."""
    if not is_hub_name(value):
        return Path(value)
    try:
        return str(HubModel.parse(value))
    except HubError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_config_flags(parser: argparse.ArgumentParser, sections: Sequence[str] = tuple(SECTIONS)) -> None:
    """One flag per config field; defaults are SUPPRESSed so that only given flags override."""
    defaults = ExperimentConfig()
    general = parser.add_argument_group("run")
    general.add_argument("--name", default=argparse.SUPPRESS,
                         help=f"name of the run; its folder is checkpoints_dir/name (default: {defaults.name})")
    general.add_argument("--checkpoints_dir", default=argparse.SUPPRESS,
                         help=f"where run folders live (default: {defaults.checkpoints_dir})")
    for section in sections:
        group = parser.add_argument_group(section)
        for f in dataclasses.fields(SECTIONS[section]):
            _add_field_flag(group, f)


def _add_field_flag(group, f: dataclasses.Field) -> None:
    choices = f.metadata.get("choices")
    help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
    if isinstance(f.default, bool):
        group.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        return
    group.add_argument(f"--{f.name}", type=type(f.default), choices=choices, default=argparse.SUPPRESS,
                       metavar=None if choices else type(f.default).__name__.upper(), help=help_text)


def given_options(args: argparse.Namespace, exclude: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in exclude}


def add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N; replaces the official --gpu_ids (default: auto)")


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINES, default="torch",
                   help="what runs the generator on images that fit in one tile: torch; openvino or onnxruntime (the "
                        "exported graph, converted once into RUN/engines/); auto = OpenVINO when installed (pip install "
                        "'cyclegan[openvino]'), else torch. Larger images always run on torch, whose instance-norm layers "
                        "take the whole image's statistics (default: torch; README: Performance says why not auto yet)")
    p.add_argument("--train_mode", action="store_true",
                   help="pix2pix: run the generator as the official pix2pix test does without --eval: batch norm on "
                        "each image's own statistics, dropout as noise (random), one image at a time, on torch, "
                        "untiled. Default: eval mode (running statistics, no dropout: deterministic, exact tiles, "
                        "the same as the exported engines)")
    p.add_argument("--precision", choices=TRANSLATE_PRECISIONS, default="fp32",
                   help="bf16 runs the OpenVINO engine in bf16: faster on a CPU with AMX (not with avx512_bf16 alone), at a small "
                        "difference from fp32 (README: Performance) (default: fp32)")
