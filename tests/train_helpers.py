"""Shared helpers for the train tests: tiny CIFAR-10 python folders and fast overrides."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

# A model and run small enough that a whole CLI run takes a few seconds on 2 cores.
TINY = ["model.widths=[8]", "model.convs_per_stage=1", "train.batch_size=16",
        "train.eval_batch_size=32", "data.synthetic_train=64", "data.synthetic_test=40",
        "optim.warmup_epochs=0", "train.tensorboard=false"]


def write_batch(path: Path, images: np.ndarray, labels: list[int]) -> None:
    """Write images uint8 (n, 32, 32, 3) in the official layout: rows of 1024 R, G, B."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data}, f)


def make_cifar_dir(root: Path, train_rows: tuple[int, ...] = (7, 5), test_rows: int = 6,
                   seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """A ``cifar-10-batches-py`` folder; returns (folder, train images, train labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    all_images, all_labels = [], []
    for k, n in enumerate(train_rows, start=1):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        write_batch(folder / f"data_batch_{k}", images, labels)
        all_images.append(images)
        all_labels += labels
    write_batch(folder / "test_batch", rng.integers(0, 256, (test_rows, 32, 32, 3),
                                                    dtype=np.uint8),
                rng.integers(0, 10, test_rows).tolist())
    names = [f"class{i}".encode() for i in range(10)]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 10000}, f)
    return folder, np.concatenate(all_images), np.array(all_labels)


def metrics(workdir: Path) -> list[dict]:
    """The per-epoch records of a run's ``metrics.jsonl``."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def interrupted_and_resumed(main: Callable[[list[str]], int], args: list[str], tmp_path: Path,
                            monkeypatch: Any) -> list[dict]:
    """Run ``args`` once whole (``tmp_path/full``) and once interrupted in its second epoch
    as Ctrl-C would, then ``--resume``d (``tmp_path/resumed``); assert both end with the same
    deterministic metrics and test loss, and return their two ``results.json``."""
    from train import loop

    assert main([*args, "--workdir", str(tmp_path / "full")]) == 0
    real_epoch = loop._train_epoch

    def killed_in_epoch_2(run, steps, epoch):
        if epoch == 1:
            raise KeyboardInterrupt  # what Ctrl-C / SIGINT does mid-epoch
        return real_epoch(run, steps, epoch)

    monkeypatch.setattr(loop, "_train_epoch", killed_in_epoch_2)
    assert main([*args, "--workdir", str(tmp_path / "resumed")]) == 130
    assert [r["epoch"] for r in metrics(tmp_path / "resumed")] == [1]
    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    assert main([*args, "--workdir", str(tmp_path / "resumed"), "--resume"]) == 0
    full, resumed = metrics(tmp_path / "full"), metrics(tmp_path / "resumed")
    assert len(full) == len(resumed) > 1
    for a, b in zip(full, resumed):
        assert {k: a[k] for k in loop.DETERMINISTIC_FIELDS} == \
            {k: b[k] for k in loop.DETERMINISTIC_FIELDS}
    final = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("full",
                                                                               "resumed")]
    assert final[0]["test_loss"] == final[1]["test_loss"]
    return final
