"""The trainer's BatchNorm: ``jconv.nn.BatchNorm2d`` whose training-mode normalisation is a
``jax.custom_vjp`` shaped like PyTorch's CPU kernels, one pass over the input for the batch
statistics and two for the backward, instead of what autodiff makes of Flax's formula; and
:class:`OnednnBatchNorm2d`, whose float32 training mode runs oneDNN's batch-normalisation
primitives (:func:`jconv.onednn_batch_norm`) instead.

Parameters, running statistics, eval mode and the ``mask`` argument are
``flax.nnx.BatchNorm``'s (it is a subclass), so checkpoints, ``jconv.fold_conv_bn`` /
``fold_conv_bn_graph`` and ``jconv.load_torch_state_dict`` treat it as one.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax.nnx.module import first_from
from flax.nnx.nn.dtypes import canonicalize_dtype
from jax import lax

import jconv
from jconv import nn as jnn


def _psum(x: jnp.ndarray | int, axis_name: Any, groups: Any) -> jnp.ndarray | int:
    return x if axis_name is None else lax.psum(x, axis_name, axis_index_groups=groups)


def _count(x: jnp.ndarray, axes: tuple[int, ...], axis_name: Any, groups: Any) -> Any:
    """How many values each channel's statistics average over, on every device together."""
    return math.prod(x.shape[a] for a in axes) * _psum(1, axis_name, groups)


def _two_sums(a: jnp.ndarray, b: jnp.ndarray, axes: tuple[int, ...]) -> jnp.ndarray:
    """(sum(a), sum(b)) over ``axes``, stacked (2, C), reading the operands' common input
    once: one variadic reduction over the innermost reduced axis (a loop fusion that also
    computes ``a`` and ``b``), then a plain sum of the small partial sums over the others.

    Two ``sum`` calls were two loops over a materialised ``a``; one variadic reduction over
    every axis walked each channel's values with a stride of C (slow) and summed them
    sequentially (float32 error growing with N*H*W).
    """
    zero = jnp.zeros((), a.dtype)
    inner, outer = axes[-1], axes[:-1]
    sa, sb = lax.reduce((a, b), (zero, zero), lambda x, y: (x[0] + y[0], x[1] + y[1]),
                        (inner,))
    outer = tuple(i if i < inner else i - 1 for i in outer)
    return jnp.stack([sa.sum(outer), sb.sum(outer)])


def _varying(a: jnp.ndarray) -> frozenset:
    """The mesh axes ``a`` varies over inside ``shard_map`` (empty elsewhere)."""
    kind = getattr(jax.typeof(a), "manual_axis_type", None)
    return getattr(kind, "varying", frozenset())


def _like(ct: jnp.ndarray, primal: jnp.ndarray) -> jnp.ndarray:
    """A per-device parameter gradient summed over the axes its (replicated) parameter does
    not vary over, as autodiff's transpose of the implicit broadcast would."""
    extra = tuple(sorted(_varying(ct) - _varying(primal)))
    return lax.psum(ct, extra) if extra else ct


def _channel(v: jnp.ndarray, axes: tuple[int, ...]) -> jnp.ndarray:
    """(C,) -> broadcastable against the input along its feature axis (the one not in
    ``axes``)."""
    return jnp.expand_dims(v, axes)


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6, 7))
def batch_norm_train(x: jnp.ndarray, scale: jnp.ndarray | None, bias: jnp.ndarray | None,
                     axes: tuple[int, ...], epsilon: float, out_dtype: Any,
                     axis_name: Any = None,
                     axis_index_groups: Any = None) -> tuple[jnp.ndarray, ...]:
    """Training-mode batch normalisation and its batch statistics.

    x (..., C, ...) with the feature axis the one not in ``axes``; ``scale``, ``bias``
    (C,) or None. Returns ``(y, mean, var)``: ``y`` like ``x`` in ``out_dtype``, ``mean``
    and ``var`` (C,) the biased batch statistics in float32 or wider (over ``axes`` and,
    with ``axis_name``, over every device of that axis).

    The forward reads ``x`` once for both statistics and once to normalise. The sums are
    of ``x - shift`` with ``shift`` each channel's first value (with ``axis_name``: their
    mean over the devices), so ``E[d^2] - E[d]^2`` does not cancel when the mean is large
    against the spread, as ``E[x^2] - E[x]^2`` (Flax's default) does. The backward
    reads ``x`` and ``dy`` once for the per-channel sums of ``dy`` and ``dy * xhat`` and
    once for ``dx = scale*rstd*(dy - mean(dy) - xhat*mean(dy*xhat))`` (plus the
    cotangents of ``mean`` and ``var``, folded into the same per-channel coefficients).

    Example:
      >>> x = jnp.arange(12.0).reshape(2, 3, 2)
      >>> y, mean, var = batch_norm_train(x, None, None, (0, 1), 1e-5, jnp.float32)
      >>> y.shape, [round(float(v), 3) for v in mean], [round(float(v), 3) for v in var]
      ((2, 3, 2), [5.0, 6.0], [11.667, 11.667])
    """
    return _forward(x, scale, bias, axes, epsilon, out_dtype, axis_name,
                    axis_index_groups)[0]


