"""Pages people open from disk: HTML tables of images and SVG line plots, no JavaScript, no network.

Everything is written with the standard library: the training page (loss and learning-rate plots,
sample grids per epoch), the page of ``cyclegan test`` and the demo's results page.
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import Sequence, Union

from .tracking import atomic_write_text, read_metrics

Cell = Union[Path, str]

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
MAX_PLOT_POINTS = 600

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 4px 8px; vertical-align: top; text-align: left; }
tr:nth-child(even) { background: #f6f6f6; }
img.cell { max-width: 320px; max-height: 320px; }
img.small { width: 128px; image-rendering: pixelated; }
img.grid { max-width: 100%; min-height: 160px; image-rendering: pixelated; }
.plots img { margin: 0 12px 12px 0; border: 1px solid #ddd; }
.note { color: #666; }
figure { display: inline-block; margin: 0 12px 12px 0; } figcaption { color: #666; font-size: 0.9em; }
"""


# ---- HTML ------------------------------------------------------------------------------------

def render_page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def link(target: Path, page_dir: Path) -> str:
    """A URL for ``target`` relative to the page's folder (pages are opened straight from disk)."""
    relative = Path(os.path.relpath(target, page_dir))
    return "/".join(html.escape(part, quote=True).replace(" ", "%20").replace("#", "%23") for part in relative.parts)


def image_tag(path: Path, page_dir: Path, *, css: str = "cell", alt: str = "") -> str:
    url = link(path, page_dir)
    return f'<a href="{url}"><img class="{css}" src="{url}" alt="{html.escape(alt or path.name, quote=True)}"></a>'


