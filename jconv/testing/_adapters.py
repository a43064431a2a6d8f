"""Adapters: put functions and layers of other conventions behind the NCHW,
``torch.nn.functional`` signature the checks call."""

from __future__ import annotations

import functools
from typing import Any, Callable


def _to_nhwc(a: Any) -> Any:
    return a.transpose(1, 2, 0) if a.ndim == 3 else a.transpose(0, 2, 3, 1)


def _to_nchw(a: Any) -> Any:
    return a.transpose(2, 0, 1) if a.ndim == 3 else a.transpose(0, 3, 1, 2)


def from_nhwc(fn: Callable[..., Any], *, weight: str = "OIHW") -> Callable[..., Any]:
    """Wrap a channels-last function so it can be checked: ``x`` (N, C, H, W) is transposed
    to (N, H, W, C) on the way in and the result back to NCHW on the way out (unbatched
    (C, H, W) likewise). ``weight="HWIO"`` also transposes the conv weight
    (C_out, C_in/groups, kH, kW) to (kH, kW, C_in/groups, C_out), as Flax/TF store it. Extra
    positional and keyword arguments pass through, so this serves conv and pooling alike.

    >>> import functools, jconv
    >>> from jconv import testing
    >>> nhwc_conv = functools.partial(jconv.conv2d, data_format="NHWC")
    >>> testing.check_conv2d(testing.from_nhwc(nhwc_conv), cases="quick",
    ...                      dtypes=("float32",), grads=False).passed
    True
    """
    if weight not in ("OIHW", "HWIO"):
        raise ValueError(f"weight must be 'OIHW' or 'HWIO', got {weight!r}")

    @functools.wraps(fn)
    def wrapped(x: Any, *args: Any, **kwargs: Any) -> Any:
        if weight == "HWIO" and args:
            args = (args[0].transpose(2, 3, 1, 0), *args[1:])
        return _to_nchw(fn(_to_nhwc(x), *args, **kwargs))

    return wrapped


def from_layer(make_layer: Callable[..., Any], *, batched: bool = True) -> Callable[..., Any]:
    """Check a conv layer: ``make_layer(w, b, stride=..., padding=..., dilation=...,
    groups=...)`` builds a layer holding weight w (C_out, C_in/groups, kH, kW) and bias b
    (or None) whose call ``layer(x)`` maps NCHW to NCHW. The layer is rebuilt on every call
    (it is cheap, and the check differentiates through w and b).

    ``batched=False`` is for layers that take one example, (C, H, W) -> (C_out, H_out, W_out),
    as Equinox's do: a batch (N, C, H, W) is mapped over N with ``jax.vmap``, an unbatched
    case goes to the layer as it is. Channels-last layers compose with :func:`from_nhwc`:
    ``from_nhwc(from_layer(make), weight="HWIO")`` hands ``make`` an HWIO kernel and the
    layer NHWC (or HWC) inputs.

    Example with jconv's own Flax NNX layer:
      >>> from flax import nnx
      >>> import jconv
      >>> from jconv import testing
      >>> def make(w, b, **kw):
      ...     layer = jconv.nn.Conv2d(w.shape[1] * kw["groups"], w.shape[0], w.shape[2:],
      ...                             bias=b is not None, rngs=nnx.Rngs(0), **kw)
      ...     layer.kernel = nnx.Param(w)
      ...     if b is not None:
      ...         layer.bias = nnx.Param(b)
      ...     return layer
      >>> testing.check_conv2d(testing.from_layer(make), cases="quick", dtypes=("float32",),
      ...                      grads=False).passed
      True

    Unbatched: the same layer, called on one example at a time:
      >>> one_at_a_time = lambda w, b, **kw: (lambda x: make(w, b, **kw)(x[None])[0])
      >>> testing.check_conv2d(testing.from_layer(one_at_a_time, batched=False),
      ...                      cases="quick", dtypes=("float32",), grads=False).passed
      True
    """
    if not isinstance(batched, bool):
        raise TypeError(f"batched must be True or False, got {batched!r}")

    def call(x: Any, w: Any, b: Any = None, **kwargs: Any) -> Any:
        layer = make_layer(w, b, **kwargs)
        if batched or x.ndim == 3:
            return layer(x)
        import jax

        return jax.vmap(layer)(x)

    kind = "" if batched else ", batched=False"
    call.__qualname__ = f"from_layer({getattr(make_layer, '__qualname__', make_layer)}{kind})"
    return call
