"""CIFAR-10 for the trainer, in two halves: the *sources* (:mod:`train.data.sources`: TFDS,
the official python folder, random pixels, all as one in-memory :class:`Dataset`; the
download through pooch in :mod:`train.data.download`) and the *pipeline*
(:mod:`train.data.pipeline`: grain batches with per-channel normalisation, random crop,
flip and cutout). The names below are the package's public ones.
"""

from ..errors import DataError
from .download import CIFAR10_FOLDER, CIFAR10_MD5, CIFAR10_URL, OFFLINE, download_cifar10
from .pipeline import (Normalizer, alternating_flips, augment, channel_stats, config_batches,
                       cutout, epoch_seed, eval_batches, steps_per_epoch, train_batches)
from .sources import (CIFAR10_CLASSES, Dataset, Split, default_data_dir, load_cifar10_dir,
                      load_dataset, load_tfds, python_folder, synthetic, tfds_help)

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_FOLDER", "CIFAR10_MD5", "CIFAR10_URL", "OFFLINE", "DataError",
    "Dataset", "Normalizer", "Split", "alternating_flips", "augment", "channel_stats",
    "config_batches", "cutout", "default_data_dir", "download_cifar10", "epoch_seed",
    "eval_batches", "load_cifar10_dir", "load_dataset", "load_tfds", "python_folder",
    "steps_per_epoch", "synthetic", "tfds_help", "train_batches",
]
