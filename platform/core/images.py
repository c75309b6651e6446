"""Image anomaly-detection data: folders in MVTec AD layout and scikit-learn's 8x8 digits.

Every loader returns :class:`ImageData`: rows of flattened ``(C, H, W)`` images as float32 in
[0, 1], labels ``y`` (0 normal, 1 anomaly) and the ``image_shape`` needed to unflatten them.
MVTec AD layout::

    <root>/<category>/train/good/*.png             normal training images
    <root>/<category>/test/good/*.png              normal test images
    <root>/<category>/test/<defect type>/*.png     anomalous test images
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from rlad.core.errors import UserError
from sklearn.datasets import load_digits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageDataError(UserError, ValueError):
    """An image folder is missing, empty or unreadable."""


class ImageData(NamedTuple):
    """Flattened images ``X`` (n, C*H*W), labels ``y`` (n,) and ``image_shape`` (C, H, W)."""

    X: np.ndarray
    y: np.ndarray
    image_shape: tuple[int, int, int]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path, size: int, grayscale: bool) -> np.ndarray:
    """One image as (C, size, size) float32 in [0, 1]."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if grayscale else "RGB").resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except OSError as exc:
        raise ImageDataError(f"cannot read image {path}: {exc}") from exc
    return arr[None] if grayscale else arr.transpose(2, 0, 1)


def load_mvtec(
    root: str | os.PathLike, category: str, split: str = "train", size: int = 64, grayscale: bool = False
) -> ImageData:
    """Load ``<root>/<category>/<split>`` resized to ``size`` x ``size``: images under ``good/``
    are normal (y=0), images under any other sub-folder are anomalous (y=1)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    split_dir = Path(root) / category / split
    if not split_dir.is_dir():
        raise ImageDataError(f"folder {split_dir} does not exist (expected MVTec AD layout <root>/<category>/{split}/good)")
    if split == "train" and not (split_dir / "good").is_dir():
        raise ImageDataError(f"folder {split_dir / 'good'} does not exist")
    images, labels = [], []
    for sub in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = _image_files(sub)
        images += [_read_image(f, size, grayscale) for f in files]
        labels += [int(sub.name != "good")] * len(files)
    if not images:
        raise ImageDataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {split_dir}")
    X = np.stack(images)
    return ImageData(X.reshape(len(X), -1), np.asarray(labels, dtype=np.int64), tuple(X.shape[1:]))


def digits_images(normal_digit: int = 0) -> ImageData:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1]: ``normal_digit`` is normal, others anomalous."""
    if not 0 <= normal_digit <= 9:
        raise ValueError(f"normal_digit must be in 0..9, got {normal_digit}")
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    return ImageData(X, (digits.target != normal_digit).astype(np.int64), (1, 8, 8))


def normal_holdout_split(data: ImageData, test_size: float = 0.3, seed: int = 0) -> tuple[ImageData, ImageData]:
    """MVTec-like split of a labelled set: train holds ``1 - test_size`` of the normal rows only,
    test holds the other normal rows and every anomaly."""
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(data.y == 0))
    n_train = int(round(len(normal) * (1.0 - test_size)))
    test = np.sort(np.concatenate([normal[n_train:], np.flatnonzero(data.y == 1)]))
    train = np.sort(normal[:n_train])
    return _take(data, train), _take(data, test)


def label_anomalies(train: ImageData, test: ImageData, n: int, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Move ``n`` random anomalies from ``test`` into ``train`` (as labelled anomalies, y=1)."""
    anomalies = np.flatnonzero(test.y == 1)
    if not 0 <= n <= len(anomalies):
        raise ValueError(f"cannot label {n} anomalies: the test set has {len(anomalies)}")
    moved = np.random.default_rng(seed).choice(anomalies, size=n, replace=False)
    keep = np.setdiff1d(np.arange(len(test.y)), moved)
    picked = _take(test, np.sort(moved))
    new_train = ImageData(np.concatenate([train.X, picked.X]), np.concatenate([train.y, picked.y]), train.image_shape)
    return new_train, _take(test, keep)


def _take(data: ImageData, idx: np.ndarray) -> ImageData:
    return ImageData(data.X[idx], data.y[idx], data.image_shape)
