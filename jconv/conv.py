"""``jconv.conv1d``/``conv2d``/``conv3d``/``convnd``: one N-D core, one signature, every
implementation of :mod:`jconv._registry`."""

from __future__ import annotations

import jax.numpy as jnp
from jax.typing import ArrayLike

from ._registry import check_conv_impl, check_impl_ndim, conv_impl
from ._spec import (CONV_DATA_FORMATS, SPATIAL_AXES, ConvSpec, IntOrPair, PaddingLike,
                    accum_dtype, canonical_conv, format_ndim)
from ._windows import apply_padding_mode


def conv2d(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
           stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
           groups: int = 1, *, impl: str = "lax", data_format: str = "NCHW",
           precision: object = None, padding_mode: str = "zeros") -> jnp.ndarray:
    """2-D convolution (cross-correlation) with ``torch.nn.functional.conv2d``'s signature
    and semantics (plus ``padding_mode``, as ``torch.nn.Conv2d`` has it).

    PyTorch's calling convention: ``conv2d(input, weight, bias, stride, padding, dilation,
    groups)`` positionally, or by those keywords (``input=``, ``weight=``, ``bias=`` too);
    ``impl``, ``data_format``, ``precision`` and ``padding_mode`` are keyword-only. The
    operands may be JAX or NumPy arrays or array-likes (nested lists), taken with
    ``jnp.asarray`` as jnp functions take them. Error messages and these docs call the three
    operands ``x``, ``w`` and ``b``.

    Shapes (``data_format="NCHW"``, the default):
      x (input): (N, C_in, H, W) or unbatched (C_in, H, W)
      w (weight): (C_out, C_in/groups, kH, kW)
      b (bias): (C_out,) or None
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
      impl: any name in ``jconv.CONV_IMPLS``, the one table of implementations: each entry
        says what it is, whether it is exact (same result as ``"lax"``, gradients included)
        and what it restricts (an argument it rejects raises a ValueError naming it); see
        docs/convolution.md, "Implementations". ``"auto"`` picks the fastest exact one per
        shape, dtype and backend, separately for the forward pass and the two gradients, by
        timing them once and caching the choice (see ``jconv.auto_choice``;
        ``JCONV_AUTO_MEASURE=0`` uses a fixed heuristic instead).
      precision: passed to the underlying ``lax`` contraction (e.g. ``"highest"``).
      padding_mode: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or
        ``"circular"``, with ``torch.nn.Conv2d``'s rules (see :func:`jconv.convnd`).

    float16/bfloat16 inputs accumulate in float32 and the result is cast back to the input
    dtype; float32/float64 accumulate in their own dtype.

    Example (PyTorch's positional order: bias, stride, padding):
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(25.0).reshape(1, 1, 5, 5)
      >>> w = jnp.ones((1, 1, 3, 3))
      >>> jconv.conv2d(x, w, None, 1, 1, impl="loops").shape
      (1, 1, 5, 5)
      >>> float(jconv.conv2d(x, w, impl="im2col")[0, 0, 0, 0])  # 0+1+2+5+6+7+10+11+12
      54.0
      >>> jconv.conv2d([[[[1.0, 2.0]]]], [[[[3.0]]]]).tolist()  # lists work as jnp's do
      [[[[3.0, 6.0]]]]
    """
    return _conv(input, weight, bias, 2, stride=stride, padding=padding, dilation=dilation,
                 groups=groups, impl=impl, data_format=data_format, precision=precision,
                 padding_mode=padding_mode)


