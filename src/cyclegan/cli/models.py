"""Subcommands that move models in and out: official weights, downloads, export and serve."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..names import DEFAULT_TILE, DIRECTIONS, EXPORT_FORMATS, MODELS
from .common import CommandError, add_config_flags, add_device_flag, add_engine_flags, given_options, log


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
    p.add_argument("--model", choices=MODELS, default="cycle_gan",
                   help="whose zoo: the official CycleGAN one or the pix2pix one (some names are in both) "
                        "(default: cycle_gan)")
    p.add_argument("--to", type=Path, default=None, help="folder to put it in (default: datasets/ or checkpoints/)")
    p.add_argument("--url", default=None, help="base URL of a mirror (or set CYCLEGAN_DATASET_URL / CYCLEGAN_MODEL_URL; "
                                               "for pix2pix PIX2PIX_DATASET_URL / PIX2PIX_MODEL_URL)")
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

    try:
        if args.kind == "dataset":
            path = download_dataset(args.name, to=args.to or Path("datasets"), url=args.url, show_progress=not args.quiet,
                                    model=args.model)
            log.info("dataset in %s; train with: cyclegan train --model %s --dataroot %s --name %s", path, args.model,
                     path, args.name)
        else:
            path = download_model(args.name, to=args.to or Path("checkpoints"), url=args.url, show_progress=not args.quiet,
                                  model=args.model)
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
    p.add_argument("--checkpoint", type=Path, required=True, metavar="RUN_OR_FILE")
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
    p.add_argument("--checkpoint", type=Path, required=True, metavar="RUN_OR_FILE")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="(default: 8000)")
    p.add_argument("--max_upload_mb", type=float, default=20.0, help="larger uploads get 413 (default: 20)")
    p.add_argument("--max_pixels", type=int, default=16_000_000, help="images with more pixels get 413 (default: 16000000)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile size for large images (default: {DEFAULT_TILE})")
    add_engine_flags(p)
    add_device_flag(p)
    p.set_defaults(handler=run_serve)


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