def image_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], page_dir: Path, *, css: str = "cell") -> str:
    """A table whose Path cells are shown as images (linked to the full-size file), str cells as text."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = (image_tag(c, page_dir, css=css) if isinstance(c, Path) else html.escape(str(c)) for c in row)
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def write_page(path: Path, title: str, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_page(title, body))
    return path


# ---- SVG line plots -------------------------------------------------------------------------

def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def thin(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_PLOT_POINTS) -> tuple[list[float], list[float]]:
    """At most ``limit`` points: means of consecutive bins, which also smooths noisy losses."""
    if len(xs) <= limit:
        return list(xs), list(ys)
    size = len(xs) / limit
    out_x, out_y = [], []
    for i in range(limit):
        a, b = int(i * size), int((i + 1) * size)
        out_x.append(sum(xs[a:b]) / (b - a))
        out_y.append(sum(ys[a:b]) / (b - a))
    return out_x, out_y


def format_tick(value: float) -> str:
    return f"{value:.4g}"


def line_plot_svg(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str, x_label: str,
                  width: int = 460, height: int = 260) -> str:
    """A standalone SVG line plot of named (xs, ys) series with axes, ticks and a legend."""
    left, right, top, bottom = 58, 14, 30, 38
    plot_w, plot_h = width - left - right, height - top - bottom
    series = {name: thin(*xy) for name, xy in series.items() if len(xy[0])}
    all_x = [x for xs, _ in series.values() for x in xs] or [0.0, 1.0]
    all_y = [y for _, ys in series.values() for y in ys if math.isfinite(y)] or [0.0, 1.0]
    x_ticks, y_ticks = nice_ticks(min(all_x), max(all_x)), nice_ticks(min(all_y), max(all_y))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
             f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>']
    for t in x_ticks:
        parts.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + plot_h}" stroke="#eee"/>'
                     f'<text x="{px(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{format_tick(t)}</text>')
    for t in y_ticks:
        parts.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + plot_w}" y2="{py(t):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 5}" y="{py(t) + 4:.1f}" text-anchor="end">{format_tick(t)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys) if math.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
        parts.append(f'<rect x="{left + 8}" y="{top + 6 + 14 * i}" width="10" height="3" fill="{colour}"/>'
                     f'<text x="{left + 22}" y="{top + 11 + 14 * i}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ---- the training page ----------------------------------------------------------------------

LOSS_PLOTS = {
    "gan": ("adversarial losses of the generators", ("G_A", "G_B", "G_GAN")),
    "discriminators": ("discriminator losses", ("D_A", "D_B", "D_real", "D_fake")),
    "l1": ("pix2pix L1 loss to the partner", ("G_L1",)),
    "paired": ("paired L1 losses on the known pairs", ("paired_A", "paired_B")),
    "cycle": ("cycle-consistency losses", ("cycle_A", "cycle_B")),
    "identity": ("identity losses", ("idt_A", "idt_B")),
    "colour": ("colour-moment losses", ("colour_A", "colour_B")),
    "nce": ("PatchNCE losses", ("NCE_A", "NCE_B", "NCE", "NCE_Y")),
    "lr": ("learning rate", ("lr",)),
}
EVAL_PLOTS = {"eval_cycle": ("held-out cycle L1 (0-255)", "cycle_l1_255"),
              "eval_colour": ("colour distance to the target domain's test images (0-255)", "colour_swd_255"),
              "eval_fid": ("FID on the test split", "fid"),
              "eval_psnr": ("PSNR against ground truth (dB)", "psnr_db")}
SAMPLE_NAME = re.compile(r"epoch_(\d+)_iter_(\d+)\.png$")


def write_training_plots(run_dir: Path, records: list[dict]) -> list[Path]:
    """One SVG per group of losses, and one of the learning rate, against the iteration."""
    folder = run_dir / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (title, keys) in LOSS_PLOTS.items():
        series = {key: ([r["iter"] for r in records if key in r], [float(r[key]) for r in records if key in r])
                  for key in keys}
        if not any(xs for xs, _ in series.values()):  # e.g. the colour losses of a run without them
            continue
        path = folder / f"{name}.svg"
        atomic_write_text(path, line_plot_svg(series, title=title, x_label="iteration"))
        paths.append(path)
    for name, (title, suffix) in EVAL_PLOTS.items():  # only once evaluations (--eval_freq) were logged
        keys = sorted({k for r in records for k in r if k.startswith("eval_") and k.endswith(suffix)})
        if keys:
            series = {k[len("eval_"):]: ([r["iter"] for r in records if k in r], [float(r[k]) for r in records if k in r])
                      for k in keys}
            path = folder / f"{name}.svg"
            atomic_write_text(path, line_plot_svg(series, title=title, x_label="iteration"))
            paths.append(path)
    return paths


def samples_by_epoch(run_dir: Path) -> dict[int, list[tuple[int, Path]]]:
    """{epoch: [(iteration, grid), ...]} for the sample grids in ``run_dir/samples``."""
    found: dict[int, list[tuple[int, Path]]] = {}
    for path in sorted((run_dir / "samples").glob("epoch_*_iter_*.png")):
        match = SAMPLE_NAME.search(path.name)
        if match:
            found.setdefault(int(match.group(1)), []).append((int(match.group(2)), path))
    return found


def write_training_page(run_dir: str | Path, *, title: str | None = None, summary: str = "") -> Path:
    """``run_dir/index.html``: the loss and learning-rate plots, then sample grids, newest epoch first."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    plots = write_training_plots(run_dir, records)
    body = [f'<p class="note">{html.escape(summary)}</p>' if summary else "",
            "<p class=\"note\">Sample grids: top row real A, translated to B, reconstructed A; bottom row "
            "real B, translated to A, reconstructed B.</p>",
            '<h2>Losses and learning rate</h2><div class="plots">',
            *(f'<img src="{link(p, run_dir)}" alt="{p.stem} plot">' for p in plots), "</div>"]
    for epoch, grids in sorted(samples_by_epoch(run_dir).items(), reverse=True):
        body.append(f"<h2>Epoch {epoch}</h2>")
        body += [f"<figure>{image_tag(p, run_dir, css='grid', alt=f'epoch {epoch} iteration {it}')}"
                 f"<figcaption>iteration {it}</figcaption></figure>" for it, p in sorted(grids, reverse=True)]
    return write_page(run_dir / "index.html", title or f"cyclegan run {run_dir.name}", "\n".join(body))


# ---- pages of image tables ------------------------------------------------------------------

def write_table_page(path: Path, title: str, sections: Sequence[tuple[str, Sequence[str], Sequence[Sequence[Cell]]]],
                     *, intro: str = "", css: str = "cell") -> Path:
    """A page of (heading, column headers, rows) sections; Path cells are images relative to the page."""
    body = [f"<p>{html.escape(intro)}</p>" if intro else ""]
    for heading, headers, rows in sections:
        body.append(f"<h2>{html.escape(heading)} ({len(rows)} images)</h2>")
        body.append(image_table(headers, rows, path.parent, css=css))
    return write_page(path, title, "\n".join(body))
