"""The shared degradation operator (lrfer.faces.degrade)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from lrfer.faces.degrade import (
    DegradationConfig,
    downsample,
    gaussian_blur,
    jpeg_compress,
    random_degrade,
    to_native,
    upsample,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def faces() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 48, 48, generator=g)


@pytest.mark.parametrize("r", [8, 12, 16, 24])
def test_to_native_shape_and_range(faces: torch.Tensor, r: int) -> None:
    out = to_native(faces, r)
    assert out.shape == (4, 1, r, r)
    assert out.dtype == faces.dtype
    assert out.min() >= 0 and out.max() <= 1


def test_to_native_is_area_averaging(faces: torch.Tensor) -> None:
    out = to_native(faces, 16)
    expected = faces.view(4, 1, 16, 3, 16, 3).mean(dim=(3, 5))
    torch.testing.assert_close(out, expected)
    # global mean is preserved exactly by area averaging when the factor is an integer
    torch.testing.assert_close(out.mean(dim=(2, 3)), faces.mean(dim=(2, 3)))


@pytest.mark.parametrize("r", [8, 12, 16, 24])
def test_area_downsample_by_whole_factors_equals_interpolate_area(faces: torch.Tensor, r: int) -> None:
    expected = torch.nn.functional.interpolate(faces, size=(r, r), mode="area")
    torch.testing.assert_close(downsample(faces, r, "area"), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size, r", [(48, 20), (48, 7), (24, 16), (16, 12), (24, 9)])
def test_area_downsample_by_other_ratios_is_exact_area(size: int, r: int) -> None:
    """OpenCV's INTER_AREA, not torch's "area" (adaptive pooling, whose windows overlap there): the
    evaluation's 24 px faces for a 16 px model came out 3 points less accurate than the pipeline's."""
    import cv2

    x = torch.rand(3, 1, size, size, generator=torch.Generator().manual_seed(0))
    expected = np.stack([cv2.resize(face[0].numpy(), (r, r), interpolation=cv2.INTER_AREA) for face in x])
    out = downsample(x, r, "area")
    assert np.abs(out[:, 0].numpy() - expected).max() < 1e-5
    assert (out - torch.nn.functional.interpolate(x, size=(r, r), mode="area")).abs().max() > 1e-3


@pytest.mark.parametrize("factor", [2, 3, 4, 6])
def test_block_mean_equals_avg_pool_on_any_layout(factor: int) -> None:
    from lrfer.faces.degrade import block_mean

    x = torch.rand(3, 2, 24, 24, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(block_mean(x, factor), torch.nn.functional.avg_pool2d(x, factor), rtol=0, atol=1e-6)


@pytest.mark.parametrize("r", [8, 12, 16, 24, 20])
def test_area_of_constant_image_stays_constant(r: int) -> None:
    x = torch.full((2, 1, 48, 48), 0.37)
    torch.testing.assert_close(to_native(x, r), torch.full((2, 1, r, r), 0.37))


def test_identity_when_already_at_size(faces: torch.Tensor) -> None:
    assert to_native(faces, 48) is faces
    for method in ("area", "bicubic", "bilinear"):
        assert downsample(faces, 48, method) is faces


def test_bad_method_raises(faces: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="lanczos"):
        downsample(faces, 16, "lanczos")


def test_upsample_shape_and_clamped(faces: torch.Tensor) -> None:
    up = upsample(to_native(faces, 12), 48)
    assert up.shape == faces.shape
    assert up.min() >= 0 and up.max() <= 1


ALL_CORRUPTIONS = DegradationConfig(resolution=12, size_jitter=3, random_method=True, blur_sigma_max=1.5,
                                    noise_std_max=0.05, jpeg_prob=0.5)


def test_random_degrade_deterministic_under_seeded_generator(faces: torch.Tensor) -> None:
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(123)
        runs.append(torch.stack([random_degrade(faces, ALL_CORRUPTIONS, g) for _ in range(6)]))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    other = torch.Generator().manual_seed(124)
    different = torch.stack([random_degrade(faces, ALL_CORRUPTIONS, other) for _ in range(6)])
    assert not torch.equal(runs[0], different)


@pytest.mark.parametrize("r", [8, 16, 24])
def test_random_degrade_respects_resolution(faces: torch.Tensor, r: int) -> None:
    cfg = DegradationConfig(resolution=r, size_jitter=4, random_method=True, blur_sigma_max=1.0,
                            noise_std_max=0.05, jpeg_prob=1.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        out = random_degrade(faces, cfg, g)
        assert out.shape == (4, 1, r, r)
        assert out.min() >= 0 and out.max() <= 1


def test_random_degrade_default_config_is_to_native(faces: torch.Tensor) -> None:
    torch.testing.assert_close(random_degrade(faces, DegradationConfig(resolution=16)), to_native(faces, 16))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_gaussian_blur_preserves_constant_image(sigma: float) -> None:
    x = torch.full((1, 3, 20, 20), 0.6)
    out = gaussian_blur(x, sigma)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)


def test_gaussian_blur_smooths_and_keeps_mean(faces: torch.Tensor) -> None:
    out = gaussian_blur(faces, 1.5)
    assert out.shape == faces.shape
    assert out.std() < 0.5 * faces.std()
    torch.testing.assert_close(out.mean(), faces.mean(), atol=0.01, rtol=0)
    assert gaussian_blur(faces, 0.0) is faces


def test_jpeg_round_trip_close_to_input() -> None:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    smooth = (0.2 + 0.6 * (0.5 * xx + 0.5 * yy)).expand(2, 1, 32, 32).contiguous()
    out = jpeg_compress(smooth, 90)
    assert out.shape == smooth.shape
    assert out.dtype == smooth.dtype
    assert (out - smooth).abs().mean() < 0.02
    color = smooth.expand(2, 3, 32, 32).contiguous()
    assert (jpeg_compress(color, 90) - color).abs().mean() < 0.02
    # lower quality loses more on a noisy image
    noisy = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert (jpeg_compress(noisy, 10) - noisy).abs().mean() > (jpeg_compress(noisy, 95) - noisy).abs().mean()


@pytest.mark.parametrize("corruption", [{"blur_sigma_max": 1.5}, {"noise_std_max": 0.05}, {"jpeg_prob": 1.0}],
                         ids=["blur", "noise", "jpeg"])
def test_a_corruption_switched_on_is_applied(faces: torch.Tensor, corruption: dict[str, float]) -> None:
    """Blur, noise and a JPEG round trip (certain at jpeg_prob=1) each change the face: a skipped step or an
    inverted draw would train on clean faces without a word."""
    g = torch.Generator().manual_seed(0)
    out = random_degrade(faces, DegradationConfig(resolution=16, **corruption), g)  # type: ignore[arg-type]
    assert (out - to_native(faces, 16)).abs().mean() > 1e-3


def test_noisy_faces_stay_in_unit_range() -> None:
    """Noise on white and black faces is clipped to 0..1, the range of every face the model is served."""
    extremes = torch.cat([torch.ones(2, 1, 48, 48), torch.zeros(2, 1, 48, 48)])
    out = random_degrade(extremes, DegradationConfig(resolution=16, noise_std_max=0.5), torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1 and (out - to_native(extremes, 16)).abs().max() > 0.1


def test_a_jittered_size_is_brought_to_the_resolution_by_area_or_bicubic(faces: torch.Tensor) -> None:
    """A native size drawn above the resolution is shrunk to it by area averaging; one below it is enlarged
    bicubically (the "downsample then resize back" protocol)."""
    cfg = DegradationConfig(resolution=12, size_jitter=4)
    sides = set()
    for seed in range(12):
        size = 12 + int(torch.randint(-4, 5, (), generator=torch.Generator().manual_seed(seed)))  # the first draw
        small = downsample(faces, size, "area")
        expected = small if size == 12 else downsample(small, 12, "area") if size > 12 else upsample(small, 12)
        torch.testing.assert_close(random_degrade(faces, cfg, torch.Generator().manual_seed(seed)), expected)
        sides.add((size > 12) - (size < 12))
    assert sides == {-1, 0, 1}


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_bicubic_and_bilinear_shrinking_is_anti_aliased(method: str) -> None:
    """A 1 px checkerboard shrunk 3x becomes even grey; sampled without anti-aliasing it stays black and white."""
    board = ((torch.arange(48)[:, None] + torch.arange(48)[None]) % 2).float().view(1, 1, 48, 48)
    assert (downsample(board, 16, method) - 0.5).abs().max() < 0.05


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_bicubic_and_bilinear_shrinking_stays_in_unit_range(method: str) -> None:
    """Bicubic shrinking rings about 1 % past a sharp edge; faces are served in 0..1, so it is clamped."""
    edge = torch.zeros(1, 1, 48, 48)
    edge[..., 24:] = 1.0
    for size in (12, 16, 20):
        out = downsample(edge, size, method)
        assert out.min() >= 0 and out.max() <= 1


def test_random_method_draws_every_kernel(faces: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The low-resolution recipes draw the kernel among area, bicubic and bilinear per batch."""
    import lrfer.faces.degrade as degrade

    drawn: set[str] = set()

    def recording(x: torch.Tensor, size: int, method: str = "area") -> torch.Tensor:
        drawn.add(method)
        return downsample(x, size, method)

    monkeypatch.setattr(degrade, "downsample", recording)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        random_degrade(faces[:1], DegradationConfig(resolution=16, random_method=True), g)
    assert drawn == set(degrade.DOWNSAMPLE_METHODS)


def test_upsample_is_opencvs_bicubic() -> None:
    """upsample is OpenCV's INTER_CUBIC resize, clipped to 0..1 (bilinear differs by up to 0.2)."""
    import cv2

    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    expected = np.clip(cv2.resize(x[0, 0].numpy(), (48, 48), interpolation=cv2.INTER_CUBIC), 0, 1)
    assert np.allclose(upsample(x, 48)[0, 0].numpy(), expected, atol=1e-5)


def test_a_non_square_image_of_the_right_width_is_still_resized() -> None:
    """Only an image already size x size is returned as it is."""
    assert downsample(torch.rand(1, 1, 24, 16), 16).shape == (1, 1, 16, 16)
