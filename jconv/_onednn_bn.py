"""Training-mode batch normalisation with oneDNN's CPU primitives inside XLA.

The native part lives beside the convolutions in ``jconv/_onednn.cc`` (the same extension,
primitive cache, thread setting and huge-page advice): ``jconv_onednn_bn_fwd`` runs
``batch_normalization_forward`` (``prop_kind::forward_training``, statistics from the batch,
``use_shift`` and, with a learned scale, ``use_scale``) and ``jconv_onednn_bn_bwd`` runs
``batch_normalization_backward`` (``prop_kind::backward``: ``dx`` and the parameters'
gradients in one primitive). Both take the caller's layout (NHWC or NCHW), float32 only.

:func:`batch_norm_train` wires them as a ``jax.custom_vjp``: reverse mode (first order), no
forward mode. ``lax.platform_dependent`` runs oneDNN when lowering for CPU and the plain JAX
formula (autodiff) for anything else, so a model using it still exports for GPU/TPU.
"""

from __future__ import annotations

import ctypes
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from . import _onednn
from ._spec import check_data_format

_BN_HANDLERS = ("jconv_onednn_bn_fwd", "jconv_onednn_bn_bwd")
_FWD, _BWD = 3, 4  # the C++ Pass enum


@functools.cache
def _bn_library_or_reason() -> tuple[ctypes.CDLL | None, str]:
    """The extension with the batch-norm handlers registered, or None and why not."""
    lib, reason = _onednn._library_or_reason()
    if lib is None:
        return None, reason
    # An extension built before the batch-norm handlers existed still runs convolutions.
    if not all(hasattr(lib, name) for name in _BN_HANDLERS):
        return None, ("jconv's oneDNN extension predates its batch-norm handlers; rebuild it "
                      "(python setup.py build_ext --inplace, or reinstall jconv)")
    for name in _BN_HANDLERS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)),
                                    platform="cpu")
    lib.jconv_onednn_bn_probe.restype = ctypes.c_int
    lib.jconv_onednn_bn_probe.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                          ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_char_p, ctypes.c_int64]
    lib.jconv_onednn_set_bn_num_threads.argtypes = [ctypes.c_int]
    return lib, ""


def available() -> bool:
    """Whether oneDNN's batch normalisation can run here (extension built with it, libdnnl).

    Example:
      >>> isinstance(available(), bool)
      True
    """
    return _bn_library_or_reason()[0] is not None


def _library() -> ctypes.CDLL:
    lib, reason = _bn_library_or_reason()
    if lib is None:
        raise RuntimeError(f"oneDNN batch normalisation is unavailable: {reason}")
    return lib


def probe(data_format: str = "NHWC", pass_: str = "forward", n: int = 8, c: int = 48,
          hw: int = 16, scale: bool = False) -> str:
    """The oneDNN implementation (e.g. ``"bnorm_jit:avx512_core"``) a float32 batch
    normalisation of an (n, c, hw, hw) input gets (``pass_``: ``"forward"`` or
    ``"backward"``); a RuntimeError with oneDNN's message if it has none.

    Example:
      >>> "ref" in probe("NHWC", "backward") if available() else False
      False
    """
    if pass_ not in ("forward", "backward"):
        raise ValueError(f"pass_ must be 'forward' or 'backward', got {pass_!r}")
    buf = ctypes.create_string_buffer(512)
    rc = _library().jconv_onednn_bn_probe(
        int(check_data_format(data_format) == "NHWC"), n, c, hw,
        _FWD if pass_ == "forward" else _BWD, int(scale), buf, len(buf))
    if rc:
        raise RuntimeError(f"oneDNN has no batch normalisation here: {buf.value.decode()}")
    return buf.value.decode()


