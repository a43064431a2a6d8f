"""``jconv.conv2d``: one signature, every implementation of :mod:`jconv._registry`."""

from __future__ import annotations

import jax.numpy as jnp

from ._registry import check_conv_impl, conv_impl
from ._spec import ConvSpec, IntOrPair, PaddingLike, accum_dtype, canonical_conv


def conv2d(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None = None, *,
           stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
           groups: int = 1, impl: str = "lax", data_format: str = "NCHW",
           precision: object = None) -> jnp.ndarray:
    """2-D convolution (cross-correlation) with ``torch.nn.functional.conv2d`` semantics.

    Shapes (``data_format="NCHW"``, the default):
      x: (N, C_in, H, W) or unbatched (C_in, H, W)
      w: (C_out, C_in/groups, kH, kW)
      b: (C_out,) or None
      returns (N, C_out, H_out, W_out) (unbatched in, unbatched out)

    With ``data_format="NHWC"`` x is (N, H, W, C_in) and the result (N, H_out, W_out, C_out);
    **the weight layout stays (C_out, C_in/groups, kH, kW)** in both formats, so one set of
    parameters serves either layout.

      H_out = (H + pad_top + pad_bottom - dilation_h*(kH-1) - 1) // stride_h + 1
      W_out = (W + pad_left + pad_right - dilation_w*(kW-1) - 1) // stride_w + 1

    Args:
      stride, dilation: int or (h, w) pair, each >= 1.
      padding: int, (h, w) pair, ((top, bottom), (left, right)), ``"valid"``, or ``"same"``
        (stride 1 only; an odd total puts the extra pixel at the bottom/right, like PyTorch).
      groups: divides both C_in and C_out; ``groups == C_in`` is depthwise.
      impl: ``"lax"`` (``lax.conv_general_dilated``), ``"im2col"`` (patch matrix + one
        matmul per group) or ``"loops"`` (explicit loop over kernel taps). All accept the same
        arguments and give the same result, gradients included. Two fast algorithms with
        restrictions: ``"winograd_f4x4"`` (Winograd F(4x4,3x3)) and ``"winograd_f2x2"`` (F(2x2,3x3))
        for 3x3, stride-1, dilation-1 kernels (any padding/groups; anything else raises a
        ValueError naming the argument); ``"fft"`` (FFT convolution: every argument, but
        strides compute the stride-1 result and subsample it; fastest for large kernels).
        Non-finite inputs: a NaN or inf pixel spreads further with these three than in
        PyTorch (where only the outputs whose window touches it are non-finite): with
        ``"winograd_f4x4"``/``"winograd_f2x2"`` every output of the transform tiles that read it is
        NaN (up to 8x8 / 4x4 outputs per channel, inf included), with ``"fft"`` the whole
        (H_out, W_out) plane of every output channel of that sample. Other samples of the
        batch are unaffected; ``lax``/``im2col``/``loops``/``auto`` match PyTorch.
        ``"auto"`` picks the fastest exact implementation (lax/im2col/loops) per shape, dtype
        and backend, separately for the forward pass, the input gradient and the weight
        gradient, by timing them once and caching the choice (see ``jconv.auto_choice``;
        ``JCONV_AUTO_MEASURE=0`` uses a fixed heuristic instead).
      precision: passed to the underlying ``lax`` contraction (e.g. ``"highest"``).

    float16/bfloat16 inputs accumulate in float32 and the result is cast back to the input
    dtype; float32/float64 accumulate in their own dtype.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(25.0).reshape(1, 1, 5, 5)
      >>> w = jnp.ones((1, 1, 3, 3))
      >>> jconv.conv2d(x, w, impl="loops").shape
      (1, 1, 3, 3)
      >>> float(jconv.conv2d(x, w, impl="im2col")[0, 0, 0, 0])  # 0+1+2+5+6+7+10+11+12
      54.0
    """
    impl = check_conv_impl(impl)
    spec, unbatched = canonical_conv(x, w, b, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, data_format=data_format, precision=precision)
    if unbatched:
        x = x[None]
    y = run_impl(impl, x, w, spec)
    if b is not None:
        y = add_bias(y, b, spec.data_format)
    return y[0] if unbatched else y


def run_impl(impl: str, x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """The registered ``impl`` on batched ``x``; an empty batch has an empty result (PyTorch's
    too) without calling the implementation, whatever it is."""
    if x.shape[0] == 0:
        c_out, (ho, wo) = w.shape[0], spec.out_hw
        shape = (0, c_out, ho, wo) if spec.data_format == "NCHW" else (0, ho, wo, c_out)
        return jnp.zeros(shape, x.dtype)
    return conv_impl(impl)(x, w, spec)


def add_bias(y: jnp.ndarray, b: jnp.ndarray, data_format: str) -> jnp.ndarray:
    """``y + b`` over the channel axis, added in the accumulation dtype: the gradient of
    ``b`` sums N*H_out*W_out values, which in bfloat16 loses several percent.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y, b = jnp.ones((1, 2, 64, 64), jnp.bfloat16), jnp.zeros(2, jnp.bfloat16)
      >>> db = jax.grad(lambda b: add_bias(y, b, "NCHW").sum().astype(float))(b)
      >>> db.dtype, float(db[0])  # exact; summed in bfloat16, XLA:CPU returns 1024
      (dtype(bfloat16), 4096.0)
    """
    acc = accum_dtype(y.dtype)
    bias = b.astype(acc)
    out = y.astype(acc) + (bias[:, None, None] if data_format == "NCHW" else bias)
    return out.astype(y.dtype)