def conv1d(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
           stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
           groups: int = 1, *, impl: str = "lax", data_format: str = "NCL",
           precision: object = None, padding_mode: str = "zeros") -> jnp.ndarray:
    """1-D convolution with ``torch.nn.functional.conv1d`` semantics (plus ``padding_mode``,
    as ``torch.nn.Conv1d`` has it).

    Shapes (``data_format="NCL"``, the default; ``"NLC"`` puts channels last):
      x: (N, C_in, L) or unbatched (C_in, L)
      w: (C_out, C_in/groups, kL)   (in either format)
      b: (C_out,) or None
      returns (N, C_out, L_out)

      L_out = (L + pad_left + pad_right - dilation*(kL-1) - 1) // stride + 1

    ``padding``: an int, a 1-tuple, one ``(left, right)`` pair in a tuple, ``"valid"`` or
    ``"same"``. Every other argument (the positional order and keywords included) means what
    it means in :func:`jconv.conv2d`, per dimension; ``impl`` is any implementation whose
    registry entry lists 1-D.

    Example (a dilated causal-style layer, and circular padding):
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.ones((2, 4, 16))
      >>> jconv.conv1d(x, jnp.ones((8, 4, 3)), padding=((4, 0),), dilation=2).shape
      (2, 8, 16)
      >>> jconv.conv1d(jnp.arange(4.0)[None], jnp.ones((1, 1, 3)), padding=1,
      ...              padding_mode="circular").tolist()
      [[4.0, 3.0, 6.0, 5.0]]
    """
    return _conv(input, weight, bias, 1, stride=stride, padding=padding, dilation=dilation,
                 groups=groups, impl=impl, data_format=data_format, precision=precision,
                 padding_mode=padding_mode)


def conv3d(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
           stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
           groups: int = 1, *, impl: str = "lax", data_format: str = "NCDHW",
           precision: object = None, padding_mode: str = "zeros") -> jnp.ndarray:
    """3-D convolution with ``torch.nn.functional.conv3d`` semantics (plus ``padding_mode``,
    as ``torch.nn.Conv3d`` has it).

    Shapes (``data_format="NCDHW"``, the default; ``"NDHWC"`` puts channels last):
      x: (N, C_in, D, H, W) or unbatched (C_in, D, H, W)
      w: (C_out, C_in/groups, kD, kH, kW)   (in either format)
      b: (C_out,) or None
      returns (N, C_out, D_out, H_out, W_out)

      D_out = (D + pad_front + pad_back - dilation_d*(kD-1) - 1) // stride_d + 1  (H, W alike)

    ``stride``/``dilation``: an int or a (d, h, w) triple; ``padding``: an int, a triple,
    three ``(low, high)`` pairs, ``"valid"`` or ``"same"``. Every other argument (the
    positional order and keywords included) means what it means in :func:`jconv.conv2d`, per
    dimension.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.ones((1, 3, 8, 16, 16))
      >>> jconv.conv3d(x, jnp.ones((4, 3, 3, 3, 3)), stride=(1, 2, 2), padding=1).shape
      (1, 4, 8, 8, 8)
      >>> jconv.conv3d(x, jnp.ones((4, 3, 3, 3, 3)), padding="same", impl="im2col",
      ...              padding_mode="replicate")[0, 0, 0, 0, 0].item()
      81.0
    """
    return _conv(input, weight, bias, 3, stride=stride, padding=padding, dilation=dilation,
                 groups=groups, impl=impl, data_format=data_format, precision=precision,
                 padding_mode=padding_mode)


def convnd(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
           stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
           groups: int = 1, *, impl: str = "lax", data_format: str | None = None,
           precision: object = None, padding_mode: str = "zeros") -> jnp.ndarray:
    """N-D convolution, N = 1, 2 or 3 spatial dims: the one core of :func:`conv1d`,
    :func:`conv2d` and :func:`conv3d`, with their signature (``input, weight, bias, stride,
    padding, dilation, groups`` as in PyTorch, the rest keyword-only).

    Shapes (channels first, the default ``data_format`` for N = ``w.ndim - 2``: ``"NCL"``,
    ``"NCHW"`` or ``"NCDHW"``; the channels-last formats ``"NLC"``, ``"NHWC"``, ``"NDHWC"``):
      x: (N, C_in, *spatial) or unbatched (C_in, *spatial)
      w: (C_out, C_in/groups, *kernel)   (in every format)
      b: (C_out,) or None
      returns (N, C_out, *out_spatial), per spatial dim
      out = (size + pad_low + pad_high - dilation*(k-1) - 1) // stride + 1

    ``padding_mode``: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or
    ``"circular"``, as in ``torch.nn.ConvNd``: the input is padded with that mode, then
    convolved without padding. Every padding form works with every mode (``"same"`` splits
    the total as for zeros). PyTorch's limits hold: reflect padding must be smaller than
    the input, circular at most the input (it wraps once), replicate needs a non-empty
    input; anything else raises a ValueError naming the dimension.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.array([[[1.0, 2.0, 3.0]]])
      >>> jconv.convnd(x, jnp.ones((1, 1, 3)), padding=1, padding_mode="reflect").tolist()
      [[[5.0, 6.0, 7.0]]]
      >>> jconv.convnd(jnp.ones((1, 2, 4, 4, 4)), jnp.ones((3, 2, 2, 2, 2))).shape
      (1, 3, 3, 3, 3)
    """
    x, w, b = as_operands(input, weight, bias)
    ndim = w.ndim - 2
    if ndim not in SPATIAL_AXES:
        raise ValueError(f"w must be 3-D, 4-D or 5-D (C_out, C_in/groups, *kernel) for 1, 2 "
                         f"or 3 spatial dims, got shape {tuple(w.shape)}")
    ndim = format_ndim(data_format, ndim)
    return _conv(x, w, b, ndim, stride=stride, padding=padding, dilation=dilation,
                 groups=groups, impl=impl,
                 data_format=CONV_DATA_FORMATS[ndim][0] if data_format is None else data_format,
                 precision=precision, padding_mode=padding_mode)


