"""Encoders (input -> embedding) and the VAE (encoder -> (mu, logvar) -> z -> decoder)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


def mlp(in_features: int, out_features: int, hidden=(256, 128, 32)) -> nn.Sequential:
    """The classic Siamese MLP: in -> 256 -> 128 -> 32 -> out, ReLU between layers."""
    sizes = [in_features, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes, sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], out_features))


class MLPEncoder(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], embedding_dim: int):
        super().__init__()
        self.net = mlp(math.prod(input_shape), embedding_dim)

    def forward(self, x):  # (B, *input_shape) -> (B, D)
        return self.net(x)


class CNNEncoder(nn.Module):
    """Two conv blocks (32, 64 channels) and a global average pool: small images, any size >= 4."""

    def __init__(self, input_shape: tuple[int, ...], embedding_dim: int):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"model: 'cnn' needs images, got input shape {tuple(input_shape)}")
        channels = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(128, embedding_dim)

    def forward(self, x):  # (B, C, H, W) -> (B, D)
        return self.head(self.features(x))


class ResNet18Encoder(nn.Module):
    """torchvision's ResNet-18, random init, with its input layer fitted to the channel count.

    Loads local weights from `weights` (a state-dict file) when the user has them; nothing is downloaded.
    """

    def __init__(self, input_shape: tuple[int, ...], embedding_dim: int, weights: str | None = None):
        super().__init__()
        from torchvision.models import resnet18

        if len(input_shape) != 3:
            raise ValueError(f"model: 'resnet18' needs images, got input shape {tuple(input_shape)}")
        self.net = resnet18(weights=None)
        if weights:
            self.net.load_state_dict(_state_dict(weights, self.net.state_dict()))
        if input_shape[0] != 3:
            self.net.conv1 = nn.Conv2d(input_shape[0], 64, 7, stride=2, padding=3, bias=False)
        self.net.fc = nn.Linear(self.net.fc.in_features, embedding_dim)

    def forward(self, x):  # (B, C, H, W) -> (B, D)
        return self.net(x)


def _state_dict(path: str, fits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A weights file's state dict, checked against the model's own (`fits`).

    Raises:
        ValueError: "weights: ..." in one line: a missing or unreadable file, not a state dict, or
            names or shapes that do not fit.
    """
    if not Path(path).is_file():
        raise ValueError(f"weights: file not found: {path}")
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a safe checkpoint
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ValueError(f"weights: {path} could not be loaded ({type(exc).__name__}: {reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights: {path} holds a {type(state).__name__}, not a state dict of tensors")
    missing = sorted(set(fits) - set(state))
    unknown = sorted(set(state) - set(fits))
    wrong = sorted(k for k in set(fits) & set(state) if state[k].shape != fits[k].shape)
    if missing or unknown or wrong:
        parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                 (("missing", missing), ("unknown", unknown), ("of the wrong shape", wrong)) if keys]  # fmt: skip
        raise ValueError(f"weights: {path} does not fit resnet18: " + ", ".join(parts))
    return state


ENCODERS: dict[str, type[nn.Module]] = {
    "mlp": MLPEncoder,
    "cnn": CNNEncoder,
    "resnet18": ResNet18Encoder,
}


@dataclass
class VAEOutput:
    mu: torch.Tensor  # (B, D)
    logvar: torch.Tensor  # (B, D)
    z: torch.Tensor  # (B, D) a sample mu + sigma * eps
    recon: torch.Tensor  # (B, *input_shape)


class ConvDecoder(nn.Module):
    """z -> 64 x (H/4) x (W/4) -> two x2 transposed convs -> (C, H, W) in [0, 1]."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        c, h, w = input_shape
        self.start = (64, h // 4, w // 4)
        self.fc = nn.Linear(latent_dim, math.prod(self.start))
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, c, 4, stride=2, padding=1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, z):
        return self.net(self.fc(z).view(len(z), *self.start))


class VAE(nn.Module):
    """Variational autoencoder (Kingma & Welling 2014) whose mean `mu` is the embedding.

    Images whose sides divide by 4 get a CNN encoder and a transposed-conv decoder with a
    sigmoid output (pixels in [0, 1]); other inputs an MLP both ways with a linear output.
    """

    def __init__(self, input_shape: tuple[int, ...], embedding_dim: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        conv = len(input_shape) == 3 and input_shape[1] % 4 == 0 and input_shape[2] % 4 == 0
        body = CNNEncoder if conv else MLPEncoder
        self.encoder = body(input_shape, 2 * embedding_dim)  # -> (mu, logvar)
        if conv:
            self.decoder = ConvDecoder(input_shape, embedding_dim)
        else:
            flat = math.prod(input_shape)
            self.decoder = nn.Sequential(mlp(embedding_dim, flat, hidden=(32, 128, 256)), nn.Unflatten(1, input_shape))

    def forward(self, x, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)  # keeps exp(logvar) finite early in training
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * logvar).exp() * eps
        return VAEOutput(mu, logvar, z, self.decoder(z))

    def embed(self, x):  # (B, *input_shape) -> (B, D): the mean, no sampling
        mu, _ = self.encoder(x).chunk(2, dim=1)
        return mu


MODELS = [*ENCODERS, "vae"]


def build(name: str, input_shape: tuple[int, ...], embedding_dim: int, weights: str | None = None) -> nn.Module:
    """The model called `name` (an encoder of ENCODERS, or "vae") for inputs of `input_shape`."""
    if name == "vae":
        return VAE(input_shape, embedding_dim)
    if name == "resnet18":
        return ResNet18Encoder(input_shape, embedding_dim, weights)
    return ENCODERS[name](input_shape, embedding_dim)


def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Embeddings (N, D) of `x` in eval mode and without gradients, in chunks."""
    was_training = model.training
    model.eval()
    fn = model.embed if isinstance(model, VAE) else model
    with torch.no_grad():
        out = torch.cat([fn(chunk) for chunk in x.split(batch_size)])
    model.train(was_training)
    return out