def _forward(x, scale, bias, axes, epsilon, out_dtype, axis_name, groups):
    stat_dtype = jnp.promote_types(x.dtype, jnp.float32)
    xf = x.astype(stat_dtype)
    first = lax.stop_gradient(xf[tuple(0 if i in axes else slice(None) for i in range(x.ndim))])
    base = first if axis_name is None else lax.pmean(first, axis_name, axis_index_groups=groups)
    d = xf - _channel(base, axes)
    sums = _psum(_two_sums(d, d * d, axes), axis_name, groups)
    n = _count(x, axes, axis_name, groups)
    mean_d, mean_d2 = sums[0] / n, sums[1] / n
    var = jnp.maximum(mean_d2 - mean_d * mean_d, 0)
    mean = base + mean_d
    rstd = lax.rsqrt(var + epsilon)
    mul = rstd if scale is None else rstd * scale.astype(stat_dtype)
    y = (xf - _channel(mean, axes)) * _channel(mul, axes)
    if bias is not None:
        y = y + _channel(bias.astype(stat_dtype), axes)
    y = y.astype(out_dtype)
    return (y, mean, var), (x, scale, bias, mean, rstd)


def _backward(axes, epsilon, out_dtype, axis_name, groups, res, cotangents):
    x, scale, bias, mean, rstd = res
    dy, dmean, dvar = cotangents
    stat_dtype = mean.dtype
    xf, dyf = x.astype(stat_dtype), dy.astype(stat_dtype)
    xhat = (xf - _channel(mean, axes)) * _channel(rstd, axes)
    local = _two_sums(dyf, dyf * xhat, axes)
    sum_dy, sum_dy_xhat = local
    # dx needs the sums over every device; the parameters' gradients are the local sums,
    # as autodiff of a per-device model gives them.
    g_dy, g_dy_xhat = _psum(local, axis_name, groups)
    n = _count(x, axes, axis_name, groups)
    dmean, dvar = _psum(jnp.stack([dmean, dvar]), axis_name, groups)
    g = rstd if scale is None else rstd * scale.astype(stat_dtype)
    # dx = g*dy + b*(x - mean) + c, with the cotangents of mean and var in b and c
    b = -g * rstd * g_dy_xhat / n + 2 * dvar / n
    c = -g * g_dy / n + dmean / n
    dx = (dyf * _channel(g, axes) + (xf - _channel(mean, axes)) * _channel(b, axes)
          + _channel(c, axes)).astype(x.dtype)
    dscale = None if scale is None else _like(sum_dy_xhat.astype(scale.dtype), scale)
    dbias = None if bias is None else _like(sum_dy.astype(bias.dtype), bias)
    return dx, dscale, dbias


batch_norm_train.defvjp(_forward, _backward)


