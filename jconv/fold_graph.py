"""Graph-level Conv + BatchNorm folding for any Flax NNX model.

:func:`fold_conv_bn_graph` traces one forward pass of the model to a jaxpr, with every
``jconv.nn.Conv2d`` / ``ConvTranspose2d`` output and every ``nnx.BatchNorm`` input tagged by
an identity marker. A conv folds into a BatchNorm only when the jaxpr shows a real data-flow
edge between them and nothing else reads the conv's output: call order alone proves nothing
(a residual branch, a shared feature map or a ``tanh`` in between all break the fold). The
result is a new model in which the conv computes ``bn(conv(x))`` and the BatchNorm is a
:class:`FoldedBatchNorm` pass-through, plus a :class:`FoldReport` listing what was folded
and why every other conv -> BatchNorm candidate was not.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend import core as jex_core

from .bn_fold import fold_conv_bn
from .nn import Conv2d, ConvTranspose2d

_MARK = "jconv_fold_"
# How many single-input steps to look back from a BatchNorm for a conv when explaining why
# a pair did not fold (a non-affine op, a reshape, ...).
_LOOKBACK = 8


@dataclass(frozen=True)
class FoldedPair:
    """A conv (dotted path in the model) whose BatchNorm was folded into it."""

    conv: str
    bn: str


@dataclass(frozen=True)
class SkippedPair:
    """A conv -> BatchNorm candidate left unfolded; ``conv`` or ``bn`` is ``None`` when that
    side is unknown (e.g. a layer called inside ``jax.lax.scan``)."""

    conv: str | None
    bn: str | None
    reason: str


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold_conv_bn_graph` did: ``folded`` and ``skipped`` pairs, in call order.

    Example:
      >>> r = FoldReport((FoldedPair("conv", "bn"),), ())
      >>> print(r)
      folded 1 conv+BatchNorm pair(s), skipped 0
        folded  conv -> bn
    """

    folded: tuple[FoldedPair, ...] = field(default_factory=tuple)
    skipped: tuple[SkippedPair, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        lines = [f"folded {len(self.folded)} conv+BatchNorm pair(s), "
                 f"skipped {len(self.skipped)}"]
        lines += [f"  folded  {p.conv} -> {p.bn}" for p in self.folded]
        lines += [f"  skipped {p.conv or '?'} -> {p.bn or '?'}: {p.reason}" for p in self.skipped]
        return "\n".join(lines)


class FoldedBatchNorm(nnx.Module):
    """What stands where a folded BatchNorm was: returns its input, cast to the dtype the
    BatchNorm would have returned (its ``dtype``, else the promotion of the input with its
    statistics and parameters). Takes and ignores BatchNorm's call arguments. Shape:
    unchanged.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> fb = FoldedBatchNorm(jconv.nn.BatchNorm2d(4, rngs=nnx.Rngs(0)))
      >>> fb(jnp.ones((1, 4, 2, 2), jnp.float32), use_running_average=True).shape
      (1, 4, 2, 2)
    """

    def __init__(self, bn: nnx.BatchNorm):
        self.num_features = bn.num_features
        self.dtype = bn.dtype
        arrays = [v[...] for v in (bn.mean, bn.var, bn.scale, bn.bias) if v is not None]
        self.stats_dtype = jnp.result_type(*arrays)

    def __call__(self, x: jnp.ndarray, *args: Any, **kwargs: Any) -> jnp.ndarray:
        return x.astype(self.dtype or jnp.result_type(x.dtype, self.stats_dtype))


def fold_conv_transpose_bn(conv: ConvTranspose2d, bn: nnx.BatchNorm) -> ConvTranspose2d:
    """A new :class:`jconv.nn.ConvTranspose2d` computing ``bn(conv(x))``, ``bn`` in eval mode.

    The kernel has PyTorch's transposed layout (C_in, C_out/groups, kH, kW): output channel
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
    if not isinstance(conv, ConvTranspose2d):
        raise TypeError(f"conv must be a jconv.nn.ConvTranspose2d, got {type(conv).__name__}")
    _check_bn(bn, conv.out_channels, conv.data_format)
    f64, c_out, g = np.float64, conv.out_channels, conv.groups
    w = np.asarray(conv.kernel[...], f64)
    s, shift = _bn_affine(bn, c_out)
    b = np.zeros(c_out) if conv.bias is None else np.asarray(conv.bias[...], f64)
    # (C_in, C_out/g, kH, kW) -> (g, C_in/g, C_out/g, kH, kW): scale each group's slice by
    # its own output channels' factors.
    wg = w.reshape(g, w.shape[0] // g, *w.shape[1:]) * s.reshape(g, 1, c_out // g, 1, 1)
    folded = nnx.clone(conv)
    dtype = conv.kernel[...].dtype
    folded.kernel = nnx.Param(jnp.asarray(wg.reshape(w.shape), dtype))
    folded.bias = nnx.data(nnx.Param(jnp.asarray(b * s + shift, dtype)))
    return folded


def _bn_affine(bn: nnx.BatchNorm, c: int) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) with eval-mode bn(y) = y * s + t per channel, in float64."""
    f64 = np.float64
    gamma = np.ones(c) if bn.scale is None else np.asarray(bn.scale[...], f64)
    beta = np.zeros(c) if bn.bias is None else np.asarray(bn.bias[...], f64)
    s = gamma / np.sqrt(np.asarray(bn.var[...], f64) + bn.epsilon)
    return s, beta - np.asarray(bn.mean[...], f64) * s


def _check_bn(bn: object, channels: int, data_format: str) -> None:
    if not isinstance(bn, nnx.BatchNorm):
        raise TypeError(f"bn must be a flax.nnx.BatchNorm, got {type(bn).__name__}")
    if bn.num_features != channels:
        raise ValueError(f"bn.num_features={bn.num_features} must equal "
                         f"conv.out_channels={channels}")
    channel_axes = (1, -3) if data_format == "NCHW" else (3, -1)
    if bn.axis not in channel_axes:
        raise ValueError(f"bn.axis={bn.axis} does not normalise the channel axis of a "
                         f"data_format={data_format!r} conv (expected one of {channel_axes})")


@dataclass
class _Call:
    """One intercepted layer call during the trace."""

    kind: str  # "conv" | "bn"
    tag: str
    path: tuple | None
    train: bool = False
    masked: bool = False


def _marker(tag: str) -> Callable[[Any], Any]:
    """An identity function that shows up in the jaxpr as a ``jit`` equation named ``tag``."""

    def mark(x: Any) -> Any:
        return x

    mark.__name__ = tag
    return jax.jit(mark)


def _bn_classes() -> list[type]:
    """``nnx.BatchNorm`` and every subclass with its own ``__call__`` (e.g. one that computes
    training mode itself and calls Flax's only in eval mode)."""
    found, todo = [], [nnx.BatchNorm]
    while todo:
        cls = todo.pop()
        found += [cls] if "__call__" in vars(cls) else []
        todo += cls.__subclasses__()
    return found


@contextlib.contextmanager
def _intercept(paths: dict[int, tuple], log: list[_Call]) -> Iterator[None]:
    """Patch the conv and BatchNorm classes' ``__call__`` to log each call and tag arrays."""
    bn_classes = _bn_classes()
    originals = {cls: cls.__call__ for cls in (Conv2d, ConvTranspose2d, *bn_classes)}
    # Restore what each class itself defined: an inherited ``__call__`` (Conv2d's comes from
    # _ConvNd) must not be left behind as the class's own attribute.
    own = {cls: cls.__dict__.get("__call__") for cls in originals}
    inside: set[int] = set()  # BatchNorms being called: a subclass calling super() logs once

    def wrap_conv(orig: Callable) -> Callable:
        def call(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
            tag = f"{_MARK}conv_{len(log)}"
            log.append(_Call("conv", tag, paths.get(id(self))))
            return _marker(tag)(orig(self, x, *args, **kwargs))
        return call

    def wrap_bn(orig: Callable) -> Callable:
        def call_bn(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
            if id(self) in inside:
                return orig(self, x, *args, **kwargs)
            tag = f"{_MARK}bn_{len(log)}"
            flag = kwargs.get("use_running_average", args[0] if args else None)
            flag = self.use_running_average if flag is None else flag
            log.append(_Call("bn", tag, paths.get(id(self)), train=not flag,
                             masked=kwargs.get("mask") is not None))
            inside.add(id(self))
            try:
                return orig(self, _marker(tag)(x), *args, **kwargs)
            finally:
                inside.discard(id(self))
        return call_bn

    try:
        Conv2d.__call__ = wrap_conv(originals[Conv2d])  # type: ignore[method-assign]
        ConvTranspose2d.__call__ = wrap_conv(originals[ConvTranspose2d])  # type: ignore
        for cls in bn_classes:
            cls.__call__ = wrap_bn(originals[cls])  # type: ignore[method-assign]
        yield
    finally:
        for cls, defined in own.items():
            if defined is None:
                del cls.__call__
            else:
                cls.__call__ = defined  # type: ignore[method-assign]


def _dotted(path: tuple | None) -> str | None:
    return None if path is None else ".".join(str(k) for k in path) or "<model>"


def _trace(model: nnx.Module, args: tuple, kwargs: dict) -> tuple[Any, list[_Call]]:
    graphdef, state = nnx.split(model)
    log: list[_Call] = []

    def forward(state: Any, args: tuple) -> Any:
        m = nnx.merge(graphdef, state)
        paths = {id(node): path for path, node in nnx.iter_graph(m)
                 if isinstance(node, nnx.Module)}
        log.clear()  # a retrace starts the log afresh
        with _intercept(paths, log):
            return m(*args, **kwargs)

    closed = jax.make_jaxpr(forward)(nnx.as_pure(state), args)
    return closed.jaxpr, log


def _analyse(jaxpr: Any, log: list[_Call]) -> tuple[dict, list[SkippedPair]]:
    """Per BatchNorm call with a conv upstream: the conv call it pairs with, or a reason."""
    eqns = jaxpr.eqns
    producer: dict[Any, int] = {}
    uses: dict[Any, list[int]] = defaultdict(list)
    for i, e in enumerate(eqns):
        for v in e.invars:
            if not isinstance(v, jex_core.Literal):
                uses[v].append(i)
        for v in e.outvars:
            producer[v] = i
    for v in jaxpr.outvars:
        if not isinstance(v, jex_core.Literal):
            uses[v].append(-1)  # -1: returned by the model
    at = {e.params["name"]: i for i, e in enumerate(eqns)
          if e.primitive.name in ("jit", "pjit") and str(e.params.get("name", "")).startswith(_MARK)}
    by_tag = {c.tag: c for c in log}

    def describe(i: int) -> str:
        if i == -1:
            return "the model's output"
        e = eqns[i]
        name = str(e.params.get("name", ""))
        if name.startswith(_MARK):
            c = by_tag[name]
            return f"{'BatchNorm' if c.kind == 'bn' else 'conv'} {_dotted(c.path)}"
        return e.primitive.name

    pairs: dict[str, tuple[_Call, _Call]] = {}  # bn tag -> (conv call, bn call)
    skipped: list[SkippedPair] = []
    for call in log:
        if call.kind != "bn":
            continue
        if call.tag not in at:
            skipped.append(SkippedPair(None, _dotted(call.path), "called inside a nested "
                                       "transform (jit/scan/vmap/...): only calls in the "
                                       "model's top-level trace fold"))
            continue
        x = eqns[at[call.tag]].invars[0]
        steps: list[str] = []
        p = producer.get(x)
        while p is not None and len(steps) < _LOOKBACK:
            name = str(eqns[p].params.get("name", ""))
            if name.startswith(_MARK) and by_tag[name].kind == "conv":
                break
            if name.startswith(_MARK):  # another BatchNorm upstream: not this one's conv
                p = None
                break
            data = [v for v in eqns[p].invars if not isinstance(v, jex_core.Literal)]
            steps.append(eqns[p].primitive.name)
            p = producer.get(data[0]) if data else None
        if p is None or len(steps) >= _LOOKBACK:
            continue  # no conv (close) upstream: not a conv -> BN candidate
        conv = by_tag[str(eqns[p].params["name"])]
        c_name, b_name = _dotted(conv.path), _dotted(call.path)
        if steps:
            skipped.append(SkippedPair(c_name, b_name, f"{', '.join(reversed(steps))} between "
                                       "the conv and the BatchNorm: only a direct edge folds"))
            continue
        others = [describe(i) for i in uses[eqns[p].outvars[0]] if i != at[call.tag]]
        if others:
            skipped.append(SkippedPair(c_name, b_name, "the conv output is also used by "
                                       f"{', '.join(others)}"))
        elif call.train:
            skipped.append(SkippedPair(c_name, b_name, "BatchNorm in train mode "
                                       "(use_running_average=False): it normalises with batch "
                                       "statistics, not a fixed affine map"))
        elif call.masked:
            skipped.append(SkippedPair(c_name, b_name, "BatchNorm called with a mask"))
        elif conv.path is None or call.path is None:
            skipped.append(SkippedPair(c_name, b_name, "layer is not an attribute of the "
                                       "model (created during the call)"))
        else:
            pairs[call.tag] = (conv, call)
    return pairs, skipped


def _child(parent: Any, key: Any) -> Any:
    return parent[key] if isinstance(key, int) or isinstance(parent, dict) else getattr(
        parent, key)


def _set(model: nnx.Module, path: tuple, value: Any) -> None:
    parent: Any = model
    for key in path[:-1]:
        parent = _child(parent, key)
    key = path[-1]
    if isinstance(key, int) or isinstance(parent, dict):
        parent[key] = value
    else:
        setattr(parent, key, value)


def fold_conv_bn_graph(model: nnx.Module, *example_args: Any,
                       **example_kwargs: Any) -> tuple[nnx.Module, FoldReport]:
    """Fold every eval-mode BatchNorm that reads only a conv's output into that conv, in any
    NNX model; returns ``(folded model, report)`` and leaves ``model`` untouched.

    ``model(*example_args, **example_kwargs)`` is traced once with :func:`jax.make_jaxpr`
    (nothing is computed; ``example_args`` may be arrays or :class:`jax.ShapeDtypeStruct`;
    keyword arguments are passed as Python values, not traced). A ``jconv.nn.Conv2d`` or
    ``ConvTranspose2d`` and an ``nnx.BatchNorm`` (e.g. ``jconv.nn.BatchNorm2d``) fold when,
    in that trace, the BatchNorm's input *is* the conv's output and nothing else (another
    op, another layer, the model's output) reads it, and every call of either layer is of
    that pair. The folded conv computes ``bn(conv(x))`` with the running statistics
    (:func:`jconv.fold_conv_bn`, :func:`fold_conv_transpose_bn`) and the BatchNorm becomes
    a :class:`FoldedBatchNorm` pass-through. Every candidate that does not fold is listed in
    ``report.skipped`` with the reason. Shapes: the folded model maps the same inputs to
    the same output shapes.

    Raises ValueError if every BatchNorm the model calls is in train mode (``model.eval()``
    was not called), naming the first one.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> class Block(nnx.Module):
      ...     def __init__(self, shortcut, rngs):
      ...         self.shortcut = shortcut
      ...         self.conv = jconv.nn.Conv2d(3, 3, 3, padding=1, bias=False, rngs=rngs)
      ...         self.bn = jconv.nn.BatchNorm2d(3, rngs=rngs)
      ...     def __call__(self, x):
      ...         y = self.conv(x)
      ...         return nnx.relu(self.bn(y)) + (y if self.shortcut else x)
      >>> x = jnp.ones((1, 3, 8, 8))
      >>> plain = Block(False, nnx.Rngs(0)); plain.eval()
      >>> folded, report = jconv.fold_conv_bn_graph(plain, x)
      >>> print(report)
      folded 1 conv+BatchNorm pair(s), skipped 0
        folded  conv -> bn
      >>> type(folded.bn).__name__, bool(jnp.allclose(folded(x), plain(x), atol=1e-5))
      ('FoldedBatchNorm', True)
      >>> shared = Block(True, nnx.Rngs(0)); shared.eval()
      >>> print(jconv.fold_conv_bn_graph(shared, x)[1])
      folded 0 conv+BatchNorm pair(s), skipped 1
        skipped conv -> bn: the conv output is also used by add
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    jaxpr, log = _trace(model, example_args, example_kwargs)
    bn_calls = [c for c in log if c.kind == "bn"]
    if bn_calls and all(c.train for c in bn_calls):
        raise ValueError(f"model is in train mode: BatchNorm {_dotted(bn_calls[0].path)!r} "
                         "normalises with batch statistics (use_running_average=False); call "
                         "model.eval() before folding")
    pairs, skipped = _analyse(jaxpr, log)
    # A layer called several times folds only if every one of its calls is the same pair.
    calls: dict[tuple, int] = defaultdict(int)
    for c in log:
        if c.path is not None:
            calls[(c.kind, c.path)] += 1
    partner: dict[tuple, set] = defaultdict(set)
    for conv, bn in pairs.values():
        partner[("conv", conv.path)].add(bn.path)
        partner[("bn", bn.path)].add(conv.path)
    folded_pairs: list[tuple[tuple, tuple]] = []
    seen: set[tuple] = set()
    for conv, bn in pairs.values():
        key = (conv.path, bn.path)
        if key in seen:
            continue
        seen.add(key)
        n_pair = sum(1 for c, b in pairs.values() if (c.path, b.path) == key)
        if (len(partner[("conv", conv.path)]) > 1 or len(partner[("bn", bn.path)]) > 1
                or calls[("conv", conv.path)] != n_pair or calls[("bn", bn.path)] != n_pair):
            skipped.append(SkippedPair(_dotted(conv.path), _dotted(bn.path),
                                       "the conv or the BatchNorm is also called elsewhere "
                                       "(not always as this pair)"))
            continue
        folded_pairs.append(key)

    new = nnx.clone(model)
    nodes = dict(nnx.iter_graph(new))
    done: list[FoldedPair] = []
    for conv_path, bn_path in folded_pairs:
        conv, bn = nodes[conv_path], nodes[bn_path]
        fold = fold_conv_transpose_bn if isinstance(conv, ConvTranspose2d) else fold_conv_bn
        try:
            folded_conv = fold(conv, bn)
        except (TypeError, ValueError) as e:
            skipped.append(SkippedPair(_dotted(conv_path), _dotted(bn_path), str(e)))
            continue
        _set(new, conv_path, folded_conv)
        _set(new, bn_path, FoldedBatchNorm(bn))
        done.append(FoldedPair(_dotted(conv_path) or "", _dotted(bn_path) or ""))
    return new, FoldReport(tuple(done), tuple(skipped))
