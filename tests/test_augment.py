import math

import pytest
import torch

from contrast_core import augment as aug
from contrast_core.augment import affine_theta, augment, warp

SHAPES = [(6, 1, 8, 8), (6, 1, 28, 28), (6, 3, 32, 32), (6, 2)]


def _seeded(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _line_image(height: int = 8, width: int = 8) -> torch.Tensor:
    image = torch.zeros(1, 1, height, width)
    image[0, 0, 2, 1:6] = 1  # a short horizontal line off the centre
    return image


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_dtype_device_and_range_are_kept(shape):
    x = torch.rand(shape)
    out = augment(x, 1.0, _seeded())
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    if x.ndim == 4:
        assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)


@pytest.mark.parametrize("shape", SHAPES)
def test_strength_zero_is_identity(shape):
    x = torch.rand(shape)
    assert torch.equal(augment(x, 0.0, _seeded()), x)


@pytest.mark.parametrize("shape", SHAPES)
def test_same_seed_same_output_other_seed_other_output(shape):
    x = torch.rand(shape)
    first, again, other = augment(x, 0.7, _seeded(1)), augment(x, 0.7, _seeded(1)), augment(x, 0.7, _seeded(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_out_of_range_is_refused(strength):
    with pytest.raises(ValueError, match="strength"):
        augment(torch.rand(2, 2), strength)


def test_other_shapes_are_refused():
    with pytest.raises(ValueError, match=r"got shape \(2, 8, 8\)"):
        augment(torch.rand(2, 8, 8), 0.5)


@pytest.mark.parametrize("shape", SHAPES)
def test_identical_inputs_get_different_augmentations(shape):
    x = torch.rand(shape[1:]).expand(shape).contiguous()  # one sample repeated B times
    out = augment(x, 1.0, _seeded())
    for i in range(1, shape[0]):
        assert not torch.equal(out[i], out[0])


# --- geometry ---


def test_rotation_by_90_degrees_matches_rot90():
    image, one = _line_image(), torch.ones(1)
    theta = affine_theta(torch.tensor([math.pi / 2]), one, torch.zeros(1, 2), one, 8, 8)
    rotated = warp(image, theta)
    torch.testing.assert_close(rotated, torch.rot90(image, k=-1, dims=(-2, -1)), atol=1e-5, rtol=0)
    assert not torch.equal(rotated, image)  # the line has moved


def test_rotation_on_a_wide_image_stays_a_rotation():
    image = torch.zeros(1, 1, 8, 16)
    image[0, 0, 3:5, 6:10] = 1  # a 2 x 4 bar at the centre
    one = torch.ones(1)
    rotated = warp(image, affine_theta(torch.tensor([math.pi / 2]), one, torch.zeros(1, 2), one, 8, 16))
    expected = torch.zeros(1, 1, 8, 16)
    expected[0, 0, 2:6, 7:9] = 1  # the same bar standing up, still 2 x 4 pixels
    torch.testing.assert_close(rotated, expected, atol=1e-5, rtol=0)


def test_flip_matches_torch_flip():
    image, one = _line_image(), torch.ones(1)
    flipped = warp(image, affine_theta(torch.zeros(1), one, torch.zeros(1, 2), -one, 8, 8))
    torch.testing.assert_close(flipped, image.flip(-1), atol=1e-6, rtol=0)


def test_shift_moves_content_right_and_down():
    image, one = _line_image(), torch.ones(1)
    shifted = warp(image, affine_theta(torch.zeros(1), one, torch.tensor([[0.25, 0.125]]), one, 8, 8))
    expected = torch.zeros_like(image)
    expected[0, 0, 3, 3:8] = 1  # 2 pixels right, 1 down
    torch.testing.assert_close(shifted, expected, atol=1e-6, rtol=0)


def test_theta_by_hand():
    angle = torch.tensor([math.pi / 6])
    theta = affine_theta(angle, torch.tensor([2.0]), torch.tensor([[0.1, 0.0]]), torch.ones(1), 8, 8)
    c, s = math.cos(math.pi / 6) / 2, math.sin(math.pi / 6) / 2
    # inverse map: rotate by -angle, shrink by 2, after moving back by 0.2 normalised units along x
    expected = torch.tensor([[[c, s, -0.2 * c], [-s, c, 0.2 * s]]])
    torch.testing.assert_close(theta, expected)


def test_random_affine_parameters_are_per_sample_and_in_range():
    x = torch.zeros(500, 1, 28, 28)
    theta = aug.random_theta(x, 0.4, _seeded())  # (B, 2, 3)
    angle = torch.rad2deg(torch.atan2(theta[:, 0, 1], theta[:, 0, 0]))
    scale = 1 / torch.linalg.det(theta[:, :, :2]).sqrt()
    assert angle.abs().max() <= 10 + 1e-4 and angle.abs().max() > 9  # 25 degrees * 0.4
    assert scale.min() >= 0.92 - 1e-5 and scale.max() <= 1.08 + 1e-5  # 1 +- 0.2 * 0.4
    assert len(torch.unique(theta.flatten(1), dim=0)) == 500


def test_flips_only_colour_images_about_half_the_time():
    grey = aug.random_theta(torch.zeros(1000, 1, 8, 8), 1.0, _seeded())
    colour = aug.random_theta(torch.zeros(1000, 3, 8, 8), 1.0, _seeded())
    mirrored = lambda theta: torch.linalg.det(theta[:, :, :2]) < 0
    assert not mirrored(grey).any()
    assert 0.4 < mirrored(colour).float().mean() < 0.6  # FLIP_P = 0.5


def test_geometry_differs_per_sample_through_augment():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10:18, 10:18] = 1
    bright = augment(image.expand(64, -1, -1, -1), 1.0, _seeded())[:, 0] > 0.5  # noise (std 0.1) stays below
    largest_square = bright.sum((1, 2)).max()  # at most (8 * 1.2) ** 2 pixels
    covered = bright.any(0).sum()  # a shared draw would put every square in the same place: covered ~ largest
    assert covered > 2 * largest_square


# --- erasing, colour, tables ---


def test_erasing_zeroes_one_rectangle_in_about_half_the_images():
    out = aug._random_erase(torch.ones(400, 1, 28, 28), 1.0, _seeded())
    erased = out[:, 0] == 0  # (B, H, W)
    hit = erased.any((1, 2))
    assert 0.4 < hit.float().mean() < 0.6  # ERASE_P * strength = 0.5
    for mask in erased[hit]:
        rows, cols = mask.any(1).sum(), mask.any(0).sum()
        assert mask.sum() == rows * cols  # a full rectangle
        assert 0.02 * 784 / 2 <= mask.sum() <= 0.33 * 784 * 1.5  # its area, give or take rounding
    assert len(torch.unique(erased[hit].flatten(1), dim=0)) > 0.9 * hit.sum()  # a rectangle of its own each


def test_erasing_probability_follows_strength():
    out = aug._random_erase(torch.ones(1000, 1, 8, 8), 0.4, _seeded())
    assert 0.15 < (out == 0).any(-1).any(-1).float().mean() < 0.25  # 0.5 * 0.4


def test_colour_jitter_is_per_sample_and_stays_in_range():
    image = torch.rand(1, 3, 8, 8) * 0.5 + 0.25
    out = aug._colour_jitter(image.expand(200, -1, -1, -1), 1.0, _seeded())
    brightness = out.mean((1, 2, 3))
    contrast = out.std((1, 2, 3))
    assert len(torch.unique(brightness)) == 200 and len(torch.unique(contrast)) == 200
    assert out.min() >= 0 and out.max() <= 1
    assert brightness.min() < image.mean() * 0.75 and brightness.max() > image.mean() * 1.25  # factors 0.6..1.4


def test_table_rows_get_independent_gaussian_jitter():
    x = torch.tensor([[0.5, -1.0]]).expand(10_000, 2)
    out = augment(x, 0.5, _seeded())
    jitter = out - x
    torch.testing.assert_close(jitter.std(0), torch.full((2,), 0.05), atol=0.002, rtol=0)  # 0.1 * strength
    torch.testing.assert_close(jitter.mean(0), torch.zeros(2), atol=0.003, rtol=0)
    assert abs(torch.corrcoef(jitter.T)[0, 1]) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("shape", SHAPES)
def test_runs_on_the_gpu_with_a_gpu_generator(shape):
    x = torch.rand(shape, device="cuda")
    out = augment(x, 1.0, _seeded(device="cuda"))
    assert out.device == x.device and out.shape == x.shape
    assert torch.equal(out, augment(x, 1.0, _seeded(device="cuda")))
