"""An image folder: one subfolder per class, images read with Pillow.

``root/<class>/<image>`` is split into train and test with a seeded stratified split; if
``root`` has ``train/`` and ``test/`` subfolders, each laid out that way, those are used as they
are. Class indices follow the sorted class-folder names. Decoded images are cached
(:mod:`spikec.data.cache`), so only the first load of a folder decodes its files. Images are converted to grayscale if
all of them are grayscale, else to RGB, and must share one size unless ``image_size`` is given.
"""
from __future__ import annotations

import os

import numpy as np

from spikec.data.cache import cached_arrays
from spikec.data.info import DatasetInfo, as_dataset, scale_pixels
from spikec.data.split import stratified_split
from spikec.errors import SpikecError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


def _class_dirs(root: str) -> list[str]:
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def _image_files(directory: str) -> list[str]:
    return sorted(
        os.path.join(directory, f) for f in os.listdir(directory) if f.lower().endswith(IMAGE_EXTENSIONS)
    )


def looks_like(root: str) -> bool:
    if not os.path.isdir(root):
        return False
    for c in _class_dirs(root):
        if _image_files(os.path.join(root, c)):
            return True
        sub = os.path.join(root, c)
        if any(_image_files(os.path.join(sub, g)) for g in _class_dirs(sub)):  # train/<class>/...
            return True
    return False


def _scan(root: str, classes: list[str]) -> tuple[list[str], list[int]]:
    files, labels = [], []
    for index, name in enumerate(classes):
        found = _image_files(os.path.join(root, name))
        files += found
        labels += [index] * len(found)
    return files, labels


def _read_images(files: list[str], image_size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
                images.append(im.copy())
        except (OSError, UnidentifiedImageError) as exc:
            raise SpikecError(f"cannot read image {path}: {exc}") from exc
    mode = "L" if all(im.mode in ("L", "1", "I", "I;16", "F") for im in images) else "RGB"
    size = (int(image_size[1]), int(image_size[0])) if image_size is not None else images[0].size  # PIL: (W, H)
    arrays = []
    for path, im in zip(files, images):
        im = im.convert(mode)
        if im.size != size:
            if image_size is None:
                raise SpikecError(f"image {path} is {im.size[0]}x{im.size[1]}, others are {size[0]}x{size[1]}; "
                                  f"give image_size to resize")
            im = im.resize(size)
        arr = np.asarray(im, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(arrays)


def load(root: str, test_fraction: float = 0.2, seed: int = 0, image_size: tuple[int, int] | None = None):
    """Train and test data of the folder, decoded once and then read from :mod:`spikec.data.cache`."""
    if not looks_like(root):
        raise SpikecError(f"{root} is not an image folder (one subfolder of images per class)")
    presplit = all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test"))
    if presplit:
        classes = _class_dirs(os.path.join(root, "train"))
        tr_files, tr_labels = _scan(os.path.join(root, "train"), classes)
        te_files, te_labels = _scan(os.path.join(root, "test"), classes)
        extra = sorted(set(_class_dirs(os.path.join(root, "test"))) - set(classes))
        if extra:
            raise SpikecError(f"{os.path.join(root, 'test', extra[0])}: class not present in {os.path.join(root, 'train')}")
        if not tr_files or not te_files:
            raise SpikecError(f"{root}: train/ and test/ must both hold images")
        files = tr_files + te_files

        def build():
            x = _read_images(files, image_size)
            return {"x_train": x[: len(tr_files)], "y_train": np.array(tr_labels, dtype=np.int64),
                    "x_test": x[len(tr_files):], "y_test": np.array(te_labels, dtype=np.int64)}
    else:
        classes = _class_dirs(root)
        files, labels = _scan(root, classes)
        if len(files) < 2:
            raise SpikecError(f"{root}: need at least 2 images to split into train and test, found {len(files)}")

        def build():
            x_tr, x_te, y_tr, y_te = stratified_split(_read_images(files, image_size), np.array(labels), test_fraction, seed)
            return {"x_train": x_tr, "y_train": np.asarray(y_tr, dtype=np.int64), "x_test": x_te,
                    "y_test": np.asarray(y_te, dtype=np.int64)}
    key = {"format": "folder", "source": os.path.abspath(root), "presplit": presplit,
           "image_size": list(image_size) if image_size is not None else None,
           "test_fraction": None if presplit else float(test_fraction), "seed": None if presplit else int(seed)}
    arrays = cached_arrays(key, files, root, build)
    x_tr, y_tr, x_te, y_te = arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
    info = DatasetInfo(
        name=os.path.basename(os.path.normpath(root)), input_shape=tuple(x_tr.shape[1:]), num_classes=len(classes),
        classes=tuple(classes), source=root, format="folder",
    )
    return as_dataset(scale_pixels(x_tr), y_tr, root), as_dataset(scale_pixels(x_te), y_te, root), info
