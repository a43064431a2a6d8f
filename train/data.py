"""CIFAR-10 in memory from TFDS, the official python folder (downloaded when asked), or
random pixels; batches through grain with per-channel normalisation, random crop and flip.

Every source yields the same thing, a :class:`Dataset` of uint8 images (N, 32, 32, 3) and
int32 labels (N,), so the training loop never knows where the data came from. The images
are small (50,000 x 3 KiB = 150 MiB for full CIFAR-10), so holding them in memory and
augmenting whole batches with numpy is both the simplest and the fastest option on CPU.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pickle
import re
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import grain
import numpy as np
from tqdm import tqdm

import jconv

from .config import CONFIG_DIR, DataConfig, load_yaml
from .errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published next to the archive
CIFAR10_FOLDER = "cifar-10-batches-py"  # the archive's top folder
# The end of every "no CIFAR-10 here" message: what runs without the full download.
OFFLINE = ("offline, train on the real 5,170-image subset (--config cifar_subset.yaml) or on "
           "random images (data.source=synthetic, a smoke test)")


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


def download_cifar10(dest: str | Path, url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5,
                     *, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download the CIFAR-10 python archive from ``url`` and unpack its
    ``cifar-10-batches-py`` folder as ``dest``; returns ``dest``.

    The archive goes into a temporary folder next to ``dest`` (with a progress bar), its MD5
    is checked against ``md5`` (``None`` skips the check with a warning), it is unpacked
    there and the folder is renamed into place only when complete, so an interrupted or
    corrupt download never leaves a folder that looks valid. ``timeout`` (seconds) bounds
    the wait for the connection and for each read of a stalled server. Every failure is a
    :class:`DataError` naming the URL and the way out.

    Example:
      >>> download_cifar10("/tmp/x", url="http://127.0.0.1:9/none.tar.gz", timeout=1)
      Traceback (most recent call last):
      ...
      train.errors.DataError: downloading http://127.0.0.1:9/none.tar.gz failed: ...
    """
    dest = Path(dest).expanduser()
    fix = (f"check the URL (data.url) and the connection and run again, or unpack "
           f"{CIFAR10_URL} yourself and set data.dir to its {CIFAR10_FOLDER} folder; "
           f"{OFFLINE}")
    fail = f"downloading {url} failed"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-", dir=dest.parent))
    try:
        archive = tmp / "archive.tar.gz"
        digest = hashlib.md5()
        got = 0
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, \
                    open(archive, "wb") as f, \
                    tqdm(total=resp.length, unit="B", unit_scale=True, disable=not progress,
                         desc=f"downloading {url.rsplit('/', 1)[-1]}") as bar:
                total = resp.length  # Content-Length; None when the server does not say
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except urllib.error.HTTPError as e:
            raise DataError(f"{fail}: HTTP {e.code} {e.reason}; {fix}") from None
        except (TimeoutError, socket.timeout):
            raise DataError(f"{fail}: the server sent nothing for {timeout:g} s (timed out); "
                            f"{fix}") from None
        except urllib.error.URLError as e:
            raise DataError(f"{fail}: {e.reason}; {fix}") from None
        except http.client.IncompleteRead as e:
            raise DataError(f"{fail}: the connection closed after {got + len(e.partial)} "
                            f"bytes (truncated download); {fix}") from None
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"{fail}: {type(e).__name__}: {e}; {fix}") from None
        if total is not None and got != total:
            raise DataError(f"{fail}: got {got} of {total} bytes (truncated download); {fix}")
        if md5 is None:
            warnings.warn(f"data.md5 is null: the archive from {url} is not checksum-verified",
                          stacklevel=2)
        elif digest.hexdigest() != md5.lower():
            raise DataError(f"{fail}: MD5 {digest.hexdigest()} != expected {md5} (corrupt or "
                            f"a different file); {fix}")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp / "unpacked", filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{fail}: not a readable .tar.gz archive ({e}); {fix}") from None
        unpacked = tmp / "unpacked" / CIFAR10_FOLDER
        if not (unpacked / "test_batch").is_file():
            raise DataError(f"{fail}: the archive has no {CIFAR10_FOLDER}/test_batch; {fix}")
        try:
            os.rename(unpacked, dest)
        except OSError:
            # Another process (a second trainer on this host) may have finished first.
            if not (dest / "test_batch").is_file():
                raise DataError(f"{fail}: cannot move the unpacked folder to {dest} (it exists "
                                f"and is not a complete {CIFAR10_FOLDER} folder: remove it "
                                f"or choose another data.dir)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


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
        rows = (oy[:, None] + np.arange(h))[:, :, None]
        cols = (ox[:, None] + np.arange(w))[:, None, :]
        images = padded[np.arange(b)[:, None, None], rows, cols]
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
