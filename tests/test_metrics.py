"""Reconstruction metrics against hand-computed values and torchmetrics."""
import math

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from dvl_helpers import metrics


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g)


def _noisy(x, std, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_mse_of_constant_offset(images):
    x = images * 0.5
    assert metrics.mse(x + 0.1, x).item() == pytest.approx(0.01, rel=1e-5)
    assert metrics.mse(x, x).item() == 0.0


def test_mse_per_image(images):
    x = images * 0.5
    offsets = torch.tensor([0.0, 0.1, 0.2, 0.3]).view(4, 1, 1, 1)
    per_image = metrics.mse(x + offsets, x, reduction="none")
    assert per_image.shape == (4,)
    torch.testing.assert_close(per_image, torch.tensor([0.0, 0.01, 0.04, 0.09]), rtol=1e-4, atol=1e-7)
    assert metrics.mse(x + offsets, x).item() == pytest.approx(0.035, rel=1e-4)


def test_psnr_of_known_mse(images):
    x = images * 0.5
    # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert metrics.psnr(x + 0.1, x).item() == pytest.approx(20.0, abs=1e-3)
    # data range 255, MSE 1 -> 48.13 dB
    assert metrics.psnr(x * 255 + 1, x * 255, data_range=255.0).item() == pytest.approx(
        20 * math.log10(255), abs=1e-3)


def test_psnr_averages_per_image_values(images):
    x = images * 0.5
    offsets = torch.tensor([0.1, 0.01, 0.1, 0.01]).view(4, 1, 1, 1)
    per_image = metrics.psnr(x + offsets, x, reduction="none")
    torch.testing.assert_close(per_image, torch.tensor([20.0, 40.0, 20.0, 40.0]), rtol=0, atol=1e-2)
    # the mean of per-image PSNRs (30 dB), not the PSNR of the mean MSE (~23 dB)
    assert metrics.psnr(x + offsets, x).item() == pytest.approx(30.0, abs=1e-2)


def test_psnr_of_identical_images_is_finite(images):
    value = metrics.psnr(images, images)
    assert torch.isfinite(value) and value.item() > 100


def test_nmse_with_given_variance(images):
    x = images * 0.5
    assert metrics.nmse(x + 0.1, x, data_variance=0.05).item() == pytest.approx(0.2, rel=1e-4)


def test_nmse_default_is_variance_of_batch(images):
    x = images
    x_rec = _noisy(x, 0.1)
    expected = ((x_rec - x) ** 2).mean() / x.var()
    assert metrics.nmse(x_rec, x).item() == pytest.approx(expected.item(), rel=1e-5)
    # predicting the mean image of a batch gives about 1
    assert metrics.nmse(torch.full_like(x, x.mean().item()), x).item() == pytest.approx(1.0, abs=1e-2)


def test_nmse_reduction_none(images):
    out = metrics.nmse(_noisy(images, 0.1), images, data_variance=0.1, reduction="none")
    assert out.shape == (4,)
    torch.testing.assert_close(out, metrics.mse(_noisy(images, 0.1), images, "none") / 0.1)


@pytest.mark.parametrize("variance", [0.0, -1.0])
def test_nmse_rejects_non_positive_variance(images, variance):
    with pytest.raises(ValueError, match="data_variance must be positive"):
        metrics.nmse(images, images, data_variance=variance)


def test_nmse_of_constant_batch_needs_a_variance(images):
    with pytest.raises(ValueError, match="data_variance must be positive"):
        metrics.nmse(images, torch.full_like(images, 0.5))
    assert metrics.nmse(images, torch.full_like(images, 0.5), data_variance=1.0) > 0


def test_ssim_of_identical_images_is_one(images):
    assert metrics.ssim(images, images).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_decreases_with_noise(images):
    values = [metrics.ssim(_noisy(images, std), images).item() for std in (0.02, 0.1, 0.3)]
    assert 1.0 > values[0] > values[1] > values[2]


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_agrees_with_torchmetrics(images, channels):
    x = images[:, :channels]
    x_rec = _noisy(x, 0.1)
    ours = metrics.ssim(x_rec, x)
    theirs = structural_similarity_index_measure(x_rec, x, data_range=1.0)  # window 11, sigma 1.5
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    per_image = structural_similarity_index_measure(x_rec, x, data_range=1.0, reduction="none")
    torch.testing.assert_close(metrics.ssim(x_rec, x, reduction="none"), per_image)


def test_ssim_of_small_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 8, 8, generator=g)
    assert metrics.ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    noisy = metrics.ssim(_noisy(x, 0.2), x, reduction="none")
    assert noisy.shape == (5,)
    assert torch.isfinite(noisy).all() and (noisy < 0.99).all()


@pytest.mark.parametrize("fn", [metrics.mse, metrics.nmse, metrics.psnr, metrics.ssim])
def test_reduction_none_gives_one_value_per_image(images, fn):
    out = fn(_noisy(images, 0.1), images, reduction="none")
    assert out.shape == (4,)
    torch.testing.assert_close(fn(_noisy(images, 0.1), images), out.mean())


@pytest.mark.parametrize("fn", [metrics.mse, metrics.nmse, metrics.psnr, metrics.ssim])
def test_shape_mismatch_is_an_error(images, fn):
    with pytest.raises(ValueError) as err:
        fn(images[:, :1], images)
    assert "(4, 1, 32, 32)" in str(err.value) and "(4, 3, 32, 32)" in str(err.value)


@pytest.mark.parametrize("fn", [metrics.mse, metrics.psnr, metrics.ssim])
def test_non_image_input_is_an_error(fn):
    x = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\].*\(3, 32, 32\)"):
        fn(x, x)


def test_unknown_reduction(images):
    with pytest.raises(ValueError, match="'mean' or 'none'.*'sum'"):
        metrics.mse(images, images, reduction="sum")


def test_reconstruction_report(images):
    x_rec = _noisy(images, 0.05)
    report = metrics.reconstruction_report(x_rec, images, data_variance=0.1)
    assert set(report) == {"mse", "nmse", "psnr", "ssim"}
    assert all(isinstance(v, float) for v in report.values())
    assert report["nmse"] == pytest.approx(report["mse"] / 0.1, rel=1e-5)
    assert report["psnr"] == pytest.approx(metrics.psnr(x_rec, images).item())


def test_metrics_accept_half_precision(images):
    x = images.to(torch.bfloat16)
    assert metrics.mse(x, x).dtype == torch.float32
    assert metrics.ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
