"""A VAE's decoder run with NumPy from a snapshot's arrays: pages decode latent points without torch.

The two decoders of `models.VAE`, layer for layer (tests/test_train.py checks both against torch):
- transposed-conv (images whose sides divide by 4): `fc` -> (64, H/4, W/4) -> ReLU -> ConvTranspose2d
  (64 -> 32, kernel 4, stride 2, padding 1) -> ReLU -> ConvTranspose2d (32 -> C) -> sigmoid;
- MLP (other inputs): Linear layers with ReLU between them, a linear output, reshaped to the item.
"""

from __future__ import annotations

import numpy as np

PREFIX = "decoder."  # where a snapshot keeps the decoder's state dict


def decode(arrays: dict[str, np.ndarray], points: np.ndarray) -> np.ndarray:
    """(P, D) latent points -> (P, *item shape) float32: what the run's decoder gave at this snapshot.

    Args:
        arrays: a VAE snapshot's arrays: the decoder's weights under PREFIX, "originals" (R, *item shape).
        points: (P, D) latent points.
    """
    weights = {key[len(PREFIX) :]: value.astype(np.float64) for key, value in arrays.items() if key.startswith(PREFIX)}
    shape = arrays["originals"].shape[1:]
    x = np.asarray(points, dtype=np.float64)
    if "fc.weight" in weights:
        c, h, w = shape
        x = _relu((x @ weights["fc.weight"].T + weights["fc.bias"]).reshape(len(x), -1, h // 4, w // 4))
        x = _relu(conv_transpose(x, weights["net.1.weight"], weights["net.1.bias"], stride=2, padding=1))
        x = conv_transpose(x, weights["net.3.weight"], weights["net.3.bias"], stride=2, padding=1)
        return (1 / (1 + np.exp(-x))).astype(np.float32)
    layers = sorted({key.rsplit(".", 1)[0] for key in weights}, key=lambda name: [int(p) for p in name.split(".")])
    for i, name in enumerate(layers):
        x = x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]
        x = _relu(x) if i < len(layers) - 1 else x
    return x.reshape(len(x), *shape).astype(np.float32)


def conv_transpose(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """`torch.nn.functional.conv_transpose2d`: (N, Ci, H, W), weight (Ci, Co, K, K) -> (N, Co, H', W')
    with H' = (H - 1) * stride - 2 * padding + K. Each input pixel adds its kernel, scaled, at
    stride-spaced places; the padding is then cropped from every side."""
    n, _, h, w = x.shape
    co, k = weight.shape[1], weight.shape[2]
    taps = np.einsum("nihw,iokl->noklhw", x, weight)  # (N, Co, K, K, H, W): each pixel times each tap
    full = np.zeros((n, co, (h - 1) * stride + k, (w - 1) * stride + k))
    for i in range(k):
        for j in range(k):
            full[:, :, i : i + (h - 1) * stride + 1 : stride, j : j + (w - 1) * stride + 1 : stride] += taps[:, :, i, j]
    cropped = full[:, :, padding : full.shape[2] - padding, padding : full.shape[3] - padding]
    return cropped + bias[None, :, None, None]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)
