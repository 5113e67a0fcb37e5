"""What a run shows people: a progress bar, a JSONL metrics log and sample image grids; and the
file helpers every writer shares (atomic writes, file hashes, the user cache folder)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from PIL import Image

from .images import to_image


class MetricsLog:
    """Appends one JSON object per line; on resume, forgets lines after the checkpoint's iteration."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def truncate_after(self, total_iters: int) -> None:
        """Drop records logged after ``total_iters`` (they belong to iterations that are redone)."""
        if not self.path.exists():
            return
        kept = [record for record in read_metrics(self.path) if record.get("iter", 0) <= total_iters]
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def append(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short by a crash is left out."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def user_cache_dir(kind: str) -> Path:
    """$CYCLEGAN_CACHE/<kind>, by default ~/.cache/cyclegan/<kind>."""
    return Path(os.environ.get("CYCLEGAN_CACHE", Path.home() / ".cache" / "cyclegan")) / kind


def image_grid(rows: Sequence[Sequence[torch.Tensor]], *, gap: int = 2) -> Image.Image:
    """Tile (C, H, W) tensors in [-1, 1] into one RGB image, row by row, on a white background."""
    tiles = [[to_image(t).convert("RGB") for t in row] for row in rows]
    width = max(sum(tile.width for tile in row) + gap * (len(row) - 1) for row in tiles)
    height = sum(max(tile.height for tile in row) for row in tiles) + gap * (len(tiles) - 1)
    grid = Image.new("RGB", (width, height), "white")
    top = 0
    for row in tiles:
        left = 0
        for tile in row:
            grid.paste(tile, (left, top))
            left += tile.width + gap
        top += max(tile.height for tile in row) + gap
    return grid


class TensorBoardLog:
    """Scalars and images for TensorBoard, under ``folder``; needs the optional tensorboard package."""

    def __init__(self, folder: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ValueError("--tensorboard needs the tensorboard package: pip install 'cyclegan[tensorboard]'") from exc
        self.writer = SummaryWriter(str(folder))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"train/{name}", value, step)

    def image(self, tag: str, image: Image.Image, step: int) -> None:
        import numpy as np

        self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def format_losses(losses: dict[str, float]) -> dict[str, str]:
    return {name: f"{value:.3f}" for name, value in losses.items()}


def progress(iterable: Iterable | None, *, total: int, initial: int = 0, description: str, enabled: bool = True,
             unit: str = "it", leave: bool = True):
    """A tqdm bar with rate and ETA (update it by hand when ``iterable`` is None); silent when disabled."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=description, disable=not enabled,
                dynamic_ncols=True, leave=leave, unit=unit)
