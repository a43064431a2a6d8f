"""Graph-level Conv + BatchNorm folding for any Flax NNX model.

:func:`fold_conv_bn_graph` traces one forward pass of the model to a jaxpr, with every
jconv conv layer's output (``jconv.nn.Conv1d``/``2d``/``3d``, ``ConvTranspose1d``/``2d``/``3d``)
and every ``nnx.BatchNorm`` input tagged by
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
from flax import nnx
from jax.extend import core as jex_core

# fold_conv_transpose_bn: imported by its old path, jconv.fold_graph, too.
from .bn_fold import fold_conv_bn, fold_conv_transpose_bn  # noqa: F401
from ._patching import patched_calls
from .nn import _ConvNd, _ConvTransposeNd

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
    """Patch the conv and BatchNorm classes' ``__call__`` to log each call and tag arrays.

    The convs are patched in their base classes (``_ConvNd``, ``_ConvTransposeNd``), whose
    ``__call__`` every jconv conv layer of every rank inherits."""
    bn_classes = _bn_classes()
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

    with patched_calls({_ConvNd: wrap_conv, _ConvTransposeNd: wrap_conv,
                        **{cls: wrap_bn for cls in bn_classes}}):
        yield


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


@dataclass
class _Graph:
    """A traced jaxpr's data flow: which equation produces and which read each variable
    (``-1``: the model's output), and the equation of each marker, by tag."""

    eqns: list
    producer: dict
    uses: dict
    at: dict
    by_tag: dict

    @classmethod
    def of(cls, jaxpr: Any, log: list[_Call]) -> "_Graph":
        producer: dict[Any, int] = {}
        uses: dict[Any, list[int]] = defaultdict(list)
        for i, e in enumerate(jaxpr.eqns):
            for v in e.invars:
                if not isinstance(v, jex_core.Literal):
                    uses[v].append(i)
            for v in e.outvars:
                producer[v] = i
        for v in jaxpr.outvars:
            if not isinstance(v, jex_core.Literal):
                uses[v].append(-1)
        at = {e.params["name"]: i for i, e in enumerate(jaxpr.eqns)
              if e.primitive.name in ("jit", "pjit")
              and str(e.params.get("name", "")).startswith(_MARK)}
        return cls(jaxpr.eqns, producer, uses, at, {c.tag: c for c in log})

    def mark(self, i: int) -> _Call | None:
        """The layer call whose marker equation ``i`` is, if it is one."""
        name = str(self.eqns[i].params.get("name", ""))
        return self.by_tag[name] if name.startswith(_MARK) else None

    def describe(self, i: int) -> str:
        if i == -1:
            return "the model's output"
        c = self.mark(i)
        if c is None:
            return self.eqns[i].primitive.name
        return f"{'BatchNorm' if c.kind == 'bn' else 'conv'} {_dotted(c.path)}"

    def conv_upstream(self, i: int) -> tuple[int | None, list[str]]:
        """The conv marker a few single-input steps above equation ``i`` (None if another
        BatchNorm, nothing or only a long chain is there), and those steps' primitives."""
        steps: list[str] = []
        p = self.producer.get(self.eqns[i].invars[0])
        while p is not None and len(steps) < _LOOKBACK:
            c = self.mark(p)
            if c is not None:
                return (p if c.kind == "conv" else None), steps
            data = [v for v in self.eqns[p].invars if not isinstance(v, jex_core.Literal)]
            steps.append(self.eqns[p].primitive.name)
            p = self.producer.get(data[0]) if data else None
        return None, steps


def _why_not(g: _Graph, conv_at: int, bn: _Call, steps: list[str]) -> str | None:
    """Why the conv marked at ``conv_at`` does not fold into ``bn``; None if it does."""
    conv = g.mark(conv_at)
    if steps:
        return (f"{', '.join(reversed(steps))} between the conv and the BatchNorm: only a "
                "direct edge folds")
    others = [g.describe(i) for i in g.uses[g.eqns[conv_at].outvars[0]] if i != g.at[bn.tag]]
    if others:
        return f"the conv output is also used by {', '.join(others)}"
    if bn.train:
        return ("BatchNorm in train mode (use_running_average=False): it normalises with batch "
                "statistics, not a fixed affine map")
    if bn.masked:
        return "BatchNorm called with a mask"
    if conv.path is None or bn.path is None:
        return "layer is not an attribute of the model (created during the call)"
    return None


def _analyse(jaxpr: Any, log: list[_Call]) -> tuple[dict, list[SkippedPair]]:
    """Per BatchNorm call with a conv upstream: the conv call it pairs with, or a reason."""
    g = _Graph.of(jaxpr, log)
    pairs: dict[str, tuple[_Call, _Call]] = {}  # bn tag -> (conv call, bn call)
    skipped: list[SkippedPair] = []
    for call in log:
        if call.kind != "bn":
            continue
        if call.tag not in g.at:
            skipped.append(SkippedPair(None, _dotted(call.path), "called inside a nested "
                                       "transform (jit/scan/vmap/...): only calls in the "
                                       "model's top-level trace fold"))
            continue
        conv_at, steps = g.conv_upstream(g.at[call.tag])
        if conv_at is None:
            continue  # no conv (close) upstream: not a conv -> BN candidate
        conv = g.mark(conv_at)
        reason = _why_not(g, conv_at, call, steps)
        if reason is None:
            pairs[call.tag] = (conv, call)
        else:
            skipped.append(SkippedPair(_dotted(conv.path), _dotted(call.path), reason))
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


def _unambiguous(pairs: dict, log: list[_Call], skipped: list[SkippedPair]
                 ) -> list[tuple[tuple, tuple]]:
    """The (conv path, BatchNorm path) pairs to fold: a layer called several times folds
    only if every one of its calls is the same pair (the others go to ``skipped``)."""
    calls: dict[tuple, int] = defaultdict(int)
    for c in log:
        if c.path is not None:
            calls[(c.kind, c.path)] += 1
    partner: dict[tuple, set] = defaultdict(set)
    for conv, bn in pairs.values():
        partner[("conv", conv.path)].add(bn.path)
        partner[("bn", bn.path)].add(conv.path)
    keys = [(conv.path, bn.path) for conv, bn in pairs.values()]
    folded: list[tuple[tuple, tuple]] = []
    for key in dict.fromkeys(keys):  # each pair once, in call order
        conv_path, bn_path = key
        n_pair = keys.count(key)
        if (len(partner[("conv", conv_path)]) > 1 or len(partner[("bn", bn_path)]) > 1
                or calls[("conv", conv_path)] != n_pair or calls[("bn", bn_path)] != n_pair):
            skipped.append(SkippedPair(_dotted(conv_path), _dotted(bn_path),
                                       "the conv or the BatchNorm is also called elsewhere "
                                       "(not always as this pair)"))
        else:
            folded.append(key)
    return folded


def _fold_pairs(model: nnx.Module, keys: list[tuple[tuple, tuple]],
                skipped: list[SkippedPair]) -> tuple[nnx.Module, list[FoldedPair]]:
    """A clone of ``model`` with each (conv path, BatchNorm path) pair folded; a pair
    :func:`jconv.fold_conv_bn` rejects (e.g. a BatchNorm over the wrong axis) goes to
    ``skipped`` with its message."""
    new = nnx.clone(model)
    nodes = dict(nnx.iter_graph(new))
    done: list[FoldedPair] = []
    for conv_path, bn_path in keys:
        conv, bn = nodes[conv_path], nodes[bn_path]
        try:
            folded_conv = fold_conv_bn(conv, bn)
        except (TypeError, ValueError) as e:
            skipped.append(SkippedPair(_dotted(conv_path), _dotted(bn_path), str(e)))
            continue
        _set(new, conv_path, folded_conv)
        _set(new, bn_path, FoldedBatchNorm(bn))
        done.append(FoldedPair(_dotted(conv_path) or "", _dotted(bn_path) or ""))
    return new, done


def fold_conv_bn_graph(model: nnx.Module, *example_args: Any,
                       **example_kwargs: Any) -> tuple[nnx.Module, FoldReport]:
    """Fold every eval-mode BatchNorm that reads only a conv's output into that conv, in any
    NNX model; returns ``(folded model, report)`` and leaves ``model`` untouched.

    ``model(*example_args, **example_kwargs)`` is traced once with :func:`jax.make_jaxpr`
    (nothing is computed; ``example_args`` may be arrays or :class:`jax.ShapeDtypeStruct`;
    keyword arguments are passed as Python values, not traced). A jconv conv layer (1-D,
    2-D or 3-D: ``jconv.nn.Conv1d``/``2d``/``3d``, ``ConvTranspose1d``/``2d``/``3d``) and an
    ``nnx.BatchNorm`` over its channels (e.g. ``jconv.nn.BatchNorm2d``) fold when,
    in that trace, the BatchNorm's input *is* the conv's output and nothing else (another
    op, another layer, the model's output) reads it, and every call of either layer is of
    that pair. The folded conv computes ``bn(conv(x))`` with the running statistics
    (:func:`jconv.fold_conv_bn`) and the BatchNorm becomes
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
    new, done = _fold_pairs(model, _unambiguous(pairs, log, skipped), skipped)
    return new, FoldReport(tuple(done), tuple(skipped))
