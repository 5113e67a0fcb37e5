"""CUT's PatchNCE (--lambda_NCE): the loss against the formula written out, the encoder taps, and training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cyclegan.config import ModelConfig, build_experiment
from cyclegan.losses import patch_nce_loss
from cyclegan.models import build_generator
from cyclegan.run import fit
from cyclegan.training import Trainer


def reference_nce(query, key, images, temperature):
    """The PatchNCE of CUT, one patch at a time: -log softmax of the positive among the image's other patches."""
    total, count = 0.0, 0
    per_image = query.shape[0] // images
    for b in range(images):
        q, k = query[b * per_image:(b + 1) * per_image], key[b * per_image:(b + 1) * per_image]
        for i in range(per_image):
            logits = [q[i] @ k[i]] + [q[i] @ k[j] if j != i else torch.tensor(-10.0) for j in range(per_image)]
            logits = torch.stack(logits) / temperature
            total += -torch.log_softmax(logits, 0)[0]
            count += 1
    return total / count


@pytest.mark.numerics
def test_patch_nce_is_the_formula_of_cut():
    torch.manual_seed(0)
    query, key = F.normalize(torch.randn(2 * 7, 16), dim=1), F.normalize(torch.randn(2 * 7, 16), dim=1)
    got = patch_nce_loss(query, key, images=2, temperature=0.07)
    assert torch.allclose(got, reference_nce(query.double(), key.double(), 2, 0.07).float(), rtol=1e-5, atol=1e-6)


def test_patch_nce_rewards_patches_that_match_their_own_place_and_holds_the_keys_fixed():
    torch.manual_seed(0)
    key = F.normalize(torch.randn(64, 32), dim=1)
    matched = patch_nce_loss(key.clone(), key, images=1)
    shuffled = patch_nce_loss(key[torch.randperm(64)], key, images=1)
    assert matched < 0.1 < 3.0 < shuffled
    query, keys = key.clone().requires_grad_(), key.clone().requires_grad_()
    patch_nce_loss(query, keys, images=1).backward()
    assert query.grad is not None and keys.grad is None


def test_the_encoder_taps_of_a_resnet_generator():
    for blocks, netG in ((9, "resnet_9blocks"), (6, "resnet_6blocks")):
        net = build_generator(ModelConfig(netG=netG, ngf=4))
        x = torch.rand(1, 3, 32, 32)
        features = net.encode(x)
        assert torch.equal(features[0], x)
        assert [f.shape[1] for f in features] == net.encoder_channels() == [3, 8, 16, 16, 16]
        assert [f.shape[-1] for f in features] == [32, 16, 8, 8, 8]


def test_training_with_patch_nce_updates_the_heads_and_resumes_exactly(tiny_config):
    options = {"lambda_NCE": 1.0, "num_patches": 32}
    whole = Trainer(tiny_config(name="whole", max_iters=4, **options))
    before = {k: v.clone() for k, v in whole.model.h_ab.state_dict().items()}
    fit(whole, show_progress=False)
    assert any(not torch.equal(before[k], v) for k, v in whole.model.h_ab.state_dict().items())  # trained with G
    parts = Trainer(tiny_config(name="parts", max_iters=2, **options))
    fit(parts, show_progress=False)
    resumed = Trainer.resume(parts.run_dir, overrides={"max_iters": 4})
    fit(resumed, show_progress=False)
    for name, net in whole.networks().items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, resumed.networks()[name].state_dict()[key]), (name, key)
    last = (whole.run_dir / "metrics.jsonl").read_text().strip().splitlines()[-1]
    assert '"NCE_A"' in last and '"NCE_B"' in last


@pytest.mark.parametrize("options,words", [
    ({"lambda_NCE": 1.0, "netG": "unet_128"}, "ResNet generator"),
    ({"lambda_NCE": 1.0, "model": "pix2pix", "netG": "resnet_6blocks"}, "lambda_NCE"),
    ({"lambda_NCE": -1.0}, "lambda_NCE"),
])
def test_patch_nce_is_refused_where_it_cannot_work(options, words):
    with pytest.raises(ValueError, match=words):
        build_experiment(options)
