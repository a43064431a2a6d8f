"""The training and evaluation batches: per-channel normalisation, random crop, flip and
cutout of whole numpy batches, served by grain in an order that depends only on
``(seed, epoch)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import grain
import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .sources import Split


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images (N, H, W, 3), in [0, 1] units: two (3,) arrays.

    Example:
      >>> mean, std = channel_stats(np.full((2, 4, 4, 3), 255, np.uint8))
      >>> mean.tolist(), std.tolist()
      ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return x.mean(0).astype(np.float32), x.std(0).astype(np.float32)


@dataclass(frozen=True)
class Normalizer:
    """uint8 (N, H, W, 3) -> float32 (x/255 - mean) / std per channel."""

    mean: np.ndarray
    std: np.ndarray

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255.0 - self.mean) / np.maximum(self.std, 1e-6)


def augment(images: np.ndarray, rng: np.random.Generator, crop_padding: int,
            flip: bool | np.ndarray, pad_mode: str = "zeros") -> np.ndarray:
    """Random crop of the padded image (``pad_mode`` ``zeros`` or ``reflect``) and random
    horizontal flip, per image; ``flip`` may instead be a bool array (B,) saying which images
    to mirror.

    images: uint8 (B, H, W, C) -> uint8 (B, H, W, C).

    Example:
      >>> x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
      >>> augment(x, np.random.default_rng(0), 1, True).shape
      (2, 4, 4, 3)
    """
    b, h, w, _ = images.shape
    if crop_padding:
        p = crop_padding
        padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)),
                        mode="reflect" if pad_mode == "reflect" else "constant")
        oy = rng.integers(0, 2 * p + 1, b)
        ox = rng.integers(0, 2 * p + 1, b)
        # One slice copy per image: a fancy-indexed gather of the whole batch reads it
        # pixel by pixel and was most of a batch's preparation time.
        images = np.stack([padded[i, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(oy, ox))])
    if isinstance(flip, np.ndarray):
        images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    elif flip:
        mirror = rng.random(b) < 0.5
        images = np.where(mirror[:, None, None, None], images[:, :, ::-1], images)
    return images


def cutout(images: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Each image with one ``size`` x ``size`` square, placed uniformly at random wholly
    inside it, set to 0: after :class:`Normalizer` that is the training set's mean colour
    (airbench96's ``batch_cutout``; DeVries & Taylor, arXiv 1708.04552).

    images: float (B, H, W, C) -> float (B, H, W, C); ``size`` in [0, min(H, W)], 0: unchanged.

    Example:
      >>> x = cutout(np.ones((2, 4, 4, 1)), np.random.default_rng(0), 2)
      >>> (x == 0).sum((1, 2, 3)).tolist()
      [4, 4]
    """
    if size == 0:
        return images
    b, h, w, _ = images.shape
    top = rng.integers(0, h - size + 1, b)[:, None]
    left = rng.integers(0, w - size + 1, b)[:, None]
    rows = (np.arange(h) >= top) & (np.arange(h) < top + size)  # (B, H)
    cols = (np.arange(w) >= left) & (np.arange(w) < left + size)  # (B, W)
    square = rows[:, :, None, None] & cols[:, None, :, None]
    return np.where(square, np.zeros((), images.dtype), images)


def alternating_flips(n: int, seed: int, epoch: int) -> np.ndarray:
    """airbench's alternating flip: which of ``n`` images are mirrored in ``epoch``, bool
    (n,). A random half (drawn once from ``seed``) in even epochs, exactly the other images
    in odd epochs, so every image is seen both ways within any two consecutive epochs.

    Example:
      >>> a, b = alternating_flips(6, 0, 0), alternating_flips(6, 0, 1)
      >>> bool((a != b).all()), bool((a == alternating_flips(6, 0, 2)).all())
      (True, True)
    """
    first = np.random.default_rng(np.random.SeedSequence([seed, 0xF11B])).random(n) < 0.5
    return first ^ bool(epoch % 2)


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed for ``(seed, epoch)``: every epoch gets its own shuffle.

    Example:
      >>> epoch_seed(0, 1) != epoch_seed(0, 2)
      True
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def steps_per_epoch(n_train: int, batch_size: int, max_steps: int | None) -> int:
    """Full batches per epoch (the last partial batch is dropped), capped by ``max_steps``.

    Example:
      >>> steps_per_epoch(5170, 128, None), steps_per_epoch(5170, 128, 3)
      (40, 3)
    """
    steps = n_train // batch_size
    if steps == 0:
        raise DataError(f"train.batch_size={batch_size} is larger than the {n_train} training "
                        "images")
    return steps if max_steps is None else min(steps, max_steps)


