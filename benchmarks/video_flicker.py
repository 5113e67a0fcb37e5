"""Flicker of translated video, measured against ground truth, for each ``--temporal_stats`` mode.

The clips come from the demo photos by moving a crop window (``cyclegan.demo.ground_truth_clips``:
a pan, a zoom, a pan with a cut to another photo), so every frame has its true look T(frame). For
each mode: PSNR of the translated frames against T(frame), and the temporal error
mean |(out_t - out_{t-1}) - (T_t - T_{t-1})| (0 = the output changes exactly as the truth does), with
its ratio to per-frame statistics; and the frames per second against the per-frame loop (paired,
interleaved rounds).

    make demo && python benchmarks/video_flicker.py                    # the demo's trained generator
    python benchmarks/video_flicker.py --checkpoint RUN --momenta 0.8 0.9 --strip docs/video_strip.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from cyclegan.demo import clip_psnr, ground_truth_clips, temporal_error, tone_flicker, winter_look  # noqa: E402
from cyclegan.translate import Translator  # noqa: E402
from cyclegan.video import VideoOptions, translate_arrays  # noqa: E402

from machine import describe_machine  # noqa: E402


def modes(momenta: list[float]) -> dict[str, VideoOptions]:
    chosen = {"frame": VideoOptions(temporal_stats="frame")}
    for m in momenta:
        chosen[f"smooth {m:g}"] = VideoOptions(temporal_stats="smooth", smooth_momentum=m)
    chosen["clip"] = VideoOptions(temporal_stats="clip")
    return chosen


# How far the scene moves between frames (dx, dy) in the pans of ground_truth_clips; None: no pure shift
# (the cut itself).
MOTION = {"pan": [(4, 1)] * 23, "cut": [(4, 0)] * 11 + [None] + [(3, 1)] * 11}
MARGIN = 8  # pixels left out at the frame borders, where reflect padding changes with the content


def compensated_error(outputs, truths, motion) -> float:
    """The temporal error with the camera's motion taken out: each frame's error against the previous
    frame's error at the same scene point, over the pairs whose motion is a known shift. 0 = no flicker;
    what the network does to a scene point no longer depends on where the frame shows it."""
    errors = [o.astype(np.float64) - t.astype(np.float64) for o, t in zip(outputs, truths)]
    diffs = []
    for t, shift in enumerate(motion, start=1):
        if shift is None:
            continue
        dx, dy = shift
        now = errors[t][MARGIN:-MARGIN - dy or None, MARGIN:-MARGIN - dx or None]
        before = errors[t - 1][MARGIN + dy:-MARGIN or None, MARGIN + dx:-MARGIN or None]
        diffs.append(np.abs(now - before).mean())
    return float(np.mean(diffs))


def scores(outputs, truths, name: str) -> dict:
    values = {"psnr": clip_psnr(outputs, truths), "temporal": temporal_error(outputs, truths),
              "tone": tone_flicker(outputs, truths)}
    if name in MOTION:
        values["compensated"] = compensated_error(outputs, truths, MOTION[name])
    return values


def measure(translator: Translator, clips: dict, variants: dict[str, VideoOptions], rounds: int) -> dict:
    truths = {name: [np.asarray(winter_look(f)) for f in frames] for name, frames in clips.items()}
    inputs = {name: [np.asarray(f) for f in frames] for name, frames in clips.items()}
    results = {"do nothing": {name: scores(inputs[name], truths[name], name) for name in clips}}
    seconds = {variant: [] for variant in variants}
    outputs = {}
    for _ in range(rounds):  # interleaved: each round times every variant once
        for variant, options in variants.items():
            start = time.perf_counter()
            outputs[variant] = {name: translate_arrays(translator, inputs[name], options) for name in clips}
            seconds[variant].append(time.perf_counter() - start)
    frames = sum(len(f) for f in clips.values())
    for variant in variants:
        results[variant] = {name: scores(outputs[variant][name], truths[name], name) for name in clips}
        results[variant]["fps"] = frames / float(np.median(seconds[variant]))
        results[variant]["speed"] = float(np.median(np.array(seconds["frame"]) / np.array(seconds[variant])))
    return results, outputs, truths, inputs


METRICS = (("psnr", "PSNR", 2), ("temporal", "temp", 3), ("tone", "tone", 3), ("compensated", "comp", 3))


def report(results: dict, clips: list[str]) -> None:
    """Per clip and metric, then the means over the clips and their ratios to per-frame statistics."""
    frame = results["frame"]
    columns = [(c, key, label, digits) for c in clips for key, label, digits in METRICS if key in frame[c]]
    print(f"{'mode':<12}" + "".join(f"{c + ' ' + label:>13}" for c, _, label, _ in columns)
          + "".join(f"{'mean ' + label:>11}" for _, label, _ in METRICS)
          + "".join(f"{label + '/frame':>12}" for _, label, _ in METRICS[1:]) + f"{'speed':>7}")
    for variant, values in results.items():
        cells = "".join(f"{values[c][key]:>13.{digits}f}" for c, key, _, digits in columns)
        means = {key: np.mean([values[c][key] for c in clips if key in values[c]]) for key, _, _ in METRICS}
        base = {key: np.mean([frame[c][key] for c in clips if key in frame[c]]) for key, _, _ in METRICS}
        speed = f"{values['speed']:.2f}x" if "speed" in values else ""
        print(f"{variant:<12}{cells}" + "".join(f"{means[key]:>11.{digits}f}" for key, _, digits in METRICS)
              + "".join(f"{means[key] / base[key]:>12.2f}" for key, _, _ in METRICS[1:]) + f"{speed:>7}")


def save_strip(path: Path, inputs, outputs, truths, clip: str, variants: list[str], every: int = 4) -> None:
    """Rows: input, each variant, truth; columns: every ``every``-th frame of ``clip``."""
    rows = [inputs[clip]] + [outputs[v][clip] for v in variants] + [truths[clip]]
    picked = [[row[i] for i in range(0, len(row), every)] for row in rows]
    h, w = picked[0][0].shape[:2]
    gap = 2
    strip = Image.new("RGB", (len(picked[0]) * (w + gap) - gap, len(picked) * (h + gap) - gap), "white")
    for r, row in enumerate(picked):
        for c, frame in enumerate(row):
            strip.paste(Image.fromarray(frame), (c * (w + gap), r * (h + gap)))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.resize((strip.width * 2, strip.height * 2), Image.NEAREST).save(path)
    print(f"strip: {path} (rows: input, {', '.join(variants)}, truth; every {every}th frame of {clip})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo/runs/winter", help="a run trained on the winter task")
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strip", type=Path, default=None, help="write a picture of frames of the cut clip")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(describe_machine())
    translator = Translator.from_checkpoint(args.checkpoint, device="cpu")
    clips = ground_truth_clips()
    print(f"clips: {', '.join(f'{n} ({len(f)} frames of {f[0].width}x{f[0].height})' for n, f in clips.items())}; "
          f"checkpoint {args.checkpoint}")
    variants = modes(args.momenta)
    results, outputs, truths, inputs = measure(translator, clips, variants, args.rounds)
    report(results, list(clips))
    if args.strip:
        save_strip(args.strip, inputs, outputs, truths, "cut", ["frame", f"smooth {args.momenta[-1]:g}", "clip"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
