"""Conv + BatchNorm folding for inference: an eval-mode BatchNorm after a conv is an affine
map per output channel, so it can be baked into the conv's weights and bias.

Benchmark (folded vs unfolded inference, median of N, same process):
``python -m jconv.bench.fold --bench``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._spec import format_ndim
from .nn import _ConvNd, _ConvTransposeNd

_CONV_NAMES = "a jconv.nn.Conv1d/Conv2d/Conv3d or ConvTranspose1d/2d/3d"


def _channel_axes(data_format: str) -> tuple[int, int]:
    """The channel axis of a batched ``data_format`` input, counted from each end."""
    nd = len(data_format) - 2
    return (1, -(nd + 1)) if data_format[1] == "C" else (nd + 1, -1)


def check_bn(bn: object, conv: _ConvNd | _ConvTransposeNd) -> None:
    """``bn`` can follow ``conv``: a BatchNorm over ``conv.out_channels`` on its channel axis
    (and, if it has a ``data_format`` as ``jconv.nn.BatchNorm2d``, one of the conv's rank)."""
    if not isinstance(bn, nnx.BatchNorm):
        raise TypeError(f"bn must be a flax.nnx.BatchNorm (e.g. jconv.nn.BatchNorm2d, or "
                        f"nnx.BatchNorm(C, axis=1) after a 1-D/3-D conv), got "
                        f"{type(bn).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"bn.num_features={bn.num_features} must equal "
                         f"conv.out_channels={conv.out_channels}")
    bn_format = getattr(bn, "data_format", None)
    if isinstance(bn_format, str) and format_ndim(bn_format, conv.ndim) != conv.ndim:
        raise ValueError(f"bn is a {type(bn).__name__} for data_format={bn_format!r}, which "
                         f"cannot follow the {conv.ndim}-D {type(conv).__name__} (data_format="
                         f"{conv.data_format!r})")
    channel_axes = _channel_axes(conv.data_format)
    if bn.axis not in channel_axes:
        raise ValueError(f"bn.axis={bn.axis} does not normalise the channel axis of a "
                         f"data_format={conv.data_format!r} conv (expected one of "
                         f"{channel_axes})")


def bn_affine(bn: nnx.BatchNorm, c: int) -> tuple[np.ndarray, np.ndarray]:
    """(s, t), shape (C,) each, with eval-mode bn(y) = y * s + t per channel, in float64."""
    f64 = np.float64
    gamma = np.ones(c) if bn.scale is None else np.asarray(bn.scale[...], f64)
    beta = np.zeros(c) if bn.bias is None else np.asarray(bn.bias[...], f64)
    s = gamma / np.sqrt(np.asarray(bn.var[...], f64) + bn.epsilon)
    return s, beta - np.asarray(bn.mean[...], f64) * s


def _with_params(conv: nnx.Module, kernel: np.ndarray, bias: np.ndarray) -> nnx.Module:
    """A copy of ``conv`` with these (float64) parameters, cast to its kernel's dtype."""
    folded = nnx.clone(conv)
    dtype = conv.kernel[...].dtype
    folded.kernel = nnx.Param(jnp.asarray(kernel, dtype))
    # nnx.data: a bias-free conv holds ``bias = None`` as a static attribute.
    folded.bias = nnx.data(nnx.Param(jnp.asarray(bias, dtype)))
    return folded


def fold_conv_bn(conv: _ConvNd | _ConvTransposeNd, bn: nnx.BatchNorm
                 ) -> _ConvNd | _ConvTransposeNd:
    """A new conv of ``conv``'s class computing ``bn(conv(x))`` with ``bn`` in eval mode:
    a :class:`jconv.nn.Conv1d`, ``Conv2d`` or ``Conv3d``, or a transposed one
    (:func:`fold_conv_transpose_bn`), followed by an ``nnx.BatchNorm`` over its channels.

    With s = gamma / sqrt(running_var + eps) (per output channel, shape (C_out,)):

      w' = w * s[:, None, ...]             (C_out, C_in/groups, *kernel), kernel = (kL,),
                                           (kH, kW) or (kD, kH, kW)
      b' = (b - running_mean) * s + beta    (C_out,)   (b = 0 for a bias-free conv)

    The folded conv always has a bias. ``conv`` and ``bn`` are not modified; the arithmetic
    is done in float64 and cast back to the parameters' dtype. Only the running statistics
    are used, so the result matches the pair in eval mode (``model.eval()``), not train mode.
    ``bn`` must normalise the conv's channel axis (``axis=1`` channels-first, ``-1``
    channels-last) over ``conv.out_channels``; a ``jconv.nn.BatchNorm2d`` only follows a 2-D
    conv.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> conv = jconv.nn.Conv2d(3, 8, 3, padding=1, bias=False, rngs=nnx.Rngs(0))
      >>> bn = jconv.nn.BatchNorm2d(8, rngs=nnx.Rngs(0)); bn.eval()
      >>> x = jnp.ones((1, 3, 8, 8))
      >>> bool(jnp.allclose(jconv.fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5))
      True
      >>> conv1d = jconv.nn.Conv1d(3, 8, 5, rngs=nnx.Rngs(0))  # (N, C, L), a BN over axis 1
      >>> bn1d = nnx.BatchNorm(8, axis=1, use_running_average=True, rngs=nnx.Rngs(0))
      >>> x = jnp.ones((2, 3, 16))
      >>> bool(jnp.allclose(jconv.fold_conv_bn(conv1d, bn1d)(x), bn1d(conv1d(x)), atol=1e-5))
      True
    """
    if isinstance(conv, _ConvTransposeNd):
        return fold_conv_transpose_bn(conv, bn)
    if not isinstance(conv, _ConvNd):
        raise TypeError(f"conv must be {_CONV_NAMES}, got {type(conv).__name__}")
    check_bn(bn, conv)
    w = np.asarray(conv.kernel[...], np.float64)
    b = np.zeros(conv.out_channels) if conv.bias is None else np.asarray(conv.bias[...],
                                                                         np.float64)
    s, shift = bn_affine(bn, conv.out_channels)
    return _with_params(conv, w * s.reshape(-1, *(1,) * (w.ndim - 1)), b * s + shift)


def fold_conv_transpose_bn(conv: _ConvTransposeNd, bn: nnx.BatchNorm) -> _ConvTransposeNd:
    """A new :class:`jconv.nn.ConvTranspose1d`/``2d``/``3d`` computing ``bn(conv(x))``,
    ``bn`` in eval mode.

    The kernel has PyTorch's transposed layout (C_in, C_out/groups, *kernel): output channel
    ``g*C_out/groups + j`` is kernel slice ``[g*C_in/groups:(g+1)*C_in/groups, j]``, which is
    scaled by s = gamma / sqrt(running_var + eps) of that channel; the bias becomes
    (b - running_mean) * s + beta, shape (C_out,). Float64 arithmetic, cast back.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> up = jconv.nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2, rngs=nnx.Rngs(0))
      >>> bn = jconv.nn.BatchNorm2d(6, rngs=nnx.Rngs(0)); bn.eval()
      >>> bn.mean[...] = jnp.arange(6.0)
      >>> x = jnp.ones((1, 4, 3, 3))
      >>> bool(jnp.allclose(fold_conv_transpose_bn(up, bn)(x), bn(up(x)), atol=1e-5))
      True
    """
    if not isinstance(conv, _ConvTransposeNd):
        raise TypeError(f"conv must be a jconv.nn.ConvTranspose1d/2d/3d, got "
                        f"{type(conv).__name__}")
    check_bn(bn, conv)
    c_out, g = conv.out_channels, conv.groups
    w = np.asarray(conv.kernel[...], np.float64)
    s, shift = bn_affine(bn, c_out)
    b = np.zeros(c_out) if conv.bias is None else np.asarray(conv.bias[...], np.float64)
    # (C_in, C_out/g, *k) -> (g, C_in/g, C_out/g, *k): scale each group's slice by its own
    # output channels' factors.
    scale = s.reshape(g, 1, c_out // g, *(1,) * (w.ndim - 2))
    wg = w.reshape(g, w.shape[0] // g, *w.shape[1:]) * scale
    return _with_params(conv, wg.reshape(w.shape), b * s + shift)


def fold_conv_bn_sequential(model: nnx.Sequential) -> nnx.Sequential:
    """A new ``nnx.Sequential`` with every jconv conv (1-D, 2-D or 3-D, transposed or not)
    directly followed by a ``BatchNorm`` replaced by their fold (:func:`fold_conv_bn`),
    recursing into nested ``Sequential``\\ s.

    Other layers are copied (``nnx.clone``), so the result shares no state with ``model``.
    The result equals ``model`` in eval mode and has the BatchNorm layers removed; a
    BatchNorm to fold that is still in train mode raises ``ValueError`` (call
    ``model.eval()`` first). Shapes: unchanged, whatever ``model`` maps (N, C, *spatial) to.

    Example:
      >>> from flax import nnx; import jconv
      >>> r = nnx.Rngs(0)
      >>> model = nnx.Sequential(jconv.nn.Conv2d(3, 8, 3, rngs=r), jconv.nn.BatchNorm2d(8, rngs=r),
      ...                        nnx.relu)
      >>> model.eval()
      >>> [type(l).__name__ for l in jconv.fold_conv_bn_sequential(model).layers]
      ['Conv2d', 'custom_jvp']
    """
    if not isinstance(model, nnx.Sequential):
        raise TypeError(f"model must be a flax.nnx.Sequential, got {type(model).__name__}")
    layers, items, i = [], list(model.layers), 0
    while i < len(items):
        layer = items[i]
        nxt = items[i + 1] if i + 1 < len(items) else None
        if isinstance(layer, (_ConvNd, _ConvTransposeNd)) and isinstance(nxt, nnx.BatchNorm):
            if not nxt.use_running_average:
                raise ValueError(
                    f"model.layers[{i + 1}] ({type(nxt).__name__}) is in train mode "
                    "(use_running_average=False): the fold uses its running statistics, so it "
                    "would match the model in eval mode, not as called; call model.eval() "
                    "first")
            layers.append(fold_conv_bn(layer, nxt))
            i += 2
            continue
        if isinstance(layer, nnx.Sequential):
            layers.append(fold_conv_bn_sequential(layer))
        else:
            layers.append(nnx.clone(layer) if isinstance(layer, nnx.Module) else layer)
        i += 1
    return nnx.Sequential(*layers)