def set_num_threads(n: int) -> None:
    """oneDNN's OpenMP threads per batch-normalisation call from now on (default 1); 0
    uses the convolutions' setting (:func:`jconv._onednn.set_num_threads`).

    One by default: oneDNN's batch-normalisation kernels cross several thread barriers per
    call, and on a machine with more runnable threads than cores a barrier can wait a
    whole scheduler slice for a descheduled team member (docs/performance.md,
    "BatchNorm with oneDNN's primitives").

    Example:
      >>> if available():
      ...     set_num_threads(1)
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    _library().jconv_onednn_set_bn_num_threads(n)


# --- the two FFI calls ---------------------------------------------------------------------------

def _attrs(eps: float, scale: jnp.ndarray | None, nhwc: bool) -> dict[str, object]:
    return dict(eps=np.float32(eps), has_scale=np.int64(scale is not None),
                nhwc=np.int64(nhwc))


def _no_scale() -> jnp.ndarray:
    """The placeholder operand for an absent scale (the handlers read nothing from it)."""
    return jnp.zeros((0,), jnp.float32)


def _fwd_call(x: jnp.ndarray, scale: jnp.ndarray | None, shift: jnp.ndarray, eps: float,
              nhwc: bool) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    chan = jax.ShapeDtypeStruct(shift.shape, jnp.float32)
    out = (jax.ShapeDtypeStruct(x.shape, x.dtype), chan, chan)
    return jax.ffi.ffi_call(_BN_HANDLERS[0], out, vmap_method="sequential")(
        x, _no_scale() if scale is None else scale, shift, **_attrs(eps, scale, nhwc))


def _bwd_call(x: jnp.ndarray, dy: jnp.ndarray, mean: jnp.ndarray, var: jnp.ndarray,
              scale: jnp.ndarray | None, eps: float,
              nhwc: bool) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    chan = jax.ShapeDtypeStruct(mean.shape, jnp.float32)
    dscale = jax.ShapeDtypeStruct((0,) if scale is None else scale.shape, jnp.float32)
    out = (jax.ShapeDtypeStruct(x.shape, x.dtype), dscale, chan)
    return jax.ffi.ffi_call(_BN_HANDLERS[1], out, vmap_method="sequential")(
        x, dy, mean, var, _no_scale() if scale is None else scale,
        **_attrs(eps, scale, nhwc))


# --- the custom_vjp --------------------------------------------------------------------------------

def _channel(v: jnp.ndarray, nhwc: bool) -> jnp.ndarray:
    """(C,) -> broadcastable against the input along its channel axis."""
    return v if nhwc else v[:, None, None]


def _axes(nhwc: bool) -> tuple[int, int, int]:
    return (0, 1, 2) if nhwc else (0, 2, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bn_onednn(x: jnp.ndarray, scale: jnp.ndarray | None, shift: jnp.ndarray, eps: float,
               nhwc: bool) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    return _fwd_call(x, scale, shift, eps, nhwc)


def _bn_onednn_fwd(x, scale, shift, eps, nhwc):
    # symbolic_zeros: every array leaf arrives as a CustomVJPPrimal (value, perturbed).
    x, shift = x.value, shift.value
    scale = None if scale is None else scale.value
    y, mean, var = _fwd_call(x, scale, shift, eps, nhwc)
    return (y, mean, var), (x, scale, mean, var)


def _bn_onednn_bwd(eps, nhwc, res, cts):
    x, scale, mean, var = res
    dy, dmean, dvar = cts
    if isinstance(dy, SymbolicZero):
        dy = jnp.zeros(x.shape, x.dtype)  # only the statistics' cotangents reach x
    dx, dscale, dshift = _bwd_call(x, dy, mean, var, scale, eps, nhwc)
    # The statistics' cotangents (zero in training, where they feed only the running
    # statistics under stop_gradient, so symbolic: this pass over x is then skipped):
    # d mean/dx = 1/n, d var/dx = 2 (x - mean)/n.
    n = x.size // mean.shape[0]
    if not isinstance(dvar, SymbolicZero):
        dx = dx + (x - _channel(mean, nhwc)) * _channel(2 * dvar / n, nhwc)
    if not isinstance(dmean, SymbolicZero):
        dx = dx + _channel(dmean / n, nhwc)
    return dx, (None if scale is None else dscale), dshift


_bn_onednn.defvjp(_bn_onednn_fwd, _bn_onednn_bwd, symbolic_zeros=True)


def _bn_jax(x: jnp.ndarray, scale: jnp.ndarray | None, shift: jnp.ndarray, eps: float,
            nhwc: bool) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The same computation in plain JAX (the non-CPU branch; autodiff differentiates it)."""
    axes = _axes(nhwc)
    mean = x.mean(axes)
    centred = x - _channel(mean, nhwc)
    var = jnp.mean(centred * centred, axes)
    mul = lax.rsqrt(var + eps) if scale is None else lax.rsqrt(var + eps) * scale
    return centred * _channel(mul, nhwc) + _channel(shift, nhwc), mean, var


