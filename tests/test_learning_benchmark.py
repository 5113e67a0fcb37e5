"""The learning benchmark: its data-bound reference (the true translation recoloured into domain B's colours) and the training folders of its paired rows."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan.demo import TASKS

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "learning.py"


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("learning_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo(rng, brightness: float) -> Image.Image:
    """A smooth, photo-like 32-pixel RGB image whose colours centre on ``brightness``."""
    low = rng.normal(brightness, 0.2, size=(8, 8, 3)).clip(0, 1)
    return Image.fromarray((low * 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC)


def write_task(root: Path, b_brightness: float | None, seed: int = 0) -> Path:
    """trainA, testA and testA_truth of the winter task; trainB = T(trainA) itself when
    ``b_brightness`` is None, else T of other photos centred on ``b_brightness``."""
    rng = np.random.default_rng(seed)
    transform = TASKS["winter"].transform
    for sub in ("trainA", "trainB", "testA", "testA_truth"):
        (root / sub).mkdir(parents=True)
    for i in range(6):
        a = photo(rng, 0.5)
        a.save(root / "trainA" / f"{i}.png")
        b = a if b_brightness is None else photo(rng, b_brightness)
        transform(b).save(root / "trainB" / f"{i}.png")
    for i in range(3):
        a = photo(rng, 0.5)
        a.save(root / "testA" / f"{i}.png")
        transform(a).save(root / "testA_truth" / f"{i}.png")
    return root


def b_colours(learning, root: Path):
    return learning.domain_pixels(root / "trainB", seed=1)


def test_the_truth_in_b_colours_is_near_perfect_when_b_is_the_transform_of_a(learning, tmp_path):
    from cyclegan.demo import translate_test_crops

    dataroot = write_task(tmp_path, b_brightness=None)
    held_out = translate_test_crops(lambda a: a, dataroot)
    assert learning.truth_in_b_colours(dataroot, "winter", held_out, b_colours(learning, dataroot)) > 40


def test_the_truth_in_b_colours_falls_when_b_shows_darker_content(learning, tmp_path):
    from cyclegan.demo import translate_test_crops

    same = write_task(tmp_path / "same", b_brightness=0.5, seed=1)
    darker = write_task(tmp_path / "darker", b_brightness=0.3, seed=1)
    scores = {name: learning.truth_in_b_colours(root, "winter", translate_test_crops(lambda a: a, root),
                                                b_colours(learning, root))
              for name, root in (("same", same), ("darker", darker))}
    # B's content is darker than T(A)'s, so recolouring T(a) into B's colours darkens it: the
    # score drops by far more than the sampling difference between two like-for-like domains
    assert scores["darker"] < scores["same"] - 6
    assert scores["darker"] < 25


def test_shared_content_is_undone_by_the_next_build_of_the_same_data(learning, tmp_path):
    from cyclegan.demo import build_demo_dataset

    def train_b(root):
        return {p.name: p.read_bytes() for p in (root / "trainB").glob("*.png")}

    root = build_demo_dataset(tmp_path / "data", train_per_photo=2, test_per_photo=1)
    real_b = train_b(root)
    learning.share_content(root, "winter")
    assert train_b(root).keys() == {p.name for p in (root / "trainA").glob("*.png")}
    assert train_b(root) != real_b
    build_demo_dataset(root, train_per_photo=2, test_per_photo=1)  # a later run without --shared_content
    assert train_b(root) == real_b


def test_the_paired_rows_train_on_the_known_pairs(learning, tmp_path):
    from conftest import write_images

    root = tmp_path / "task" / "data"
    crops = write_images(root / "trainA", 20, size=(16, 16), seed=1)
    write_images(root / "trainB", 3, size=(16, 16), seed=2)
    pairs = learning.paired_data(root, "winter", "pairs")
    assert sorted(p.name for p in (pairs / "trainB").iterdir()) == [p.name for p in crops]
    truth = learning.TASKS["winter"].transform(Image.open(crops[4]).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(pairs / "trainB" / crops[4].name)), np.asarray(truth))
    some = learning.paired_data(root, "winter", "some_pairs")
    names = sorted(p.name for p in (some / "trainB").iterdir())
    partnered = [n for n in names if not n.startswith("b_")]
    assert len(partnered) == round(20 * learning.PAIRED_FRACTION) and len(names) == len(partnered) + 3
    assert learning.paired_data(root, "winter", "unpaired") == root


def test_the_new_tasks_build_deterministic_data_of_their_own_content_and_kinds(learning, tmp_path):
    """Procedural scenes, split into disjoint A / test / B regions like the demo's photos; two per-pixel
    transforms the per-pixel ceiling fits almost exactly, two spatial ones it cannot."""
    from cyclegan.demo import build_demo_dataset
    from tasks import NEW_TASKS, synthetic_scene

    assert set(NEW_TASKS) <= set(learning.TASKS) and len(NEW_TASKS) >= 3
    first, again = np.asarray(synthetic_scene("scene_3")), np.asarray(synthetic_scene("scene_3"))
    assert np.array_equal(first, again) and not np.array_equal(first, np.asarray(synthetic_scene("scene_4")))
    ceilings = {}
    for name in NEW_TASKS:
        root = build_demo_dataset(tmp_path / name, task=NEW_TASKS[name], train_per_photo=2, test_per_photo=2)
        counts = {sub: len(list((root / sub).iterdir())) for sub in ("trainA", "trainB", "testA", "testA_truth")}
        assert counts == {"trainA": 36, "trainB": 36, "testA": 36, "testA_truth": 36}
        refs = learning.references(root, name)
        ceilings[name] = refs["ceiling_psnr_db"] - refs["nothing_psnr_db"]
        assert refs["ceiling_psnr_db"] > refs["nothing_psnr_db"] + 1  # each transform changes the images measurably
    assert min(ceilings["dusk"], ceilings["split_tone"]) > max(ceilings["clarity"], ceilings["flat"])


def test_gaps_judge_a_recipe_by_its_mean_and_its_worst_task(learning):
    def entry(ceiling, end):
        return {"references": {"ceiling_psnr_db": ceiling}, "recipes": {"fast": {"points": [{"ema_psnr_db": 0.0},
                                                                                         {"ema_psnr_db": end}]}}}
    summary = learning.gaps({"a": entry(30.0, 27.0), "b": entry(40.0, 31.0)})["fast"]
    assert summary["mean"] == pytest.approx(6.0) and summary["worst"] == "b" and summary["tasks"]["a"] == 3.0
    assert summary["short_of_target"] == {}  # references without the truth in B's colours judge no target


def test_the_data_bound_target_is_the_truth_in_b_colours_less_1_db_and_above_doing_nothing(learning):
    def entry(nothing, truth_in_b, end):
        return {"references": {"ceiling_psnr_db": 40.0, "nothing_psnr_db": nothing, "truth_in_b_colours_psnr_db": truth_in_b},
                "recipes": {"fast": {"points": [{"ema_psnr_db": nothing}, {"ema_psnr_db": end}]}}}
    results = {"tone": entry(17.0, 23.5, 22.6),  # 0.9 dB under the truth in B's colours: met
               "cast": entry(17.0, 23.5, 22.0),  # 1.5 dB under it: short by 0.5 dB
               "texture": entry(24.8, 22.0, 24.8)}  # B's colours lie below doing nothing: level with it is short
    short = learning.gaps(results)["fast"]["short_of_target"]
    assert short == {"cast": pytest.approx(0.5), "texture": 0.0}
    assert "cast (0.50 dB), texture (0.00 dB)" in learning.gap_table(results)


def test_more_scenes_give_domains_of_the_same_colours_with_the_same_crop_counts(learning, tmp_path):
    """--scenes spreads the procedural tasks' crops over more scenes, in a data folder of its own, so that
    domain B's colours are T(A)'s up to sampling: over the 18 default scenes trainB's mean colour is off
    T(trainA)'s by several hundredths, over 162 by under one."""
    from tasks import NEW_TASKS

    def mean_colour(folder: Path, transform=lambda image: image) -> np.ndarray:
        return np.mean([np.asarray(transform(Image.open(p).convert("RGB")), np.float64).reshape(-1, 3).mean(0) / 255
                        for p in sorted(folder.iterdir())], axis=0)

    offsets = {}
    for scenes in (18, 162):
        root = learning.task_data(tmp_path, "dusk", scenes)
        assert root == tmp_path / "dusk" / ("data" if scenes == 18 else "data_162_scenes")
        names = sorted(p.name for p in (root / "trainB").iterdir())
        assert len(names) == 486 and len({n.rsplit("_", 1)[0] for n in names}) == scenes
        offsets[scenes] = np.abs(mean_colour(root / "trainB") - mean_colour(root / "trainA", NEW_TASKS["dusk"].transform)).max()
    assert offsets[18] > 0.03 and offsets[162] < 0.01


