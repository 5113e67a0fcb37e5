import math

import pytest
import torch

from cyclegan.losses import GANLoss, cycle_loss, identity_loss, residual_loss

PRED = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])  # (1, 1, 2, 2)


def test_lsgan_is_mean_squared_error_against_one_and_zero():
    loss = GANLoss("lsgan")
    assert loss(PRED, True).item() == pytest.approx(((0.5 - 1) ** 2 + 4 + 1 + 1) / 4)
    assert loss(PRED, False).item() == pytest.approx((0.25 + 1 + 4 + 0) / 4)


def test_vanilla_is_binary_cross_entropy_on_logits():
    loss = GANLoss("vanilla")
    sigmoid = lambda v: 1 / (1 + math.exp(-v))
    values = [0.5, -1.0, 2.0, 0.0]
    assert loss(PRED, True).item() == pytest.approx(sum(-math.log(sigmoid(v)) for v in values) / 4, rel=1e-6)
    assert loss(PRED, False).item() == pytest.approx(sum(-math.log(1 - sigmoid(v)) for v in values) / 4, rel=1e-6)


def test_unknown_gan_mode_lists_valid_ones():
    with pytest.raises(ValueError, match="lsgan, vanilla"):
        GANLoss("wgan")


def test_cycle_and_identity_are_weighted_mean_l1():
    a = torch.tensor([0.0, 1.0, -1.0, 0.5])
    b = torch.tensor([0.5, 0.0, -1.0, 0.0])
    assert cycle_loss(a, b, 10.0).item() == pytest.approx(10 * (0.5 + 1 + 0 + 0.5) / 4)
    assert identity_loss(a, b, 5.0).item() == pytest.approx(5 * 0.5)


def test_the_residual_loss_measures_the_change_from_the_clamped_base_and_leaves_the_base_unpulled():
    base = torch.tensor([0.2, 1.4, -0.5, 0.0], requires_grad=True)  # 1.4: a colour map may leave [-1, 1]
    residual = torch.tensor([0.1, 0.0, -0.3, 0.0], requires_grad=True)
    output = (base + residual).clamp(-1.0, 1.0)  # as a global-residual generator adds them
    loss = residual_loss(output, base, 4.0)
    assert loss.item() == pytest.approx(4 * (0.1 + 0.0 + 0.3 + 0.0) / 4)
    loss.backward()
    assert torch.equal(base.grad, torch.zeros(4))  # the same pull on both sides: only the residual is held
    assert residual.grad.tolist() == pytest.approx([1.0, 0.0, -1.0, 0.0])


def test_a_smooth_cycle_loss_is_quadratic_below_beta_and_l1_beyond():
    reconstructed = torch.tensor([0.05, 1.0, -1.0, 0.5], requires_grad=True)
    real = torch.tensor([0.0, 0.0, -1.0, 0.0])
    loss = cycle_loss(reconstructed, real, 10.0, beta=0.1)  # errors 0.05 (below beta), 1.0, 0, 0.5
    assert loss.item() == pytest.approx(10 * (0.5 * 0.05**2 / 0.1 + (1.0 - 0.05) + 0 + (0.5 - 0.05)) / 4)
    loss.backward()
    # the pull on the small error is half the L1's (0.05 / 0.1); the large errors get the L1's full pull
    assert reconstructed.grad.tolist() == pytest.approx([10 * 0.5 / 4, 10 / 4, 0.0, 10 / 4])


def test_gan_loss_gradient_flows_to_prediction():
    pred = PRED.clone().requires_grad_()
    GANLoss("lsgan")(pred, True).backward()
    assert torch.allclose(pred.grad, 2 * (PRED - 1) / 4)
