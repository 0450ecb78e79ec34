"""An image folder, one sub-folder of images per class, judged by its file names and sizes alone: no torch,
no image decoded. `data` checks a folder with it before reading the images (through torchvision's
ImageFolder); the pages unpack and check an uploaded zip of one with it. Every problem is a ValueError
of one line that names the field ("data_path", "image_size"), or "zip upload" for the upload itself.

Files and folders whose name starts with a dot (".DS_Store", "._cat.jpg", ".ipynb_checkpoints") are not
images; files of other types (a README) are left out, as ImageFolder leaves them.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

# What ImageFolder reads (torchvision's IMG_EXTENSIONS; tests check that they agree).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MIN_CLASSES = 2
MIN_PER_CLASS = 5  # a fifth of each class is held out to measure the embedding: at least one
MAX_IMAGES = 50_000  # a folder's images (the CLI's limit; a demo sets its own for uploads)
MAX_FILE_MB = 20.0  # one image file
MAX_PIXELS = 40_000_000  # one image, before it is resized (PIL refuses only beyond 179 million)
MIN_SIZE, MAX_SIZE = 8, 128  # image_size, pixels a side: the CNN pools twice; 128 keeps snapshots' items small
MAX_TENSOR_GB = 1.0  # all the images as float32 (N, C, S, S), on the training device
SKIPPED_FOLDERS = ("__MACOSX",)  # what macOS adds to a zip beside the folder zipped


def is_image(path: str | os.PathLike) -> bool:
    """Whether ImageFolder should read this file: an image suffix, and no part of its name hidden."""
    name = PurePosixPath(str(path).replace("\\", "/"))
    return name.suffix.lower() in IMAGE_SUFFIXES and not name.name.startswith(".")


def check_folder(data_path: str | None, image_size: int, max_images: int = MAX_IMAGES) -> dict[str, int]:
    """Refuses a folder a run could not train on, from its names alone (`data` decodes the images after):
    none given, not a folder, an image size out of range, the classes (`check_classes`), all its images
    at `image_size` (`check_tensor_size`). Returns the images per class, as ImageFolder finds them: every
    sub-folder a class (sorted), the images below it at any depth, links followed."""
    if not data_path:
        raise ValueError("data_path: no folder given (the folder dataset needs one)")
    root = Path(data_path)
    if not root.is_dir():
        raise ValueError(f"data_path: not a folder: {data_path}")
    if not MIN_SIZE <= image_size <= MAX_SIZE:
        raise ValueError(f"image_size: must be {MIN_SIZE} to {MAX_SIZE} pixels (got {image_size})")
    try:
        per_class = {}
        for name in sorted(entry.name for entry in os.scandir(root) if entry.is_dir()):
            below = os.walk(root / name, followlinks=True)
            per_class[name] = sum(is_image(file) for _, _, files in below for file in files)
    except OSError as err:
        raise ValueError(f"data_path: cannot read {data_path} ({err.strerror or err})") from None
    check_classes(per_class, max_images)
    check_tensor_size(sum(per_class.values()), image_size)
    return per_class


def check_classes(per_class: dict[str, int], max_images: int = MAX_IMAGES) -> None:
    """Refuses a folder whose classes cannot train a run: fewer than MIN_CLASSES, a class with fewer than
    MIN_PER_CLASS images, or more than `max_images` in all. `per_class`: images per class name."""
    if len(per_class) < MIN_CLASSES:
        raise ValueError(f"data_path: {len(per_class)} class sub-folder{'s' * (len(per_class) != 1)} found; "
                         f"at least {MIN_CLASSES} are needed (one sub-folder of images per class)")  # fmt: skip
    name, fewest = min(per_class.items(), key=lambda item: item[1])
    if fewest < MIN_PER_CLASS:
        raise ValueError(f"data_path: class '{name}' has {fewest} image{'s' * (fewest != 1)}; at least "
                         f"{MIN_PER_CLASS} per class are needed (a fifth are held out to measure the embedding)")  # fmt: skip
    total = sum(per_class.values())
    if total > max_images:
        raise ValueError(f"data_path: {total:,} images, over the limit of {max_images:,} (max_images)")


def check_tensor_size(images: int, image_size: int, channels: int = 3) -> None:
    """Refuses images that would not fit in MAX_TENSOR_GB as float32 (N, C, S, S) tensors."""
    size = images * channels * image_size * image_size * 4 / 2**30
    if size > MAX_TENSOR_GB:
        raise ValueError(f"image_size: {images:,} images at {image_size}x{image_size} take up to {size:.1f} GB, "
                         f"over the {MAX_TENSOR_GB:g} GB limit; choose a smaller image_size or fewer images")  # fmt: skip


def check_file(relative: str, size_bytes: int) -> None:
    if size_bytes > MAX_FILE_MB * 1e6:
        raise ValueError(f"data_path: {relative} is {size_bytes / 1e6:.1f} MB, over the {MAX_FILE_MB:g} MB limit "
                         "for one image")  # fmt: skip


def check_pixels(relative: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ValueError(f"data_path: {relative} is {width}x{height} pixels, over the {MAX_PIXELS / 1e6:g} "
                         "megapixel limit for one image")  # fmt: skip


# --- a zip of a folder, unpacked -------------------------------------------------------------------


_DRIVE = re.compile(r"^[A-Za-z]:")


def unpack(data: bytes, uploads: Path, max_images: int = MAX_IMAGES, max_mb: float = 1000.0) -> Path:
    """Unpacks a zip of an image folder into `uploads`/<content hash>/ and returns that folder.

    Every check is made on the zip's list of names and sizes before anything is written: a member
    whose name is absolute or climbs out (`..`) refuses the whole zip; then the image count, each
    image's size and their total (`max_mb`, unpacked) and the classes (`check_classes`). Only images
    are written (other files, hidden ones and `__MACOSX/` are left out), each read no further than the
    size its header gives. A zip holding one folder of class folders is unpacked from inside that
    folder; images beside the class folders are left out (ImageFolder reads none). The same zip sent
    again is unpacked once.

    Raises:
        ValueError: one line naming what is wrong; nothing is left in `uploads` then.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as err:
        raise ValueError(f"zip upload: not a zip file that can be read ({type(err).__name__})") from None
    for member in members:
        if _escapes(member.filename):
            raise ValueError(f"zip upload: the entry {member.filename[:80]!r} would be written outside the "
                             "upload folder; nothing was unpacked")  # fmt: skip
    images = {_parts(m.filename): m for m in members if not m.is_dir() and _kept(m.filename)}
    images = {parts: m for parts, m in _inside_one_folder(images).items() if len(parts) > 1}  # in a class folder
    if len(images) > max_images:
        raise ValueError(f"zip upload: {len(images):,} images, over the limit of {max_images:,}")
    for parts, member in images.items():
        check_file("/".join(parts), member.file_size)
    unpacked = sum(member.file_size for member in images.values())
    if unpacked > max_mb * 1e6:
        raise ValueError(f"zip upload: {unpacked / 1e6:.1f} MB of images unpacked, over the limit of {max_mb:g} MB")
    check_classes(Counter(parts[0] for parts in images), max_images)
    target = uploads / hashlib.sha256(data).hexdigest()[:32]
    if not target.is_dir():
        _write(archive, images, uploads, target)
    return target


