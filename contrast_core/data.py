"""Datasets: `DATASETS` maps a name to a loader; `load` splits it and puts it on a device.

A loader returns raw `(x, y, classes, kind)`: images as (N, C, H, W) float32 in [0, 1] (every image set,
a folder of the user's own included: see `_folder`),
tables as (N, F) float32 standardised features, labels as (N,) int64 class ids.
`load` adds the train/test split and the fixed evaluation subset, all decided by the seed.

torchvision, scikit-learn and pandas are imported inside the loaders that use them: a worker pays
only for its own dataset. The pages never import this module (the names are in `rules.DATASETS`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from contrast_core import folders, tables

DATA_HOME = Path(os.environ.get("CONTRAST_DATA", "data"))  # torchvision download/root folder

DIGITS_60K = 60_000  # as many training images as MNIST
TOY_CENTERS = 4  # blobs
TOY_CIRCLES_FACTOR = 0.5  # circles: inner radius / outer radius
TARGET_BINS = 10  # a continuous target is split and subsampled stratified by its deciles


class DatasetUnavailable(Exception):
    """The dataset's files are missing and could not be downloaded; the message is one user-facing line."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A whole labelled dataset on one device, with its split.

    Attributes:
        x: (N, C, H, W) float32 in [0, 1] for images; (N, F) float32 standardised for tables.
        y: (N,) int64 class ids 0..num_classes-1; for a continuous target, the decile it falls in
            (TARGET_BINS bins), which only stratifies the split and the evaluation subset.
        classes: class names; `classes[y[i]]` names point i (a decile's range for a continuous target).
        kind: "image" or "table".
        train_index: (N_train,) int64, the points training may sample from.
        test_index: (N_test,) int64, held-out points, disjoint from `train_index`.
        eval_index: (E,) int64, the fixed evaluation subset for snapshots, a subset of `test_index`.
        target: (N,) float32, a continuous target (a regression set), or None for classes. Two items
            are then similar when their targets differ by at most a run's `delta`, and `y` is not a class.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    kind: str
    train_index: torch.Tensor
    test_index: torch.Tensor
    eval_index: torch.Tensor
    target: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: str | torch.device) -> Dataset:
        """A copy with every tensor on `device`."""
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        moved = {name: t.to(device) for name, t in tensors.items() if isinstance(t, torch.Tensor)}
        return dataclasses.replace(self, **moved)


