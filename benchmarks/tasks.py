"""More ground-truth tasks for the learning benchmark, beside ``winter`` (the demo's) and ``etching``
(``analysis``): other content and other kinds of transform, so that a recipe is judged on tasks it was
not tuned on.

The content is procedural (``synthetic_scene``): skies and grounds in gradients, objects of many
shapes with their own shading and texture, thin strokes, each scene from its own seed, so the tests
can build it anywhere and the photos of the other tasks are not reused. The transforms are of four
kinds:

- ``dusk``: a global tone curve (darker, contrastier, warmer): per pixel;
- ``split_tone``: a colour cast that depends on brightness (teal shadows, orange highlights): per pixel;
- ``clarity``: local contrast and sharpening (unsharp mask, radius 3) with a little more saturation:
  spatial;
- ``flat``: texture flattened into even areas of a few tones (median filter and a soft posterize):
  a texture change, spatial.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cyclegan.demo import SHORT_SIDE, Task

from analysis import _blur

SCENE_COUNT = 18  # twice the demo's photos

def scene_names(count: int) -> tuple[str, ...]:
    return tuple(f"scene_{i}" for i in range(count))


SCENES = scene_names(SCENE_COUNT)
CROPS_PER_DOMAIN = 486  # the demo's: 18 photos x 27 training crops
TEST_CROPS = 90
SCENE_SIZE = (round(SHORT_SIDE * 1.5), SHORT_SIDE)  # width, height: the demo's photos are about 3:2


def _noise(rng, width: int, height: int, scale: int) -> np.ndarray:
    """Smooth noise in [-1, 1] with features about ``scale`` pixels across."""
    small = rng.uniform(-1, 1, (max(2, height // scale + 2), max(2, width // scale + 2))).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((width, height), Image.BICUBIC))


@functools.lru_cache(maxsize=32)
def synthetic_scene(name: str) -> Image.Image:
    """An RGB scene of SCENE_SIZE from the seed in ``name`` (``scene_3``): a graded sky over a textured
    ground, 30-50 objects (ellipses, boxes, polygons) spread evenly, each in a colour of the scene's own
    palette with its own shading and texture, and a few dark strokes. The palette and the even spread
    give the scene's left and right regions (domains A and B) the same kinds of content and colour, but
    not in the same amounts: over 18 scenes the mean colour of trainB differs from that of T(trainA) by
    up to 0.05 a channel (on [0, 1], dusk), over 162 by under 0.01 (``with_scenes``)."""
    seed = int(name.rsplit("_", 1)[1])
    rng = np.random.default_rng(1000 + seed)
    width, height = SCENE_SIZE
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    horizon = rng.uniform(0.35, 0.7)
    sky = rng.uniform(0.3, 1.0, 3) * (1 - y) + rng.uniform(0.1, 0.8, 3) * y
    ground = rng.uniform(0.05, 0.6, 3) + 0.15 * _noise(rng, width, height, 24)[..., None]
    image = np.where(y < horizon, sky, ground).astype(np.float32) * np.ones((height, width, 1), np.float32)
    palette = rng.uniform(0, 1, (int(rng.integers(4, 7)), 3))
    count = int(rng.integers(30, 51))
    for index in range(count):
        column = (index + rng.uniform(0, 1)) / count  # evenly over the width, in a random order of kinds
        image = _add_object(image, rng, palette, column * width)
    canvas = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 9))):
        x0 = rng.uniform(0, width)
        points = [(int(x0 + rng.uniform(-60, 60)), int(rng.uniform(0, height))) for _ in range(3)]
        draw.line(points, fill=tuple(int(v) for v in rng.integers(0, 60, 3)), width=int(rng.integers(1, 4)))
    return canvas.filter(ImageFilter.GaussianBlur(0.6))


def _add_object(image: np.ndarray, rng, palette: np.ndarray, cx: float) -> np.ndarray:
    """``image`` with one object drawn in place, at column ``cx`` (only its bounding box is computed)."""
    height, width = image.shape[:2]
    cy = rng.uniform(0, height)
    rx, ry = rng.uniform(6, 40), rng.uniform(6, 40)
    left, top = int(max(0, cx - rx - 3)), int(max(0, cy - ry - 3))
    right, bottom = int(min(width, cx + rx + 4)), int(min(height, cy + ry + 4))
    if right - left < 2 or bottom - top < 2:
        return image
    box_w, box_h = right - left, bottom - top
    mask_image = Image.new("L", (box_w, box_h), 0)
    draw = ImageDraw.Draw(mask_image)
    x0, y0 = cx - left, cy - top
    kind = rng.integers(3)
    if kind == 0:
        draw.ellipse((x0 - rx, y0 - ry, x0 + rx, y0 + ry), fill=255)
    elif kind == 1:
        draw.rectangle((x0 - rx, y0 - ry, x0 + rx, y0 + ry), fill=255)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
        draw.polygon([(x0 + rx * np.cos(a), y0 + ry * np.sin(a)) for a in angles], fill=255)
    mask = np.asarray(mask_image.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)[..., None] / 255
    yy = np.linspace(top / height, bottom / height, box_h, dtype=np.float32)[:, None, None]
    base = palette[rng.integers(len(palette))] + rng.normal(0, 0.04, 3)
    colour = base * (1.15 - 0.3 * yy)  # shaded top to bottom
    texture = rng.uniform(0.03, 0.25) * _noise(rng, box_w, box_h, int(rng.choice([2, 3, 5, 9, 17])))[..., None]
    part = image[top:bottom, left:right]
    image[top:bottom, left:right] = part * (1 - mask) + np.clip(colour + texture, 0, 1) * mask
    return image


def _unit(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _image(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))


LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def dusk_look(image: Image.Image) -> Image.Image:
    """A global tone curve: darker mid-tones (gamma 1.4), an S-curve of contrast, warmer."""
    x = _unit(image) ** 1.4
    x = x + 0.35 * x * (1 - x) * (2 * x - 1) * 2  # S-curve around the mid-tone
    return _image(x * np.array([1.06, 0.97, 0.85], dtype=np.float32))


def split_tone_look(image: Image.Image) -> Image.Image:
    """A cast that follows brightness: shadows pulled to teal, highlights to orange."""
    x = _unit(image)
    luma = (x @ LUMA)[..., None]
    shadows, highlights = (1 - luma) ** 2, luma ** 2
    teal, orange = np.array([-0.30, 0.08, 0.22], np.float32), np.array([0.25, 0.05, -0.28], np.float32)
    return _image(x + shadows * teal + highlights * orange)


def clarity_look(image: Image.Image) -> Image.Image:
    """Local contrast: an unsharp mask of radius 3 (amount 1.2) on every channel, then saturation x1.2."""
    x = _unit(image)
    blurred = np.stack([_blur(x[..., c], 3.0) for c in range(3)], axis=-1)
    sharp = x + 1.2 * (x - blurred)
    luma = (sharp @ LUMA)[..., None]
    return _image(luma + 1.2 * (sharp - luma))


def flat_look(image: Image.Image) -> Image.Image:
    """Texture flattened: a 5-pixel median filter, then each channel softly posterized to 5 levels."""
    x = _unit(image.filter(ImageFilter.MedianFilter(5)))
    levels = 4.0
    step = np.round(x * levels) / levels
    return _image(step + 0.35 * (x - step))  # 35% of the detail between the levels kept


NEW_TASKS = {
    task.name: task for task in (
        Task("dusk", SCENES, dusk_look, "scene -> dusk (global tone curve: darker, contrastier, warmer)", synthetic_scene),
        Task("split_tone", SCENES, split_tone_look, "scene -> split toning (teal shadows, orange highlights)",
             synthetic_scene),
        Task("clarity", SCENES, clarity_look, "scene -> clarity (unsharp mask radius 3, more saturation)",
             synthetic_scene),
        Task("flat", SCENES, flat_look, "scene -> flat (texture median-filtered, tones softly posterized)",
             synthetic_scene),
    )
}


def with_scenes(task: Task, count: int) -> tuple[Task, dict[str, int]]:
    """``task`` built from ``count`` scenes, and the per-scene crop counts (``build_demo_dataset``'s keywords)
    that keep about CROPS_PER_DOMAIN training crops per domain and TEST_CROPS held-out ones. More scenes
    and fewer crops of each make the A and B regions' colours differ by sampling less: with 162 scenes,
    the truth in B's colours on dusk rises from 23.5 dB (18 scenes) to 34.3 dB. With SCENE_COUNT scenes
    the task and counts are the defaults' (27 and 5 crops a scene)."""
    crops = {"train_per_photo": max(1, round(CROPS_PER_DOMAIN / count)), "test_per_photo": max(1, round(TEST_CROPS / count))}
    return replace(task, photos=scene_names(count)), crops
