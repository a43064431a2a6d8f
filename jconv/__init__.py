"""jconv: 1-, 2- and 3-D convolution in JAX with exactly PyTorch's semantics.

Nine implementations behind one registry (``jconv.CONV_IMPLS``): XLA's convolution
(``"lax"``), im2col, a loop over kernel taps, two Winograd tilings, FFT, Pallas kernels,
oneDNN through the XLA FFI, and ``"auto"``, which measures the exact ones (and oneDNN on CPU)
per shape and pass.
Plus pooling, shape/cost helpers, Flax NNX layers, BatchNorm folding and a gradient-check
suite (``jconv.testing``)."""

from . import nn
from ._auto import AutoChoice, auto_choice, clear_auto_cache, set_auto_measure
from ._auto_cache import user_cache_dir
from ._onednn_bn import available as onednn_batch_norm_available
from ._onednn_bn import batch_norm_train as onednn_batch_norm
from ._registry import AUTO_IMPLS, CONV_IMPLS, POOL_IMPLS, Implementation, check_conv_impl
from ._pool_spec import PoolSpec, pool_spec
from ._spec import ConvSpec, conv_spec
from .conv import conv1d, conv2d, conv3d, convnd
from .cost import (ReceptiveField, RFLayer, activation_bytes, conv2d_flops, conv2d_macs,
                   conv2d_params, conv_flops, conv_macs, conv_params, receptive_field)
from .nn import set_impl
from .adaptive_pool import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d,
                            adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d)
from .pool import (avg_pool1d, avg_pool2d, avg_pool3d, avg_poolnd, global_avg_pool2d, lp_pool1d,
                   lp_pool2d, lp_pool3d, lp_poolnd, max_pool1d, max_pool2d, max_pool3d,
                   max_poolnd)
from .unpool import max_unpool1d, max_unpool2d, max_unpool3d
from .pad import pad
from .shapes import (ConvParams, conv2d_output_shape, conv_output_shape, find_conv_params,
                     pool2d_output_shape, same_padding)
from .bn_fold import fold_conv_bn, fold_conv_bn_sequential
from .fold_graph import FoldReport, fold_conv_bn_graph
from .fused import conv2d_bias_act
from .host_memory import reuse_host_memory
from .summary import LayerSummary, ModelSummary, summary
from .torch_import import load_torch_state_dict
from .transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d
from .unfold import fold, unfold
from .stopwatch import interleaved_medians
from .xla_options import CONV_BACKENDS, conv_compiler_options, jit, set_default_conv_backend

__version__ = "0.1.0"


def check_onednn(dtype: object = "float32") -> None:
    """Nothing when ``impl="onednn"`` can run ``dtype`` convolutions here; otherwise the
    reason: a ``RuntimeError`` when the native extension or libdnnl does not load, a
    ``ValueError`` for a dtype it has no kernels for (float64, or bfloat16 on a CPU without
    bfloat16 kernels). Starts no XLA backend, so it may run before
    ``jax.distributed.initialize``.

    Example:
      >>> import jconv
      >>> jconv.check_onednn("float64")
      Traceback (most recent call last):
      ...
      ValueError: impl='onednn' supports dtypes ...
    """
    from ._onednn import check_supported

    check_supported(dtype)  # type: ignore[arg-type]


def __getattr__(name: str) -> object:
    # jconv.testing loads on first use: plain ``import jconv`` stays as light as before.
    if name == "testing":
        import importlib

        return importlib.import_module(".testing", __name__)
    if name == "IMPLS":
        # The old name read as "all implementations"; it always meant auto's candidates.
        import warnings

        warnings.warn("jconv.IMPLS is deprecated; use jconv.AUTO_IMPLS (the exact "
                      "implementations impl='auto' chooses among) or jconv.CONV_IMPLS (every "
                      "impl=)", DeprecationWarning, stacklevel=2)
        return AUTO_IMPLS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "reuse_host_memory",
    "check_conv_impl",
    "check_onednn",
    "interleaved_medians",
    "onednn_batch_norm",
    "onednn_batch_norm_available",
    "CONV_BACKENDS",
    "AUTO_IMPLS",
    "CONV_IMPLS",
    "Implementation",
    "POOL_IMPLS",
    "AutoChoice",
    "auto_choice",
    "clear_auto_cache",
    "set_auto_measure",
    "set_default_conv_backend",
    "ConvParams",
    "ConvSpec",
    "PoolSpec",
    "conv_spec",
    "pool_spec",
    "LayerSummary",
    "ModelSummary",
    "RFLayer",
    "ReceptiveField",
    "activation_bytes",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "avg_poolnd",
    "conv1d",
    "conv2d",
    "conv3d",
    "convnd",
    "conv2d_bias_act",
    "conv2d_flops",
    "conv2d_macs",
    "conv2d_output_shape",
    "conv2d_params",
    "conv_compiler_options",
    "conv_flops",
    "conv_macs",
    "conv_output_shape",
    "conv_params",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "find_conv_params",
    "fold",
    "fold_conv_bn",
    "fold_conv_bn_sequential",
    "fold_conv_bn_graph",
    "FoldReport",
    "global_avg_pool2d",
    "jit",
    "load_torch_state_dict",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "lp_poolnd",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_poolnd",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "nn",
    "pad",
    "pool2d_output_shape",
    "receptive_field",
    "same_padding",
    "set_impl",
    "summary",
    "testing",
    "user_cache_dir",
    "unfold",
]