def test_a_larger_size_scales_the_photos_with_the_crops_in_a_folder_of_its_own(learning, tmp_path):
    """--size 128: 144-px training crops and 128-px held-out crops, from photos scaled by two, so a crop shows
    the scene's share that a 64-px crop shows at the default size; the runs train on 128-px crops of them."""
    small, large = (learning.task_data(tmp_path, "winter", 18, size) for size in (64, 128))
    assert large == tmp_path / "winter" / "data_128px" and small == tmp_path / "winter" / "data"
    for root, train, test in ((small, 72, 64), (large, 144, 128)):
        assert {Image.open(p).size for p in (root / "trainB").iterdir()} == {(train, train)}
        assert {Image.open(p).size for p in (root / "testA_truth").iterdir()} == {(test, test)}
    assert sorted(p.name for p in (small / "trainA").iterdir()) == sorted(p.name for p in (large / "trainA").iterdir())
    pixel_std = np.asarray(Image.open(next((large / "testA").iterdir())).convert("RGB"), np.float64).std()
    assert pixel_std > 5  # real content, not an empty corner
    assert learning.size_options(128) == {"load_size": 144, "crop_size": 128} and learning.size_options(64) == {}


def test_each_selection_rule_keeps_the_trained_point_with_its_lowest_number(learning):
    def point(minutes, psnr_db, colour, cycle):
        return {"minutes": minutes, "iters": int(minutes * 100), "ema_psnr_db": psnr_db, "ema_colour_swd_255": colour,
                "ema_cycle_l1_255": cycle, "live_psnr_db": 0.0, "live_colour_swd_255": 0.0, "live_cycle_l1_255": 0.0}
    curve = {"points": [point(0, 17.0, 30.0, 0.0),  # the untrained start: lowest cycle, but never kept
                        point(2, 25.0, 12.0, 3.0), point(4, 26.0, 9.0, 2.0), point(10, 24.0, 10.0, 1.5)]}
    chosen = learning.selections(curve)
    assert chosen["end"] == {"minutes": 10, "psnr_db": 24.0, "colour_swd_255": 10.0}
    assert chosen["peak"] == {"minutes": 4, "psnr_db": 26.0, "colour_swd_255": 9.0}
    assert chosen["colour_swd_255"]["minutes"] == 4 and chosen["cycle_l1_255"]["minutes"] == 10
    table = learning.selection_table({"winter": {"references": {"truth_colour_swd_255": 4.5}, "recipes": {"fast": curve}}})
    assert ("| winter | fast | 24.00 dB (10.0 min) | 26.00 dB (4.0 min) | 26.00 dB (4.0 min) | 24.00 dB (10.0 min) "
            "| 9.00; 4.50 |") in table
    old = {"points": [{"minutes": 0, "iters": 0, "ema_psnr_db": 17.0}, {"minutes": 1, "iters": 9, "ema_psnr_db": 20.0}]}
    assert learning.selections(old) is None and learning.selection_table({"w": {"recipes": {"fast": old}}}) == ""


def test_the_gap_table_judges_a_recipe_also_by_the_checkpoint_the_colour_distance_keeps(learning):
    def point(minutes, psnr_db, colour):
        return {"minutes": minutes, "iters": int(minutes * 100), "ema_psnr_db": psnr_db, "ema_colour_swd_255": colour}
    curve = {"points": [point(0, 17.0, 30.0), point(3, 26.0, 9.0), point(10, 23.0, 12.0)]}
    old = {"points": [{"minutes": 0, "iters": 0, "ema_psnr_db": 17.0}, {"minutes": 10, "iters": 900, "ema_psnr_db": 25.0}]}
    results = {"winter": {"references": {"ceiling_psnr_db": 35.0}, "recipes": {"lever": curve, "fast": old}}}
    assert learning.gaps(results)["lever"]["mean"] == pytest.approx(12.0)
    kept = learning.gaps(results, "colour_swd_255")
    assert kept["lever"]["mean"] == pytest.approx(9.0) and "fast" not in kept  # fast's curve lacks the numbers
    table = learning.gap_table(results)
    assert "| lever (kept by the lowest colour distance) | 1 | 9.00 dB | winter (9.00 dB) |" in table
    assert "fast (kept by" not in table
