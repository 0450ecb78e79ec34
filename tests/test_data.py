import hashlib
import pickle
import re
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets
from sklearn.datasets import load_digits, make_moons

from contrast_core import data
from contrast_core.data import DATASETS, Dataset, DatasetUnavailable, load

UNREACHABLE = "http://127.0.0.1:9/"  # nothing listens on the discard port: downloads fail at once, network or not


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load("digits", seed=0)


def test_registry_names():
    assert list(DATASETS) == [
        "digits",
        "digits-60k",
        "moons",
        "blobs",
        "circles",
        "diabetes",
        "mnist",
        "fashion-mnist",
        "kmnist",
        "cifar10",
        "csv",
        "folder",
    ]


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"dataset: unknown 'nope' \(choose from digits, digits-60k, moons, blobs"):
        load("nope")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"eval_size": 0}, "eval_size"),
    ],
)
def test_bad_split_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        load("moons", **kwargs)


# --- digits and the split ---


def test_digits_are_sklearn_digits_scaled_to_unit_range(digits):
    reference = load_digits()
    assert digits.x.shape == (1797, 1, 8, 8) and digits.x.dtype == torch.float32
    assert digits.input_shape == (1, 8, 8)
    assert digits.kind == "image"
    assert digits.classes == [str(d) for d in range(10)] and digits.num_classes == 10
    assert digits.x.min() == 0 and digits.x.max() == 1
    np.testing.assert_allclose(digits.x[:, 0].numpy(), reference.images / 16, rtol=1e-6)
    assert digits.y.dtype == torch.int64
    assert torch.equal(digits.y, torch.as_tensor(reference.target))


def test_split_is_disjoint_covers_everything_and_is_stratified(digits):
    train, test = digits.train_index, digits.test_index
    assert train.dtype == test.dtype == torch.int64
    assert len(set(train.tolist()) & set(test.tolist())) == 0
    assert sorted(train.tolist() + test.tolist()) == list(range(1797))
    assert len(test) == round(1797 * 0.2)
    quota = torch.bincount(digits.y) * 0.2
    held_out = torch.bincount(digits.y[test], minlength=10)
    assert torch.all((held_out == quota.floor()) | (held_out == quota.ceil()))


def test_split_of_tiny_classes_still_holds_out_its_share():
    y = torch.arange(20) % 10  # 2 points per class: each quota is 0.4
    train, test = data.split(y, 0.2, torch.Generator().manual_seed(0))
    assert len(test) == 4 and len(train) == 16
    assert len(set(y[test].tolist())) == 4  # four classes give one point each


def test_eval_subset_is_in_test_and_balanced_over_classes():
    dataset = load("digits", seed=3, eval_size=50)
    assert len(dataset.eval_index) == 50
    assert set(dataset.eval_index.tolist()) <= set(dataset.test_index.tolist())
    assert torch.bincount(dataset.y[dataset.eval_index]).tolist() == [5] * 10  # round-robin over the 10 classes


def test_eval_subset_is_the_whole_test_set_when_asked_for_more(digits):
    assert len(digits.test_index) < 500
    assert torch.equal(digits.eval_index, digits.test_index)


def test_split_is_deterministic_by_seed(digits):
    again, other = load("digits", seed=0), load("digits", seed=1)
    for name in ("train_index", "test_index", "eval_index"):
        assert torch.equal(getattr(again, name), getattr(digits, name))
    assert not torch.equal(other.test_index, digits.test_index)


def test_to_moves_every_tensor(digits):
    moved = digits.to("meta")  # a device that exists on every machine
    for name in ("x", "y", "train_index", "test_index", "eval_index"):
        assert getattr(moved, name).device.type == "meta"
        assert getattr(moved, name).shape == getattr(digits, name).shape
    assert moved.classes == digits.classes and moved.kind == digits.kind
    assert digits.x.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_load_on_gpu():
    dataset = load("moons", device="cuda")
    assert all(t.is_cuda for t in (dataset.x, dataset.y, dataset.train_index, dataset.test_index, dataset.eval_index))


# --- toy sets ---


