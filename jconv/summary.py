"""``jconv.summary``: a torchinfo-style table of a Flax NNX model, from one abstract forward
pass (``jax.eval_shape``: no FLOPs are spent and the model is not modified)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ._pool_spec import pool_spec
from ._spec import conv_spec
from .cost import activation_bytes, conv_macs, receptive_field
from .nn import (GlobalAvgPool2d, _AdaptivePoolNd, _AvgPoolNd, _ConvNd, _ConvTransposeNd,
                 _MaxPoolNd)

# Containers hold layers but do no work of their own: never rows of the table.
_CONTAINERS = (nnx.List, nnx.Sequential)


@dataclass(frozen=True)
class LayerSummary:
    """One call of one leaf layer.

    ``params`` counts the layer's ``nnx.Param`` entries on its first call only (a layer called
    twice shares its weights). ``macs`` are multiply-accumulates of this call (conv, transposed
    conv and linear layers; 0 for normalisation, pooling and activations).
    ``activation_bytes`` is the size of the output. ``receptive_field`` is (RF_h, RF_w) in
    input pixels after this layer, assuming the layers form a chain in call order; ``None``
    once a layer mixes the whole input (Linear, global pooling) or after a transposed conv.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int
    receptive_field: tuple[int, int] | None


@dataclass(frozen=True)
class ModelSummary:
    """Per-call rows plus totals; ``str()`` renders the table."""

    layers: tuple[LayerSummary, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    total_params: int
    total_macs: int
    param_bytes: int
    input_bytes: int
    activation_bytes: int

    def __str__(self) -> str:
        head = ("Layer (type)", "Output shape", "Params", "MACs", "Act. bytes", "RF")
        rows = [(f"{r.name} ({r.kind})", str(r.output_shape), f"{r.params:,}", f"{r.macs:,}",
                 f"{r.activation_bytes:,}",
                 "-" if r.receptive_field is None else "x".join(map(str, r.receptive_field)))
                for r in self.layers]
        widths = [max(len(c) for c in col) for col in zip(head, *rows)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "=" * len(line(head))
        out = [rule, line(head), rule, *(line(r) for r in rows), rule,
               f"Input shape: {self.input_shape}  Output shape: {self.output_shape}",
               f"Total params: {self.total_params:,} ({self.param_bytes / 2**20:.2f} MiB)",
               f"Total MACs: {self.total_macs:,} ({self.total_macs / 1e6:.2f} M)",
               f"Input: {self.input_bytes / 2**20:.2f} MiB  "
               f"Activations (all layer outputs): {self.activation_bytes / 2**20:.2f} MiB",
               rule]
        return "\n".join(out)


def _param_count(module: nnx.Module) -> int:
    return sum(math.prod(v.shape) for v in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _macs(layer: Any, in_shape: tuple[int, ...]) -> int:
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
    if isinstance(layer, nnx.Linear):
        return math.prod(in_shape[:-1]) * layer.in_features * layer.out_features
    return 0


@dataclass(frozen=True)
class _RFEffect:
    """How one layer call changes the receptive field: ``axes`` is the per-axis
    (kernel, stride, pad_before, dilation) of a local window; ``whole_input`` marks a layer
    that sees the whole input (the field is then undefined); neither leaves it unchanged."""

    axes: tuple[tuple[int, int, int, int], ...] = ()
    whole_input: bool = False


def _window(layer: Any, in_shape: tuple[int, ...]) -> _RFEffect:
    """The receptive-field effect of calling ``layer`` on an input of ``in_shape``; the
    geometry comes from the same spec parsing the layer's own call uses."""
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
    # An adaptive pool's windows depend on the input size (and may overlap): no fixed field.
    if isinstance(layer, (GlobalAvgPool2d, _AdaptivePoolNd, _ConvTransposeNd, nnx.Linear)):
        return _RFEffect(whole_input=True)
    return _RFEffect()


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


@contextlib.contextmanager
def _patched_calls(classes: set[type], recorder: _Recorder) -> Iterator[None]:
    """Temporarily wrap ``cls.__call__`` (Python looks special methods up on the class, so
    patching instances would not work); only instances in ``recorder.paths`` are recorded."""
    saved = {cls: cls.__dict__.get("__call__") for cls in classes}

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            if id(self) not in recorder.paths:
                return original(self, *args, **kwargs)
            return recorder.call(self, recorder.paths[id(self)], original, (self, *args),
                                 kwargs)
        return __call__

    try:
        for cls in classes:
            cls.__call__ = wrap(cls.__call__)  # type: ignore[method-assign]
        yield
    finally:
        for cls, original in saved.items():
            if original is None:
                del cls.__call__  # type: ignore[attr-defined]
            else:
                cls.__call__ = original  # type: ignore[method-assign]


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
    (once per layer), MACs (:func:`jconv.conv2d_macs` for convs; ``N * in * out`` for
    Linear), output bytes (:func:`jconv.activation_bytes`) and the receptive field after the
    layer (:func:`jconv.receptive_field` over the conv/pool chain so far). Functions called
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
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                            for d in shape):
        raise ValueError(f"input_shape must be a non-empty sequence of positive ints, got "
                         f"{input_shape!r}")
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
        with _patched_calls({c for t in leaf_classes for c in t.__mro__
                             if "__call__" in c.__dict__ and issubclass(c, nnx.Module)},
                            recorder):
            return copy(x, **call_kwargs)

    out = jax.eval_shape(forward, state, jax.ShapeDtypeStruct(shape, dtype))
    rows, seen = [], set()
    # One chain of windows per spatial axis, made at the first window (1, 2 or 3 axes).
    chain: list[list[tuple[int, int, int, int]]] = []
    rf: tuple[int, ...] | None = (1, 1)  # before any window each output pixel sees one input
    for target, name, x, y in recorder.calls:
        is_module = isinstance(target, nnx.Module)
        in_shape = tuple(jax.tree.leaves(x)[0].shape)
        effect = _window(target, in_shape) if is_module else _RFEffect()
        if effect.whole_input:
            rf = None  # and it stays None: nothing downstream is a local window any more
        elif effect.axes and rf is not None:
            chain = chain or [[] for _ in effect.axes]
            for axis, window in zip(range(len(chain)), effect.axes):
                chain[axis].append(window)
            rf = tuple(receptive_field(c).size for c in chain)
        y_leaf = jax.tree.leaves(y)[0]
        rows.append(LayerSummary(
            name=name, kind=type(target).__name__ if is_module else target.kind,
            input_shape=in_shape, output_shape=tuple(y_leaf.shape),
            params=recorder.params.get(id(target), 0) if id(target) not in seen else 0,
            macs=_macs(target, in_shape) if is_module else 0,
            activation_bytes=activation_bytes(y_leaf.shape, y_leaf.dtype),
            receptive_field=rf))
        seen.add(id(target))
    out_leaf = jax.tree.leaves(out)[0]
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    return ModelSummary(
        layers=tuple(rows), input_shape=shape, output_shape=tuple(out_leaf.shape),
        total_params=sum(math.prod(p.shape) for p in params),
        total_macs=sum(r.macs for r in rows),
        param_bytes=sum(activation_bytes(p.shape, p.dtype) for p in params),
        input_bytes=activation_bytes(shape, dtype),
        activation_bytes=sum(r.activation_bytes for r in rows))
