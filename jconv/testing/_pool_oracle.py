"""Float64 NumPy oracles for max_pool2d and avg_pool2d (PyTorch's definitions), with VJPs:
the N-D oracles of :mod:`jconv.testing._nd_oracle` with ``ndim=2``, under PyTorch's 2-D
names and signatures (as ``reference_conv2d`` is ``reference_convnd``)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._nd_oracle import (reference_avg_pool, reference_avg_pool_vjp, reference_max_pool,
                         reference_max_pool_vjp)


def _stride(stride: Any) -> Any:
    """PyTorch's 2-D pools default ``stride`` to ``[]`` (the kernel size), as None does."""
    return None if isinstance(stride, (list, tuple)) and len(stride) == 0 else stride


def reference_max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                         dilation: Any = 1, ceil_mode: bool = False) -> np.ndarray:
    """``torch.nn.functional.max_pool2d`` in float64: the max over each window's in-bounds
    pixels (padding never wins). x (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out).

    >>> import numpy as np
    >>> reference_max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    return reference_max_pool(x, kernel_size, _stride(stride), padding, dilation, ceil_mode,
                              ndim=2)[0]


def reference_max_pool2d_vjp(x: Any, ct: Any, kernel_size: Any, stride: Any = None,
                             padding: Any = 0, dilation: Any = 1,
                             ceil_mode: bool = False) -> np.ndarray:
    """dx of ``sum(ct * reference_max_pool2d(x, ...))``: each window's cotangent goes to its
    argmax (the first tap in row-major order at exact ties; callers avoid ties), shaped as x.

    >>> import numpy as np
    >>> reference_max_pool2d_vjp(np.arange(4.0).reshape(1, 1, 2, 2), np.ones((1, 1, 1, 1)),
    ...                          2)[0, 0].tolist()
    [[0.0, 0.0], [0.0, 1.0]]
    """
    return reference_max_pool_vjp(x, ct, kernel_size, _stride(stride), padding, dilation,
                                  ceil_mode, ndim=2)


def reference_avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                         ceil_mode: bool = False, count_include_pad: bool = True,
                         divisor_override: Optional[int] = None) -> np.ndarray:
    """``torch.nn.functional.avg_pool2d`` in float64: the window sum over the divisor of
    PyTorch's rule (zero padding counts only with ``count_include_pad``; windows that ceil
    mode hangs past the padded input are clipped; ``divisor_override`` replaces it).
    x (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out).

    >>> import numpy as np
    >>> reference_avg_pool2d(np.ones((1, 1, 2, 2)), 2, 1, 1)[0, 0].tolist()
    [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]
    """
    return reference_avg_pool(x, kernel_size, _stride(stride), padding, ceil_mode,
                              count_include_pad, divisor_override, ndim=2)


def reference_avg_pool2d_vjp(x: Any, ct: Any, kernel_size: Any, stride: Any = None,
                             padding: Any = 0, ceil_mode: bool = False,
                             count_include_pad: bool = True,
                             divisor_override: Optional[int] = None) -> np.ndarray:
    """dx of ``sum(ct * reference_avg_pool2d(x, ...))``: ``ct / divisor`` spread over each
    window's pixels, shaped as x.

    >>> import numpy as np
    >>> reference_avg_pool2d_vjp(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), 2)[0, 0].tolist()
    [[0.25, 0.25], [0.25, 0.25]]
    """
    return reference_avg_pool_vjp(x, ct, kernel_size, _stride(stride), padding, ceil_mode,
                                  count_include_pad, divisor_override, ndim=2)


__all__ = ["reference_avg_pool2d", "reference_avg_pool2d_vjp", "reference_max_pool2d",
           "reference_max_pool2d_vjp"]
