"""The embedded demo: small photo-translation tasks with known ground truth, built on first use.

Domain A is crops of the public-domain/CC0 photographs that ship inside the scikit-image wheel;
domain B is a known transform T applied to crops of *other regions* of them, so A and B are
unpaired. Held-out A crops come with their ground truth T(a), so a trained G_A can be scored by
PSNR against T(a), next to the PSNR of doing nothing (a itself against T(a)).

The demo's task is ``winter`` (colour photos, a per-pixel tone and colour change after a slight
blur). ``build_demo_dataset`` builds any ``Task``: the learning benchmark adds a second one,
``etching``, in ``benchmarks/analysis.py``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageFilter

log = logging.getLogger(__name__)

DEMO_DATA_VERSION = 2
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png",
          "retina.jpg", "motorcycle_left.png", "motorcycle_right.png")
# Every photo gives A crops from its left 35%, held-out test crops from the middle 30% and B crops
# from its right 35%: no pixel is in both domains, yet both domains show the same kinds of scene.
# (With whole photos split between the domains, cat fur against galaxies, the GAN would also learn
# to recolour content.)
REGIONS = ((0.0, 0.35), (0.35, 0.65), (0.65, 1.0))
SHORT_SIDE = 256  # photos are scaled to this shorter side before cropping
TRAIN_CROP = 72  # training crops; the trainer takes random 64-pixel crops of them
TEST_CROP = 64
DATA_MARKER = "demo_dataset.json"  # how the data were built; a different recipe rebuilds them

# The demo trains --recipe fast (the paper's recipe learns far too slowly for a 10-minute CPU demo)
# with networks sized for 64-pixel crops on two CPU cores, and the colour-moment loss.
DEMO_OPTIONS = {
    "recipe": "fast", "netG": "resnet_6blocks", "ngf": 16, "ndf": 32,
    "load_size": TRAIN_CROP, "crop_size": TEST_CROP,
    # 8 epochs of 243 crops; the fast recipe's cosine lr reaches zero at the end, which settles the GAN.
    "n_epochs": 4, "n_epochs_decay": 4, "num_threads": 0, "print_freq": 20, "display_freq": 200,
    "save_latest_freq": 500, "save_epoch_freq": 1000,
    # A tone and colour task whose domains show the same kinds of scene: what the colour-moment loss is
    # for (README: Recipes).
    "lambda_colour": 3.0,
}


def winter_look(image: Image.Image) -> Image.Image:
    """T: a cool, faded, brighter, slightly softened rendering of an RGB photo."""
    x = np.asarray(image.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32) / 255.0
    luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = 0.6 * x + 0.4 * luma[..., None]  # partly desaturated
    x = x * np.array([0.88, 1.0, 1.12], dtype=np.float32)  # cool tint
    x = 0.1 + 0.85 * np.clip(x, 0, 1) ** 0.8  # lifted, faded shadows
    return Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))


@dataclass(frozen=True)
class Task:
    """A ground-truth task: which photos, and the transform T that makes domain B (and the truth)."""

    name: str
    photos: tuple[str, ...]
    transform: Any
    description: str
    source: Any = None  # photo name -> RGB image with the shorter side SHORT_SIDE; None: scikit-image's photos


WINTER = Task("winter", PHOTOS, winter_look, "colour photo -> winter look (faded, cool, lifted shadows, slight blur)")
TASKS = {task.name: task for task in (WINTER,)}


def skimage_photo_folder() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the demo builds its data from photos inside scikit-image: "
                                "pip install 'cyclegan[demo]' (or scikit-image)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _scaled_photo(folder: Path, name: str, short_side: int = SHORT_SIDE) -> Image.Image:
    with Image.open(folder / name) as image:
        image = image.convert("RGB")
    return _to_short_side(image, short_side)


def _to_short_side(image: Image.Image, short_side: int) -> Image.Image:
    scale = short_side / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)


def crop_boxes(count: int, size: int, x_range: tuple[int, int], height: int, rng) -> list[tuple[int, int, int, int]]:
    """``count`` random (left, top, right, bottom) squares lying wholly inside columns ``x_range``."""
    if x_range[1] - x_range[0] < size or height < size:
        raise ValueError(f"a {size}-pixel crop does not fit columns {x_range} of height {height}")
    boxes = []
    for _ in range(count):
        left = int(rng.integers(x_range[0], x_range[1] - size + 1))
        top = int(rng.integers(0, height - size + 1))
        boxes.append((left, top, left + size, top + size))
    return boxes


def _random_crops(image: Image.Image, count: int, size: int, x_range: tuple[int, int], rng) -> list[Image.Image]:
    return [image.crop(box) for box in crop_boxes(count, size, x_range, image.height, rng)]


def _columns(width: int, start: float, stop: float) -> tuple[int, int]:
    return int(width * start), int(width * stop)


def build_demo_dataset(root: str | Path, *, train_per_photo: int = 27, test_per_photo: int = 5, seed: int = 0,
                       task: str | Task = "winter", scale: int = 1) -> Path:
    """Write trainA, trainB, testA, testB and testA_truth of ``task`` (a name in ``TASKS``, or a
    ``Task`` such as the benchmarks' etching) under ``root`` (skipped when already built).

    ``scale`` multiplies the photos' short side and both crop sizes (2: 144-px training crops and 128-px
    held-out ones, from photos of a 512-px short side), so a larger crop shows the same share of a photo."""
    from .models.layers import lookup

    chosen = task if isinstance(task, Task) else lookup(TASKS, task, "task")
    root = Path(root)
    marker = root / DATA_MARKER
    recipe = {"version": DEMO_DATA_VERSION, "train_per_photo": train_per_photo, "test_per_photo": test_per_photo, "seed": seed}
    if chosen.name != "winter":  # the winter marker stays as it was, so that built demo data is not rebuilt
        recipe["task"] = chosen.name
    if scale != 1:
        recipe["scale"] = scale
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return root
    folder = None if chosen.source else skimage_photo_folder()
    rng = np.random.default_rng(seed)
    for sub in ("trainA", "trainB", "testA", "testB", "testA_truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for old in (root / sub).glob("*.png"):
            old.unlink()
    train_crop, test_crop = TRAIN_CROP * scale, TEST_CROP * scale
    for name in chosen.photos:
        if chosen.source:
            photo = chosen.source(name)
            photo = _to_short_side(photo, min(photo.size) * scale) if scale != 1 else photo
        else:
            photo = _scaled_photo(folder, name, SHORT_SIDE * scale)
        stem = Path(name).stem
        a_region, test_region, b_region = (_columns(photo.width, *part) for part in REGIONS)
        for i, crop in enumerate(_random_crops(photo, train_per_photo, train_crop, a_region, rng)):
            crop.save(root / "trainA" / f"{stem}_{i:03d}.png")
        for i, crop in enumerate(_random_crops(photo, test_per_photo, test_crop, test_region, rng)):
            crop.save(root / "testA" / f"{stem}_{i:03d}.png")
            chosen.transform(crop).save(root / "testA_truth" / f"{stem}_{i:03d}.png")
        transformed = chosen.transform(photo)
        for i, crop in enumerate(_random_crops(transformed, train_per_photo, train_crop, b_region, rng)):
            crop.save(root / "trainB" / f"{stem}_{i:03d}.png")
        for i, crop in enumerate(_random_crops(transformed, test_per_photo, test_crop, b_region, rng)):
            crop.save(root / "testB" / f"{stem}_{i:03d}.png")
    marker.write_text(json.dumps(recipe))
    return root


# ---- clips with ground truth: flicker, measured ---------------------------------------------------

CLIP_SIZE = (96, 72)  # frame width, height
CLIP_FRAMES = 24


def ground_truth_clips(folder: Path | None = None, *, frames: int = CLIP_FRAMES) -> dict[str, list[Image.Image]]:
    """Clips made from the demo photos by moving a crop window, so that every frame has its true look
    T(frame): ``pan`` (across the astronaut photo), ``zoom`` (into the coffee photo) and ``cut`` (a pan
    over chelsea, then one over the rocket: a scene cut half way)."""
    folder = folder or skimage_photo_folder()
    width, height = CLIP_SIZE

    def pan(name: str, count: int, dx: int, dy: int) -> list[Image.Image]:
        photo = _scaled_photo(folder, name)
        return [photo.crop((dx * i, dy * i, dx * i + width, dy * i + height)) for i in range(count)]

    def zoom(name: str, count: int) -> list[Image.Image]:
        photo = _scaled_photo(folder, name)
        out = []
        for i in range(count):
            scale = 2.0 - i / max(1, count - 1)  # the window shrinks from twice the frame to the frame
            w, h = width * scale, height * scale
            left, top = (photo.width - w) / 2, (photo.height - h) / 2
            out.append(photo.resize((width, height), Image.BICUBIC, box=(left, top, left + w, top + h)))
        return out

    half = frames // 2
    return {"pan": pan("astronaut.png", frames, 4, 1), "zoom": zoom("coffee.png", frames),
            "cut": pan("chelsea.png", half, 4, 0) + pan("rocket.jpg", frames - half, 3, 1)}


def temporal_error(outputs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    """Mean |(out_t - out_{t-1}) - (T_t - T_{t-1})| over the frames, on the 0-255 scale: 0 for an output
    whose changes from frame to frame are the true ones (no flicker)."""
    out = np.stack(outputs).astype(np.float64)
    truth = np.stack(truths).astype(np.float64)
    return float(np.abs(np.diff(out, axis=0) - np.diff(truth, axis=0)).mean())


def tone_flicker(outputs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    """The part of the temporal error that is a change of the whole frame's tone: mean over frames and
    channels of |mean(out_t - T_t) - mean(out_{t-1} - T_{t-1})| (0-255 scale). Moving content moves the
    spatial error pattern too, which ``temporal_error`` counts and this does not."""
    errors = np.stack(outputs).astype(np.float64) - np.stack(truths).astype(np.float64)
    return float(np.abs(np.diff(errors.mean(axis=(1, 2)), axis=0)).mean())


def clip_psnr(outputs: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float:
    """Mean PSNR of the frames against their truth, in dB (uint8 frames)."""
    values = []
    for out, truth in zip(outputs, truths):
        mse = np.mean((out.astype(np.float64) - truth.astype(np.float64)) ** 2)
        values.append(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))
    return float(np.mean(values))


def psnr(x, y) -> float:
    """PSNR in dB of two tensors in [-1, 1], measured on the [0, 1] scale (``cyclegan.metrics.psnr``)."""
    from .metrics import psnr as measure

    return measure(x, y)


@dataclass(frozen=True)
class DemoScore:
    trained_psnr: float
    identity_psnr: float
    images: int


class HeldOut(NamedTuple):
    """One held-out crop: its file name, the input a, the translation G(a) and the truth T(a)."""

    name: str
    real: Any
    fake: Any
    truth: Any


def translate_test_crops(generator, dataroot: str | Path) -> list[HeldOut]:
    """(a, G(a), T(a)) tensors for every held-out crop in testA / testA_truth."""
    import torch

    from .heldout import TestSplit
    from .images import load_image, to_tensor

    root = Path(dataroot)
    triplets = []
    with torch.inference_mode():
        for path in TestSplit.find(root, directions=("AtoB",), require=True).images["AtoB"]:
            a = to_tensor(load_image(path)).unsqueeze(0)  # (1, 3, H, W)
            truth = to_tensor(load_image(root / "testA_truth" / path.name)).unsqueeze(0)
            triplets.append(HeldOut(path.name, a, generator(a).clamp(-1, 1), truth))
    return triplets


def score(triplets: list[HeldOut]) -> DemoScore:
    """Mean PSNR of G(a) and of a itself against T(a)."""
    trained = [psnr(t.fake, t.truth) for t in triplets]
    identity = [psnr(t.real, t.truth) for t in triplets]
    return DemoScore(float(np.mean(trained)), float(np.mean(identity)), len(triplets))


def save_comparison(triplets: list[HeldOut], path: Path, *, count: int = 8) -> Path:
    """A grid with one test crop per row: input a, G(a), ground truth T(a), shown at twice the size."""
    from .tracking import image_grid

    chosen = triplets[:: max(1, len(triplets) // count)][:count]
    grid = image_grid([[t.real[0], t.fake[0], t.truth[0]] for t in chosen])
    grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(path)
    return path


def write_results_page(triplets: list[HeldOut], result: DemoScore, output: Path, run_dir: Path) -> Path:
    """``output/index.html``: every held-out crop as input | translated | ground truth, with the PSNRs."""
    from .images import to_image
    from .gallery import write_table_page

    folder = output / "results"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for t in triplets:
        stem = Path(t.name).stem
        cells = []
        for kind, tensor in (("input", t.real), ("translated", t.fake), ("truth", t.truth)):
            path = folder / f"{stem}_{kind}.png"
            to_image(tensor[0]).save(path)
            cells.append(path)
        rows.append([stem, f"{psnr(t.fake, t.truth):.2f} dB", f"{psnr(t.real, t.truth):.2f} dB", *cells])
    intro = (f"G_A translates held-out photo crops into the winter look. Mean PSNR against the true winter look: "
             f"{result.trained_psnr:.2f} dB; doing nothing (the input itself): {result.identity_psnr:.2f} dB, over "
             f"{result.images} crops. Training losses and samples: {run_dir / 'index.html'}.")
    sections = [("held-out crops", ("crop", "PSNR translated", "PSNR input", "input", "translated", "ground truth"), rows)]
    page = write_table_page(output / "index.html", "cyclegan demo: photo to winter look", sections, intro=intro, css="small")
    return page


VIDEO_MODES = ("frame", "clip")  # the side-by-side of demo/video.mp4: per-frame statistics, then the shot's


def write_demo_video(run_dir: Path, output: Path) -> dict | None:
    """``output/video.mp4``: the ground-truth clips as input | per-frame statistics | clip statistics | truth,
    side by side; returns each mode's mean PSNR, temporal error and tone flicker (None without PyAV)."""
    from .translate import Translator
    from .video import ClipInfo, ClipWriter, VideoOptions, translate_arrays

    if importlib.util.find_spec("av") is None:
        log.info("demo: no video.mp4 (it needs PyAV: pip install 'cyclegan[video]')")
        return None
    translator = Translator.from_checkpoint(run_dir, device="cpu")
    clips = ground_truth_clips()
    inputs = [np.asarray(f) for frames in clips.values() for f in frames]  # the clips one after another: cuts
    truths = [np.asarray(winter_look(Image.fromarray(f))) for f in inputs]
    outputs = {mode: [out for frames in clips.values()
                      for out in translate_arrays(translator, [np.asarray(f) for f in frames],
                                                  VideoOptions(temporal_stats=mode))] for mode in VIDEO_MODES}
    scores = {mode: {"psnr_db": clip_psnr(out, truths), "temporal_error": temporal_error(out, truths),
                     "tone_flicker": tone_flicker(out, truths)} for mode, out in outputs.items()}
    rows = [inputs, *outputs.values(), truths]
    labels = ["input", "per-frame statistics", "clip statistics", "true look"]
    height, width = inputs[0].shape[:2]
    info = ClipInfo(frames=len(inputs), rate=Fraction(8), time_base=Fraction(1, 8), width=2 * width * len(rows),
                    height=2 * height + 16, rotation=0, audio=False)
    writer = ClipWriter(output / "video.mp4", None, info, VideoOptions())
    try:
        for index in range(len(inputs)):
            writer.write(_side_by_side([row[index] for row in rows], labels), index)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return scores