# --- validation and the entry point ------------------------------------------------------------

def _check_channel(name: str, v: Any, c: int) -> None:
    if not hasattr(v, "dtype") or not hasattr(v, "shape"):
        raise TypeError(f"{name} must be a float32 array of shape ({c},), got "
                        f"{type(v).__name__}")
    if jnp.dtype(v.dtype) != jnp.float32:
        raise TypeError(f"{name} must be float32 (oneDNN batch norm), got {jnp.dtype(v.dtype)}")
    if tuple(v.shape) != (c,):
        raise ValueError(f"{name} must have shape ({c},) (x's channels), got "
                         f"{tuple(v.shape)}")


def _check(x: Any, scale: Any, shift: Any, eps: Any, data_format: Any) -> bool:
    """Validates the arguments (before anything native runs); True for NHWC."""
    nhwc = check_data_format(data_format) == "NHWC"
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"x must be a float32 array, got {type(x).__name__}")
    if jnp.dtype(x.dtype) != jnp.float32:
        raise TypeError(f"x must be float32 (oneDNN batch norm), got {jnp.dtype(x.dtype)}; "
                        "use train.norm.batch_norm_train for other dtypes")
    if len(x.shape) != 4:
        raise ValueError(f"x must be 4-D ({data_format}), got shape {tuple(x.shape)}")
    c = x.shape[3] if nhwc else x.shape[1]
    if math.prod(x.shape) == 0:
        raise ValueError(f"x must have at least one value per channel, got shape "
                         f"{tuple(x.shape)}")
    if scale is not None:
        _check_channel("scale", scale, c)
    _check_channel("shift", shift, c)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    return nhwc


def batch_norm_train(x: jnp.ndarray, scale: jnp.ndarray | None, shift: jnp.ndarray,
                     eps: float, data_format: str = "NHWC",
                     ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Training-mode batch normalisation: oneDNN's primitives on CPU, plain JAX elsewhere.

    x (N, H, W, C) (``data_format="NHWC"``) or (N, C, H, W), float32; ``scale`` (C,) or None
    (no learned scale: 1), ``shift`` (C,). Returns ``(y, mean, var)``: ``y`` like ``x``,
    ``y = (x - mean) / sqrt(var + eps) * scale + shift``, and the batch ``mean`` and
    *biased* variance ``var`` (C,) over N, H, W (PyTorch's running variance uses the
    unbiased one, ``var * n / (n - 1)``). Differentiable in reverse mode (``dx``,
    ``dscale``, ``dshift`` from one backward primitive; the statistics' cotangents, when
    not zero, are added in JAX).

    Example:
      >>> x = jnp.arange(2 * 2 * 2 * 3.0).reshape(2, 2, 2, 3)
      >>> y, mean, var = batch_norm_train(x, None, jnp.zeros(3), 1e-5)
      >>> y.shape, [float(v) for v in mean], [float(v) for v in var]
      ((2, 2, 2, 3), [10.5, 11.5, 12.5], [47.25, 47.25, 47.25])
    """
    nhwc = _check(x, scale, shift, eps, data_format)
    eps = float(eps)
    if jax.default_backend() != "cpu":
        # A GPU/TPU host runs the computation there, as platform_dependent's default branch
        # would, without needing the CPU extension.
        return _bn_jax(x, scale, shift, eps, nhwc)
    _library()  # the handlers registered (or the RuntimeError naming what is missing)
    return lax.platform_dependent(
        x, scale, shift, cpu=lambda x, s, b: _bn_onednn(x, s, b, eps, nhwc),
        default=lambda x, s, b: _bn_jax(x, s, b, eps, nhwc))
