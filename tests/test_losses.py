"""R + λD: every distortion gives a finite loss and gradients; SSIM-medical behaves like SSIM."""

import pytest
import torch

from medvae.losses import DISTORTIONS, RateDistortionLoss, ssim_medical
from tests.conftest import small_model


@pytest.mark.parametrize("distortion", DISTORTIONS)
def test_each_distortion_gives_finite_loss_and_gradients(distortion):
    model = small_model("medvae")
    x = torch.rand(2, 1, 64, 64)
    losses = RateDistortionLoss(0.3, distortion)(model(x), x)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    grads = [p.grad for n, p in model.named_parameters() if not n.endswith("quantiles")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_rate_term_is_bits_per_pixel():
    x = torch.rand(1, 1, 32, 32)
    likelihoods = {"y": torch.full((1, 4, 2, 2), 0.5)}  # 16 symbols at 1 bit each
    out = RateDistortionLoss(1.0, "mse")({"x_hat": x, "likelihoods": likelihoods}, x)
    assert float(out["bpp"]) == pytest.approx(16 / 1024)
    assert float(out["distortion"]) == 0.0


def test_ssim_medical_is_one_for_identical_images_and_drops_with_noise():
    x = torch.rand(1, 1, 48, 48)
    assert float(ssim_medical(x, x)) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert float(ssim_medical(noisy, x)) < 0.9


def test_ssim_medical_exponents_change_the_value():
    x = torch.rand(1, 1, 48, 48)
    y = (x * 0.8 + 0.1).clamp(0, 1)  # luminance and contrast both off
    plain = float(ssim_medical(y, x, alpha=1.0, beta=1.0))
    medical = float(ssim_medical(y, x))
    assert plain != pytest.approx(medical)


def test_unknown_distortion_is_refused():
    with pytest.raises(ValueError, match="distortion"):
        RateDistortionLoss(1.0, "l1")