def _side_by_side(frames: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """The frames at twice their size in a row, a caption above each."""
    from PIL import ImageDraw

    height, width = frames[0].shape[:2]
    canvas = Image.new("RGB", (2 * width * len(frames), 2 * height + 16), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (frame, label) in enumerate(zip(frames, labels)):
        canvas.paste(Image.fromarray(frame).resize((2 * width, 2 * height), Image.NEAREST), (2 * width * i, 16))
        draw.text((2 * width * i + 4, 2), label, fill="black")
    return np.asarray(canvas)


def _set_aside_if_stale(config, overrides: dict) -> bool:
    """Move away a demo run trained with other options (an older cyclegan's recipe); True if moved.

    Resuming it would finish the old recipe while the demo says it trains this one.
    """
    from .checkpoint import Checkpoint
    from .config import build_experiment

    existing = Checkpoint(config.run_dir).config
    where = {"checkpoints_dir": config.checkpoints_dir, "name": config.name}  # the same folder, however it was spelt
    if build_experiment({**overrides, **where}, base=existing) == config:
        return False
    old = config.run_dir.with_name(f"{config.run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    config.run_dir.rename(old)
    log.info(f"demo: {config.run_dir} was trained with other options (an earlier version's demo); moved it to {old} "
          f"and training afresh")
    return True


def run_demo(output: str | Path = "demo", *, iters: int | None = None, show_progress: bool = True) -> DemoScore:
    """Build the data if needed, train the fast recipe (resuming a stopped demo), score, and report."""
    from .checkpoint import load_generator
    from .config import build_experiment
    from .images import find_images
    from .run import fit
    from .training import Trainer

    output = Path(output)
    started = time.time()
    dataroot = build_demo_dataset(output / "data")
    options = {**DEMO_OPTIONS, "dataroot": str(dataroot), "checkpoints_dir": str(output / "runs"),
               "name": "winter", "max_iters": iters or 0}
    config = build_experiment(options)
    length = iters or (config.train.n_epochs + config.train.n_epochs_decay) * len(find_images(dataroot / "trainA"))
    log.info(f"demo: data in {dataroot}; training with --recipe fast ({length} iterations at 64 px, ngf 16: a generator "
          f"that starts as the identity, resize-conv upsampling, discriminators without instance norm, no identity "
          f"loss, warm-up + cosine lr, translating with the generator's moving average) and --lambda_colour 3 "
          f"(the generated colours' mean and covariance pulled to domain B's)")
    overrides = {"max_iters": iters or 0, "dataroot": str(dataroot)}
    if (config.run_dir / "latest.safetensors").exists() and not _set_aside_if_stale(config, overrides):
        trainer = Trainer.resume(config.run_dir, overrides=overrides)
    else:
        trainer = Trainer(config)
    if trainer.total_iters < length:
        fit(trainer, show_progress=show_progress)
    generator = load_generator(config.run_dir, "AtoB")
    triplets = translate_test_crops(generator, dataroot)
    result = score(triplets)
    grid = save_comparison(triplets, output / "results.png")
    page = write_results_page(triplets, result, output, config.run_dir)
    video = write_demo_video(config.run_dir, output)
    report = {"trained_psnr_db": result.trained_psnr, "do_nothing_psnr_db": result.identity_psnr,
              "test_images": result.images, "iterations": trainer.total_iters, "video": video,
              "minutes": (time.time() - started) / 60, "run": str(config.run_dir)}
    (output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info(f"demo: PSNR of G_A(a) against the true winter look T(a): {result.trained_psnr:.2f} dB; "
          f"doing nothing: {result.identity_psnr:.2f} dB ({result.images} held-out crops)")
    if video:
        frame, clip = video["frame"], video["clip"]
        log.info(f"demo: {output / 'video.mp4'}: clips with a true look, translated with per-frame statistics "
                 f"and with each shot's (--temporal_stats clip): PSNR {frame['psnr_db']:.2f} / {clip['psnr_db']:.2f} dB, "
                 f"tone flicker {frame['tone_flicker']:.3f} / {clip['tone_flicker']:.3f} (README: Video)")
    log.info(f"demo: open {page.resolve()} (every held-out crop: input | translated | ground truth; {grid} "
          f"holds a few of them in one picture); training plots and samples: {(config.run_dir / 'index.html').resolve()}")
    return result
