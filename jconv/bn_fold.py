"""Conv + BatchNorm folding for inference: an eval-mode BatchNorm after a conv is an affine
map per output channel, so it can be baked into the conv's weights and bias.

Benchmark (folded vs unfolded inference, median of N, same process):
``python -m jconv.bench.fold --bench``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from .nn import Conv2d


def _check_pair(conv: object, bn: object) -> None:
    if not isinstance(conv, Conv2d):
        raise TypeError(f"conv must be a jconv.nn.Conv2d, got {type(conv).__name__}")
    if not isinstance(bn, nnx.BatchNorm):
        raise TypeError(f"bn must be a flax.nnx.BatchNorm (e.g. jconv.nn.BatchNorm2d), got "
                        f"{type(bn).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"bn.num_features={bn.num_features} must equal "
                         f"conv.out_channels={conv.out_channels}")
    channel_axes = (1, -3) if conv.data_format == "NCHW" else (3, -1)
    if bn.axis not in channel_axes:
        raise ValueError(f"bn.axis={bn.axis} does not normalise the channel axis of a "
                         f"data_format={conv.data_format!r} conv (expected one of "
                         f"{channel_axes})")


def fold_conv_bn(conv: Conv2d, bn: nnx.BatchNorm) -> Conv2d:
    """A new :class:`jconv.nn.Conv2d` computing ``bn(conv(x))`` with ``bn`` in eval mode.

    With s = gamma / sqrt(running_var + eps) (per output channel, shape (C_out,)):

      w' = w * s[:, None, None, None]       (C_out, C_in/groups, kH, kW)
      b' = (b - running_mean) * s + beta    (C_out,)   (b = 0 for a bias-free conv)

    The folded conv always has a bias. ``conv`` and ``bn`` are not modified; the arithmetic
    is done in float64 and cast back to the parameters' dtype. Only the running statistics
    are used, so the result matches the pair in eval mode (``model.eval()``), not train mode.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> conv = jconv.nn.Conv2d(3, 8, 3, padding=1, bias=False, rngs=nnx.Rngs(0))
      >>> bn = jconv.nn.BatchNorm2d(8, rngs=nnx.Rngs(0)); bn.eval()
      >>> folded = jconv.fold_conv_bn(conv, bn)
      >>> x = jnp.ones((1, 3, 8, 8))
      >>> bool(jnp.allclose(folded(x), bn(conv(x)), atol=1e-5))
      True
    """
    _check_pair(conv, bn)
    f64 = np.float64
    w = np.asarray(conv.kernel[...], f64)
    b = np.zeros(conv.out_channels) if conv.bias is None else np.asarray(conv.bias[...], f64)
    gamma = np.ones(conv.out_channels) if bn.scale is None else np.asarray(bn.scale[...], f64)
    beta = np.zeros(conv.out_channels) if bn.bias is None else np.asarray(bn.bias[...], f64)
    s = gamma / np.sqrt(np.asarray(bn.var[...], f64) + bn.epsilon)
    folded = nnx.clone(conv)
    dtype = conv.kernel[...].dtype
    folded.kernel = nnx.Param(jnp.asarray(w * s[:, None, None, None], dtype))
    # nnx.data: a bias-free Conv2d holds ``bias = None`` as a static attribute.
    folded.bias = nnx.data(nnx.Param(jnp.asarray((b - np.asarray(bn.mean[...], f64)) * s + beta,
                                                 dtype)))
    return folded


def fold_conv_bn_sequential(model: nnx.Sequential) -> nnx.Sequential:
    """A new ``nnx.Sequential`` with every ``Conv2d`` directly followed by a ``BatchNorm``
    replaced by their fold (:func:`fold_conv_bn`), recursing into nested ``Sequential``\\ s.

    Other layers are copied (``nnx.clone``), so the result shares no state with ``model``.
    The result equals ``model`` in eval mode and has the BatchNorm layers removed; a
    BatchNorm to fold that is still in train mode raises ``ValueError`` (call
    ``model.eval()`` first). Shapes: unchanged, whatever ``model`` maps (N, C, H, W) to.

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
        if isinstance(layer, Conv2d) and isinstance(nxt, nnx.BatchNorm):
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
