"""Benchmark harness: ``python -m jconv.bench`` (see ``--help``).

Times every conv implementation (and PyTorch when installed) on a suite of layers — CIFAR
CNN, ResNet-18 at 224x224, strided/dilated/grouped/depthwise — in NCHW and NHWC: compile
time, forward and forward+backward medians, GFLOP/s, % of an XLA matmul's rate measured in
the same loop, speedup over ``lax``, compiled memory, and what ``auto`` chose (the columns:
``jconv.bench.report.COLUMN_HELP``). The training benchmark is ``python -m train.bench``.
"""

from .run import run_layers
from .suite import Layer, suite

__all__ = ["Layer", "run_layers", "suite"]
