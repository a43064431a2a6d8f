"""``jconv.conv2d_bias_act``: convolution + bias + activation, fused into one Pallas kernel or
one oneDNN primitive."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._onednn import conv_onednn_bias_act
from ._pallas import ACTIVATIONS, conv_pallas_bias_act
from ._registry import check_conv_impl
from ._spec import IntOrPair, PaddingLike, canonical_conv
from .conv import conv2d


def _unfused(y: jnp.ndarray, act: str | None) -> jnp.ndarray:
    if act == "relu":
        return jax.nn.relu(y)
    return y if act is None else jax.nn.gelu(y, approximate=True)


def conv2d_bias_act(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None = None, *,
                    act: str | None = "relu", stride: IntOrPair = 1, padding: PaddingLike = 0,
                    dilation: IntOrPair = 1, groups: int = 1, data_format: str = "NCHW",
                    impl: str = "pallas", precision: object = None) -> jnp.ndarray:
    """``act(conv2d(x, w) + b)`` with the bias add and activation in the conv kernel's epilogue.

    Shapes are those of :func:`jconv.conv2d` (x: (N, C_in, H, W) or unbatched, w: (C_out,
    C_in/groups, kH, kW), b: (C_out,) or None; result (N, C_out, H_out, W_out); NHWC with
    ``data_format="NHWC"``).

    Args:
      act: ``"relu"``, ``"gelu"`` (the tanh approximation, ``torch.nn.functional.gelu(...,
        approximate="tanh")``; Triton has no ``erf``) or None (bias only).
      impl: ``"pallas"`` (default) runs one kernel: the float32 accumulator gets the bias
        and the activation before it is rounded and written, so the output makes one trip to
        memory. ``"onednn"`` runs one oneDNN primitive on CPU with the bias and activation as
        post-ops (XLA's ops on other platforms). Any other conv impl computes the same
        function unfused (conv, then bias and activation as separate XLA ops): the reference
        the fused kernel is checked against.
      Other arguments as in :func:`jconv.conv2d`; ``impl="pallas"`` supports ``groups`` 1 and
      depthwise only.

    Gradients (``jax.grad``/``vjp``) are Pallas kernels too: ReLU's backward masks the
    cotangent with the saved output (> 0); GELU's saves the float32-accumulated
    pre-activation, written by the forward kernel as a second output only when
    differentiating. Differences from the unfused path are rounding only: the fused kernel
    adds the bias and applies the activation before rounding to a 16-bit dtype.
    ``impl="onednn"`` is a ``jax.custom_jvp`` with a tangent linear in the input tangents
    (oneDNN forward calls): ``jax.jvp`` works, ``jax.grad`` transposes it into oneDNN's
    backward-data and backward-weights (any order of either mode); differentiating GELU runs
    the bias-only primitive and GELU in XLA, keeping the pre-activation.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(16.0).reshape(1, 1, 4, 4) - 8.0
      >>> w = jnp.ones((2, 1, 1, 1))
      >>> b = jnp.array([0.0, 3.0])
      >>> y = jconv.conv2d_bias_act(x, w, b, act="relu")
      >>> y.shape
      (1, 2, 4, 4)
      >>> [float(y[0, 0, 0, 0]), float(y[0, 1, 1, 1])]   # relu(-8 + 0), relu(-3 + 3)
      [0.0, 0.0]
      >>> float(y[0, 1, 3, 3])                             # relu(7 + 3)
      10.0
    """
    if act is not None and act not in ACTIVATIONS:
        raise ValueError(f"act must be None or one of {ACTIVATIONS}, got {act!r}")
    impl = check_conv_impl(impl)
    if impl not in ("pallas", "onednn"):
        return _unfused(conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation,
                               groups=groups, impl=impl, data_format=data_format,
                               precision=precision), act)
    spec, unbatched = canonical_conv(x, w, b, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, data_format=data_format, precision=precision)
    xb = x[None] if unbatched else x
    if impl == "onednn":
        y = conv_onednn_bias_act(xb, w, b, spec, act)
    else:
        y = conv_pallas_bias_act(xb, w, b, spec, act)
    return y[0] if unbatched else y
