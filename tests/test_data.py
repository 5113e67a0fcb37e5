import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.data import Preprocess, UnpairedDataset, unpaired_dataset_from_folders
from cyclegan.images import find_images, load_image, to_image, to_tensor

from conftest import write_images


def test_find_images_is_recursive_sorted_and_filters_extensions(tmp_path):
    write_images(tmp_path / "x" / "sub", 2)
    write_images(tmp_path / "x", 1)
    (tmp_path / "x" / "notes.txt").write_text("hi")
    found = find_images(tmp_path / "x")
    assert [p.relative_to(tmp_path / "x").as_posix() for p in found] == ["img_000.png", "sub/img_000.png", "sub/img_001.png"]
    assert len(find_images(tmp_path / "x", max_count=2)) == 2


def test_tensor_range_and_round_trip():
    array = np.array([[[0, 128, 255]]], dtype=np.uint8)
    t = to_tensor(Image.fromarray(array))
    assert t.shape == (3, 1, 1)
    assert t.flatten().tolist() == pytest.approx([-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6)
    assert np.array_equal(np.asarray(to_image(t)), array)


def test_resize_and_crop_is_bicubic_resize_then_crop(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    prep = Preprocess("resize_and_crop", load_size=36, crop_size=32, flip=False)
    out = prep(image, torch.Generator().manual_seed(5))
    resized = to_tensor(image.resize((36, 36), Image.BICUBIC))
    assert out.shape == (3, 32, 32)
    windows = [resized[:, t:t + 32, l:l + 32] for t in range(5) for l in range(5)]
    assert any(torch.equal(out, w) for w in windows)


def test_flip_happens_about_half_the_time():
    image = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    prep = Preprocess("crop", load_size=32, crop_size=32, flip=True)
    plain = to_tensor(image)
    flips = sum(torch.equal(prep(image, torch.Generator().manual_seed(s)), plain.flip(-1)) for s in range(400))
    assert 150 < flips < 250


def test_exif_orientation_is_applied_and_grayscale_is_one_channel(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (40, 20), "red").save(path, exif=exif)
    assert load_image(path).size == (20, 40)
    assert load_image(path, channels=1).mode == "L"


def test_unreadable_file_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"<html>not an image</html>")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(bad)


def test_dataset_length_order_and_per_epoch_reshuffle(tmp_path):
    a = write_images(tmp_path / "A", 5, size=(32, 32))
    b = write_images(tmp_path / "B", 3, size=(32, 32), seed=9)
    prep = Preprocess("crop", 32, 32, flip=False)
    ds = UnpairedDataset(a, b, preprocess=prep, seed=1)
    assert len(ds) == 5
    ds.set_epoch(1)
    epoch1 = [ds[i]["A_path"] for i in range(5)]
    assert sorted(epoch1) == sorted(map(str, a))  # every A once per epoch
    ds.set_epoch(2)
    assert [ds[i]["A_path"] for i in range(5)] != epoch1
    serial = UnpairedDataset(a, b, preprocess=prep, serial=True)
    assert [serial[i]["A_path"] for i in range(5)] == list(map(str, a))
    assert [serial[i]["B_path"] for i in range(5)] == list(map(str, b + b[:2]))


def test_items_are_a_pure_function_of_seed_epoch_and_index(tmp_path):
    a = write_images(tmp_path / "A", 4)
    b = write_images(tmp_path / "B", 4, seed=3)
    prep = Preprocess("resize_and_crop", 36, 32, flip=True)
    first, second = (UnpairedDataset(a, b, preprocess=prep, seed=7) for _ in range(2))
    first.set_epoch(3)
    second.set_epoch(3)
    for i in (2, 0, 3):
        assert torch.equal(first[i]["A"], second[i]["A"]) and torch.equal(first[i]["B"], second[i]["B"])


def test_corrupt_image_is_skipped_with_a_warning(tmp_path, caplog):
    a = write_images(tmp_path / "A", 2, size=(32, 32))
    a[0].write_bytes(b"")
    b = write_images(tmp_path / "B", 2, size=(32, 32))
    ds = UnpairedDataset(a, b, preprocess=Preprocess("crop", 32, 32, flip=False), serial=True)
    item = ds[0]
    assert item["A_path"] == str(a[1])
    assert "img_000.png" in caplog.text


def test_direction_btoa_swaps_the_folders(dataroot):
    prep = Preprocess("crop", 32, 32)
    ds = unpaired_dataset_from_folders(dataroot, direction="BtoA", preprocess=prep)
    assert "trainB" in ds.paths_a[0].as_posix() and "trainA" in ds.paths_b[0].as_posix()


@pytest.mark.parametrize("remove", ["trainA", "trainB"])
def test_missing_or_empty_domain_says_what_to_fix(dataroot, remove):
    for p in (dataroot / remove).iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match=f"{remove} holds no images"):
        unpaired_dataset_from_folders(dataroot, preprocess=Preprocess())
    (dataroot / remove).rmdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        unpaired_dataset_from_folders(dataroot, preprocess=Preprocess())


@pytest.mark.parametrize("side, rounded", [(286, 288), (284, 284), (285, 284), (287, 288), (282, 280), (2, 4)])
def test_preprocess_none_resizes_each_side_to_the_nearest_multiple_of_4_as_the_official_code(side, rounded):
    """The official __make_power_2 rounds with Python's round (halves to the even multiple: 282 -> 280)."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, 40, 3), dtype=np.uint8))
    out = Preprocess("none", flip=False)(image, torch.Generator().manual_seed(0))
    assert out.shape == (3, rounded, 40)
    if side == rounded:
        assert torch.equal(out, to_tensor(image))  # already a multiple: left untouched
    else:
        assert torch.equal(out, to_tensor(image.resize((40, rounded), Image.BICUBIC)))
