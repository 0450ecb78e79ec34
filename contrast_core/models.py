"""Encoders (input -> embedding), the VAE (encoder -> (mu, logvar) -> z -> decoder) and the adversarial
autoencoder (encoder -> z -> decoder, with a discriminator that tells codes from the prior's samples)."""

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


def _convolutional(input_shape: tuple[int, ...]) -> bool:
    """Whether an autoencoder of these inputs is convolutional: images whose sides divide by 4."""
    return len(input_shape) == 3 and input_shape[1] % 4 == 0 and input_shape[2] % 4 == 0


def _autoencoder_body(input_shape: tuple[int, ...], out_features: int) -> nn.Module:
    return (CNNEncoder if _convolutional(input_shape) else MLPEncoder)(input_shape, out_features)


def _decoder(input_shape: tuple[int, ...], latent_dim: int) -> nn.Module:
    """(B, latent_dim) -> (B, *input_shape): transposed convolutions for images whose sides divide by 4
    (sigmoid output), an MLP with a linear output otherwise (contrast_core.decoding reads both)."""
    if _convolutional(input_shape):
        return ConvDecoder(input_shape, latent_dim)
    flat = math.prod(input_shape)
    return nn.Sequential(mlp(latent_dim, flat, hidden=(32, 128, 256)), nn.Unflatten(1, input_shape))


class VAE(nn.Module):
    """Variational autoencoder (Kingma & Welling 2014) whose mean `mu` is the embedding.

    Images whose sides divide by 4 get a CNN encoder and a transposed-conv decoder with a
    sigmoid output (pixels in [0, 1]); other inputs an MLP both ways with a linear output.
    """

    def __init__(self, input_shape: tuple[int, ...], embedding_dim: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.encoder = _autoencoder_body(input_shape, 2 * embedding_dim)  # -> (mu, logvar)
        self.decoder = _decoder(input_shape, embedding_dim)

    def forward(self, x, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)  # keeps exp(logvar) finite early in training
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * logvar).exp() * eps
        return VAEOutput(mu, logvar, z, self.decoder(z))

    def embed(self, x):  # (B, *input_shape) -> (B, D): the mean, no sampling
        mu, _ = self.encoder(x).chunk(2, dim=1)
        return mu


class AAE(nn.Module):
    """Adversarial autoencoder of Makhzani et al., "Adversarial Autoencoders" (2015): a deterministic
    encoder q(z | x) whose code `z` is the embedding, and a decoder (the VAE's, same layers).

    Instead of the VAE's KL term, a `Discriminator` learns to tell codes from samples of a `Prior`, and
    the encoder learns to fool it, so the codes' distribution comes to match the prior's (train.py
    alternates the phases; losses.py holds the terms). The discriminator is not part of this module:
    the embedding model stays encoder + decoder.
    """

    def __init__(self, input_shape: tuple[int, ...], embedding_dim: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.encoder = _autoencoder_body(input_shape, embedding_dim)
        self.decoder = _decoder(input_shape, embedding_dim)

    def forward(self, x) -> tuple[torch.Tensor, torch.Tensor]:  # (B, *input_shape) -> (B, D), (B, *input_shape)
        z = self.encoder(x)
        return z, self.decoder(z)

    def embed(self, x):  # (B, *input_shape) -> (B, D): the code
        return self.encoder(x)


class Discriminator(nn.Module):
    """D(z): a logit, high where `z` looks drawn from the prior, low where it looks like a code.

    An MLP `D + classes -> 256 -> 256 -> 1` (the paper: two hidden layers of 1000 units, for 784-pixel
    MNIST). With `classes` > 0 it also sees each item's class as a one-hot vector (the paper's
    supervised variant): with a mixture prior, a code of class c is then judged against mode c alone.
    """

    def __init__(self, latent_dim: int, classes: int = 0, hidden=(256, 256)):
        super().__init__()
        self.classes = classes
        self.net = mlp(latent_dim + classes, 1, hidden)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:  # (B, D), (B,) -> (B,)
        if self.classes:
            z = torch.cat([z, nn.functional.one_hot(labels, self.classes).to(z.dtype)], dim=1)
        return self.net(z).squeeze(1)


MIXTURE_RADIUS = 4.0  # distance of each mode's mean from the origin
MIXTURE_STD = 0.5  # each mode's standard deviation per axis: 10 modes on a circle of radius 4 lie 2.5 apart


def mixture_means(dim: int, classes: int, radius: float = MIXTURE_RADIUS) -> torch.Tensor:
    """(classes, dim) mode means, all `radius` from the origin: `radius * e_c` (one axis per class, every
    two modes equally far apart) where there are at least as many axes as classes, else `classes`
    points evenly spread on a circle in the first two axes (angle 2 pi c / classes)."""
    if dim >= classes:
        return radius * torch.eye(classes, dim)
    angle = 2 * math.pi * torch.arange(classes) / classes
    circle = radius * torch.stack([angle.cos(), angle.sin()], dim=1)  # (classes, 2)
    return nn.functional.pad(circle, (0, dim - 2))


class Prior:
    """The AAE's prior p(z) in `dim` dimensions: N(0, I), or with `classes` > 0 a mixture of one Gaussian
    per class, N(mean_c, MIXTURE_STD^2 I) with the means of `mixture_means`; a sample for an item of
    class c is drawn from mode c."""

    def __init__(self, dim: int, classes: int = 0, device: torch.device | str = "cpu"):
        self.dim, self.classes = dim, classes
        self.means = mixture_means(dim, classes).to(device) if classes else None  # (classes, D)

    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) class ids (only their count matters for N(0, I)) -> (B, D) samples."""
        eps = torch.randn((len(labels), self.dim), generator=generator, device=labels.device)
        if self.means is None:
            return eps
        return self.means.index_select(0, labels) + MIXTURE_STD * eps


MODELS = [*ENCODERS, "vae", "aae"]


def build(name: str, input_shape: tuple[int, ...], embedding_dim: int, weights: str | None = None) -> nn.Module:
    """The model called `name` (an encoder of ENCODERS, "vae" or "aae") for inputs of `input_shape`."""
    if name == "vae":
        return VAE(input_shape, embedding_dim)
    if name == "aae":
        return AAE(input_shape, embedding_dim)
    if name == "resnet18":
        return ResNet18Encoder(input_shape, embedding_dim, weights)
    return ENCODERS[name](input_shape, embedding_dim)


def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Embeddings (N, D) of `x` in eval mode and without gradients, in chunks."""
    was_training = model.training
    model.eval()
    fn = model.embed if isinstance(model, VAE | AAE) else model
    with torch.no_grad():
        out = torch.cat([fn(chunk) for chunk in x.split(batch_size)])
    model.train(was_training)
    return out
