"""The ``cyclegan`` command: each subcommand turns flags into configs and calls one function.

Flags come from the config dataclasses, so ``--help`` always lists every option with its default.
Torch is imported only inside the commands that need it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..config import build_experiment, load_config_file
from ..names import DEFAULT_OVERLAP, DEFAULT_TILE, DIRECTIONS, OUTPUT_FORMATS, TEMPORAL_STATS, TILE_STATS, VIDEO_EXTENSIONS
from .common import (
    CHECKPOINT_HELP, EXIT_INTERRUPTED, EXIT_USAGE, CommandError, add_config_flags, add_device_flag, add_engine_flags,
    checkpoint_argument, given_options, log,
)
from .models import add_deploy_parsers, add_official_parsers, add_push_parser


# ---- train --------------------------------------------------------------------------------

TRAIN_ONLY_FLAGS = ("command", "config", "resume", "continue_train", "quiet", "handler", "verbose")


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a CycleGAN on DATAROOT/trainA and DATAROOT/trainB",
        description="Train a CycleGAN. Options keep the official code's names and defaults; "
                    "precedence: defaults < --config file < flags.",
    )
    p.add_argument("--config", type=Path, help="TOML or YAML file of options (flat official names, or [model]/[data]/[train] tables)")
    p.add_argument("--resume", type=checkpoint_argument, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly where it stopped (optimizers, pools, RNGs, counters); "
                        "replaces the official --continue_train --epoch_count")
    p.add_argument("--continue_train", action="store_true",
                   help="the official spelling of --resume: continue checkpoints_dir/name")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p)
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    options = load_config_file(args.config) if args.config else {}
    options.update(given_options(args, TRAIN_ONLY_FLAGS))
    from ..distributed import close_distributed, init_distributed
    from ..evaluate import evaluate_latest
    from ..run import fit
    from ..training import Trainer

    run_dir = _resume_dir(args, options)
    distributed = init_distributed(options.get("device", "auto"))
    if not distributed.is_main:  # one voice: the other ranks report only problems
        logging.getLogger().setLevel(logging.WARNING)
    if run_dir is not None:
        trainer = Trainer.resume(run_dir, overrides=options, distributed=distributed)
        log.info("resuming %s at epoch %d, iteration %d", run_dir, trainer.epoch, trainer.total_iters)
    else:
        config = build_experiment(options)
        if (config.run_dir / "latest.safetensors").exists():
            raise CommandError(f"run folder {config.run_dir} already holds a checkpoint; continue it with "
                               f"--resume {config.run_dir}, or choose another --name")
        trainer = Trainer(config, distributed=distributed)
    log.info("training on %s; run folder %s", trainer.device, trainer.run_dir)
    fit(trainer, show_progress=not args.quiet and distributed.is_main,
        evaluate=evaluate_latest if trainer.config.train.eval_freq else None)
    close_distributed(distributed)
    log.info("done: checkpoints, metrics.jsonl and samples/ are in %s", trainer.run_dir)
    return 0


def _resume_dir(args: argparse.Namespace, options: dict[str, Any]) -> Path | str | None:
    if args.resume is not None:  # a run folder, or a Hub name, which Trainer.resume refuses saying why
        return args.resume
    if args.continue_train:
        config = build_experiment({k: options[k] for k in ("name", "checkpoints_dir") if k in options})
        return config.run_dir
    return None


# ---- demo ---------------------------------------------------------------------------------

def add_demo_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="build the embedded demo dataset, train on it, report PSNR",
                              description="Train --recipe fast on the embedded demo data (made from photos that "
                                          "ship inside scikit-image) and compare it with doing nothing.")
    p.add_argument("--output", type=Path, default=Path("demo"), help="folder for the dataset and the run (default: demo)")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: the demo's own)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo as demo

    demo(args.output, iters=args.iters, show_progress=not args.quiet)
    return 0


# ---- translate and test -------------------------------------------------------------------

def add_inference_flags(p: argparse.ArgumentParser, *, checkpoint_required: bool = True) -> None:
    p.add_argument("--checkpoint", type=checkpoint_argument, required=checkpoint_required, metavar="RUN_OR_FILE",
                   help=CHECKPOINT_HELP)
    p.add_argument("--batch_size", type=int, default=None,
                   help="images of one size translated together (default: 4 on CUDA; 1 on a CPU, where batches of 4 "
                        "measured 0.88x the images/s)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help=f"images with more pixels than TILE x TILE are translated in overlapping tiles of that size, "
                        f"which bounds memory (default: {DEFAULT_TILE})")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help=f"pixels shared by neighbouring tiles (default: {DEFAULT_OVERLAP})")
    p.add_argument("--tile_stats", choices=TILE_STATS, default="exact",
                   help="instance-norm statistics for tiled images: exact = measured over the whole image, layer by "
                        "layer (as if untiled; about 10 passes of work), estimate = from one downscaled pass "
                        "(fast, approximate) (default: exact)")
    add_engine_flags(p)
    add_device_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def tile_options(args: argparse.Namespace):
    from ..tiling import TileOptions

    return TileOptions(tile=args.tile, overlap=args.overlap, stats=args.tile_stats)


def add_translate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "translate", help="translate images of any size with a trained generator",
        description="Translate image files, folders (recursively) or globs. Every output keeps its input's width "
                    "and height (no resizing unless --resize or --load_size); large images are tiled with blended "
                    "overlaps. Outputs keep their relative paths under --output and never overwrite an input. "
                    "Replaces the official test.py --model test --no_dropout.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"image files, folders or glob patterns; video clips ({', '.join(VIDEO_EXTENSIONS)}); with "
                        "--sequence, folders of numbered frames")
    p.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder for the translated images")
    p.add_argument("--direction", choices=DIRECTIONS, default="AtoB",
                   help="AtoB uses G_A (g_ab), BtoA uses G_B (g_ba) (default: AtoB)")
    p.add_argument("--format", choices=tuple(OUTPUT_FORMATS), default=None,
                   help="output image format (default: png; tif for models of other than 1 or 3 channels)")
    p.add_argument("--resize", metavar="N|WxH", default=None,
                   help="resize before translating: N = shorter side N, aspect kept; WxH = exactly that size")
    p.add_argument("--load_size", type=int, default=None, metavar="N",
                   help="the official test behaviour: squash every image to N x N before translating")
    p.add_argument("--skip_existing", action="store_true", help="leave outputs that already exist (to finish an interrupted run)")
    p.add_argument("--on_bad_image", choices=("fail", "skip"), default="fail",
                   help="an input that cannot be read: fail = stop with its name and problem; skip = leave it out, "
                        "say so, and list them all at the end (default: fail)")
    add_video_flags(p)
    p.add_argument("--onnx", type=Path, default=None, metavar="FILE",
                   help="translate with an exported ONNX generator run by onnxruntime instead of --checkpoint "
                        "(cyclegan export; needs pip install 'cyclegan[export]'); tiles of images above --tile then "
                        "get their own instance-norm statistics")
    add_inference_flags(p, checkpoint_required=False)
    p.set_defaults(handler=run_translate)


def add_video_flags(p) -> None:
    from ..video import VideoOptions

    defaults = VideoOptions()
    p.add_argument("--temporal_stats", choices=TEMPORAL_STATS, default=defaults.temporal_stats,
                   help="video: where instance norm takes its statistics from. frame = each frame's own (flickers); "
                        "smooth = a moving average over the frames so far (one causal pass, for streams); clip = "
                        f"each shot's, as if its frames were one image (two passes) (default: {defaults.temporal_stats})")
    p.add_argument("--smooth_momentum", type=float, default=defaults.smooth_momentum, metavar="M",
                   help=f"smooth: the weight of the past statistics at each frame (default: {defaults.smooth_momentum})")
    p.add_argument("--cut_threshold", type=float, default=defaults.cut_threshold, metavar="T",
                   help="a scene cut starts new statistics: a change of the colour histograms between two frames "
                        f"above T (0-1, total variation) (default: {defaults.cut_threshold})")
    p.add_argument("--video_codec", default=defaults.codec, metavar="NAME",
                   help=f"FFmpeg encoder of the output clips: libx264, ffv1 (lossless, .mkv), libvpx-vp9 (.webm), ... "
                        f"(default: {defaults.codec})")
    p.add_argument("--crf", type=int, default=defaults.crf, help=f"libx264 / vp9 quality, lower is better (default: {defaults.crf})")
    p.add_argument("--sequence", action="store_true",
                   help="translate folder inputs as clips of numbered frames (sorted by name), written back as frames")


def run_translate(args: argparse.Namespace) -> int:
    from ..translate import Resize, default_format, plan_outputs
    from ..video import VideoOptions, split_inputs

    if args.resize and args.load_size:
        raise CommandError("give --resize or --load_size, not both")
    resize = Resize.parse(f"{args.load_size}x{args.load_size}" if args.load_size else args.resize)
    images, videos, sequences = split_inputs(args.inputs, sequence=args.sequence)
    options = VideoOptions(temporal_stats=args.temporal_stats, smooth_momentum=args.smooth_momentum,
                           cut_threshold=args.cut_threshold, codec=args.video_codec, crf=args.crf)
    translator = _translator(args, resize)
    jobs = plan_outputs(images, args.output, format=args.format or default_format(translator.out_channels)) if images else []
    if args.skip_existing:
        jobs = [(source, target) for source, target in jobs if not target.exists()]
    written = translator.translate_files(jobs, batch_size=args.batch_size, show_progress=not args.quiet) if jobs else []
    if images:
        log.info("translated %d images (%s) into %s", len(written), args.direction, args.output)
    _translate_clips(args, translator, videos, sequences, options)
    if translator.skipped:
        log.warning("skipped %d unreadable images:\n%s", len(translator.skipped),
                    "\n".join(f"  {path}: {problem}" for path, problem in translator.skipped))
    return 0


def _translate_clips(args: argparse.Namespace, translator, videos: list[Path], sequences: list[Path], options) -> None:
    from ..video import translate_clip, translate_sequence

    targets: dict[Path, Path] = {}
    for source in dict.fromkeys(v.resolve() for v in videos):  # each clip once, in order
        target = args.output / source.name
        if target.resolve() == source:
            raise CommandError(f"writing {target} would overwrite the input clip; choose another --output")
        if target in targets:
            raise CommandError(f"{targets[target]} and {source} would both be written to {target}; "
                               f"translate them into different --output folders")
        targets[target] = source
    for target, source in targets.items():
        if not (args.skip_existing and target.exists()):
            translate_clip(translator, source, target, options, show_progress=not args.quiet)
    for folder in sequences:
        written = translate_sequence(translator, folder, args.output / folder.name, options, format=args.format,
                                     show_progress=not args.quiet)
        log.info("translated %d frames of %s into %s", len(written), folder, args.output / folder.name)


def _translator(args: argparse.Namespace, resize):
    from ..translate import Translator

    if (args.checkpoint is None) == (args.onnx is None):
        raise CommandError("give --checkpoint RUN_OR_FILE or --onnx FILE (one of them)")
    settings = {"device": args.device, "tiles": tile_options(args), "resize": resize, "on_bad_image": args.on_bad_image,
                "show_progress": not args.quiet, "train_mode": args.train_mode}
    if args.checkpoint is not None:
        translator = Translator.on_engine(args.checkpoint, args.direction, engine=args.engine, precision=args.precision,
                                          **settings)
        log.info("engine: %s", translator.engine_choice)
        return translator
    from ..export import OnnxGenerator

    if args.train_mode:
        raise CommandError("--train_mode needs --checkpoint: an exported ONNX graph runs in eval mode")
    generator = OnnxGenerator(args.onnx)
    exported = generator.metadata.get("direction")
    if exported and exported != args.direction:
        raise CommandError(f"{args.onnx} translates {exported}, not {args.direction}: pass --direction {exported} "
                           f"or export the other generator")
    return Translator(generator, in_channels=generator.in_channels, out_channels=generator.out_channels, **settings)


def add_test_split_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataroot", type=Path, default=None, help="folder holding testA/ and testB/ (default: the run's dataroot)")
    p.add_argument("--max_images", type=int, default=0,
                   help="at most this many images per domain; replaces the official --num_test (default: 0 = all)")


def add_test_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "test", help="translate and reconstruct every test image; write an HTML page of them",
        description="For every image of testA and testB: real, translated and reconstructed, at full size, under "
                    "RUN/test_<epoch>/ with an index.html that shows them in a table. Replaces the official "
                    "test.py --model cycle_gan (which squashes images to 256x256 and stops at --num_test 50).")
    add_test_split_flags(p)
    p.add_argument("--output", type=Path, default=None, metavar="DIR", help="where to write (default: RUN/test_<epoch>)")
    add_inference_flags(p)
    p.set_defaults(handler=run_test)


def run_test(args: argparse.Namespace) -> int:
    from ..heldout import run_test as test

    page = test(args.checkpoint, dataroot=args.dataroot, output=args.output, max_images=args.max_images,
                batch_size=args.batch_size, device=args.device, show_progress=not args.quiet, tiles=tile_options(args),
                engine=args.engine, precision=args.precision, train_mode=args.train_mode)
    log.info("open %s", page)
    return 0


# ---- evaluate ---------------------------------------------------------------------------------

def add_evaluate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="measure a run on the test split (FID, KID, cycle L1; PSNR, SSIM, L1 against --truth)",
        description="Translate testA -> B and testB -> A at full size and report, per direction, FID and KID against "
                    "the target domain's real test images, the cycle-consistency L1 and, with --truth, PSNR, SSIM and "
                    "L1 against ground truth. Writes RUN/eval_<epoch>.json with every number and the protocol.")
    add_test_split_flags(p)
    p.add_argument("--direction", choices=("both", *DIRECTIONS), default="both", help="(default: both)")
    p.add_argument("--truth", type=Path, default=None, metavar="DIR",
                   help="ground truth named like the inputs, for AtoB (or BtoA when it is the only direction)")
    add_fid_flags(p)
    p.add_argument("--no_fid", action="store_true", help="skip FID and KID (no Inception weights needed)")
    add_inference_flags(p)
    p.set_defaults(handler=run_evaluate)


def add_fid_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception_weights", type=Path, default=None, metavar="PATH",
                   help="the FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: the torch hub "
                        "cache, downloaded there when missing")
    p.add_argument("--feature_cache", type=Path, default=None, metavar="DIR",
                   help="where features of real image folders are cached (default: ~/.cache/cyclegan/features)")


def add_fid_parser(subparsers) -> None:
    p = subparsers.add_parser("fid", help="FID and KID between two image folders",
                              description="FID and KID between any two image folders, with the network and protocol "
                                          "of cyclegan evaluate.")
    p.add_argument("dir_a", type=Path, metavar="DIR_A")
    p.add_argument("dir_b", type=Path, metavar="DIR_B")
    add_fid_flags(p)
    add_device_flag(p)
    p.set_defaults(handler=run_fid)


def run_fid(args: argparse.Namespace) -> int:
    from ..devices import pick_device
    from ..evaluate import fid_between_folders

    result = fid_between_folders(args.dir_a, args.dir_b, inception_weights=args.inception_weights,
                                 cache_dir=args.feature_cache, device=pick_device(args.device))
    print(f"FID {result['fid']:.3f}   KID {result['kid']:.5f} ± {result['kid_std_error']:.5f}   "
          f"({', '.join(f'{n} images in {d}' for d, n in result['images'].items())})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_run, format_report

    report = evaluate_run(args.checkpoint, dataroot=args.dataroot, direction=args.direction, truth=args.truth,
                          max_images=args.max_images, show_progress=not args.quiet, fid=not args.no_fid,
                          inception_weights=args.inception_weights, cache_dir=args.feature_cache,
                          device=args.device, tiles=tile_options(args), engine=args.engine, precision=args.precision,
                          train_mode=args.train_mode)
    print(format_report(report))
    log.info("all numbers and the protocol: %s", report["path"])
    return 0


# ---- entry point --------------------------------------------------------------------------

def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclegan", description="Unpaired image-to-image translation with CycleGAN.")
    parser.add_argument("--version", action="version", version=f"cyclegan {__version__}")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(subparsers)
    add_translate_parser(subparsers)
    add_test_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_fid_parser(subparsers)
    add_official_parsers(subparsers)
    add_deploy_parsers(subparsers)
    add_push_parser(subparsers)
    add_demo_parser(subparsers)
    return parser


def quiet_thread_waits() -> None:
    """OpenMP threads that sleep instead of spinning when idle, unless the user chose otherwise.

    With the default spin-waiting, a 2-thread training step ran 10-20x slower whenever another
    process wanted the CPU. It must be set before torch (and its OpenMP runtime) loads.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: Sequence[str] | None = None) -> int:
    quiet_thread_waits()
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(levelname)s %(message)s")
    try:
        return args.handler(args)
    except (CommandError, ValueError, FileNotFoundError) as exc:
        print(f"cyclegan {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cyclegan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
