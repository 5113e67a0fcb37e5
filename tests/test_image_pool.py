import pytest
import torch

from cyclegan.image_pool import ImagePool


def images(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)


def test_size_zero_returns_the_batch_itself():
    batch = images([1, 2])
    assert ImagePool(0).query(batch) is batch


def test_filling_pool_stores_and_returns_the_new_images():
    pool = ImagePool(3)
    out = pool.query(images([1, 2]))
    assert out.flatten().tolist() == [1, 2]
    out = pool.query(images([3]))
    assert out.flatten().tolist() == [3]
    assert [t.item() for t in pool.images] == [1, 2, 3]


def test_full_pool_swaps_with_probability_one_half():
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    pool.query(images([0, 1, 2, 3]))
    new = 100.0
    swapped = 0
    trials = 2000
    for i in range(trials):
        before = [t.item() for t in pool.images]
        out = pool.query(images([new + i])).item()
        after = [t.item() for t in pool.images]
        if out == new + i:
            assert after == before  # returned the new one, pool unchanged
        else:
            swapped += 1
            assert out in before  # returned an old image ...
            index = before.index(out)
            assert after[index] == new + i  # ... and the new one took its place
            assert after[:index] + after[index + 1:] == before[:index] + before[index + 1:]
    assert swapped / trials == pytest.approx(0.5, abs=0.04)


def test_returned_images_are_detached_and_stored_copies_do_not_alias():
    pool = ImagePool(2)
    x = images([1.0]).requires_grad_()
    out = pool.query(x * 1)
    assert not out.requires_grad
    out.add_(5)
    assert pool.images[0].item() == 1.0


def test_state_round_trip_reproduces_the_same_choices():
    pool = ImagePool(2, torch.Generator().manual_seed(3))
    pool.query(images([1, 2]))
    state = pool.state_dict()
    first = [pool.query(images([i])).item() for i in range(10, 20)]
    copy = ImagePool(2, torch.Generator().manual_seed(999))
    copy.load_state_dict(state)
    assert [copy.query(images([i])).item() for i in range(10, 20)] == first
