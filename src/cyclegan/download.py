"""The official datasets and pretrained generators, downloaded safely and made ready to use.

A download goes to ``<target>.part`` (resumed with an HTTP Range request when one is there), is
verified (zip integrity; the state dict loads into the expected generator), and only then renamed
into place, so a partial or corrupt file never sits where a finished one belongs.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATASETS = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo", "ukiyoe2photo",
            "vangogh2photo", "maps", "facades", "iphone2dslr_flower", "ae_photos", "mini")
MODELS = ("apple2orange", "orange2apple", "summer2winter_yosemite", "winter2summer_yosemite", "horse2zebra",
          "zebra2horse", "monet2photo", "style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh", "sat2map",
          "map2sat", "cityscapes_photo2label", "cityscapes_label2photo", "facades_photo2label", "facades_label2photo",
          "iphone2dslr_flower")
DATASET_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
MODEL_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models"
DATASET_URL_ENV = "CYCLEGAN_DATASET_URL"  # mirrors: a base URL holding NAME.zip
MODEL_URL_ENV = "CYCLEGAN_MODEL_URL"  # mirrors: a base URL holding NAME.pth
# The zoo generators: resnet_9blocks, ngf 64, instance norm, no dropout, RGB.
PRETRAINED_OPTIONS = {"netG": "resnet_9blocks", "ngf": 64, "norm": "instance", "no_dropout": True,
                      "input_nc": 3, "output_nc": 3, "lambda_identity": 0.5}
# The official pix2pix zoo (download_pix2pix_dataset.sh, download_pix2pix_model.sh): aligned datasets as
# .tar.gz, generators U-Net 256, batch norm, dropout.
PIX2PIX_DATASETS = ("facades", "cityscapes", "maps", "edges2shoes", "edges2handbags", "night2day")
PIX2PIX_MODELS = ("facades_label2photo", "sat2map", "map2sat", "edges2shoes", "edges2handbags", "day2night")
PIX2PIX_DATASET_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets"
PIX2PIX_MODEL_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch"
PIX2PIX_DATASET_URL_ENV = "PIX2PIX_DATASET_URL"
PIX2PIX_MODEL_URL_ENV = "PIX2PIX_MODEL_URL"
# The zoo models that translate their dataset's B half into its A half (facades: A = photo, B = labels; maps:
# A = aerial; night2day: A = night): the official test commands pass --direction BtoA for them.
PIX2PIX_MODEL_DIRECTIONS = {"facades_label2photo": "BtoA", "map2sat": "BtoA", "day2night": "BtoA"}
PIX2PIX_PRETRAINED_OPTIONS = {"model": "pix2pix", "netG": "unet_256", "ngf": 64, "norm": "batch", "no_dropout": False,
                              "input_nc": 3, "output_nc": 3}
CHUNK = 1 << 16


def zoo(model: str) -> dict[str, Any]:
    """Names, URLs, archive type and generator options of the official zoo of ``model`` (cycle_gan, pix2pix);
    read when called, so that the module's names can be changed (mirrors, tests)."""
    if model == "pix2pix":
        return {"datasets": PIX2PIX_DATASETS, "models": PIX2PIX_MODELS, "archive": ".tar.gz",
                "dataset_url": (PIX2PIX_DATASET_URL_ENV, PIX2PIX_DATASET_URL),
                "model_url": (PIX2PIX_MODEL_URL_ENV, PIX2PIX_MODEL_URL), "options": PIX2PIX_PRETRAINED_OPTIONS}
    if model == "cycle_gan":
        return {"datasets": DATASETS, "models": MODELS, "archive": ".zip", "dataset_url": (DATASET_URL_ENV, DATASET_URL),
                "model_url": (MODEL_URL_ENV, MODEL_URL), "options": PRETRAINED_OPTIONS}
    raise ValueError(f"unknown model {model!r}; valid: cycle_gan, pix2pix")


class DownloadError(RuntimeError):
    """A download that failed; the message says why and what to do."""