def as_operands(x: ArrayLike, w: ArrayLike, b: ArrayLike | None
                ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray | None]:
    """The three operands as arrays: anything with a ``dtype`` (a JAX, NumPy or traced
    array) as it is, an array-like (nested lists, scalars) through ``jnp.asarray`` as jnp
    functions take them; anything else is a TypeError naming the argument."""
    return _as_array(x, "input"), _as_array(w, "weight"), None if b is None else \
        _as_array(b, "bias")


def _as_array(value: ArrayLike, name: str) -> jnp.ndarray:
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return value
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array or an array-like (e.g. nested lists of "
                        f"floats), got {type(value).__name__}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _conv(x: ArrayLike, w: ArrayLike, b: ArrayLike | None, ndim: int, *,
          stride: IntOrPair, padding: PaddingLike, dilation: IntOrPair, groups: int,
          impl: str, data_format: str, precision: object, padding_mode: str) -> jnp.ndarray:
    x, w, b = as_operands(x, w, b)
    impl = check_conv_impl(impl)
    spec, unbatched = canonical_conv(x, w, b, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, data_format=data_format, precision=precision,
                                     padding_mode=padding_mode, ndim=ndim)
    if unbatched:
        x = x[None]
    y = run_impl(impl, x, w, spec)
    if b is not None:
        y = add_bias(y, b, spec.data_format)
    return y[0] if unbatched else y


def run_impl(impl: str, x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """The registered ``impl`` on batched ``x`` (a ValueError if it does not compute
    ``spec.ndim``-D convolutions); a non-zero ``padding_mode`` is applied here, once for
    every implementation; an empty batch has an empty result (PyTorch's too) without calling
    the implementation, whatever it is."""
    check_impl_ndim(impl, spec.ndim)
    if x.shape[0] == 0:
        c_out, out = w.shape[0], spec.out_size
        shape = (0, *out, c_out) if spec.channels_last else (0, c_out, *out)
        return jnp.zeros(shape, x.dtype)
    x, spec = apply_padding_mode(x, spec)
    return conv_impl(impl)(x, w, spec)


def add_bias(y: jnp.ndarray, b: jnp.ndarray, data_format: str) -> jnp.ndarray:
    """``y + b`` over the channel axis (batched ``y`` in ``data_format``, any number of
    spatial dims), added in the accumulation dtype: the gradient of ``b`` sums
    N*H_out*W_out values, which in bfloat16 loses several percent.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> y, b = jnp.ones((1, 2, 64, 64), jnp.bfloat16), jnp.zeros(2, jnp.bfloat16)
      >>> db = jax.grad(lambda b: add_bias(y, b, "NCHW").sum().astype(float))(b)
      >>> db.dtype, float(db[0])  # exact; summed in bfloat16, XLA:CPU returns 1024
      (dtype(bfloat16), 4096.0)
    """
    acc = accum_dtype(y.dtype)
    bias = b.astype(acc)
    channels_first = data_format[1] == "C"
    out = y.astype(acc) + (bias.reshape(-1, *(1,) * (y.ndim - 2)) if channels_first else bias)
    return out.astype(y.dtype)