@pytest.mark.parametrize(("name", "classes"), [("moons", 2), ("blobs", 4), ("circles", 2)])
def test_toy_sets_are_standardised_tables(name, classes):
    dataset = load(name, n_samples=300, seed=1)
    assert dataset.x.shape == (300, 2) and dataset.x.dtype == torch.float32
    assert dataset.kind == "table" and dataset.num_classes == classes
    assert torch.equal(torch.unique(dataset.y), torch.arange(classes))
    torch.testing.assert_close(dataset.x.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(dataset.x.std(0, correction=0), torch.ones(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["moons", "blobs", "circles"])
def test_toy_knobs_change_the_data(name):
    base = load(name, noise=0.05, seed=0).x
    assert torch.equal(load(name, noise=0.05, seed=0).x, base)
    assert not torch.equal(load(name, noise=0.3, seed=0).x, base)
    assert not torch.equal(load(name, noise=0.05, seed=1).x, base)


def test_moons_match_sklearn():
    x, y = make_moons(n_samples=200, noise=0.2, random_state=7)
    dataset = load("moons", n_samples=200, noise=0.2, seed=7)
    np.testing.assert_allclose(dataset.x.numpy(), (x - x.mean(0)) / x.std(0), rtol=1e-5, atol=1e-6)
    assert torch.equal(dataset.y, torch.as_tensor(y))


@pytest.mark.parametrize(("kwargs", "field"), [({"n_samples": 5}, "n_samples"), ({"noise": -0.1}, "noise")])
def test_bad_toy_knobs_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        load("blobs", **kwargs)


# --- torchvision sets, from tiny files in their real on-disk formats ---


def _write_idx(path, array: np.ndarray) -> None:
    """The big-endian idx format: magic 0x0000080<ndim> (uint8 data), each dimension, then the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist_files(root, class_name: str, images: np.ndarray, labels: np.ndarray) -> None:
    raw = root / class_name / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):  # torchvision checks that all four files exist
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)


MNIST_LIKE = [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")]


@pytest.mark.parametrize(("name", "class_name"), MNIST_LIKE)
def test_mnist_like_sets_load_from_idx_files(name, class_name, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    _write_mnist_files(tmp_path, class_name, images, labels)
    monkeypatch.setattr(data, "DATA_HOME", tmp_path)
    dataset = load(name, download=False)
    assert dataset.x.shape == (20, 1, 28, 28) and dataset.x.dtype == torch.float32
    assert dataset.kind == "image"
    np.testing.assert_allclose(dataset.x[:, 0].numpy(), images / 255, rtol=1e-6)
    assert dataset.y.tolist() == labels.tolist()
    assert dataset.classes == getattr(torchvision.datasets, class_name).classes
    assert len(dataset.train_index) + len(dataset.test_index) == 20


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "kmnist", "cifar10"])
def test_missing_files_without_download_are_one_line(name, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_HOME", tmp_path)
    with pytest.raises(DatasetUnavailable) as caught:
        load(name, download=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: not found under {tmp_path}/")
    assert "download=False" in message


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "class_name", "attribute"), [("mnist", "MNIST", "mirrors"), ("cifar10", "CIFAR10", "url")]
)
def test_failed_download_is_one_line(name, class_name, attribute, tmp_path, monkeypatch):
    source = getattr(torchvision.datasets, class_name)
    monkeypatch.setattr(source, attribute, [UNREACHABLE] if attribute == "mirrors" else UNREACHABLE + "cifar.tar.gz")
    monkeypatch.setattr(data, "DATA_HOME", tmp_path)
    with pytest.raises(DatasetUnavailable) as caught:
        load(name, download=True)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: not found under {tmp_path}/ and could not be downloaded (")
    assert "refused" in message.lower()


def _write_cifar_files(root, images: np.ndarray, labels: list[int], label_names: list[str]) -> dict[str, str]:
    """CIFAR-10's python pickles: 5 training batches, a test batch, and batches.meta. Returns md5 by file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # each row: 1024 red, 1024 green, 1024 blue
    batches = {f"data_batch_{i + 1}": (rows[i::5], labels[i::5]) for i in range(5)}
    batches["test_batch"] = (rows[:2], labels[:2])
    for file_name, (batch_rows, batch_labels) in batches.items():
        (folder / file_name).write_bytes(pickle.dumps({"data": batch_rows, "labels": list(batch_labels)}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": label_names}))
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def test_cifar10_loads_from_pickled_batches(tmp_path, monkeypatch):
    images = np.zeros((20, 32, 32, 3), dtype=np.uint8)  # (N, H, W, RGB)
    images[0, 0, 1, 0] = 255  # image 0: one red pixel at row 0, column 1
    images[1, 5, 2, 2] = 51  # image 1: a dim blue pixel at row 5, column 2
    labels = [i % 10 for i in range(20)]
    names = [f"class {i}" for i in range(10)]
    md5 = _write_cifar_files(tmp_path, images, labels, names)
    # torchvision checks every file against the md5 of the real CIFAR-10; point it at these files' sums
    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", [[name, md5[name]] for name, _ in cifar.train_list])
    monkeypatch.setattr(cifar, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": md5["batches.meta"]})
    monkeypatch.setattr(data, "DATA_HOME", tmp_path)

    dataset = load("cifar10", download=False)

    assert dataset.x.shape == (20, 3, 32, 32) and dataset.x.dtype == torch.float32
    assert dataset.x.is_contiguous()
    assert dataset.classes == names
    order = [i for b in range(5) for i in range(b, 20, 5)]  # data_batch_1 first, then 2...
    assert dataset.y.tolist() == [labels[i] for i in order]
    first, second = order.index(0), order.index(1)
    assert dataset.x[first, 0, 0, 1] == 1 and dataset.x[first].sum() == 1
    torch.testing.assert_close(dataset.x[second, 2, 5, 2], torch.tensor(0.2))
    assert dataset.x[second].sum() == dataset.x[second, 2, 5, 2]


def test_cifar10_files_that_fail_the_checksum_are_unavailable(tmp_path, monkeypatch):
    _write_cifar_files(tmp_path, np.zeros((10, 32, 32, 3), np.uint8), list(range(10)), [str(i) for i in range(10)])
    monkeypatch.setattr(data, "DATA_HOME", tmp_path)
    with pytest.raises(DatasetUnavailable, match="^cifar10: not found under"):
        load("cifar10", download=False)


# --- csv ---

GOOD_CSV = """a,b,flat,name,label
1,10,5,p,dog
2,20,5,q,cat
3,30,5,r,dog
4,40,5,s,cat
5,50,5,t,dog
6,60,5,u,cat
7,70,5,v,dog
8,80,5,w,cat
9,90,5,x,dog
10,100,5,y,cat
"""


def _write(tmp_path, text: str, name="table.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_loads_numeric_features_and_factorises_labels(tmp_path):
    dataset = load("csv", csv_path=_write(tmp_path, GOOD_CSV))
    assert dataset.kind == "table"
    assert dataset.x.shape == (10, 3)  # a, b, flat; the text column is not a feature
    assert dataset.classes == ["cat", "dog"]
    assert dataset.y.tolist() == [1, 0] * 5
    a = np.arange(1, 11)
    np.testing.assert_allclose(dataset.x[:, 0].numpy(), (a - 5.5) / np.sqrt(8.25), rtol=1e-6)  # population std
    assert torch.equal(dataset.x[:, 2], torch.zeros(10))  # a constant column: no division by zero


def test_csv_numeric_labels_sort_as_numbers(tmp_path):
    text = "f,target\n" + "".join(f"{i},{[1, 10, 2][i % 3]}\n" for i in range(15))
    dataset = load("csv", csv_path=_write(tmp_path, text), csv_label="target")
    assert dataset.classes == ["1", "2", "10"]
    assert dataset.y.tolist() == [[0, 2, 1][i % 3] for i in range(15)]


BAD_CSVS = [
    (GOOD_CSV, {"csv_label": "y"}, "csv_label: label column 'y' not found among the file's 5 columns"),
    ("name,label\n" + "p,dog\nq,cat\n" * 5, {}, "csv: no numeric feature columns beside the label (of 2 columns)"),
    (
        GOOD_CSV.replace("3,30", "3,inf").replace("7,70", "-Infinity,70"),
        {},
        "csv: 2 rows contain infinite values (first at row 3)",
    ),  # fmt: skip
    ("a,label\n1,x\n2,y\n", {}, "csv: 2 rows; at least 10 are needed"),
    (
        GOOD_CSV.replace("3,30", "3,").replace("6,60,5,u,cat", "6,60,5,u,"),
        {},
        "csv: 2 rows contain missing values (first at row 3)",
    ),
    (GOOD_CSV, {"max_rows": 5}, "csv: more than 5 rows (the limit is max_rows=5)"),
    (GOOD_CSV.replace("cat", "dog"), {}, "csv_label: label column 'label' has 1 class (need at least 2)"),
    ("a,label\n", {}, "csv: the file has no rows"),
    ("", {}, "csv: could not be read"),
]


@pytest.mark.parametrize(("text", "kwargs", "message"), BAD_CSVS)
def test_bad_csv_files_say_what_is_wrong(text, kwargs, message, tmp_path):
    with pytest.raises(ValueError) as caught:
        load("csv", csv_path=_write(tmp_path, text), **kwargs)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_a_csv_error_never_quotes_the_file(tmp_path):
    """The found leak: a secrets file read as a CSV came back in the message as its column names."""
    for text in ("API_KEY = hunter2\n" + "1\n" * 12, "API_KEY,label\n" + "hunter2,x\nhunter2,y\n" * 6):
        with pytest.raises(ValueError) as caught:
            load("csv", csv_path=_write(tmp_path, text))
        assert "API_KEY" not in str(caught.value) and "hunter2" not in str(caught.value), str(caught.value)


def test_csv_missing_file_or_path(tmp_path):
    missing = str(tmp_path / "nowhere.csv")
    with pytest.raises(ValueError, match=f"^csv: file not found: {re.escape(missing)}$"):
        load("csv", csv_path=missing)
    with pytest.raises(ValueError, match="^csv: no file given"):
        load("csv")


def test_digits_60k_is_mnist_sized_and_jittered_per_image():
    ds = data.load("digits-60k", seed=0)
    assert ds.x.shape == (60_000, 1, 28, 28) and ds.num_classes == 10
    assert ds.x.min() >= 0 and ds.x.max() <= 1
    # Many copies of each source digit, no two placed identically: the jitter is drawn per image.
    assert len(torch.unique(ds.x[:2000].flatten(1), dim=0)) == 2000
    assert torch.bincount(ds.y).min() > 5000