def _parts(name: str) -> tuple[str, ...]:
    return tuple(part for part in name.replace("\\", "/").split("/") if part not in ("", "."))


def _escapes(name: str) -> bool:
    """Whether a member's name is absolute (`/x`, `\\x`, `C:x`) or climbs out of the folder (`..`)."""
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name)) or ".." in _parts(name)


def _kept(name: str) -> bool:
    parts = _parts(name)
    hidden = any(part.startswith(".") for part in parts)
    return bool(parts) and is_image(name) and parts[0] not in SKIPPED_FOLDERS and not hidden


def _inside_one_folder(images: dict[tuple[str, ...], zipfile.ZipInfo]) -> dict[tuple[str, ...], zipfile.ZipInfo]:
    """Names from inside the one folder that holds every class folder, if the zip has such a folder."""
    tops = {parts[0] for parts in images}
    if len(tops) == 1 and all(len(parts) > 2 for parts in images):
        return {parts[1:]: member for parts, member in images.items()}
    return images


def _write(archive: zipfile.ZipFile, images: dict, uploads: Path, target: Path) -> None:
    """Writes the images into a new folder beside `target`, renamed to `target` once complete."""
    uploads.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=uploads))
    try:
        for parts, member in images.items():
            path = partial.joinpath(*parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source:  # stops at the header's size; a wrong CRC raises
                path.write_bytes(source.read(member.file_size))
        partial.rename(target)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError) as err:
        raise ValueError(f"zip upload: an entry could not be unpacked ({type(err).__name__})") from None
    except OSError as err:
        if not target.is_dir():  # else another session unpacked the same zip meanwhile: theirs is kept
            raise ValueError(f"zip upload: could not be unpacked here ({err.strerror or type(err).__name__})") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