def load(
    name: str,
    *,
    seed: int = 0,
    eval_size: int = 500,
    test_fraction: float = 0.2,
    noise: float = 0.1,
    n_samples: int = 1000,
    csv_path: str | None = None,
    csv_label: str = "label",
    csv_continuous: bool = False,
    max_rows: int = tables.MAX_ROWS,
    data_path: str | None = None,
    image_size: int = 32,
    max_images: int = folders.MAX_IMAGES,
    download: bool = True,
    device: str | torch.device = "cpu",
) -> Dataset:
    """Build dataset `name` from `DATASETS`, split train/test deterministically by seed, pick eval subset.

    The split is stratified: each class holds out about `test_fraction` of its points. The
    evaluation subset takes `min(eval_size, len(test_index))` test points, drawn round-robin over
    the classes so that it stays balanced when it is smaller than the test set.

    Args:
        name: a key of `DATASETS`.
        seed: decides the toy data, the split and the evaluation subset.
        eval_size: points embedded at every snapshot.
        test_fraction: share of the points held out, in (0, 1).
        noise: toy sets only; spread of the points.
        n_samples: toy sets only; number of points.
        csv_path: csv only; the file to read.
        csv_label: csv only; the label column.
        csv_continuous: csv only; the label column is a continuous target, not classes.
        max_rows: csv only; larger files are refused.
        data_path: folder only; a folder holding one sub-folder of images per class.
        image_size: folder only; every image is resized and centre-cropped to this many pixels a side.
        max_images: folder only; larger folders are refused.
        download: torchvision sets only; fetch missing files from the internet.
        device: where the returned tensors live.

    Raises:
        ValueError: unknown name, bad split arguments, a bad csv file or image folder; the message names
            the field.
        DatasetUnavailable: a torchvision set whose files are missing and could not be downloaded.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown '{name}' (choose from {', '.join(DATASETS)})")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: must be between 0 and 1 (got {test_fraction})")
    if eval_size < 1:
        raise ValueError(f"eval_size: must be at least 1 (got {eval_size})")
    x, y, classes, kind = DATASETS[name](
        seed=seed,
        noise=noise,
        n_samples=n_samples,
        csv_path=csv_path,
        csv_label=csv_label,
        csv_continuous=csv_continuous,
        max_rows=max_rows,
        data_path=data_path,
        image_size=image_size,
        max_images=max_images,
        download=download,
    )
    target = None
    if y.is_floating_point():  # a continuous target: its deciles stand in for classes where strata are needed
        target, (y, classes) = y.float(), deciles(y)
    generator = torch.Generator().manual_seed(seed)
    train_index, test_index = split(y, test_fraction, generator)
    eval_index = test_index[_round_robin(y[test_index], generator)[:eval_size]].sort().values
    dataset = Dataset(x, y, classes, kind, train_index, test_index, eval_index, target)
    return dataset.to(device)


def deciles(target: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """(N,) continuous target -> ((N,) int64 bin of each point, the bins' ranges): TARGET_BINS bins of
    equal counts (fewer where values repeat), for stratified splits of a regression set."""
    edges = torch.quantile(target.double(), torch.linspace(0, 1, TARGET_BINS + 1, dtype=torch.float64)).unique()
    bins = torch.bucketize(target.double(), edges[1:-1], right=True)  # (N,) in 0..len(edges) - 2
    used, y = bins.unique(return_inverse=True)
    names = [f"{edges[b]:.3g} to {edges[b + 1]:.3g}" for b in used.tolist()]
    return y, names


def split(y: torch.Tensor, test_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified random split of round(test_fraction * N) points, shared out over the classes.

    Each class holds out its quota `test_fraction * size` rounded down, and the points still
    missing go to the classes with the largest remainders (so tiny classes still add up).

    Args:
        y: (N,) int64 class ids.
        test_fraction: share of each class held out.
        generator: CPU generator; the only source of randomness.

    Returns:
        (train_index, test_index): sorted int64 indices, disjoint, together covering 0..N-1.
    """
    order = torch.randperm(len(y), generator=generator)  # (N,)
    rank = torch.empty_like(order)
    rank[order] = _rank_within_class(y[order])  # random position of each point inside its class
    held_out = _held_out_per_class(torch.bincount(y), test_fraction, generator)  # (C,)
    is_test = rank < held_out[y]  # (N,)
    test_index, train_index = is_test.nonzero().flatten(), (~is_test).nonzero().flatten()
    if len(test_index) == 0 or len(train_index) == 0:
        raise ValueError(f"test_fraction: {test_fraction} of {len(y)} points leaves an empty train or test set")
    return train_index, test_index


def _held_out_per_class(class_size: torch.Tensor, test_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """(C,) -> (C,): the largest-remainder share of round(test_fraction * N) test points per class."""
    quota = class_size * test_fraction  # (C,)
    held_out = quota.floor().long()
    missing = round(float(class_size.sum()) * test_fraction) - int(held_out.sum())
    shuffled = torch.randperm(len(quota), generator=generator)  # equal remainders: a random class wins
    by_remainder = torch.sort((quota - held_out)[shuffled], descending=True, stable=True).indices
    held_out[shuffled[by_remainder[:missing]]] += 1
    return held_out


def _rank_within_class(y: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,): how many earlier entries of `y` share each entry's class."""
    by_class = torch.sort(y, stable=True).indices  # (N,) grouped by class, original order kept inside
    class_size = torch.bincount(y)  # (C,)
    class_start = torch.cumsum(class_size, 0) - class_size  # (C,) first slot of each class in `by_class`
    rank = torch.empty_like(y)
    rank[by_class] = torch.arange(len(y)) - class_start[y[by_class]]
    return rank


def _round_robin(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random order of 0..N-1 that visits the classes in turn: one of each, then the next of each..."""
    order = torch.randperm(len(y), generator=generator)  # (N,)
    turn = _rank_within_class(y[order])  # (N,) the turn at which each shuffled point is visited
    return order[torch.sort(turn, stable=True).indices]


def _standardise(features: np.ndarray) -> torch.Tensor:
    """(N, F) -> (N, F) float32 with mean 0 and std 1 per column (constant columns become 0)."""
    from sklearn.preprocessing import StandardScaler

    return torch.as_tensor(StandardScaler().fit_transform(features), dtype=torch.float32)


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(y, dtype=torch.int64)


# --- loaders: keyword arguments they need, **_ for the rest; return (x, y, classes, kind) ---


def _diabetes(**_):
    """scikit-learn's diabetes regression set (442 patients, 10 standardised features, bundled): the target
    is a measure of disease progression one year on (25 to 346), a continuous target."""
    from sklearn.datasets import load_diabetes

    found = load_diabetes()
    return _standardise(found.data), torch.as_tensor(found.target, dtype=torch.float32), [], "table"


def _digits(**_):
    """scikit-learn's 8x8 digits (1797 images, bundled: works offline)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # (N, 1, 8, 8); pixels are 0..16
    return x, _labels(digits.target), [str(d) for d in range(10)], "image"


def _digits_60k(*, seed: int, **_):
    """MNIST-sized, offline: 60,000 28x28 images made from `digits`, each upsampled to 20x20 in a
    28x28 frame (as MNIST centres its digits) and moved by its own random affine jitter."""
    from contrast_core.augment import random_theta, warp

    x, y, classes, _ = _digits()
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(len(x), (DIGITS_60K,), generator=generator)
    framed = F.pad(F.interpolate(x[rows], size=(20, 20), mode="bilinear", align_corners=False), (4, 4, 4, 4))
    images = torch.cat([warp(chunk, random_theta(chunk, 0.5, generator)) for chunk in framed.split(10_000)])
    return images.clamp(0, 1), y[rows], classes, "image"  # (60000, 1, 28, 28)


def _check_toy(n_samples: int, noise: float) -> None:
    if n_samples < 10:
        raise ValueError(f"n_samples: must be at least 10 (got {n_samples})")
    if noise < 0:
        raise ValueError(f"noise: must be >= 0 (got {noise})")


def _moons(*, seed: int, noise: float, n_samples: int, **_):
    """Two interleaving half circles; label 0 is the upper one."""
    from sklearn.datasets import make_moons

    _check_toy(n_samples, noise)
    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _standardise(x), _labels(y), ["upper", "lower"], "table"


def _circles(*, seed: int, noise: float, n_samples: int, **_):
    """Two concentric circles; label 0 is the outer one."""
    from sklearn.datasets import make_circles

    _check_toy(n_samples, noise)
    x, y = make_circles(n_samples=n_samples, noise=noise, factor=TOY_CIRCLES_FACTOR, random_state=seed)
    return _standardise(x), _labels(y), ["outer", "inner"], "table"


def _blobs(*, seed: int, noise: float, n_samples: int, **_):
    """Four gaussian blobs; noise 0.1 gives scikit-learn's default spread (cluster_std 1)."""
    from sklearn.datasets import make_blobs

    _check_toy(n_samples, noise)
    cluster_std = 0.5 + 5 * noise  # noise 0 -> tight blobs, noise 1 -> heavily overlapping
    x, y = make_blobs(n_samples=n_samples, centers=TOY_CENTERS, cluster_std=cluster_std, random_state=seed)
    return _standardise(x), _labels(y), [f"blob {i}" for i in range(TOY_CENTERS)], "table"


def _torchvision(name: str, class_name: str, *, download: bool = True, **_):
    """A torchvision image set, training split only (`load` makes its own test split)."""
    import torchvision.datasets

    try:
        source = getattr(torchvision.datasets, class_name)(root=DATA_HOME, train=True, download=download)
    except (RuntimeError, OSError) as err:  # missing/corrupt files; URLError and socket errors are OSErrors
        reason = tables.last_line(err) if download else "download=False"
        raise DatasetUnavailable(
            f"{name}: not found under {DATA_HOME}/ and could not be downloaded ({reason}); "
            "place the files there or connect to the internet"
        ) from err
    pixels = torch.as_tensor(np.asarray(source.data))  # uint8: (N, H, W) grey or (N, H, W, 3) RGB
    pixels = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2).contiguous()
    x = pixels.float() / 255  # (N, C, H, W)
    return x, torch.as_tensor(source.targets, dtype=torch.int64), list(source.classes), "image"


MIN_CSV_ROWS = tables.MIN_ROWS


def _csv(*, csv_path: str | None, csv_label: str = "label", max_rows: int = tables.MAX_ROWS,
         csv_continuous: bool = False, **_):  # fmt: skip
    """Numeric feature columns of a csv file, labelled by `csv_label` (read and checked by `tables.read`):
    classes, or with `csv_continuous` a continuous target."""
    features, y, classes = tables.read(csv_path, csv_label, max_rows, continuous=csv_continuous)
    target = torch.tensor(y, dtype=torch.float32) if csv_continuous else _labels(y)
    return _standardise(features), target, classes, "table"


def _folder(*, data_path: str | None, image_size: int = 32, max_images: int = folders.MAX_IMAGES, **_):
    """The user's own images, one sub-folder per class, read by torchvision's ImageFolder (`folders` names
    the limits). Each image is resized (shorter side) and centre-cropped to `image_size` a side.

    Pixels are left in [0, 1], not normalised by the folder's own mean and std: the other image sets
    are in that range, `augment` clamps to it, the VAE's decoder ends in a sigmoid and the pages show
    items as x * 255, so every model sees the same range for every image set (the CNN and ResNet
    encoders normalise inside, with batch norm).

    Grey images (PIL modes L, LA, 1, I, F) stay one channel; a folder with any colour image (RGB, a
    palette, CMYK, ...) is read as RGB, its grey images repeated over the three channels. Alpha is dropped.
    """
    from torchvision.datasets import ImageFolder

    folders.check_folder(data_path, image_size, max_images)  # from the names: before any image is decoded
    root = Path(data_path)
    source = ImageFolder(root, loader=partial(_read_image, root, image_size), is_valid_file=folders.is_image,
                         allow_empty=True)  # fmt: skip
    pixels = [source[i][0] for i in range(len(source))]  # each (1 or 3, S, S) uint8
    channels = max(p.shape[0] for p in pixels)
    x = torch.stack([p.expand(channels, -1, -1) for p in pixels]).float() / 255  # (N, C, S, S)
    return x, _labels(source.targets), list(source.classes), "image"


def _read_image(root: Path, size: int, path: str) -> torch.Tensor:
    """One image file as a (1, S, S) grey or (3, S, S) RGB uint8 tensor; a file that is too large, or that
    cannot be decoded, is named by its path under `root` in a one-line ValueError."""
    import PIL.Image
    import torchvision.transforms.v2.functional as TF

    relative = Path(path).relative_to(root).as_posix()
    folders.check_file(relative, os.stat(path).st_size)
    unreadable = ValueError(f"data_path: {relative} could not be read as an image (damaged, or in a format "
                            "Pillow does not decode)")  # fmt: skip
    try:
        opened = PIL.Image.open(path)  # reads the header only
    except Exception:  # decoders raise OSError, SyntaxError, EOFError, ValueError, DecompressionBombError...
        raise unreadable from None
    with opened:
        folders.check_pixels(relative, *opened.size)
        try:
            opened.draft(None, (size, size))  # a JPEG decodes at the smallest scale still >= size: far faster
            grey = PIL.Image.getmodebase(opened.mode) == "L"
            image = opened.convert("L" if grey else "RGB")  # decodes the pixels
        except Exception:
            raise unreadable from None
    return TF.pil_to_tensor(TF.center_crop(TF.resize(image, size), size))


DATASETS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor, list[str], str]]] = {
    "digits": _digits,
    "digits-60k": _digits_60k,
    "moons": _moons,
    "blobs": _blobs,
    "circles": _circles,
    "diabetes": _diabetes,
    "mnist": partial(_torchvision, "mnist", "MNIST"),
    "fashion-mnist": partial(_torchvision, "fashion-mnist", "FashionMNIST"),
    "kmnist": partial(_torchvision, "kmnist", "KMNIST"),
    "cifar10": partial(_torchvision, "cifar10", "CIFAR10"),
    "csv": _csv,
    "folder": _folder,
}
