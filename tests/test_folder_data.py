"""The folder dataset: the user's own images, one sub-folder per class (torchvision's ImageFolder)."""

from __future__ import annotations

import io
import shutil

import pytest
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from contrast_core import folders
from contrast_core.__main__ import main
from contrast_core.config import ConfigError, RunConfig
from contrast_core.data import load
from contrast_core.train import train

RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_folder(root, classes: dict[str, tuple[str, object, int]], size=(20, 12)):
    """One sub-folder per class of `count` plain PNGs of `mode` and `colour`; the folder."""
    root.mkdir(parents=True)
    for name, (mode, colour, count) in classes.items():
        (root / name).mkdir()
        for i in range(count):
            Image.new(mode, size, colour).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def pets(tmp_path):
    return write_folder(tmp_path / "pets", {"cats": ("RGB", RED, 6), "dogs": ("RGB", BLUE, 5)})


def png_bytes(mode="RGB", colour=RED, size=(20, 12)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format="PNG")
    return out.getvalue()


def test_a_folder_loads_with_its_classes_labels_and_one_size(pets):
    (pets / "cats" / "notes.txt").write_text("not an image")  # left out, as ImageFolder leaves it
    (pets / "dogs" / ".hidden.png").write_bytes(b"AppleDouble")  # hidden: not an image
    dataset = load("folder", data_path=str(pets), image_size=8)
    assert dataset.x.shape == (11, 3, 8, 8) and dataset.x.dtype == torch.float32
    assert dataset.classes == ["cats", "dogs"] and dataset.kind == "image"
    assert dataset.y.tolist() == [0] * 6 + [1] * 5
    cats, dogs = dataset.x[dataset.y == 0], dataset.x[dataset.y == 1]
    assert torch.equal(cats[:, 0], torch.ones(6, 8, 8)) and cats[:, 1:].abs().max() == 0  # red, in [0, 1]
    assert torch.equal(dogs[:, 2], torch.ones(5, 8, 8)) and dogs[:, :2].abs().max() == 0


def test_grey_stays_one_channel_and_a_mixed_folder_is_rgb(tmp_path):
    grey = write_folder(tmp_path / "grey", {"dark": ("L", 40, 5), "light": ("L", 200, 5)})
    dataset = load("folder", data_path=str(grey), image_size=10)
    assert dataset.x.shape == (10, 1, 10, 10)
    assert torch.allclose(dataset.x[dataset.y == 1], torch.full((5, 1, 10, 10), 200 / 255))
    mixed = write_folder(tmp_path / "mixed", {"dark": ("L", 40, 5), "red": ("RGB", RED, 5)})
    dataset = load("folder", data_path=str(mixed), image_size=10)
    assert dataset.x.shape == (10, 3, 10, 10)
    dark = dataset.x[dataset.y == 0]
    assert torch.allclose(dark, torch.full_like(dark, 40 / 255))  # grey repeated over the three channels


def test_a_wide_image_is_resized_and_centre_cropped(tmp_path):
    root = write_folder(tmp_path / "f", {"a": ("RGB", RED, 5), "b": ("RGB", BLUE, 5)})
    wide = Image.new("RGB", (48, 16), BLUE)
    wide.paste(RED, (16, 0, 32, 16))  # red in the middle third only
    wide.save(root / "a" / "0.png")
    dataset = load("folder", data_path=str(root), image_size=8)  # 48x16 -> 24x8 -> the middle 8x8
    assert dataset.x.shape[2:] == (8, 8)
    assert dataset.x[0, 0].min() > 0.8 and dataset.x[0, 2].max() < 0.2  # the centre square is red (edges blend)


@pytest.mark.parametrize(
    "damage", [b"\x89PNG\r\n\x1a\nbroken", png_bytes(size=(64, 64))[:60], b""], ids=["garbage", "truncated", "empty"]
)
def test_a_corrupt_image_is_named_by_its_path_in_the_folder(pets, damage):
    (pets / "dogs" / "bad.png").write_bytes(damage)
    with pytest.raises(ValueError) as refused:
        load("folder", data_path=str(pets), image_size=8)
    said = str(refused.value)
    assert said.startswith("data_path: dogs/bad.png could not be read as an image") and "\n" not in said
    assert str(pets) not in said  # named within the folder, not by where the folder is


@pytest.mark.parametrize(
    "classes, kwargs, words",
    [
        ({"cats": ("RGB", RED, 6)}, {}, "data_path: 1 class sub-folder found; at least 2 are needed"),
        ({}, {}, "data_path: 0 class sub-folders found"),
        ({"cats": ("RGB", RED, 6), "dogs": ("RGB", BLUE, 3)}, {}, "data_path: class 'dogs' has 3 images; at least 5"),
        ({"cats": ("RGB", RED, 6), "empty": ("RGB", BLUE, 0)}, {}, "data_path: class 'empty' has 0 images"),
        ({"cats": ("RGB", RED, 6), "dogs": ("RGB", BLUE, 6)}, {"max_images": 10},
         "data_path: 12 images, over the limit of 10 (max_images)"),
        ({"cats": ("RGB", RED, 6), "dogs": ("RGB", BLUE, 6)}, {"image_size": 4}, "image_size: must be 8 to 128"),
    ],
)  # fmt: skip
def test_a_folder_a_run_cannot_train_on_is_one_line_naming_the_field(tmp_path, classes, kwargs, words):
    root = write_folder(tmp_path / "f", classes)
    with pytest.raises(ValueError) as refused:
        load("folder", data_path=str(root), **({"image_size": 8} | kwargs))
    assert words in str(refused.value) and "\n" not in str(refused.value), refused.value


