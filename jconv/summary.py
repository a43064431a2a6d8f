"""``jconv.summary``: a torchinfo-style table of a Flax NNX model, from one abstract forward
pass (``jax.eval_shape``: no FLOPs are spent and the model is not modified)."""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ._patching import patched_calls
from ._pool_spec import pool_spec
from ._spec import conv_spec
from .cost import activation_bytes, conv_macs, receptive_field
from .nn import (GlobalAvgPool2d, _AdaptivePoolNd, _AvgPoolNd, _ConvNd, _ConvTransposeNd,
                 _MaxPoolNd)

# Containers hold layers but do no work of their own: never rows of the table.
_CONTAINERS = (nnx.List, nnx.Sequential)
# Layers with parameters that do no multiply-accumulates and keep every pixel where it is
# (per-element or per-sample normalisation), so the receptive field does not change.
_POINTWISE = (nnx.BatchNorm, nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm, nnx.Dropout)
# The receptive field after a layer whose window summary does not know: shown as "?".
RF_UNKNOWN: tuple[int, ...] = ()


@dataclass(frozen=True)
class LayerSummary:
    """One call of one leaf layer.

    ``params`` counts the layer's ``nnx.Param`` entries on its first call only (a layer called
    twice shares its weights). ``macs`` are multiply-accumulates of this call (jconv's conv
    and transposed-conv layers, Flax's ``nnx.Conv``/``nnx.ConvTranspose``, ``nnx.Linear``; 0
    for normalisation, pooling, activations and other layers without parameters), or
    ``None`` for a layer summary cannot count (shown as ``?``): one with parameters of a
    kind it does not know, or an input-dilated ``nnx.Conv``.
    ``activation_bytes`` is the size of the output. ``receptive_field`` is the per-axis
    receptive field in input pixels after this layer, assuming the layers form a chain in
    call order; ``None`` once a layer mixes the whole input (Linear, global pooling) or after
    a transposed conv; :data:`RF_UNKNOWN` (``()``, shown as ``?``) from a layer or function
    whose window summary does not know on: one with parameters of a kind it does not know,
    or one that changes the number of elements (e.g. a pooling function; activations and
    reshapes keep the field).
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int | None
    activation_bytes: int
    receptive_field: tuple[int, ...] | None


@dataclass(frozen=True)
class ModelSummary:
    """Per-call rows plus totals; ``str()`` renders the table. ``total_macs`` is ``None``
    when some row's MACs are unknown (``?``): a sum without them would be too small."""

    layers: tuple[LayerSummary, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    total_params: int
    total_macs: int | None
    param_bytes: int
    input_bytes: int
    activation_bytes: int

    def __str__(self) -> str:
        head = ("Layer (type)", "Output shape", "Params", "MACs", "Act. bytes", "RF")
        rows = [(f"{r.name} ({r.kind})", str(r.output_shape), f"{r.params:,}",
                 "?" if r.macs is None else f"{r.macs:,}", f"{r.activation_bytes:,}",
                 "-" if r.receptive_field is None else
                 "x".join(map(str, r.receptive_field)) or "?")
                for r in self.layers]
        widths = [max(len(c) for c in col) for col in zip(head, *rows)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "=" * len(line(head))
        counted = sum(r.macs for r in self.layers if r.macs is not None)
        macs = (f"{self.total_macs:,} ({self.total_macs / 1e6:.2f} M)"
                if self.total_macs is not None
                else f"? (the rows counted sum to {counted:,})")
        out = [rule, line(head), rule, *(line(r) for r in rows), rule,
               f"Input shape: {self.input_shape}  Output shape: {self.output_shape}",
               f"Total params: {self.total_params:,} ({self.param_bytes / 2**20:.2f} MiB)",
               f"Total MACs: {macs}",
               f"Input: {self.input_bytes / 2**20:.2f} MiB  "
               f"Activations (all layer outputs): {self.activation_bytes / 2**20:.2f} MiB",
               rule]
        unknown_macs = sorted({r.kind for r in self.layers if r.macs is None})
        unknown_rf = [r for r in self.layers if r.receptive_field == RF_UNKNOWN]
        if unknown_macs:
            out.append(f"? MACs: not counted for {', '.join(unknown_macs)} (layers "
                       f"jconv.summary cannot count)")
        if unknown_rf:
            out.append(f"? RF: unknown from {unknown_rf[0].name} ({unknown_rf[0].kind}) on "
                       f"(a layer whose window jconv.summary does not know)")
        return "\n".join(out)


def _param_count(module: nnx.Module) -> int:
    return sum(math.prod(v.shape) for v in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _macs(layer: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int | None:
    """Multiply-accumulates of one call; ``None`` where they cannot be counted."""
    if isinstance(layer, _ConvNd):
        # conv_macs takes (N, C, *spatial); an unbatched input counts as one sample.
        shape = in_shape if len(in_shape) == layer.ndim + 2 else (1, *in_shape)
        if layer.data_format.endswith("C"):
            shape = (shape[0], shape[-1], *shape[1:-1])
        return conv_macs(shape, layer.out_channels, layer.kernel_size, layer.stride,
                         layer.pads, layer.dilation, layer.groups, ndim=layer.ndim)
    if isinstance(layer, _ConvTransposeNd):
        # Every input pixel scatters prod(kernel)*C_out/groups products.
        return (math.prod(in_shape) * (layer.out_channels // layer.groups)
                * math.prod(layer.kernel_size))
    if isinstance(layer, nnx.Conv):
        if _flax_tuple(layer.input_dilation, len(layer.kernel_size)) != (1,) * len(
                layer.kernel_size):
            return None  # an input-dilated conv multiplies inserted zeros: no one count
        # Kernel (*kernel, C_in/groups, C_out): each output element is prod(kernel)*C_in/groups.
        return math.prod(out_shape) * math.prod(layer.kernel_shape[:-1])
    if isinstance(layer, nnx.ConvTranspose):
        # As for jconv's: every input pixel scatters prod(kernel)*C_out products.
        return math.prod(in_shape) * math.prod(layer.kernel_shape[:-2]) * layer.out_features
    if isinstance(layer, nnx.Linear):
        return math.prod(in_shape[:-1]) * layer.in_features * layer.out_features
    if isinstance(layer, _POINTWISE) or _param_count(layer) == 0:
        return 0
    return None


def _flax_tuple(value: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """A Flax conv's stride/dilation attribute per spatial dim (``None`` is 1, as in Flax)."""
    value = 1 if value is None else value
    return (value,) * ndim if isinstance(value, int) else tuple(value)


def _flax_conv_window(layer: nnx.Conv, in_shape: tuple[int, ...]) -> "_RFEffect":
    """The window of ``nnx.Conv`` (channels last, HWIO kernel) with its padding rules."""
    nd = len(layer.kernel_size)
    k, s = tuple(layer.kernel_size), _flax_tuple(layer.strides, nd)
    d = _flax_tuple(layer.kernel_dilation, nd)
    if _flax_tuple(layer.input_dilation, nd) != (1,) * nd:
        return _RFEffect(unknown=True)
    k_eff = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]
    padding = layer.padding
    if padding == "SAME":
        low = [lo for lo, _ in jax.lax.padtype_to_pads(in_shape[-nd - 1:-1], k_eff, s, "SAME")]
    elif padding in ("CIRCULAR", "REFLECT"):
        low = [(ke - 1) // 2 for ke in k_eff]  # what nnx.Conv pads before a VALID conv
    elif padding == "CAUSAL":
        low = [ke - 1 for ke in k_eff]
    elif padding == "VALID":
        low = [0] * nd
    elif isinstance(padding, int):
        low = [padding] * nd
    else:
        low = [p if isinstance(p, int) else p[0] for p in padding]
    return _RFEffect(tuple(zip(k, s, low, d)))


@dataclass(frozen=True)
class _RFEffect:
    """How one layer call changes the receptive field: ``axes`` is the per-axis
    (kernel, stride, pad_before, dilation) of a local window; ``whole_input`` marks a layer
    that sees the whole input (the field is then undefined); ``unknown`` one whose window is
    not known (the field is then unknown); none of them leaves it unchanged."""

    axes: tuple[tuple[int, int, int, int], ...] = ()
    whole_input: bool = False
    unknown: bool = False


def _window(layer: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> _RFEffect:
    """The receptive-field effect of calling ``layer`` (a module or a plain function) on an
    input of ``in_shape``; for jconv's layers the geometry comes from the same spec parsing
    the layer's own call uses."""
    if isinstance(layer, _ConvNd):
        spec = conv_spec(in_shape, tuple(layer.kernel[...].shape), stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                         data_format=layer.data_format)
        pads = tuple(p[0] for p in spec.padding)
        return _RFEffect(tuple(zip(spec.kernel, spec.stride, pads, spec.dilation)))
    if isinstance(layer, (_MaxPoolNd, _AvgPoolNd)):
        pspec = pool_spec(in_shape, layer.kernel_size, layer.stride, layer.padding,
                          getattr(layer, "dilation", 1), layer.ceil_mode, layer.data_format)
        return _RFEffect(tuple(zip(pspec.kernel, pspec.stride, pspec.user_padding,
                                   pspec.dilation)))
    if isinstance(layer, nnx.Conv):
        return _flax_conv_window(layer, in_shape)
    # An adaptive pool's windows depend on the input size (and may overlap): no fixed field.
    if isinstance(layer, (GlobalAvgPool2d, _AdaptivePoolNd, _ConvTransposeNd, nnx.Linear,
                          nnx.ConvTranspose)):
        return _RFEffect(whole_input=True)
    if isinstance(layer, _POINTWISE):
        return _RFEffect()
    # Anything else without parameters that keeps the number of elements (an activation, a
    # flatten) moves no pixel into another's window: the field is kept. One with parameters,
    # or one that changes the number of elements (a pooling function), may apply any window.
    has_params = isinstance(layer, nnx.Module) and _param_count(layer) > 0
    return _RFEffect(unknown=has_params or math.prod(in_shape) != math.prod(out_shape))


class _Recorder:
    """Collects (module or function, path, input shape, output shape) per outermost call."""

    def __init__(self, paths: dict[int, str]):
        self.paths = paths
        self.params: dict[int, int] = {}
        self.calls: list[tuple[Any, str, Any, Any]] = []
        self.active: set[int] = set()

    def call(self, target: Any, name: str, fn: Callable[..., Any], args: tuple,
             kwargs: dict) -> Any:
        if id(target) in self.active:  # a patched parent class's __call__ seen again
            return fn(*args, **kwargs)
        self.active.add(id(target))
        try:
            out = fn(*args, **kwargs)
        finally:
            self.active.discard(id(target))
        x = args[1] if isinstance(target, nnx.Module) else args[0]
        self.calls.append((target, name, x, out))
        return out


def _recording(recorder: _Recorder) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A ``__call__`` wrapper that records the calls of instances in ``recorder.paths``."""
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            if id(self) not in recorder.paths:
                return original(self, *args, **kwargs)
            return recorder.call(self, recorder.paths[id(self)], original, (self, *args),
                                 kwargs)
        return __call__
    return wrap


def _recording_function(fn: Callable[..., Any], name: str,
                        recorder: _Recorder) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return recorder.call(wrapper, name, fn, args, kwargs)

    wrapper.kind = getattr(fn, "__name__", type(fn).__name__)  # type: ignore[attr-defined]
    return wrapper


def _wrap_sequential_functions(model: nnx.Module, recorder: _Recorder) -> None:
    """Activation functions (and other plain callables) inside ``nnx.Sequential`` get a row:
    replace them by recording wrappers in the throw-away copy of the model."""
    for path, node in list(nnx.iter_graph(model)):
        if not isinstance(node, nnx.Sequential):
            continue
        for i, fn in enumerate(node.layers):
            if isinstance(fn, nnx.Module) or not callable(fn):
                continue
            node.layers[i] = _recording_function(fn, ".".join(map(str, (*path, "layers", i))),
                                                 recorder)


def summary(model: nnx.Module, input_shape: Sequence[int], dtype: Any = jnp.float32,
            **call_kwargs: Any) -> ModelSummary:
    """Layer-by-layer summary of ``model(x)`` for ``x`` of ``input_shape`` and ``dtype``.

    Leaf layers (modules with no sub-modules: ``jconv.nn`` layers, ``nnx.Linear``,
    ``nnx.BatchNorm``, ...) and plain functions inside ``nnx.Sequential`` (activations,
    flatten lambdas) get one row per call, in call order, with the output shape, parameters
    (once per layer), MACs (:func:`jconv.conv_macs` for jconv's convs and Flax's
    ``nnx.Conv``, whose kernel is (*kernel, C_in/groups, C_out); ``N * in * out`` for
    Linear), output bytes (:func:`jconv.activation_bytes`) and the receptive field after the
    layer (:func:`jconv.receptive_field` over the conv/pool chain so far). What it cannot
    count is ``?`` with a footnote, never a number: the MACs of a layer with parameters of
    a kind it does not know (``macs=None``; ``total_macs`` is then ``None``) and the field
    after a window it does not know (:data:`RF_UNKNOWN`). Functions called
    inside a custom module's ``__call__`` are not seen (their cost is zero in any case).
    ``total_params`` counts every ``nnx.Param`` of the model once. ``call_kwargs`` are passed
    to ``model``. Only shapes are needed, so an abstract model from ``nnx.eval_shape`` (no
    weights allocated) works too.

    Example (Conv2d(3->16, k3, p1) - ReLU - MaxPool(2) on (1, 3, 32, 32)):
      >>> from flax import nnx; import jconv
      >>> model = nnx.Sequential(jconv.nn.Conv2d(3, 16, 3, padding=1, rngs=nnx.Rngs(0)),
      ...                        nnx.relu, jconv.nn.MaxPool2d(2))
      >>> s = jconv.summary(model, (1, 3, 32, 32))
      >>> [(r.kind, r.output_shape, r.params, r.macs, r.receptive_field) for r in s.layers]
      ... # doctest: +NORMALIZE_WHITESPACE
      [('Conv2d', (1, 16, 32, 32), 448, 442368, (3, 3)),
       ('relu', (1, 16, 32, 32), 0, 0, (3, 3)),
       ('MaxPool2d', (1, 16, 16, 16), 0, 0, (4, 4))]
      >>> s.total_params, s.total_macs
      (448, 442368)

    Flax's own ``nnx.Conv`` (channels last) is counted too:
      >>> s = jconv.summary(nnx.Sequential(nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))),
      ...                   (1, 32, 32, 3))
      >>> s.layers[0].macs == 32 * 32 * 8 * (3 * 3 * 3), s.layers[0].receptive_field
      (True, (3, 3))
    """
    shape = _check_summary_args(model, input_shape)
    out, recorder = _record(model, shape, dtype, call_kwargs)
    rows = _rows(recorder)
    out_leaf = jax.tree.leaves(out)[0]
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    return ModelSummary(
        layers=tuple(rows), input_shape=shape, output_shape=tuple(out_leaf.shape),
        total_params=sum(math.prod(p.shape) for p in params),
        total_macs=None if any(r.macs is None for r in rows) else sum(r.macs for r in rows),
        param_bytes=sum(activation_bytes(p.shape, p.dtype) for p in params),
        input_bytes=activation_bytes(shape, dtype),
        activation_bytes=sum(r.activation_bytes for r in rows))


def _check_summary_args(model: object, input_shape: object) -> tuple[int, ...]:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if hasattr(input_shape, "shape") and hasattr(input_shape, "dtype"):
        # An array passed for its shape: say so, without printing every element.
        raise TypeError(f"input_shape must be a shape (a sequence of positive ints), got an "
                        f"array of shape {tuple(input_shape.shape)} and dtype "
                        f"{input_shape.dtype}: pass x.shape")
    shape = tuple(input_shape)  # type: ignore[arg-type]
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                            for d in shape):
        raise ValueError(f"input_shape must be a non-empty sequence of positive ints, got "
                         f"{reprlib.repr(input_shape)}")
    return shape


def _record(model: nnx.Module, shape: tuple[int, ...], dtype: Any,
            call_kwargs: dict[str, Any]) -> tuple[Any, "_Recorder"]:
    """Trace ``model`` on an abstract input of ``shape`` (a throw-away copy), recording
    every leaf layer's and Sequential function's call."""
    graphdef, state = nnx.split(model)
    recorder = _Recorder({})

    def forward(state: Any, x: jnp.ndarray) -> Any:
        copy = nnx.merge(graphdef, state)  # a throw-away copy: BN updates etc. stay in here
        modules = [(p, n) for p, n in nnx.iter_graph(copy) if isinstance(n, nnx.Module)]
        parents = {p[:i] for p, _ in modules for i in range(len(p))}
        leaves = {id(n): ".".join(map(str, p)) for p, n in modules
                  if p not in parents and not isinstance(n, _CONTAINERS)}
        recorder.paths.update(leaves)
        recorder.params.update({id(n): _param_count(n) for _, n in modules if id(n) in leaves})
        _wrap_sequential_functions(copy, recorder)
        leaf_classes = {type(n) for _, n in modules if id(n) in leaves}
        wrap = _recording(recorder)
        with patched_calls({c: wrap for t in leaf_classes for c in t.__mro__
                            if "__call__" in c.__dict__ and issubclass(c, nnx.Module)}):
            return copy(x, **call_kwargs)

    return jax.eval_shape(forward, state, jax.ShapeDtypeStruct(shape, dtype)), recorder


def _rows(recorder: "_Recorder") -> list[LayerSummary]:
    """One row per recorded call, with the receptive field of the window chain so far."""
    rows, seen = [], set()
    # One chain of windows per spatial axis, made at the first window (1, 2 or 3 axes).
    chain: list[list[tuple[int, int, int, int]]] = []
    rf: tuple[int, ...] | None = (1, 1)  # before any window each output pixel sees one input
    for target, name, x, y in recorder.calls:
        is_module = isinstance(target, nnx.Module)
        in_shape = tuple(jax.tree.leaves(x)[0].shape)
        out_shape = tuple(jax.tree.leaves(y)[0].shape)
        effect = _window(target, in_shape, out_shape)
        if effect.whole_input:
            rf = None  # and it stays None: nothing downstream is a local window any more
        elif effect.unknown and rf is not None:
            rf = RF_UNKNOWN  # and it stays unknown until a layer sees the whole input
        elif effect.axes and rf not in (None, RF_UNKNOWN):
            chain = chain or [[] for _ in effect.axes]
            for axis, window in zip(range(len(chain)), effect.axes):
                chain[axis].append(window)
            rf = tuple(receptive_field(c).size for c in chain)
        y_leaf = jax.tree.leaves(y)[0]
        rows.append(LayerSummary(
            name=name, kind=type(target).__name__ if is_module else target.kind,
            input_shape=in_shape, output_shape=tuple(y_leaf.shape),
            params=recorder.params.get(id(target), 0) if id(target) not in seen else 0,
            macs=_macs(target, in_shape, out_shape) if is_module else 0,
            activation_bytes=activation_bytes(y_leaf.shape, y_leaf.dtype),
            receptive_field=rf))
        seen.add(id(target))
    return rows
