"""The test split: which held-out images each generator translates, translated and reconstructed in
batches, and the ``cyclegan test`` page. ``evaluate`` measures the same walk; the demo scores its
held-out crops with it. A pix2pix checkpoint's test split is pairs: input, translation, ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import Checkpoint
from .data import domain_folders, find_pairs, matched_pairs, pair_images
from .images import find_images, match_channels, save_image, to_image, to_tensor
from .names import DIRECTIONS, GENERATOR_FOR_DIRECTION, other_direction
from .tiling import TileOptions
from .translate import Translator


@dataclass(frozen=True)
class TestSplit:
    """The test folder of each direction (testA for AtoB, testB for BtoA; swapped for a run trained
    BtoA) and the images found in the ones asked for."""

    root: Path
    folders: dict[str, Path]
    images: dict[str, list[Path]]

    @classmethod
    def find(cls, dataroot: str | Path, *, data_direction: str = "AtoB", directions: Sequence[str] = DIRECTIONS,
             max_images: int = 0, require: bool = False) -> "TestSplit":
        """At most ``max_images`` sorted images per direction; a direction whose folder is missing is left out,
        or, with ``require``, an error naming the folder."""
        root = Path(dataroot)
        folders = dict(zip(DIRECTIONS, domain_folders(root, "test", data_direction)))
        images = {}
        for direction in directions:
            if direction not in folders:
                raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
            if folders[direction].is_dir():
                images[direction] = find_images(folders[direction], max_count=max_images)
            elif require:
                raise FileNotFoundError(f"{folders[direction]} does not exist; --dataroot must hold test{direction[0]}/")
        return cls(root, folders, images)

    def target_folder(self, direction: str) -> Path:
        """The real images of the domain ``direction`` translates into."""
        return self.folders[other_direction(direction)]


def epoch_label(checkpoint: Checkpoint) -> str:
    """Epochs the checkpoint has completed, with the iteration when it was saved mid-epoch."""
    info = checkpoint.info
    done = int(info.get("epoch", 1)) - 1
    return f"{done}_iter{info['total_iters']}" if info.get("epoch_iter") else str(done)


def cycle_batches(forward: Translator, back: Translator | None, paths: Sequence[Path], *, batch_size: int):
    """(paths, real, fake, reconstructed) for batches of one size; reconstructed is None without ``back``."""
    for batch in forward.batches(paths, batch_size=batch_size):
        real = torch.stack([tensor for _, tensor, _ in batch])
        fake = forward.translate_tensor(real)
        yield [path for path, _, _ in batch], real, fake, back.translate_tensor(fake) if back is not None else None


# ---- cyclegan test: the official test page, at full size, for every test image -------------------

def run_test(checkpoint: str | Path, *, dataroot: str | Path | None = None, output: str | Path | None = None,
             max_images: int = 0, batch_size: int | None = None, device: str | None = None, show_progress: bool = False,
             tiles: TileOptions = TileOptions(), engine: str = "torch", precision: str = "fp32",
             train_mode: bool = False) -> Path:
    """Real, translated and reconstructed images of every test image of both domains, and an
    ``index.html`` showing them; returns the page. Default folder: ``RUN/test_<epoch>``. A pix2pix
    checkpoint's page shows input, translation and ground truth of every test pair (``train_mode``: see
    ``Translator``)."""
    from .gallery import write_table_page
    from .tracking import progress

    checkpoint = Checkpoint(checkpoint)
    config = checkpoint.config
    root = Path(dataroot or config.data.dataroot)
    if config.model.model == "pix2pix":
        return _paired_test(checkpoint, root, output=output, max_images=max_images, device=device, tiles=tiles,
                            show_progress=show_progress, engine=engine, precision=precision, train_mode=train_mode)
    split = TestSplit.find(root, data_direction=config.data.direction)
    if not split.images:
        raise FileNotFoundError(f"{root} has neither testA/ nor testB/; pass --dataroot with the test images")
    output = Path(output) if output else checkpoint.output_dir / f"test_{epoch_label(checkpoint)}"
    translators = {direction: Translator.on_engine(checkpoint, direction, engine=engine, precision=precision,
                                                   device=device, tiles=tiles, show_progress=show_progress)
                   for direction in GENERATOR_FOR_DIRECTION if checkpoint.has_generator(direction)}
    paths = {d: images for d, images in split.images.items() if d in translators}
    if not paths:
        raise FileNotFoundError(f"{root} has no test folder for the generators in {checkpoint.path}")
    bar = progress(None, total=sum(map(len, paths.values())), description="test", enabled=show_progress, unit="img")
    sections = []
    for direction, images in paths.items():
        forward, back = translators[direction], translators.get(other_direction(direction))
        batch_size = batch_size or forward.default_batch_size
        source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
        folder = split.folders[direction]
        rows = _cycle_images(forward, back, images, folder, output / "images" / direction, batch_size=batch_size, bar=bar)
        headers = ("image", f"real {source}", f"translated to {target}") + ((f"reconstructed {source}",) if back else ())
        sections.append((f"{source} to {target}: {folder}", headers, rows))
    bar.close()
    intro = (f"Checkpoint {checkpoint.path}, {config.model.netG}, epoch {epoch_label(checkpoint)}. Every test image "
             f"at its own size; click an image to open it at full resolution.")
    return write_table_page(output / "index.html", f"cyclegan test: {config.name}", sections, intro=intro)


def _cycle_images(forward: Translator, back: Translator | None, images: Sequence[Path], folder: Path, out_dir: Path,
                  *, batch_size: int, bar) -> list[list]:
    """Translate and reconstruct ``images``; save the three versions; one table row per image."""
    rows = []
    for paths, real, fake, rec in cycle_batches(forward, back, images, batch_size=batch_size):
        versions = {"real": real, "fake": fake, **({"rec": rec} if rec is not None else {})}
        for i, path in enumerate(paths):
            stem = out_dir / path.relative_to(folder).with_suffix("")
            saved = [save_image(to_image(tensors[i]), stem.with_name(f"{stem.name}_{kind}.png"))
                     for kind, tensors in versions.items()]
            rows.append([str(path.relative_to(folder)), *saved])
        bar.update(len(paths))
    return sorted(rows, key=lambda row: row[0])


# ---- pix2pix: the test pairs ------------------------------------------------------------------

def test_pairs(checkpoint: Checkpoint, root: Path, *, max_images: int = 0, truth: str | Path | None = None):
    """(pairs, swap, folder the names are relative to) of a pix2pix checkpoint's test split: ROOT/test/
    (A|B side by side) or testA/ + testB/ matched by name; with ``truth``, testA/ against that folder."""
    direction = checkpoint.config.data.direction
    if truth is not None:
        source = domain_folders(root, "test", direction)[0]
        pairs, _ = matched_pairs(source, Path(truth), max_count=max_images)
        if not pairs:
            raise FileNotFoundError(f"no file in {truth} matches the names of the images in {source}")
        return pairs, False, source
    pairs, _, swap = find_pairs(root, phase="test", direction=direction, max_count=max_images)
    folder = root / "test" if pairs[0][1] is None else domain_folders(root, "test", direction)[0]
    return pairs, swap, folder


def translated_pairs(translator: Translator, pairs, *, swap: bool, channels_b: int):
    """(input, translation, truth) tensors of every pair, each at its own size."""
    for pair in pairs:
        a, b = pair_images(pair, channels_a=translator.in_channels, channels_b=channels_b, swap=swap)
        real = match_channels(to_tensor(a), translator.in_channels)
        yield pair, real, translator.translate_tensor(real), match_channels(to_tensor(b), channels_b)


def _paired_test(checkpoint: Checkpoint, root: Path, *, output, max_images: int, device, tiles: TileOptions,
                 show_progress: bool, engine: str, precision: str, train_mode: bool) -> Path:
    from .gallery import write_table_page
    from .tracking import progress

    config = checkpoint.config
    pairs, swap, folder = test_pairs(checkpoint, root, max_images=max_images)
    output = Path(output) if output else checkpoint.output_dir / f"test_{epoch_label(checkpoint)}"
    translator = Translator.on_engine(checkpoint, "AtoB", engine=engine, precision=precision, device=device,
                                      tiles=tiles, show_progress=show_progress, train_mode=train_mode)
    bar = progress(None, total=len(pairs), description="test", enabled=show_progress, unit="img")
    rows = []
    for pair, real, fake, truth in translated_pairs(translator, pairs, swap=swap, channels_b=config.model.output_nc):
        name = pair[0].relative_to(folder)
        stem = output / "images" / name.with_suffix("")
        saved = [save_image(to_image(image), stem.with_name(f"{stem.name}_{kind}.png"))
                 for kind, image in (("real", real), ("fake", fake), ("truth", truth))]
        rows.append([str(name), *saved])
        bar.update(1)
    bar.close()
    mode = "train mode (batch statistics, dropout)" if train_mode else "eval mode (running statistics, no dropout)"
    intro = (f"Checkpoint {checkpoint.path}, pix2pix {config.model.netG}, epoch {epoch_label(checkpoint)}, {mode}. "
             f"Every test pair at its own size; click an image to open it at full resolution.")
    sections = [(f"input, translation and ground truth: {folder}", ("image", "input", "translated", "ground truth"),
                 sorted(rows, key=lambda row: row[0]))]
    return write_table_page(output / "index.html", f"cyclegan test: {config.name}", sections, intro=intro)