class BatchNorm2d(jnn.BatchNorm2d):
    """``jconv.nn.BatchNorm2d`` with :func:`batch_norm_train` as its training-mode forward
    and backward: the same parameters (``scale``, ``bias``), running statistics (``mean``,
    ``var``, Flax momentum ``1 - momentum``), ``use_scale`` / ``axis_name`` /
    ``axis_index_groups`` and eval mode, equal to it up to float rounding.

    Shapes: (N, C, H, W) -> (N, C, H, W), or (N, H, W, C) with ``data_format="NHWC"``.

    Example:
      >>> from flax import nnx
      >>> bn = BatchNorm2d(4, data_format="NHWC", rngs=nnx.Rngs(0))
      >>> x = jnp.arange(2 * 3 * 3 * 4.0).reshape(2, 3, 3, 4)
      >>> y = bn(x)
      >>> y.shape, abs(float(y.mean())) < 1e-6, [round(float(v), 2) for v in bn.mean[...]]
      ((2, 3, 3, 4), True, [3.4, 3.5, 3.6, 3.7])
    """

    def __call__(self, x: jnp.ndarray, use_running_average: bool | None = None, *,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        if self._flax_mode(use_running_average, mask):
            # Eval mode and masked statistics are Flax's own computation.
            return super().__call__(x, use_running_average, mask=mask)
        self.check_input(x)
        feature = self.axis % x.ndim
        axes = tuple(i for i in range(x.ndim) if i != feature)
        scale = self.scale[...] if self.scale is not None else None
        bias = self.bias[...] if self.bias is not None else None
        # nnx.BatchNorm's dtype rules: everything promoted together, the output in its dtype
        # (else that of the input and parameters), the running statistics updated from the
        # promoted old ones.
        x, old_mean, old_var, scale, bias = self.promote_dtype(
            (x, self.mean[...], self.var[...], scale, bias), dtype=self.dtype)
        out_dtype = canonicalize_dtype(*(a for a in (x, scale, bias) if a is not None),
                                       dtype=self.dtype)
        y, mean, var = batch_norm_train(x, scale, bias, axes, self.epsilon,
                                        jnp.dtype(out_dtype), self.axis_name,
                                        self.axis_index_groups)
        m = self.momentum
        self.mean[...] = lax.stop_gradient(m * old_mean + (1 - m) * mean)
        self.var[...] = lax.stop_gradient(m * old_var + (1 - m) * var)
        return y

    def _flax_mode(self, use_running_average: bool | None, mask: jnp.ndarray | None) -> bool:
        """Whether this call is eval mode or masked (both Flax's own computation)."""
        running = first_from(use_running_average, self.use_running_average,
                             error_msg="BatchNorm2d needs use_running_average: call "
                                       "model.train() or model.eval()")
        return bool(running) or mask is not None


class OnednnBatchNorm2d(BatchNorm2d):
    """:class:`BatchNorm2d` whose training mode runs oneDNN's batch-normalisation primitives
    (:func:`jconv.onednn_batch_norm`: one forward primitive computing the
    statistics, one backward computing ``dx``, ``dscale`` and ``dshift``) when it can: a
    float32 4-D input and parameters, no ``axis_name``. Otherwise (float64, bfloat16,
    cross-device statistics) it is :class:`BatchNorm2d`, and eval mode is Flax's.

    Its running variance follows PyTorch: updated with the *unbiased* batch variance
    (``var * n / (n - 1)``, n = N*H*W values per channel), where Flax's and
    :class:`BatchNorm2d`'s use the biased one; ``momentum`` has PyTorch's meaning as in
    ``jconv.nn.BatchNorm2d``.

    Shapes: (N, C, H, W) -> (N, C, H, W), or (N, H, W, C) with ``data_format="NHWC"``.

    Example:
      >>> from flax import nnx
      >>> bn = OnednnBatchNorm2d(4, data_format="NHWC", rngs=nnx.Rngs(0))
      >>> x = jnp.arange(2 * 3 * 3 * 4.0).reshape(2, 3, 3, 4)
      >>> y = bn(x)
      >>> y.shape, abs(float(y.mean())) < 1e-6, [round(float(v), 2) for v in bn.mean[...]]
      ((2, 3, 3, 4), True, [3.4, 3.5, 3.6, 3.7])
    """

    def __call__(self, x: jnp.ndarray, use_running_average: bool | None = None, *,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        self.check_input(x)
        scale = self.scale[...] if self.scale is not None else None
        bias = self.bias[...] if self.bias is not None else None
        f32 = all(a is None or jnp.dtype(a.dtype) == jnp.float32
                  for a in (x, scale, bias, self.mean[...], self.var[...]))
        if (self._flax_mode(use_running_average, mask) or self.axis_name is not None
                or x.ndim != 4 or not f32 or self.dtype not in (None, jnp.float32)
                or not jconv.onednn_batch_norm_available()):
            return super().__call__(x, use_running_average, mask=mask)
        data_format = "NHWC" if self.axis % x.ndim == 3 else "NCHW"
        shift = bias if bias is not None else jnp.zeros((x.shape[self.axis],), jnp.float32)
        n = x.size // x.shape[self.axis]
        if n < 2:
            raise ValueError(f"OnednnBatchNorm2d needs more than 1 value per channel in "
                             f"training mode (PyTorch's rule), got input shape {x.shape}")
        y, mean, var = jconv.onednn_batch_norm(x, scale, shift, self.epsilon, data_format)
        m = self.momentum  # Flax's: the old statistics' weight
        self.mean[...] = lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
        self.var[...] = lax.stop_gradient(m * self.var[...] + (1 - m) * var * (n / (n - 1)))
        return y
