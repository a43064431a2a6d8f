"""CIFAR-10 in memory from its sources: TFDS, the official python folder (downloaded when
asked, :mod:`train.data.download`), or random pixels.

Every source yields the same thing, a :class:`Dataset` of uint8 images (N, 32, 32, 3) and
int32 labels (N,), so the training loop never knows where the data came from. The images
are small (50,000 x 3 KiB = 150 MiB for full CIFAR-10), so holding them in memory is both
the simplest and the fastest option on CPU.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import jconv

from ..config import CONFIG_DIR, DataConfig, load_yaml
from ..errors import DataError
from .download import CIFAR10_FOLDER, CIFAR10_URL, OFFLINE, download_cifar10

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


@dataclass(frozen=True)
class Split:
    """images: uint8 (N, 32, 32, 3); labels: int32 (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    class_names: tuple[str, ...]
    description: str


def _split(images: np.ndarray, labels: Any, where: str) -> Split:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DataError(f"{where}: images have shape {images.shape}, expected (N, 32, 32, 3)")
    if labels.shape != (len(images),):
        raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return Split(images, labels.astype(np.int32))


def synthetic(n_train: int, n_test: int, seed: int) -> Dataset:
    """Random images with random labels, for smoke runs (nothing to learn).

    Example:
      >>> ds = synthetic(8, 4, seed=0)
      >>> ds.train.images.shape, ds.test.labels.shape
      ((8, 32, 32, 3), (4,))
    """
    rng = np.random.default_rng(seed)

    def make(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                     rng.integers(0, 10, n).astype(np.int32))

    return Dataset(make(n_train), make(n_test), CIFAR10_CLASSES,
                   f"synthetic ({n_train} train / {n_test} test random images)")


def _read_batch(file: Path) -> Split:
    try:
        with open(file, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"{file}: missing") from None
    except Exception as e:  # truncated/garbled pickles raise many different types
        raise DataError(f"{file}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") \
            from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{file}: not a CIFAR-10 batch (expected a dict with b'data' and "
                        "b'labels')")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{file}: b'data' is {data.dtype} {data.shape}, expected uint8 (n, 3072)")
    # Rows are 1024 R, 1024 G, 1024 B values, each a row-major 32x32 plane.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return _split(images, batch[b"labels"], str(file))


def _subset_folder() -> Path:
    """The real subset's folder as configs/cifar_subset.yaml gives it (relative to the
    repository root); read from that file so the two never disagree."""
    return Path(load_yaml(CONFIG_DIR / "cifar_subset.yaml").data.dir).expanduser()


def _subset_not_here(folder: Path) -> str:
    """The error for the subset's relative data.dir run from elsewhere: OFFLINE's advice
    (--config cifar_subset.yaml) is the config already in use, so say what is wrong."""
    from_root = (CONFIG_DIR.parent / folder).resolve()
    there = (f"pass data.dir={from_root}" if from_root.is_dir() else
             f"pass data.dir=/abs/path/to/{CIFAR10_FOLDER} (from the repository root it would "
             f"be {from_root}, which does not exist either)")
    return (f"data.dir={str(folder)!r} (= {folder.resolve()}) does not exist relative to the "
            f"working directory {Path.cwd()}: it is the real 5,170-image subset's folder, "
            f"given relative to the repository root ({CONFIG_DIR.parent}), so the offline "
            f"config is already the one in use. Run from the repository root, or {there}; "
            f"or train on random images (data.source=synthetic, a smoke test)")


def load_cifar10_dir(folder: str | Path, read_test: bool = True) -> Dataset:
    """The official "python version" folder (``cifar-10-batches-py``): ``data_batch_<k>``
    files (any number, any rows each) for training, ``test_batch`` for test (not read when
    not ``read_test``: the test split is then empty).

    Example:
      >>> load_cifar10_dir("/no/such/dir")
      Traceback (most recent call last):
      ...
      train.errors.DataError: data.dir='/no/such/dir' does not exist. ...
    """
    folder = Path(folder).expanduser()
    # Where it looked, absolute: a relative data.dir depends on the working directory.
    where = f"data.dir={str(folder)!r}" + ("" if folder.is_absolute() else
                                           f" (= {folder.resolve()})")
    hint = (f"expected the official CIFAR-10 python folder 'cifar-10-batches-py' with "
            f"data_batch_1..5 and test_batch: unpack {CIFAR10_URL} there, let "
            f"data.source=auto with data.download=true fetch it (data.source=cifar10_dir "
            f"never downloads), or use data.source=tfds; {OFFLINE}")
    if not folder.is_dir():
        if not folder.is_absolute() and folder == _subset_folder():
            raise DataError(_subset_not_here(folder))
        raise DataError(f"{where} does not exist. {hint}")
    train_files = sorted((p for p in folder.iterdir() if re.fullmatch(r"data_batch_\d+", p.name)),
                         key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not train_files:
        raise DataError(f"{where} has no data_batch_* files. {hint}")
    parts = [_read_batch(p) for p in train_files]
    train = Split(np.concatenate([p.images for p in parts]),
                  np.concatenate([p.labels for p in parts]))
    test = _read_batch(folder / "test_batch") if read_test else \
        Split(np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int32))
    names = CIFAR10_CLASSES
    meta = folder / "batches.meta"
    if meta.is_file():
        try:
            with open(meta, "rb") as f:
                raw = pickle.load(f, encoding="bytes")[b"label_names"]
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
        except Exception as e:
            raise DataError(f"{meta}: not a readable CIFAR-10 meta file ({e})") from None
    return Dataset(train, test, names, f"cifar10_dir {folder} ({len(train)} train / "
                                       f"{len(test)} test)")


def tfds_help(name: str, data_dir: str | None) -> str:
    where = f" --data_dir={data_dir}" if data_dir else ""
    return (f"TFDS dataset {name!r} is not prepared (in array_record format) under "
            f"{data_dir or '$TFDS_DATA_DIR or ~/tensorflow_datasets'}. Prepare it once on a "
            f"machine with internet: `pip install tensorflow && tfds build {name} "
            f"--file_format=array_record{where}`, set data.data_dir (or TFDS_DATA_DIR) to that "
            f"folder, or train from the official python folder instead: "
            f"data.source=cifar10_dir data.dir=/path/to/cifar-10-batches-py "
            f"(unpacked from {CIFAR10_URL}).")


def load_tfds(name: str, data_dir: str | None) -> Dataset:
    """``name`` read with ``tfds.data_source`` (random access, no TensorFlow needed) into
    memory. ``data_dir`` None means ``$TFDS_DATA_DIR`` or TFDS's default folder."""
    import tensorflow_datasets as tfds

    # TFDS logs a warning for every unprepared folder it probes; our error says it better.
    logging.getLogger("absl").setLevel(logging.ERROR)
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    splits = {}
    for split in ("train", "test"):
        try:
            # download=False: a missing dataset must fail now, not start a download or hang.
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{tfds_help(name, data_dir)} (TFDS said: {reason})") from None
        # One record at a time: PNG decoding dominates the cost (seconds for all 60,000).
        records = [source[i] for i in range(len(source))]
        images = np.stack([r["image"] for r in records]) if records else \
            np.zeros((0, 32, 32, 3), np.uint8)
        splits[split] = _split(images, [r["label"] for r in records], f"tfds {name}/{split}")
        names = tuple(source.dataset_info.features["label"].names)
    if len(names) != 10:
        raise DataError(f"tfds {name}: {len(names)} classes, expected CIFAR-10's 10")
    return Dataset(splits["train"], splits["test"], names,
                   f"tfds {name} ({len(splits['train'])} train / {len(splits['test'])} test)")


def default_data_dir() -> Path:
    """Where ``data.dir: null`` keeps the python folder: ``cifar-10-batches-py`` in
    :func:`jconv.user_cache_dir` (``$XDG_CACHE_HOME/jconv``, else ``~/.cache/jconv``).

    Example:
      >>> default_data_dir().parts[-2:]
      ('jconv', 'cifar-10-batches-py')
    """
    return jconv.user_cache_dir() / CIFAR10_FOLDER


def python_folder(data_cfg: DataConfig) -> Path:
    """The ``cifar-10-batches-py`` folder ``data_cfg`` names: ``data.dir``, or
    :func:`default_data_dir` when that is null."""
    return Path(data_cfg.dir).expanduser() if data_cfg.dir else default_data_dir()


def _auto(data_cfg: DataConfig, progress: bool) -> Dataset:
    """data.source=auto: a prepared TFDS copy, else the python folder, else a download."""
    tfds_reason = "tensorflow-datasets is not installed"
    try:
        import tensorflow_datasets  # noqa: F401  (only to know whether TFDS is an option)
    except ImportError:
        pass
    else:
        try:
            return load_tfds(data_cfg.tfds_name, data_cfg.data_dir)
        except DataError:
            tfds_reason = f"TFDS {data_cfg.tfds_name!r} is not prepared"
    folder = python_folder(data_cfg)
    if not folder.exists() and data_cfg.download:
        download_cifar10(folder, data_cfg.url, data_cfg.md5, progress=progress)
    if folder.exists():
        return load_cifar10_dir(folder)
    raise DataError(
        f"data.source=auto found no CIFAR-10: {tfds_reason}, there is no {folder} and "
        f"data.download=false. Either set data.download=true (fetches {data_cfg.url}, "
        f"163 MB), set data.dir to an unpacked {CIFAR10_FOLDER} folder, or prepare TFDS "
        f"(`pip install tensorflow && tfds build {data_cfg.tfds_name} "
        f"--file_format=array_record`); {OFFLINE}")


def load_dataset(data_cfg: DataConfig, seed: int, progress: bool = True) -> Dataset:
    """The dataset ``data_cfg.source`` names, trimmed to ``data_cfg.max_train`` images.

    With ``data_cfg.val_fraction`` > 0 the last ``round(val_fraction * N)`` of those N
    training images become the returned ``test`` split (a validation split, for tuning) and
    the real test images are never used (``cifar10_dir`` does not even read them).

    ``auto`` takes a prepared TFDS copy, else the python folder at ``data.dir``, else
    downloads it there when ``data.download``; ``cifar10_dir`` reads the folder at
    ``data.dir`` and never downloads. ``progress`` shows the download's progress bar.

    Example:
      >>> from types import SimpleNamespace as NS
      >>> cfg = NS(source="synthetic", synthetic_train=4, synthetic_test=2, max_train=3,
      ...          val_fraction=0.0)
      >>> len(load_dataset(cfg, seed=0).train)
      3
    """
    val = data_cfg.val_fraction > 0
    if data_cfg.source == "synthetic":
        ds = synthetic(data_cfg.synthetic_train, data_cfg.synthetic_test, seed)
    elif data_cfg.source == "cifar10_dir":
        ds = load_cifar10_dir(python_folder(data_cfg), read_test=not val)
    elif data_cfg.source == "auto":
        ds = _auto(data_cfg, progress)
    else:
        ds = load_tfds(data_cfg.tfds_name, data_cfg.data_dir)
    if len(ds.train) == 0 or (len(ds.test) == 0 and not val):
        raise DataError(f"{ds.description}: the train and test splits must both be non-empty")
    if data_cfg.max_train is not None and data_cfg.max_train < len(ds.train):
        n = data_cfg.max_train
        ds = Dataset(Split(ds.train.images[:n], ds.train.labels[:n]), ds.test, ds.class_names,
                     f"{ds.description}, first {n} train images")
    if val:
        n = len(ds.train)
        k = round(data_cfg.val_fraction * n)
        if not 0 < k < n:
            raise DataError(f"data.val_fraction={data_cfg.val_fraction} of {n} training images "
                            f"holds out {k}: expected at least 1 and fewer than {n}")
        ds = Dataset(Split(ds.train.images[:n - k], ds.train.labels[:n - k]),
                     Split(ds.train.images[n - k:], ds.train.labels[n - k:]), ds.class_names,
                     f"{ds.description}; VALIDATION run: the last {k} of the {n} training "
                     "images are the evaluation split, the test set is not used")
    return ds


