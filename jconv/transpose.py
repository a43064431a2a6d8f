"""``jconv.conv_transpose1d/2d/3d``: transposed convolution as the exact linear transpose of
:func:`jconv.convnd`, so it exists for every conv implementation and every number of
spatial dims it computes."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._registry import check_conv_impl
from .conv import add_bias, as_operands, run_impl
from ._spec import (IntOrPair, check_bias, check_data_format, check_operands,
                    conv_spec, to_tuple, weight_layout)


def check_output_padding(output_padding: IntOrPair, s: Sequence[int], d: Sequence[int],
                         stride: object, dilation: object) -> tuple[int, ...]:
    """``output_padding`` as one int per spatial dim (``len(s)`` of them), each smaller than
    the stride or the dilation (PyTorch's rule; ``s``/``d`` parsed, ``stride``/``dilation``
    as given, for the message)."""
    op = to_tuple(output_padding, "output_padding", len(s), minimum=0)
    for o, ss, dd in zip(op, s, d):
        if o >= ss and o >= dd:
            raise ValueError(f"output_padding must be smaller than either stride or dilation "
                             f"(PyTorch rule), got output_padding={output_padding!r}, "
                             f"stride={stride!r}, dilation={dilation!r}")
    return op


def conv_transpose2d(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
                     stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1, dilation: IntOrPair = 1,
                     *, impl: str = "lax", data_format: str = "NCHW",
                     precision: object = None) -> jnp.ndarray:
    """Transposed 2-D convolution with ``torch.nn.functional.conv_transpose2d``'s signature
    and semantics: ``conv_transpose2d(input, weight, bias, stride, padding, output_padding,
    groups, dilation)`` positionally (PyTorch's order: ``groups`` before ``dilation``) or by
    keyword; ``impl``, ``data_format`` and ``precision`` are keyword-only. Operands may be
    array-likes (taken with ``jnp.asarray``), as in :func:`jconv.conv2d`; messages call them
    ``x``, ``w`` and ``b``.

    Shapes (``data_format="NCHW"``; NHWC puts channels last, the weight layout is the same):
      x: (N, C_in, H, W) or unbatched (C_in, H, W)
      w: (C_in, C_out/groups, kH, kW)   (PyTorch's transposed-conv layout)
      b: (C_out,) or None
      returns (N, C_out, H_out, W_out)

      H_out = (H - 1)*stride_h - 2*padding_h + dilation_h*(kH - 1) + output_padding_h + 1

    It is the gradient of ``conv2d(z, w, stride, padding, dilation, groups)`` with respect to
    its input ``z`` of shape (N, C_out, H_out, W_out): input pixel (i, j) scatters
    ``x[i, j] * w[:, :, p, q]`` to output pixel (i*stride + p*dilation - padding, ...).
    ``output_padding`` (< stride or < dilation, per dim, as in PyTorch) adds rows/columns at
    the bottom/right to pick among the input sizes a strided conv maps to the same size.
    Computed as the VJP (``jax.vjp``) of :func:`jconv.conv2d` with the given ``impl``,
    so every impl (``"lax"``, ``"im2col"``, ``"loops"``, ``"winograd_f4x4"``, ...) works, within
    that impl's own restrictions. ``padding`` is an int or an (h, w) pair.

    Example (the classic 2x upsampling layer):
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.ones((1, 8, 16, 16))
      >>> w = jnp.ones((8, 4, 3, 3))  # C_in=8 -> C_out=4
      >>> jconv.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1).shape
      (1, 4, 32, 32)
      >>> jconv.conv_transpose2d(jnp.ones((1, 1, 1)), jnp.ones((1, 1, 2, 2)))[0].tolist()
      [[1.0, 1.0], [1.0, 1.0]]
      >>> jconv.conv_transpose2d(x, w, None, 2, 1, 1).shape  # PyTorch's positional order
      (1, 4, 32, 32)
    """
    return _conv_transpose(input, weight, bias, 2, stride=stride, padding=padding,
                           output_padding=output_padding, groups=groups, dilation=dilation,
                           impl=impl, data_format=data_format, precision=precision)


def conv_transpose1d(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
                     stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1, dilation: IntOrPair = 1,
                     *, impl: str = "lax", data_format: str = "NCL",
                     precision: object = None) -> jnp.ndarray:
    """Transposed 1-D convolution with ``torch.nn.functional.conv_transpose1d`` semantics:
    the gradient of :func:`jconv.conv1d` with respect to its input (see
    :func:`jconv.conv_transpose2d`, of which this is the 1-D case).

    Shapes (``data_format="NCL"``; ``"NLC"`` puts channels last):
      x: (N, C_in, L) or unbatched (C_in, L)
      w: (C_in, C_out/groups, kL)
      b: (C_out,) or None
      returns (N, C_out, L_out)

      L_out = (L - 1)*stride - 2*padding + dilation*(kL - 1) + output_padding + 1

    Example (2x upsampling of a sequence):
      >>> import jax.numpy as jnp, jconv
      >>> jconv.conv_transpose1d(jnp.ones((1, 8, 50)), jnp.ones((8, 4, 4)), stride=2,
      ...                        padding=1).shape
      (1, 4, 100)
    """
    return _conv_transpose(input, weight, bias, 1, stride=stride, padding=padding,
                           output_padding=output_padding, groups=groups, dilation=dilation,
                           impl=impl, data_format=data_format, precision=precision)


def conv_transpose3d(input: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None,
                     stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1, dilation: IntOrPair = 1,
                     *, impl: str = "lax", data_format: str = "NCDHW",
                     precision: object = None) -> jnp.ndarray:
    """Transposed 3-D convolution with ``torch.nn.functional.conv_transpose3d`` semantics:
    the gradient of :func:`jconv.conv3d` with respect to its input (see
    :func:`jconv.conv_transpose2d`, of which this is the 3-D case).

    Shapes (``data_format="NCDHW"``; ``"NDHWC"`` puts channels last):
      x: (N, C_in, D, H, W) or unbatched (C_in, D, H, W)
      w: (C_in, C_out/groups, kD, kH, kW)
      b: (C_out,) or None
      returns (N, C_out, D_out, H_out, W_out)

      D_out = (D - 1)*stride_d - 2*padding_d + dilation_d*(kD - 1) + output_padding_d + 1
      (H_out, W_out alike)

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.conv_transpose3d(jnp.ones((1, 4, 4, 8, 8)), jnp.ones((4, 2, 3, 3, 3)),
      ...                        stride=2, padding=1, output_padding=1).shape
      (1, 2, 8, 16, 16)
    """
    return _conv_transpose(input, weight, bias, 3, stride=stride, padding=padding,
                           output_padding=output_padding, groups=groups, dilation=dilation,
                           impl=impl, data_format=data_format, precision=precision)


def _conv_transpose(x: ArrayLike, w: ArrayLike, b: ArrayLike | None, ndim: int, *,
                    stride: IntOrPair, padding: IntOrPair, output_padding: IntOrPair,
                    groups: int, dilation: IntOrPair, impl: str, data_format: str,
                    precision: object) -> jnp.ndarray:
    """The one N-D core of ``conv_transpose1d/2d/3d``."""
    x, w, b = as_operands(x, w, b)
    impl = check_conv_impl(impl)
    data_format = check_data_format(data_format, ndim)
    check_operands(x, w, groups, data_format, weight_layout(ndim, transposed=True))
    unbatched = x.ndim == ndim + 1
    xb = x[None] if unbatched else x
    channels_last = data_format[1] != "C"
    c_in = xb.shape[-1] if channels_last else xb.shape[1]
    size = xb.shape[1:-1] if channels_last else xb.shape[2:]
    if w.shape[0] != c_in:
        raise ValueError(f"channel mismatch: x has C_in={c_in} channels but w has shape "
                         f"{tuple(w.shape)}, expected (C_in={c_in}, C_out/groups, "
                         f"{weight_layout(ndim)[len('(C_out, C_in/groups, '):]}")
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide C_in={c_in}")
    c_out = w.shape[1] * groups
    check_bias(b, c_out, x.dtype)
    s = to_tuple(stride, "stride", ndim, minimum=1)
    p = to_tuple(padding, "padding", ndim, minimum=0)
    d = to_tuple(dilation, "dilation", ndim, minimum=1)
    op = check_output_padding(output_padding, s, d, stride, dilation)
    out = tuple((n - 1) * ss - 2 * pp + dd * (k - 1) + o + 1
                for n, ss, pp, dd, k, o in zip(size, s, p, d, w.shape[2:], op))
    if min(out) < 1:
        raise ValueError(f"output size {out} is not positive: padding={padding!r} is too "
                         f"large for input {tuple(size)}, kernel {tuple(w.shape[2:])}, "
                         f"stride={stride!r}, dilation={dilation!r}")

    n = xb.shape[0]
    z_shape = (n, *out, c_out) if channels_last else (n, c_out, *out)
    # conv reads w as (O, I/groups, *kernel) = (C_in, C_out/groups, *kernel): a conv from
    # C_out to C_in channels, whose transpose is the map we want. Its spec is parsed once.
    spec = conv_spec(z_shape, w.shape, stride=s, padding=p, dilation=d, groups=groups,
                     data_format=data_format, precision=precision)

    def forward(z: jnp.ndarray) -> jnp.ndarray:
        return run_impl(impl, z, w, spec)

    # With output_padding >= stride (possible when dilation > stride) the conv of z has
    # output_padding // stride more rows than x: those extra cotangent rows are zeros.
    extra = [(0, f - h) for f, h in zip(spec.out_size, size)]
    pads = [(0, 0), *extra, (0, 0)] if channels_last else [(0, 0), (0, 0), *extra]
    # The VJP at any point is the transpose of this linear map; jax.vjp (rather than
    # jax.linear_transpose) also accepts impls that define their gradient by custom_vjp.
    _, vjp = jax.vjp(forward, jnp.zeros(z_shape, x.dtype))
    (y,) = vjp(jnp.pad(xb, pads))
    if b is not None:
        y = add_bias(y, b, data_format)
    return y[0] if unbatched else y