@pytest.mark.parametrize(
    "limit, value, words",
    [
        ("MAX_FILE_MB", 1e-5, "data_path: cats/0.png is 0.0 MB, over the 1e-05 MB limit for one image"),
        ("MAX_PIXELS", 100, "data_path: cats/0.png is 20x12 pixels, over the 0.0001 megapixel limit"),
        ("MAX_TENSOR_GB", 1e-6, "image_size: 11 images at 8x8 take up to 0.0 GB, over the 1e-06 GB limit"),
    ],
)
def test_size_limits_name_the_file_or_the_field(pets, monkeypatch, limit, value, words):
    monkeypatch.setattr(folders, limit, value)
    with pytest.raises(ValueError, match=f"^{words}"):
        load("folder", data_path=str(pets), image_size=8)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="^data_path: no folder given"):
        load("folder")
    with pytest.raises(ValueError, match="^data_path: not a folder: "):
        load("folder", data_path=str(tmp_path / "nowhere"))


def test_the_config_needs_a_folder_for_the_folder_dataset(pets, tmp_path):
    for values, words in [({}, "needs a folder"), ({"data_path": str(pets / "cats" / "0.png")}, "not a folder"),
                          ({"data_path": str(tmp_path / "nowhere")}, "not a folder")]:  # fmt: skip
        with pytest.raises(ConfigError) as refused:
            RunConfig.check(dataset="folder", **values)
        assert list(refused.value.errors) == ["data_path"] and words in refused.value.errors["data_path"]
    for size in (folders.MIN_SIZE - 1, folders.MAX_SIZE + 1):
        with pytest.raises(ConfigError) as refused:
            RunConfig.check(dataset="folder", data_path=str(pets), image_size=size)
        assert list(refused.value.errors) == ["image_size"]
    assert RunConfig.check(dataset="folder", data_path=str(pets)).image_size == 32
    (pets / "birds").mkdir()
    (pets / "birds" / "0.png").write_bytes(png_bytes())
    with pytest.raises(ConfigError) as refused:  # a class a run cannot train on: said before the run starts
        RunConfig.check(dataset="folder", data_path=str(pets))
    assert refused.value.errors == {"data_path": "class 'birds' has 1 image; at least 5 per class are needed (a "
                                                 "fifth are held out to measure the embedding)"}  # fmt: skip


def test_check_folder_counts_the_images_as_image_folder_finds_them(pets):
    from torchvision.datasets import ImageFolder

    (pets / "dogs" / "more").mkdir()
    for name in ("0.png", "1.JPG", "notes.txt", ".hidden.png"):  # nested, a suffix's case, not images
        (pets / "dogs" / "more" / name).write_bytes(png_bytes())
    found = ImageFolder(pets, is_valid_file=folders.is_image)
    per_class = folders.check_folder(str(pets), image_size=8)
    assert per_class == {name: found.targets.count(i) for i, name in enumerate(found.classes)} == {"cats": 6, "dogs": 7}


def test_a_stored_run_s_config_still_reads_once_its_folder_is_gone(pets):
    stored = RunConfig.check(dataset="folder", data_path=str(pets)).model_dump(mode="json")
    shutil.rmtree(pets)
    assert RunConfig.model_validate(stored).data_path == str(pets)  # the pages still show the run
    with pytest.raises(ConfigError, match="data_path: not a folder"):
        RunConfig.check(**stored)  # not for a new run
    with pytest.raises(ValueError, match="^data_path: not a folder: "):
        load("folder", data_path=stored["data_path"])  # what the run says if trained again


def test_image_folder_reads_the_suffixes_the_checks_count():
    assert set(folders.IMAGE_SUFFIXES) == set(IMG_EXTENSIONS)


@pytest.mark.parametrize("model", ["mlp", "cnn", "vae"])
def test_a_short_run_trains_on_a_folder(pets, model):
    config = RunConfig.check(dataset="folder", data_path=str(pets), image_size=8, model=model, steps=4,
                             batch_size=8, eval_size=10, snapshot_every=2, device="cpu")  # fmt: skip
    events = []
    result = train(config, events.append)
    assert result["status"] == "finished" and result["step"] == 4
    (items,) = [e.data["arrays"]["items"] for e in events if e.kind == "snapshot" and "items" in e.data["arrays"]]
    assert items.shape[1:] == (3, 8, 8) and items.dtype.name == "uint8"  # what the pages show


def test_the_command_line_trains_on_a_folder_and_names_a_bad_file(pets, capsys):
    flags = ["--dataset", "folder", "--data-path", str(pets), "--image-size", "8", "--steps", "2",
             "--eval-size", "10", "--batch-size", "8", "--device", "cpu", "--no-store", "--quiet"]  # fmt: skip
    assert main(["train", *flags]) == 0
    capsys.readouterr()
    (pets / "cats" / "bad.png").write_bytes(b"not a png")
    assert main(["train", *flags]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: data_path: cats/bad.png could not be read as an image (damaged, or in a format Pillow does not decode)"
    )
    assert main(["train", *flags[:2]]) == 2  # no --data-path
    assert "--data-path: the folder dataset needs a folder" in capsys.readouterr().err
