"""``jconv.testing``: check any convolution (1-, 2- or 3-D), transposed convolution, pooling,
unfold or fold against PyTorch's definitions, gradients included. One API: the 2-D names
(``check_conv2d``, ``check_max_pool2d``, ``reference_conv2d``, ``Conv2dCase``, ...) are the
N-D ones (``check_conv``, ``check_pool``, ``reference_convnd``, ``ConvNdCase``, ...).

Float64 NumPy oracles (``reference_*``), case lists that cover every argument form
(``conv2d_cases``, ``conv_cases``, ``pool_cases``, one table of them), checkers that compare a function with the oracle per dtype, forward and
reverse mode, plus ``jax.test_util.check_grads`` (``check_*`` -> report, ``assert_*`` ->
AssertionError with a runnable repro), adapters for other conventions, a pytest
parametrisation and a CLI (``python -m jconv.testing module:function``). See docs/testing.md.

Example (check a conv in five lines; put your own function in place of ``my_conv``):
  >>> import functools, jconv
  >>> from jconv import testing
  >>> my_conv = functools.partial(jconv.conv2d, impl="im2col")
  >>> report = testing.check_conv2d(my_conv, cases="quick", dtypes=("float32",))
  >>> report.passed
  True
"""

from ._adapters import from_layer, from_nhwc
from ._api import (DTYPES, assert_avg_pool2d, assert_conv, assert_conv1d, assert_conv2d,
                   assert_conv3d, assert_conv_transpose, assert_conv_transpose1d,
                   assert_conv_transpose2d, assert_conv_transpose3d, assert_fold,
                   assert_max_pool2d, assert_pool, assert_unfold, check_avg_pool2d, check_conv,
                   check_conv1d, check_conv2d, check_conv3d, check_conv_transpose,
                   check_conv_transpose1d, check_conv_transpose2d, check_conv_transpose3d,
                   check_fold, check_max_pool2d, check_pool, check_unfold)
from ._cases import (POOL_FUNCTIONS, AvgPool2dCase, Conv2dCase, ConvNdCase,
                     ConvTranspose2dCase, ConvTransposeNdCase, FoldCase, MaxPool2dCase,
                     PoolCase, UnfoldCase)
from ._grids import (KINDS, avg_pool2d_cases, conv2d_cases, conv_cases, conv_transpose2d_cases,
                     conv_transpose_cases, fold_cases, max_pool2d_cases, pool_cases,
                     unfold_cases)
from ._oracle import (conv_pads, reference_conv2d, reference_conv2d_vjp,
                      reference_conv_transpose2d, reference_conv_transpose2d_vjp,
                      reference_conv_transposend, reference_conv_transposend_vjp,
                      reference_convnd, reference_convnd_vjp)
from ._pool_oracle import (reference_adaptive_avg_pool, reference_adaptive_max_pool,
                           reference_avg_pool, reference_avg_pool2d, reference_avg_pool2d_vjp,
                           reference_fold, reference_lp_pool, reference_max_pool,
                           reference_max_pool2d, reference_max_pool2d_vjp,
                           reference_max_unpool, reference_unfold)
from ._pytest import pytest_cases
from ._report import DEFAULT_TOLERANCES, CheckReport, CheckResult
from ._tolerance import TOLERANCE_MODES, half_sum_tolerance

__all__ = [
    "DEFAULT_TOLERANCES", "DTYPES", "KINDS", "POOL_FUNCTIONS", "TOLERANCE_MODES",
    "AvgPool2dCase", "CheckReport", "CheckResult", "Conv2dCase", "ConvNdCase",
    "ConvTranspose2dCase", "ConvTransposeNdCase", "FoldCase", "MaxPool2dCase", "PoolCase",
    "UnfoldCase", "assert_avg_pool2d", "assert_conv", "assert_conv1d", "assert_conv2d",
    "assert_conv3d", "assert_conv_transpose", "assert_conv_transpose1d",
    "assert_conv_transpose2d", "assert_conv_transpose3d", "assert_fold",
    "assert_max_pool2d", "assert_pool", "assert_unfold", "avg_pool2d_cases",
    "check_avg_pool2d", "check_conv", "check_conv1d", "check_conv2d", "check_conv3d",
    "check_conv_transpose", "check_conv_transpose1d", "check_conv_transpose2d",
    "check_conv_transpose3d", "check_fold", "check_max_pool2d", "check_pool",
    "check_unfold", "conv2d_cases", "conv_cases", "conv_pads", "conv_transpose2d_cases",
    "conv_transpose_cases", "fold_cases", "from_layer", "from_nhwc", "half_sum_tolerance",
    "max_pool2d_cases", "pool_cases", "pytest_cases", "reference_adaptive_avg_pool",
    "reference_adaptive_max_pool", "reference_avg_pool", "reference_avg_pool2d",
    "reference_avg_pool2d_vjp", "reference_conv2d", "reference_conv2d_vjp",
    "reference_conv_transpose2d", "reference_conv_transpose2d_vjp",
    "reference_conv_transposend", "reference_conv_transposend_vjp", "reference_convnd",
    "reference_convnd_vjp", "reference_fold", "reference_lp_pool", "reference_max_pool",
    "reference_max_pool2d", "reference_max_pool2d_vjp", "reference_max_unpool",
    "reference_unfold", "unfold_cases",
]