def train_batches(split: Split, norm: Normalizer, *, batch_size: int, seed: int, epoch: int,
                  crop_padding: int, flip: bool, max_steps: int | None = None,
                  alternating_flip: bool = False,
                  pad_mode: str = "zeros", cutout_size: int = 0) -> grain.MapDataset:
    """Epoch ``epoch``'s training batches: a grain ``MapDataset`` of dicts with ``image``
    float32 (B, 32, 32, 3) and ``label`` int32 (B,). The order and augmentation depend only on
    ``(seed, epoch)``, so a resumed run sees exactly the batches an uninterrupted one would.
    With ``flip`` and ``alternating_flip`` the flips are :func:`alternating_flips` instead of
    random; ``pad_mode`` is :func:`augment`'s; ``cutout_size`` > 0 applies :func:`cutout` to the
    normalised images. :func:`config_batches` passes a ``DataConfig``'s augmentation.

    Example:
      >>> from train.data import synthetic
      >>> ds = synthetic(10, 2, seed=0)
      >>> norm = Normalizer(*channel_stats(ds.train.images))
      >>> b = train_batches(ds.train, norm, batch_size=4, seed=0, epoch=0, crop_padding=4,
      ...                   flip=True)
      >>> len(b), b[0]["image"].shape, b[0]["label"].shape
      (2, (4, 32, 32, 3), (4,))
    """
    es = epoch_seed(seed, epoch)
    steps = steps_per_epoch(len(split), batch_size, max_steps)

    flips = alternating_flips(len(split), seed, epoch) if flip and alternating_flip else None

    def load(rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        images = augment(split.images[rows], rng, crop_padding,
                         flip if flips is None else flips[rows], pad_mode)
        return {"image": cutout(norm(images), rng, cutout_size), "label": split.labels[rows]}

    ds = grain.MapDataset.range(len(split)).shuffle(seed=es)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds[:steps].random_map(load, seed=es)


def config_batches(split: Split, norm: Normalizer, data: DataConfig, *, batch_size: int,
                   seed: int, epoch: int, max_steps: int | None = None) -> grain.MapDataset:
    """:func:`train_batches` with the augmentation of ``data`` (``crop_padding``,
    ``crop_padding_mode``, ``flip``, ``alternating_flip``, ``cutout``): what the trainer,
    ``train.check`` and ``train.bench`` feed the model."""
    return train_batches(split, norm, batch_size=batch_size, seed=seed, epoch=epoch,
                         crop_padding=data.crop_padding, flip=data.flip,
                         alternating_flip=data.alternating_flip,
                         pad_mode=data.crop_padding_mode, cutout_size=data.cutout,
                         max_steps=max_steps)


def eval_batches(split: Split, norm: Normalizer, batch_size: int) -> Iterator[dict[str, Any]]:
    """All of ``split`` in order, as dicts ``image`` float32 (B, 32, 32, 3), ``label`` int32
    (B,) and ``mask`` bool (B,). The last batch is padded to ``batch_size`` (mask False on the
    padding) so that one compiled eval step serves every batch.

    Example:
      >>> from train.data import synthetic
      >>> ds = synthetic(2, 5, seed=0)
      >>> norm = Normalizer(*channel_stats(ds.train.images))
      >>> [int(b["mask"].sum()) for b in eval_batches(ds.test, norm, 4)]
      [4, 1]
    """
    n = len(split)
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size)
        mask = rows < n
        rows = np.where(mask, rows, n - 1)
        yield {"image": norm(split.images[rows]), "label": split.labels[rows], "mask": mask}
