"""The pages opened from disk in a real headless browser: every image loads, the plots are there.

Needs Debian's chromium (``.ci/run`` installs it) and the playwright package (a dev extra); where
either is missing these tests say so and skip.
"""

from __future__ import annotations

from pathlib import Path

from cyclegan import cli
from cyclegan.checkpoint import LATEST
from cyclegan.run import fit
from cyclegan.training import Trainer


def open_page(browser, path: Path) -> dict:
    """Load a page from disk; return every image's source and natural width."""
    page = browser.new_page()
    try:
        page.goto(path.resolve().as_uri(), wait_until="load")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        title = page.title()
    finally:
        page.close()
    return {"title": title, "images": images}


def assert_all_images_load(result: dict, at_least: int) -> None:
    assert len(result["images"]) >= at_least
    broken = [src for src, width in result["images"] if width == 0]
    assert not broken, f"images that did not load: {broken}"


def test_training_page_shows_plots_and_samples(browser, tiny_config):
    run = fit(Trainer(tiny_config(display_freq=2)), show_progress=False)
    result = open_page(browser, run / "index.html")
    assert_all_images_load(result, at_least=5 + 6)
    plots = [src for src, width in result["images"] if src.startswith("plots/") and width > 0]
    assert sorted(plots) == [f"plots/{n}.svg" for n in ("cycle", "discriminators", "gan", "identity", "lr")]


def test_test_page_shows_every_image(browser, tiny_config, tmp_path):
    from conftest import write_images

    config = tiny_config()
    Trainer(config).save(config.run_dir / LATEST)
    data = tmp_path / "testdata"
    write_images(data / "testA", 2, size=(45, 37))
    write_images(data / "testB" / "with space", 1, size=(20, 24))
    assert cli.main(["test", "--checkpoint", str(config.run_dir), "--dataroot", str(data), "--quiet"]) == 0
    result = open_page(browser, config.run_dir / "test_0" / "index.html")
    assert_all_images_load(result, at_least=3 * 3)


def test_demo_page_shows_every_held_out_crop(browser, tmp_path, monkeypatch):
    from cyclegan.demo import PHOTOS, build_demo_dataset

    monkeypatch.setattr("cyclegan.demo.build_demo_dataset",
                        lambda root: build_demo_dataset(root, train_per_photo=2, test_per_photo=1))
    assert cli.main(["demo", "--output", str(tmp_path / "d"), "--iters", "2", "--quiet"]) == 0
    result = open_page(browser, tmp_path / "d" / "index.html")
    assert "demo" in result["title"]
    assert_all_images_load(result, at_least=3 * len(PHOTOS))
