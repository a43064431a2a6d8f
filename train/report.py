"""What a run tells the user: run records, metrics files, the learning-curve plot and the
final per-class report."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

PACKAGES = ("jconv", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "omegaconf", "numpy")


def versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on ("absent" when not installed).

    Example:
      >>> "jax" in versions()
      True
    """
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def devices() -> list[str]:
    """One line per JAX device, e.g. ``['cpu:0 (TFRT_CPU_0)']``."""
    return [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()]


class MetricsLog:
    """Per-epoch metrics as JSON lines in ``path`` (plus TensorBoard scalars when a writer
    is given); :meth:`truncate` drops records beyond a resumed checkpoint.

    Example:
      >>> import tempfile, os
      >>> p = os.path.join(tempfile.mkdtemp(), "m.jsonl")
      >>> log = MetricsLog(p)
      >>> log.write({"epoch": 1, "loss": 2.0}); log.write({"epoch": 2, "loss": 1.5})
      >>> log.truncate(1); [r["epoch"] for r in log.read()]
      [1]
    """

    def __init__(self, path: str | Path, tensorboard: Any = None):
        self.path = Path(path)
        self.tensorboard = tensorboard

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def truncate(self, last_epoch: int) -> None:
        keep = [r for r in self.read() if r["epoch"] <= last_epoch]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        tmp.replace(self.path)

    def write(self, record: dict) -> None:
        # JSON has no NaN or Infinity: such a value (e.g. a test loss that overflowed) is null.
        clean = {k: None if isinstance(v, float) and not np.isfinite(v) else v
                 for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean, allow_nan=False) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["epoch"])
            self.tensorboard.flush()


def _import_tensorboardx() -> Any:
    """The ``tensorboardX`` module, imported without PyTorch.

    tensorboardX's writer imports PyTorch whenever it is installed, only to accept its tensors;
    a run logs Python floats, and that import was a second or more of every run's start-up.
    While tensorboardX loads, ``import torch`` fails (a ``None`` entry in ``sys.modules``,
    which its ``except ImportError`` expects); PyTorch imports normally afterwards. When
    PyTorch is already loaded, tensorboardX simply uses it."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX

        return tensorboardX
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tensorboardX
    finally:
        del sys.modules["torch"]
    return tensorboardX


def open_tensorboard(logdir: Path) -> Any:
    """A ``tensorboardX.SummaryWriter`` (TensorBoard files without TensorFlow, and without
    importing PyTorch, see :func:`_import_tensorboardx`), or None with a note when
    tensorboardX is not installed."""
    try:
        SummaryWriter = _import_tensorboardx().SummaryWriter
    except ImportError:
        print("note: TensorBoard logging skipped (pip install tensorboardX to enable it)")
        return None
    return SummaryWriter(str(logdir))


def curves_figure(records: Sequence[dict], title: str = "") -> Any:
    """The matplotlib figure of :func:`plot_curves`: loss and accuracy per epoch (train and
    test), whole epochs on the x axis, ``title`` above both panels.

    Example:
      >>> rec = [{"epoch": e, "train_loss": 1.0, "test_loss": 1.0, "train_acc": 0.5,
      ...         "test_acc": 0.5} for e in (1, 2, 3)]
      >>> fig = curves_figure(rec, "cifar.yaml: runs/cifar")
      >>> fig.texts[0].get_text(), all(t == int(t) for t in fig.axes[0].get_xticks())
      ('cifar.yaml: runs/cifar', True)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in records], label="train (smoothed CE)")
    # Epochs without an evaluation (train.eval_every) have no test point.
    tested = [r for r in records if r.get("test_acc") is not None]
    ax_loss.plot([r["epoch"] for r in tested], [r["test_loss"] for r in tested], "o-"
                 if len(tested) < len(records) else "-", label="test (CE)")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in records], label="train")
    ax_acc.plot([r["epoch"] for r in tested], [100 * r["test_acc"] for r in tested], "o-"
                if len(tested) < len(records) else "-", label="test")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(records: Sequence[dict], path: str | Path, title: str = "") -> None:
    """Loss and accuracy per epoch (train and test) as a PNG (see :func:`curves_figure`)."""
    import matplotlib.pyplot as plt

    fig = curves_figure(records, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int counts; row = true class, column = predicted class.

    Example:
      >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist()
      [[1, 0], [1, 1]]
    """
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def format_report(cm: np.ndarray, class_names: Sequence[str]) -> str:
    """Per-class accuracy and the confusion matrix as a text table.

    Example:
      >>> print(format_report(np.array([[3, 1], [0, 4]]), ["cat", "dog"]))
      class     n  acc %  |   cat   dog
      cat       4   75.0  |     3     1
      dog       4  100.0  |     0     4
      all       8   87.5
    """
    width = max(5, *(len(n) for n in class_names))
    # Class names are cut to 5 characters in the header so that ten columns fit a terminal.
    cells = max(5, len(str(cm.max())))
    rows = [f"{'class':<{width}}     n  acc %  | " + " ".join(f"{n[:cells]:>{cells}}"
                                                            for n in class_names)]
    for name, row in zip(class_names, cm):
        n = int(row.sum())
        acc = 100.0 * row[len(rows) - 1] / n if n else float("nan")
        rows.append(f"{name:<{width}} {n:>5} {acc:>6.1f}  | "
                    + " ".join(f"{int(v):>{cells}}" for v in row))
    total = int(cm.sum())
    rows.append(f"{'all':<{width}} {total:>5} {100.0 * np.trace(cm) / total:>6.1f}")
    return "\n".join(rows)


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")
