"""Batched augmentations on the data's device, with random parameters drawn per sample.

Each image in a batch gets its own rotation, shift, zoom, flip, colour jitter, erased
rectangle and noise; the whole batch is transformed at once with tensor ops (one
`affine_grid` + `grid_sample` for all the geometry), never one sample at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Ranges at strength 1; each shrinks linearly to nothing at strength 0.
ROTATION_DEG = 25.0  # rotation in [-25, 25] degrees
SHIFT = 0.15  # translation up to 15 % of the image size, per axis
ZOOM = 0.2  # scale in [0.8, 1.2]
FLIP_P = 0.5  # RGB only: horizontal flip probability (digits and letters must not be mirrored)
JITTER = 0.4  # RGB only: brightness and contrast factors in [0.6, 1.4], as SimCLR's ColorJitter(0.4, 0.4)
ERASE_P = 0.5  # probability that a rectangle is erased
ERASE_AREA = (0.02, 0.33)  # erased share of the image, torchvision RandomErasing's defaults
ERASE_RATIO = (0.3, 3.3)  # erased rectangle's height / width, torchvision RandomErasing's defaults
NOISE_STD = 0.1  # gaussian noise: pixel units for images, standard deviations for (standardised) table rows
GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision's rgb_to_grayscale


def augment(x: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly augment each sample of a batch independently.

    Images get a random affine map (rotation, shift, zoom; plus a horizontal flip and
    brightness/contrast jitter for RGB), a randomly erased rectangle and gaussian noise, and
    are clamped to [0, 1]. Table rows get gaussian jitter.

    Args:
        x: (B, C, H, W) images in [0, 1], or (B, F) standardised table rows.
        strength: in [0, 1]; 0 returns `x` itself, 1 is the strongest setting (the ranges above).
        generator: source of all randomness, on `x.device`; a seeded one makes the output reproducible.
            None uses torch's global generator.

    Returns:
        A tensor of the same shape, dtype and device as `x`.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"augment: strength must be between 0 and 1 (got {strength})")
    if x.ndim not in (2, 4):
        raise ValueError(f"augment: x must be (B, C, H, W) images or (B, F) rows (got shape {tuple(x.shape)})")
    if strength == 0:
        return x
    if x.ndim == 2:
        return x + NOISE_STD * strength * _normal(x, generator)
    x = warp(x, random_theta(x, strength, generator))
    if x.shape[1] == 3:
        x = _colour_jitter(x, strength, generator)
    x = _random_erase(x, strength, generator)
    x = x + NOISE_STD * strength * _normal(x, generator)
    return x.clamp(0, 1)


def affine_theta(
    angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Per-sample affine maps in `F.affine_grid`'s convention (output coordinates -> input coordinates).

    The image content is flipped horizontally where `flip` is -1, rotated by `angle` (clockwise on
    screen, as the y axis points down), scaled by `scale` about the centre, then moved by `shift`.

    Args:
        angle: (B,) radians.
        scale: (B,) zoom factor; > 1 enlarges the content.
        shift: (B, 2) translation (x, y) as a fraction of the image width and height; > 0 is right/down.
        flip: (B,) 1 to keep, -1 to mirror left-right.
        height, width: image size in pixels; rotation is done in pixel units, so it stays a rotation
            on non-square images.

    Returns:
        (B, 2, 3) theta.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = height / width
    # inverse of content map p -> scale * R(angle) @ flip @ p, written in normalised [-1, 1] coordinates
    linear = torch.stack(
        [
            torch.stack([flip * cos, flip * sin * aspect], -1),
            torch.stack([-sin / aspect, cos], -1),
        ],
        -2,
    ) / scale.view(-1, 1, 1)  # (B, 2, 2)
    offset = -linear @ (2 * shift).unsqueeze(-1)  # (B, 2, 1); a fraction f of the size is 2f normalised units
    return torch.cat([linear, offset], -1)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W), (B, 2, 3) -> (B, C, H, W): bilinear resampling, zeros outside the image."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _uniform(x: torch.Tensor, shape, low: float, high: float, generator) -> torch.Tensor:
    """Uniform draws in [low, high) on x's device and dtype."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


def _normal(x: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def random_theta(x: torch.Tensor, strength: float, generator) -> torch.Tensor:
    """(B, C, H, W) -> (B, 2, 3): one random rotation, zoom, shift (and flip, for RGB) per image."""
    batch, channels, height, width = x.shape
    degrees = ROTATION_DEG * strength
    angle = torch.deg2rad(_uniform(x, batch, -degrees, degrees, generator))  # (B,)
    scale = _uniform(x, batch, 1 - ZOOM * strength, 1 + ZOOM * strength, generator)  # (B,)
    shift = _uniform(x, (batch, 2), -SHIFT * strength, SHIFT * strength, generator)  # (B, 2)
    flip = torch.ones_like(angle)
    if channels == 3:
        flip = torch.where(_uniform(x, batch, 0, 1, generator) < FLIP_P * strength, -1.0, 1.0).to(x.dtype)
    return affine_theta(angle, scale, shift, flip, height, width)


def _colour_jitter(x: torch.Tensor, strength: float, generator) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): per-image brightness, then contrast around the image's grey mean."""
    shape = (x.shape[0], 1, 1, 1)
    brightness = _uniform(x, shape, 1 - JITTER * strength, 1 + JITTER * strength, generator)
    contrast = _uniform(x, shape, 1 - JITTER * strength, 1 + JITTER * strength, generator)
    x = (x * brightness).clamp(0, 1)
    grey = sum(w * x[:, c : c + 1] for c, w in enumerate(GREY))  # (B, 1, H, W), no host-to-device copy
    grey_mean = grey.mean((2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (grey_mean + contrast * (x - grey_mean)).clamp(0, 1)


def _random_erase(x: torch.Tensor, strength: float, generator) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): with probability ERASE_P * strength, zero one random rectangle per image."""
    batch, _, height, width = x.shape
    area = _uniform(x, batch, *ERASE_AREA, generator) * height * width  # (B,) pixels
    ratio = torch.exp(_uniform(x, batch, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), generator))
    rect_h = torch.sqrt(area * ratio).round().clamp(1, height)  # (B,)
    rect_w = torch.sqrt(area / ratio).round().clamp(1, width)
    top = (_uniform(x, batch, 0, 1, generator) * (height - rect_h + 1)).floor()  # (B,)
    left = (_uniform(x, batch, 0, 1, generator) * (width - rect_w + 1)).floor()
    erase = _uniform(x, batch, 0, 1, generator) < ERASE_P * strength  # (B,)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    inside_rows = (rows >= top.view(-1, 1, 1)) & (rows < (top + rect_h).view(-1, 1, 1))  # (B, H, 1)
    inside_cols = (cols >= left.view(-1, 1, 1)) & (cols < (left + rect_w).view(-1, 1, 1))  # (B, 1, W)
    mask = inside_rows & inside_cols & erase.view(-1, 1, 1)  # (B, H, W)
    return x.masked_fill(mask.unsqueeze(1), 0.0)
