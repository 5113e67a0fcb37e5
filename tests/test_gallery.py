"""The pages people open from disk: SVG plots, the training page, TensorBoard output."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from cyclegan.gallery import line_plot_svg, link, nice_ticks, thin, write_table_page
import cyclegan.run
from cyclegan.run import fit
from cyclegan.objective import LOSS_NAMES
from cyclegan.training import Trainer

SVG = "{http://www.w3.org/2000/svg}"


def test_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0.13, 0.97) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = nice_ticks(2e-5, 2e-4)
    assert ticks[0] <= 2e-5 and ticks[-1] >= 2e-4 and len(ticks) <= 8
    assert nice_ticks(3.0, 3.0)[0] <= 3.0 <= nice_ticks(3.0, 3.0)[-1]


def test_thinning_keeps_at_most_the_limit_and_averages_bins():
    xs, ys = thin(list(range(1000)), [float(i % 2) for i in range(1000)], limit=100)
    assert len(xs) == 100 and all(y == pytest.approx(0.5) for y in ys)


def test_plot_is_valid_svg_with_one_line_per_series():
    svg = line_plot_svg({"G_A": ([1, 2, 3], [1.0, 0.5, 0.7]), "G_B": ([1, 2, 3], [0.2, 0.4, float("nan")])},
                        title="losses <&>", x_label="iteration")
    root = ET.fromstring(svg)
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2
    assert len(lines[1].get("points").split()) == 2  # the non-finite point is left out
    assert root.get("width") and root.get("height")  # so that <img> gets a natural size
    assert "losses &lt;&amp;&gt;" in svg


def test_links_are_relative_and_escaped(tmp_path):
    assert link(tmp_path / "a b" / "x#1.png", tmp_path) == "a%20b/x%231.png"
    page = write_table_page(tmp_path / "p" / "index.html", "t", [("s", ("n", "img"), [["x", tmp_path / "i.png"]])])
    assert 'src="../i.png"' in page.read_text()


def test_training_writes_a_page_with_plots_and_samples_newest_epoch_first(tiny_config):
    trainer = Trainer(tiny_config(display_freq=2, print_freq=1))
    run = fit(trainer, show_progress=False)
    page = (run / "index.html").read_text()
    for name in ("gan", "discriminators", "cycle", "identity", "lr"):
        svg = run / "plots" / f"{name}.svg"
        assert f'src="plots/{name}.svg"' in page
        assert len(ET.parse(svg).getroot().findall(f"{SVG}polyline")) == (1 if name == "lr" else 2)
    for loss in LOSS_NAMES:
        assert f">{loss}</text>" in "".join((run / "plots" / f).read_text() for f in ("gan.svg", "discriminators.svg", "cycle.svg", "identity.svg"))
    epochs = [int(e) for e in re.findall(r"<h2>Epoch (\d+)</h2>", page)]
    assert epochs == [3, 2, 1]
    sources = re.findall(r'<img class="grid" src="([^"]+)"', page)
    assert len(sources) == len(list((run / "samples").glob("*.png"))) and all((run / s).is_file() for s in sources)


def test_page_is_refreshed_every_epoch(tiny_config, monkeypatch):
    seen = []
    original = cyclegan.run.write_page

    def write_and_read(trainer):
        page = original(trainer)
        seen.append(re.findall(r"<h2>Epoch (\d+)</h2>", page.read_text()))
        return page

    monkeypatch.setattr(cyclegan.run, "write_page", write_and_read)
    fit(Trainer(tiny_config(n_epochs=1, n_epochs_decay=1)), show_progress=False)
    assert seen == [["1"], ["2", "1"], ["2", "1"]]  # after each epoch, and once more at the end


def test_tensorboard_gets_the_losses_and_sample_grids(tiny_config):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="tensorboard is a dev extra; make test installs it")
    run = fit(Trainer(tiny_config(tensorboard=True, display_freq=2, print_freq=1)), show_progress=False)
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {f"train/{name}" for name in (*LOSS_NAMES, "lr")} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/G_A")] == list(range(1, 10))
    assert "samples" in tags["images"] and len(events.Images("samples")) >= 3


def test_missing_tensorboard_is_a_clear_error(monkeypatch, tiny_config):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ValueError, match=r"pip install 'cyclegan\[tensorboard\]'"):
        fit(Trainer(tiny_config(tensorboard=True)), show_progress=False)