def _check_name(name: str, valid: tuple[str, ...], what: str) -> None:
    if name not in valid:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")


def base_url(explicit: str | None, env: str, default: str) -> str:
    return (explicit or os.environ.get(env) or default).rstrip("/")


# ---- one file ---------------------------------------------------------------------------------

def fetch(url: str, target: Path, *, show_progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``target.part``, resuming what is there; returns the .part path."""
    from .tracking import progress

    part = target.with_name(target.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is complete
            return part
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url} ({reason}). Offline? Download the file elsewhere and place it at "
                            f"{target}, or point --url at a mirror") from None
    with response:
        if have and response.status != 206:  # the server ignored the Range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = progress(None, total=total or 0, initial=have, description=target.name, enabled=show_progress, unit="B")
        bar.unit_scale = True
        try:
            with part.open("ab" if have else "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"the download of {url} broke off after {part.stat().st_size} bytes ({exc}); "
                                f"run the same command again to resume it") from None
        finally:
            bar.close()
    size = part.stat().st_size
    if total is not None and size < total:
        raise DownloadError(f"the download of {url} broke off after {size} of {total} bytes; "
                            f"run the same command again to resume it")
    return part


# ---- datasets ---------------------------------------------------------------------------------

def download_dataset(name: str, *, to: str | Path = "datasets", url: str | None = None, show_progress: bool = True,
                     model: str = "cycle_gan") -> Path:
    """``to/NAME`` from the official NAME.zip (cycle_gan: trainA/, trainB/, testA/, testB/) or NAME.tar.gz
    (pix2pix: train/, val/, test/ of side-by-side A|B images)."""
    official = zoo(model)
    _check_name(name, official["datasets"], f"{model} dataset")
    to = Path(to)
    folder = to / name
    if folder.is_dir():
        log.info("%s is there already", folder)
        return folder
    suffix = official["archive"]
    archive = to / f"{name}{suffix}"
    if not archive.is_file():
        part = fetch(f"{base_url(url, *official['dataset_url'])}/{name}{suffix}", archive, show_progress=show_progress)
        (verify_tar if suffix == ".tar.gz" else verify_zip)(part, archive)
        part.replace(archive)
    extract_dataset(archive, folder)
    archive.unlink()
    return folder


def verify_zip(path: Path, name: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{name} is not a valid zip archive ({exc}); removed it: run again to download it anew") from None
    if bad is not None:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{name} is corrupt (member {bad} fails its CRC); removed it: run again") from None


def verify_tar(path: Path, name: Path) -> None:
    """Read the whole .tar.gz once: a truncated or corrupt download fails here, not half-way through unpacking."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if member.isfile():
                    archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{name} is not a valid .tar.gz archive ({exc}); removed it: run again to download it "
                            f"anew") from None


