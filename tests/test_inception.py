"""The FID Inception network: its shapes, the weights file's key layout, and finding its weights."""

from __future__ import annotations

import pytest
import torch

from cyclegan.download import DownloadError
from cyclegan.inception import FEATURE_DIM, FIDInception, find_weights, load_inception


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FIDInception().eval()


def test_features_are_2048_wide_for_any_input_size(net):
    with torch.inference_mode():
        for size in ((64, 64), (120, 90)):
            assert net(torch.rand(2, 3, *size) * 2 - 1).shape == (2, FEATURE_DIM)


def test_state_dict_has_the_weights_file_layout(net):
    state = net.state_dict()
    convs = [k for k in state if k.endswith(".conv.weight")]
    assert len(convs) == 94  # Inception-v3 without its auxiliary classifier
    assert len(state) == 94 * 6 + 2  # conv weight; bn weight, bias, running mean and var, batches tracked; fc
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7_2.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert all(not k.startswith("AuxLogits") for k in state)


def test_weights_load_from_a_file_without_batch_counters(tmp_path, net):
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # as the 2015 file
    torch.save(state, tmp_path / "w.pth")
    loaded = load_inception(tmp_path / "w.pth")
    x = torch.rand(1, 3, 80, 80) * 2 - 1
    with torch.inference_mode():
        assert torch.allclose(loaded(x), net(x))
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not the FID Inception weights file: no Conv2d_1a_3x3.conv.weight"):
        load_inception(tmp_path / "bad.pth")


def test_missing_weights_offline_say_which_file_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"place pt_inception-2015-12-05-6726825d.pth at .*hub/checkpoints"):
        find_weights(download=False)


def test_a_download_with_the_wrong_checksum_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    from test_download import Server

    server = Server()
    try:
        server.files["/weights.pth"] = b"not the inception weights"
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
        with pytest.raises(DownloadError, match="SHA-256 .* not 6726825d"):
            find_weights(url=f"{server.url}/weights.pth", show_progress=False)
        assert not list((tmp_path / "hub").rglob("*.pth*"))
    finally:
        server.close()
