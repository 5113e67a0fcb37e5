"""Subcommands that move models in and out: official weights, downloads, export and serve."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..names import DEFAULT_TILE, DIRECTIONS, EXPORT_FORMATS, ZOO_MODELS
from .common import (CHECKPOINT_HELP, CommandError, add_config_flags, add_device_flag, add_engine_flags,
                     checkpoint_argument, given_options, log)


# ---- the official code's weights, and its datasets and model zoo --------------------------------

def add_official_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "import-official", help="turn official .pth weights into a cyclegan checkpoint",
        description="Read an official run folder (<epoch>_net_G_A.pth, G_B, D_A, D_B) or one generator file "
                    "(a pretrained latest_net_G.pth) with weights_only=True and write checkpoints_dir/NAME/"
                    "latest.safetensors, ready for translate and test. Give the architecture flags the official "
                    "run used (its train_opt.txt lists them).")
    p.add_argument("source", type=Path, metavar="SRC_DIR_OR_FILE")
    p.add_argument("--epoch", default="latest", help="which official files: <epoch>_net_*.pth (default: latest)")
    p.add_argument("--direction", choices=DIRECTIONS, default="AtoB",
                   help="a single generator file translates A to B (stored as G_A) or B to A (G_B) (default: AtoB)")
    add_config_flags(p, sections=("model",))
    p.set_defaults(handler=run_import_official)

    p = subparsers.add_parser("export-official", help="write a checkpoint's networks as official .pth files",
                              description="Write <epoch>_net_G_A.pth, G_B, D_A, D_B (plain state dicts in the official "
                                          "key layout) for the official code or tools built on it.")
    p.add_argument("run", type=Path, metavar="RUN_OR_FILE")
    p.add_argument("destination", type=Path, metavar="DST_DIR")
    p.add_argument("--epoch", default="latest", help="file name prefix (default: latest)")
    p.add_argument("--live", action="store_true",
                   help="write the trained generator weights instead of their moving average (a run with "
                        "--ema_decay keeps both; translate and test use the average, and so does this by default)")
    p.set_defaults(handler=run_export_official)

    p = subparsers.add_parser("download", help="download an official dataset or pretrained model",
                              description="Download with a progress bar, resuming an interrupted download; files are "
                                          "verified before they are put in place. Replaces the official "
                                          "download_cyclegan_dataset.sh, download_cyclegan_model.sh, "
                                          "download_pix2pix_dataset.sh and download_pix2pix_model.sh.")
    p.add_argument("kind", choices=("dataset", "model"))
    p.add_argument("name", help="dataset: apple2orange, horse2zebra, ... ; model: horse2zebra, style_monet, ... "
                                "(with --model pix2pix: datasets facades, maps, edges2shoes, ...; models "
                                "facades_label2photo, sat2map, edges2shoes, ...)")
    p.add_argument("--model", choices=ZOO_MODELS, default="cycle_gan",
                   help="whose zoo: the official CycleGAN one or the pix2pix one (some names are in both) "
                        "(default: cycle_gan)")
    p.add_argument("--to", type=Path, default=None, help="folder to put it in (default: datasets/ or checkpoints/)")
    p.add_argument("--url", default=None, help="base URL of a mirror (or set CYCLEGAN_DATASET_URL / CYCLEGAN_MODEL_URL; "
                                               "for pix2pix PIX2PIX_DATASET_URL / PIX2PIX_MODEL_URL)")
    p.add_argument("--from", dest="source", choices=("official", "hf"), default="official",
                   help="models: the official server, or hf = a Hugging Face Hub mirror of the zoo named by --repo "
                        "(its .pth is read with weights_only=True and converted, as the server's is) (default: official)")
    p.add_argument("--repo", default=None, metavar="OWNER/NAME", help="with --from hf: the mirror repository")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_download)


def run_import_official(args: argparse.Namespace) -> int:
    from ..official import import_official

    options = given_options(args, ("command", "handler", "verbose", "source", "epoch", "direction"))
    path = import_official(args.source, options, epoch=args.epoch, direction=args.direction)
    log.info("wrote %s; translate with: cyclegan translate --checkpoint %s INPUT --output DIR", path, path.parent)
    return 0


def run_export_official(args: argparse.Namespace) -> int:
    from ..checkpoint import EMA_SUFFIX
    from ..official import export_official

    for path, network in export_official(args.run, args.destination, epoch=args.epoch, ema=not args.live).items():
        kind = " (the moving average of the generator weights)" if network.endswith(EMA_SUFFIX) else ""
        log.info("wrote %s from %s%s", path, network, kind)
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..download import DownloadError, download_dataset, download_model

    if args.kind == "dataset" and args.source != "official":
        raise CommandError("--from hf is for models; datasets come from the official server or --url")
    try:
        if args.kind == "dataset":
            path = download_dataset(args.name, to=args.to or Path("datasets"), url=args.url, show_progress=not args.quiet,
                                    model=args.model)
            log.info("dataset in %s; train with: cyclegan train --model %s --dataroot %s --name %s", path, args.model,
                     path, args.name)
        else:
            path = download_model(args.name, to=args.to or Path("checkpoints"), url=args.url, show_progress=not args.quiet,
                                  model=args.model, source=args.source, repo=args.repo)
            log.info("model in %s; translate with: cyclegan translate --checkpoint %s INPUT --output DIR", path, path)
    except DownloadError as exc:
        raise CommandError(str(exc)) from None
    return 0


# ---- deployment: export and serve ----------------------------------------------------------

def add_deploy_parsers(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a generator as ONNX or TorchScript for deployment",
                              description="Write one generator (the moving average when the run kept one) as an ONNX "
                                          "file (for onnxruntime; needs pip install 'cyclegan[export]') or a TorchScript "
                                          "file, taking any batch size, height and width (multiples of the network's "
                                          "stride, 4 for the ResNet generators), inputs in [-1, 1], NCHW.")
    p.add_argument("--checkpoint", type=checkpoint_argument, required=True, metavar="RUN_OR_FILE", help=CHECKPOINT_HELP)
    p.add_argument("--direction", choices=DIRECTIONS, default="AtoB", help="which generator (default: AtoB)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="(default: onnx)")
    p.add_argument("--output", type=Path, required=True, metavar="FILE")
    p.set_defaults(handler=run_export)

    p = subparsers.add_parser("serve", help="a web page and an HTTP API that translate uploaded images",
                              description="Serve a page where a person uploads or drops an image and sees it translated, "
                                          "and POST /api/translate (multipart field 'file', optional 'direction'; "
                                          "returns the PNG), GET /api/health, GET /api/model. Needs pip install "
                                          "'cyclegan[serve]'. The model translates one image at a time; other "
                                          "requests wait their turn.")
    p.add_argument("--checkpoint", type=checkpoint_argument, required=True, metavar="RUN_OR_FILE", help=CHECKPOINT_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="(default: 8000)")
    p.add_argument("--max_upload_mb", type=float, default=20.0, help="larger uploads get 413 (default: 20)")
    p.add_argument("--max_pixels", type=int, default=16_000_000, help="images with more pixels get 413 (default: 16000000)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile size for large images (default: {DEFAULT_TILE})")
    add_engine_flags(p)
    add_device_flag(p)
    p.set_defaults(handler=run_serve)


def add_push_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "push", help="upload a run to the Hugging Face Hub as a model repository, with a model card",
        description="Upload model.safetensors (the generators, their moving averages when the run kept them; the "
                    "discriminators with --with_discriminators; no training state), config.json, the newest sample "
                    "grid and a model card written from the run (what it translates, data, recipe and options, "
                    "iterations, the numbers of its eval_*.json, usage, citation, licence). Load it anywhere with "
                    "--checkpoint hf://OWNER/NAME. Needs pip install 'cyclegan[hub]'; the token is huggingface_hub's "
                    "own (HF_TOKEN, or hf auth login).")
    p.add_argument("run", type=Path, metavar="RUN_OR_FILE")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the model repository (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default="main", help="the branch to commit to, created from main when missing "
                                                      "(default: main)")
    p.add_argument("--with_discriminators", action="store_true", help="push the discriminators too (to fine-tune "
                                                                       "with a GAN loss elsewhere)")
    p.add_argument("--license", default="other", help="the card's licence field, a Hub licence id such as mit or "
                                                      "cc-by-nc-4.0 (default: other)")
    p.add_argument("--message", default=None, help="the commit message (default: the run's name and epoch)")
    p.set_defaults(handler=run_push)


def run_push(args: argparse.Namespace) -> int:
    from ..hub import HubModel
    from ..sharing import push_run

    url = push_run(args.run, args.repo, private=args.private, revision=args.revision,
                   with_discriminators=args.with_discriminators, license=args.license, message=args.message)
    name = HubModel(args.repo, args.revision)
    log.info("pushed %s to %s; use it with: cyclegan translate --checkpoint %s INPUT --output DIR", args.run, url, name)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_generator

    path = export_generator(args.checkpoint, args.output, direction=args.direction, fmt=args.format)
    log.info("wrote %s (%s, %s)", path, args.format, args.direction)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from ..serve import serve
    from ..tiling import TileOptions

    serve(args.checkpoint, host=args.host, port=args.port, device=args.device, max_upload_mb=args.max_upload_mb,
          max_pixels=args.max_pixels, tiles=TileOptions(tile=args.tile), engine=args.engine, precision=args.precision,
          train_mode=args.train_mode)
    return 0
