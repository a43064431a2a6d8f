"""train.data: the three sources, loader errors, augmentation and deterministic batches."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from train.data import (DataError, Normalizer, augment, channel_stats, config_batches, cutout,
                        eval_batches, load_cifar10_dir, load_dataset, load_tfds, synthetic,
                        train_batches)
from train.config import load_config

from train_helpers import make_cifar_dir, write_batch

SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset" / \
    "cifar-10-batches-py"


def test_cifar10_dir_reads_any_rows_per_batch_in_hwc_layout(tmp_path):
    folder, images, labels = make_cifar_dir(tmp_path, train_rows=(7, 5, 3), test_rows=6)
    ds = load_cifar10_dir(folder)
    assert ds.train.images.shape == (15, 32, 32, 3) and ds.test.images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(ds.train.images, images)
    np.testing.assert_array_equal(ds.train.labels, labels)
    assert ds.class_names[3] == "class3"


def test_cifar10_dir_channel_planes(tmp_path):
    # One image whose red plane is 1, green 2, blue 3: row = 1024 x 1, 1024 x 2, 1024 x 3.
    folder = tmp_path / "d"
    folder.mkdir()
    data = np.repeat(np.array([1, 2, 3], np.uint8), 1024)[None]
    for name in ("data_batch_1", "test_batch"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"labels": [4], b"data": data}, f)
    ds = load_cifar10_dir(folder)
    assert ds.train.images[0, 5, 7].tolist() == [1, 2, 3]


@pytest.mark.parametrize("damage, match", [
    ("no_dir", r"data.dir='.*' does not exist\. expected the official CIFAR-10 python folder"),
    ("no_train", r"has no data_batch_\* files"),
    ("no_test", r"test_batch: missing"),
    ("garbage", r"data_batch_1: not a readable CIFAR-10 batch"),
    ("truncated", r"data_batch_2: not a readable CIFAR-10 batch"),
    ("not_dict", r"data_batch_1: not a CIFAR-10 batch \(expected a dict"),
    ("bad_shape", r"data_batch_1: b'data' is uint8 \(2, 100\), expected uint8 \(n, 3072\)"),
    ("bad_labels", r"data_batch_1: labels must be in 0\.\.9, got 0\.\.12"),
    ("label_count", r"data_batch_1: 3 labels for 2 images"),
])
def test_cifar10_dir_errors(tmp_path, damage, match):
    folder, _, _ = make_cifar_dir(tmp_path)
    batch1 = folder / "data_batch_1"
    if damage == "no_dir":
        folder = tmp_path / "missing"
    elif damage == "no_train":
        batch1.unlink()
        (folder / "data_batch_2").unlink()
    elif damage == "no_test":
        (folder / "test_batch").unlink()
    elif damage == "garbage":
        batch1.write_bytes(b"this is not a pickle")
    elif damage == "truncated":
        data = (folder / "data_batch_2").read_bytes()
        (folder / "data_batch_2").write_bytes(data[: len(data) // 2])
    elif damage == "not_dict":
        batch1.write_bytes(pickle.dumps([1, 2, 3]))
    elif damage == "bad_shape":
        batch1.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8),
                                         b"labels": [0, 1]}))
    elif damage == "bad_labels":
        write_batch(batch1, np.zeros((2, 32, 32, 3), np.uint8), [0, 12])
    elif damage == "label_count":
        write_batch(batch1, np.zeros((2, 32, 32, 3), np.uint8), [0, 1, 2])
    with pytest.raises(DataError, match=match):
        load_cifar10_dir(folder)


def test_tfds_mock_data_source():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = load_tfds("cifar10", None)
    assert ds.train.images.shape == (12, 32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.test.labels.shape == (12,) and len(ds.class_names) == 10


def test_tfds_not_prepared_fails_fast_with_instructions(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    with pytest.raises(DataError, match=r"TFDS dataset 'cifar10' is not prepared .* tfds build "
                                        r"cifar10 --file_format=array_record.*data.source="
                                        r"cifar10_dir"):
        load_tfds("cifar10", str(tmp_path))


def test_tfds_data_dir_env_is_respected(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "from_env"))
    with pytest.raises(DataError, match=r"under .*from_env"):
        load_tfds("cifar10", None)


def test_max_train_and_synthetic():
    cfg = load_config("vgg.yaml", ["data.source=synthetic", "data.synthetic_train=20",
                                     "data.synthetic_test=4", "data.max_train=8"])
    ds = load_dataset(cfg.data, seed=0)
    assert len(ds.train) == 8 and len(ds.test) == 4


def test_augment_identity_flip_and_crop():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(augment(x, rng, 0, False), x)
    flipped = augment(x, np.random.default_rng(1), 0, True)
    is_mirror = [np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, x)]
    is_same = [np.array_equal(f, i) for f, i in zip(flipped, x)]
    assert all(m or s for m, s in zip(is_mirror, is_same)) and 10 < sum(is_mirror) < 54
    cropped = augment(x, np.random.default_rng(2), 4, False)
    # Every crop is a shifted window: its centre 24x24 appears in the original image.
    for c, i in zip(cropped[:8], x[:8]):
        padded = np.pad(i, ((4, 4), (4, 4), (0, 0)))
        assert any(np.array_equal(c, padded[dy:dy + 32, dx:dx + 32])
                   for dy in range(9) for dx in range(9))


def test_train_batches_are_deterministic_permutations():
    ds = synthetic(50, 4, seed=0)
    norm = Normalizer(*channel_stats(ds.train.images))
    kw = dict(batch_size=10, seed=3, crop_padding=4, flip=True)
    a = train_batches(ds.train, norm, epoch=0, **kw)
    b = train_batches(ds.train, norm, epoch=0, **kw)
    c = train_batches(ds.train, norm, epoch=1, **kw)
    assert len(a) == 5
    for i in range(5):
        np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    labels_a = np.concatenate([a[i]["label"] for i in range(5)])
    labels_c = np.concatenate([c[i]["label"] for i in range(5)])
    assert sorted(labels_a) == sorted(ds.train.labels) and not np.array_equal(labels_a,
                                                                              labels_c)
    assert a[0]["image"].dtype == np.float32 and abs(float(a[0]["image"].mean())) < 0.5


@pytest.mark.parametrize("size", [1, 5, 32])
def test_cutout_zeroes_one_square_inside_each_image(size):
    x = np.random.default_rng(0).uniform(1, 2, (64, 32, 32, 3)).astype(np.float32)
    out = cutout(x, np.random.default_rng(1), size)
    zero = out == 0
    assert (zero.all(-1) == zero.any(-1)).all()  # whole pixels, all channels
    for z in zero[..., 0]:
        rows, cols = np.nonzero(z)
        assert len(rows) == size * size and np.ptp(rows) == np.ptp(cols) == size - 1
    np.testing.assert_array_equal(out[~zero], x[~zero])
    corners = {(int(np.nonzero(z)[0][0]), int(np.nonzero(z)[1][0])) for z in zero[..., 0]}
    assert len(corners) > (1 if size < 32 else 0)  # placed at random (all at 0 for 32)
    assert cutout(x, np.random.default_rng(1), 0) is x


def test_config_batches_apply_the_configured_cutout():
    ds = synthetic(20, 4, seed=0)
    norm = Normalizer(*channel_stats(ds.train.images))
    cfg = load_config("vgg.yaml", ["data.cutout=6", "data.crop_padding=0", "data.flip=false"])
    batch = config_batches(ds.train, norm, cfg.data, batch_size=10, seed=0, epoch=0)[0]
    zero_pixels = (batch["image"] == 0).all(-1).sum((1, 2))
    assert zero_pixels.tolist() == [36] * 10
    plain = config_batches(ds.train, norm, load_config("vgg.yaml", ["data.crop_padding=0",
                                                                      "data.flip=false"]).data,
                           batch_size=10, seed=0, epoch=0)[0]
    assert ((plain["image"] == 0).all(-1).sum() == 0)


def test_eval_batches_cover_the_split_once():
    ds = synthetic(4, 23, seed=0)
    norm = Normalizer(*channel_stats(ds.train.images))
    batches = list(eval_batches(ds.test, norm, 10))
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, ds.test.labels)
    assert all(b["image"].shape == (10, 32, 32, 3) for b in batches)


@pytest.mark.skipif(not SUBSET.is_dir(), reason=f"real CIFAR-10 subset not found at {SUBSET}")
def test_real_subset_loads():
    ds = load_cifar10_dir(SUBSET)
    assert len(ds.train) == 5170 and len(ds.test) == 1017
    assert ds.class_names[0] == "airplane" and set(ds.test.labels.tolist()) == set(range(10))