def extract_dataset(archive: Path, folder: Path) -> Path:
    """Unpack a .zip or .tar.gz into ``folder`` through a temporary folder; refuses members that would land
    outside it (and, in a tar, links and special files)."""
    staging = folder.with_name(f".{folder.name}.extracting")
    shutil.rmtree(staging, ignore_errors=True)
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive, "r:gz") as tf:
            _refuse_escapes(archive, folder, staging, tf.getnames())
            try:
                tf.extractall(staging, filter="data")
            except tarfile.FilterError as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise DownloadError(f"{archive} holds a member that is refused ({exc})") from None
    else:
        with zipfile.ZipFile(archive) as zf:
            _refuse_escapes(archive, folder, staging, zf.namelist())
            zf.extractall(staging)
    entries = [p for p in staging.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging  # NAME/trainA/... or trainA/...
    root.replace(folder)
    shutil.rmtree(staging, ignore_errors=True)
    return folder


def _refuse_escapes(archive: Path, folder: Path, staging: Path, members: list[str]) -> None:
    for member in members:
        target = (staging / member).resolve()
        if not target.is_relative_to(staging.resolve()):
            raise DownloadError(f"{archive} holds {member!r}, which would be written outside {folder}; refused")


# ---- pretrained generators --------------------------------------------------------------------

MODEL_SOURCES = ("official", "hf")  # download model --from: the official server, or a Hub mirror of it


def mirror_names(name: str) -> tuple[str, ...]:
    """Where a Hub mirror of the zoo may keep NAME's generator: as the server names it, or as the scripts save it."""
    return (f"{name}.pth", f"{name}/latest_net_G.pth", f"{name}_pretrained/latest_net_G.pth")


def fetch_from_hub(name: str, repo: str, target: Path) -> Path:
    """NAME's official .pth from the Hub mirror ``repo``, copied to ``target.part`` (read later with
    weights_only=True, as the official server's file is)."""
    from .hub import HubError, HubModel, check_repo_id, fetch_file, offline, repo_files

    mirror = HubModel(check_repo_id(repo))
    candidates = mirror_names(name)
    if not offline():
        present = set(repo_files(mirror))
        candidates = tuple(c for c in candidates if c in present)
        if not candidates:
            raise DownloadError(f"{mirror} has none of {', '.join(mirror_names(name))}: is it a mirror of the "
                                f"official zoo?")
    for candidate in candidates:
        try:
            cached = fetch_file(mirror, candidate)
        except HubError as exc:
            problem = exc
            continue
        part = target.with_name(target.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, part)
        return part
    raise DownloadError(str(problem))

def download_model(name: str, *, to: str | Path = "checkpoints", url: str | None = None, show_progress: bool = True,
                   model: str = "cycle_gan", source: str = "official", repo: str | None = None) -> Path:
    """``to/NAME/latest.safetensors`` (ready for translate) from the official NAME.pth of the ``model`` zoo
    (cycle_gan or pix2pix, whose names partly coincide: sat2map, map2sat, facades_label2photo); the .pth
    is kept as ``to/NAME_pretrained/latest_net_G.pth``, where the official scripts put it. ``source`` "hf"
    takes the .pth from ``repo``, a Hugging Face Hub mirror of the zoo, through the Hub's cache."""
    if source not in MODEL_SOURCES:
        raise ValueError(f"unknown source {source!r}; valid: {', '.join(MODEL_SOURCES)}")
    if source == "hf" and not repo:
        raise DownloadError("--from hf needs --repo OWNER/NAME: the Hub repository that mirrors the official zoo")
    from .official import import_official, load_official_weights, read_state_dict
    from .checkpoint import Checkpoint, CheckpointError
    from .config import ModelConfig
    from .models import build_generator

    official = zoo(model)
    _check_name(name, official["models"], f"{model} model")
    options = official["options"]
    to = Path(to)
    run = to / name
    if (run / "latest.safetensors").is_file():
        there = Checkpoint(run).config.model.model
        if there != model:
            raise DownloadError(f"{run} holds the {there} model {name} already; pass --to another folder for the "
                                f"{model} one")
        log.info("%s is there already", run)
        return run
    weights = to / f"{name}_pretrained" / "latest_net_G.pth"
    if not weights.is_file():
        part = (fetch_from_hub(name, repo, weights) if source == "hf" else
                fetch(f"{base_url(url, *official['model_url'])}/{name}.pth", weights, show_progress=show_progress))
        model_config = ModelConfig(**{k: v for k, v in options.items() if k != "lambda_identity"})
        try:
            load_official_weights(build_generator(model_config), read_state_dict(part), model=model_config,
                                  network="g_ab", source=part)
        except CheckpointError as exc:
            part.unlink(missing_ok=True)
            raise DownloadError(f"the downloaded {name}.pth is not a usable generator ({exc}); removed it") from None
        part.replace(weights)
    direction = PIX2PIX_MODEL_DIRECTIONS.get(name, "AtoB") if model == "pix2pix" else "AtoB"
    import_official(weights, {**options, "direction": direction, "name": name, "checkpoints_dir": str(to)})
    return run
