"""PyTorch's own OpInfo inputs (``torch.testing._internal.common_methods_invocations.op_db``)
for jconv's family, run through jconv's function of the same name: forward values and
vector-Jacobian products (a random cotangent, ``torch.autograd.grad`` against ``jax.vjp``)
in float64 with every exact implementation, and every ``error_inputs`` case must raise a
ValueError or TypeError in jconv.

The default suite runs a deterministic subset (every sample of an op with few, an even
spread of the others, one impl per sample cycling through the impls); the full set, every
sample with every exact impl, is marked slow: ``pytest -m slow tests/test_opinfo.py -s``
prints the per-op counts."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # common_methods_invocations imports it
cmi = pytest.importorskip("torch.testing._internal.common_methods_invocations")

pytestmark = pytest.mark.usefixtures("x64", "opinfo_auto")

# jconv's exact implementations: all of them agree with PyTorch to float64 rounding.
CONV_EXACT = tuple(n for n, i in jconv.CONV_IMPLS.items() if i.exact)
POOL_EXACT = tuple(jconv.POOL_IMPLS)
RTOL, ATOL = 1e-10, 1e-12
# Samples the default suite runs per op: every one up to this many, else an even spread;
# fewer for the 3-D convolutions, whose compilations cost the most.
FAST_SAMPLES = 3
FAST_SAMPLES_3D_CONV = 2


@dataclass(frozen=True)
class Op:
    """One OpInfo entry and how to call jconv's function of the same name."""

    name: str  # the OpInfo name, "nn.functional.<function>"
    params: tuple[str, ...]  # torch's parameters after the input, in torch's order
    impls: tuple[str | None, ...]  # None: the function takes no impl=
    variant: str = ""  # the OpInfo's variant_test_name (pad has one entry per mode)

    @property
    def key(self) -> str:
        """The name this file knows the entry by: ``name``, then ``.variant`` if any."""
        return f"{self.name}.{self.variant}" if self.variant else self.name

    @property
    def function(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def jconv_fn(self) -> Callable[..., Any]:
        return getattr(jconv, self.function)

    def jconv_name(self, torch_name: str) -> str:
        """jconv's name of a torch parameter: the input is jconv's first parameter (``input``
        for the convs, ``x`` for the pools, fold's ``cols``); the others have torch's names."""
        if torch_name == "input":
            return next(iter(inspect.signature(self.jconv_fn).parameters))
        return torch_name


_CONV = ("weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_T = ("weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_MAX = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
        "divisor_override")
OPS = {op.key: op for op in (
    *(Op(f"nn.functional.conv{n}d", _CONV, CONV_EXACT) for n in (1, 2, 3)),
    *(Op(f"nn.functional.conv_transpose{n}d", _CONV_T, CONV_EXACT) for n in (1, 2, 3)),
    *(Op(f"nn.functional.max_pool{n}d", _MAX, POOL_EXACT) for n in (1, 2, 3)),
    Op("nn.functional.avg_pool1d", _AVG[:-1], POOL_EXACT),  # torch's 1-D has no divisor
    *(Op(f"nn.functional.avg_pool{n}d", _AVG, POOL_EXACT) for n in (2, 3)),
    *(Op(f"nn.functional.adaptive_avg_pool{n}d", ("output_size",), (None,)) for n in (1, 2, 3)),
    *(Op(f"nn.functional.adaptive_max_pool{n}d", ("output_size", "return_indices"), (None,))
      for n in (1, 2, 3)),
    *(Op(f"nn.functional.max_unpool{n}d", ("indices", "kernel_size", "stride", "padding",
                                           "output_size"), (None,)) for n in (1, 2, 3)),
    # torch has no OpInfo for nn.functional.fold; jconv.fold is unfold's exact transpose.
    Op("nn.functional.unfold", ("kernel_size", "dilation", "padding", "stride"), (None,)),
    *(Op("nn.functional.pad", ("pad", "mode", "value"), (None,), variant)
      for variant in ("constant", "reflect", "replicate", "replicate_negative", "circular")),
)}


@pytest.fixture
def opinfo_auto() -> Iterator[None]:
    """``impl="auto"`` picks by its heuristic (no timing of every sample's shape)."""
    jconv.clear_auto_cache()
    jconv.set_auto_measure(False)
    yield
    jconv.set_auto_measure(None)
    jconv.clear_auto_cache()


@functools.lru_cache(maxsize=None)
def opinfos() -> dict[str, Any]:
    """Op key -> OpInfo, for the ops above: the variant without a test-name suffix
    (max_unpool's "grad" variant only draws indices without repeats), pad's per mode."""
    found = {}
    for o in cmi.op_db:
        key = f"{o.name}.{o.variant_test_name}" if o.variant_test_name else o.name
        if key in OPS:
            found[key] = o
    return found


@functools.lru_cache(maxsize=None)
def samples(name: str) -> tuple[Any, ...]:
    return tuple(opinfos()[name].sample_inputs("cpu", torch.float64, requires_grad=True))


def to_jax(value: Any) -> Any:
    """Tensors to jax arrays of the same dtype, recursively through tuples and lists;
    everything else (ints, None, strings, torch.Size) as is."""
    if isinstance(value, torch.Tensor):
        return jnp.asarray(value.detach().numpy())
    if isinstance(value, (tuple, list)) and not isinstance(value, torch.Size):
        return type(value)(to_jax(v) for v in value)
    return value


def jconv_kwargs(op: Op, sample: Any) -> dict[str, Any]:
    """A sample's arguments as jconv keywords (torch's positional ones bound to their
    names), tensors as jax arrays."""
    if len(sample.args) > len(op.params):
        raise AssertionError(f"{op.name}: more positional arguments than {op.params}")
    bound = {"input": sample.input, **dict(zip(op.params, sample.args)), **sample.kwargs}
    return {op.jconv_name(k): to_jax(v) for k, v in bound.items()}


def _flat(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def check_sample(op: Op, sample: Any, impl: str | None, seed: int,
                 torch_fn: Callable[..., Any] | None = None) -> None:
    """AssertionError unless jconv's forward values and VJP equal torch's (the OpInfo's op,
    or ``torch_fn``) on ``sample``."""
    kwargs = jconv_kwargs(op, sample)
    extra = {} if impl is None else {"impl": impl}
    bound = {"input": sample.input, **dict(zip(op.params, sample.args)), **sample.kwargs}
    # The float tensors torch differentiates (input, weight, bias; not max_unpool's indices).
    names = [k for k, v in bound.items() if isinstance(v, torch.Tensor) and v.requires_grad]
    torch_fn = opinfos()[op.key].op if torch_fn is None else torch_fn
    want = _flat(torch_fn(sample.input, *sample.args, **sample.kwargs))
    float_out = [i for i, t in enumerate(want) if t.is_floating_point()]
    rng = np.random.default_rng(seed)
    cots = [rng.normal(size=tuple(want[i].shape)) for i in float_out]
    grads_t = ()
    if names and float_out:
        grads_t = torch.autograd.grad([want[i] for i in float_out], [bound[n] for n in names],
                                      [torch.from_numpy(c) for c in cots], allow_unused=True)

    def f(*primals: jnp.ndarray) -> tuple[list[jnp.ndarray], list[jnp.ndarray]]:
        kw = dict(kwargs, **{op.jconv_name(n): p for n, p in zip(names, primals)})
        out = _flat(op.jconv_fn(**kw, **extra))
        return [out[i] for i in float_out], out

    def forward_and_vjp(primals: list[jnp.ndarray], cotangents: list[jnp.ndarray]):
        if not grads_t:
            return f(*primals)[1], ()
        _, vjp, out = jax.vjp(f, *primals, has_aux=True)
        return out, vjp(cotangents)

    # One compilation per sample: far quicker than running the ops one by one.
    got, grads_j = jax.jit(forward_and_vjp)([kwargs[op.jconv_name(n)] for n in names],
                                            [jnp.asarray(c) for c in cots])
    assert len(got) == len(want), f"{len(got)} outputs, torch gives {len(want)}"
    for g, t in zip(got, want):
        assert tuple(g.shape) == tuple(t.shape), f"shape {tuple(g.shape)} != {tuple(t.shape)}"
        np.testing.assert_allclose(np.asarray(g), t.detach().numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg="forward")
    for n, gj, gt in zip(names, grads_j, grads_t):
        want_g = np.zeros(gj.shape) if gt is None else gt.numpy()
        np.testing.assert_allclose(np.asarray(gj), want_g, rtol=RTOL, atol=ATOL,
                                   err_msg=f"vjp in {n}")


def fast_picks(op: Op) -> list[tuple[int, str | None]]:
    """(sample index, impl) pairs of the default suite: every sample of an op that has at
    most FAST_SAMPLES (FAST_SAMPLES_3D_CONV for 3-D convolutions), else an even spread of
    that many; the impls take turns."""
    n = len(samples(op.key))
    k = FAST_SAMPLES_3D_CONV if op.function.startswith("conv") and "3d" in op.function \
        else FAST_SAMPLES
    picks = range(n) if n <= k else sorted(set(np.linspace(0, n - 1, k).round().astype(int)
                                               .tolist()))
    # Each op starts the turns at its own place, so every impl is met across the ops even
    # where an op has fewer picks than impls.
    start = sorted(OPS).index(op.key) if op.key in OPS else 0
    return [(i, op.impls[(start + j) % len(op.impls)]) for j, i in enumerate(picks)]


def run(op: Op, picks: Sequence[tuple[int, str | None]]) -> tuple[int, list[str]]:
    """Check each (sample, impl); returns the number matched and a line per mismatch."""
    failures = []
    for i, impl in picks:
        sample = samples(op.key)[i]
        try:
            check_sample(op, sample, impl, seed=i)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none hidden
            lines = [ln for ln in str(e).splitlines() if ln.strip()][:4]
            failures.append(f"sample {i} impl={impl}: {type(e).__name__}: "
                            f"{' | '.join(lines)[:400]} "
                            f"[{sample.summary() if hasattr(sample, 'summary') else sample}]")
    return len(picks) - len(failures), failures


@pytest.mark.parametrize("name", sorted(OPS))
def test_opinfo_samples_subset(name):
    op = OPS[name]
    picks = fast_picks(op)
    matched, failures = run(op, picks)
    assert not failures, "\n".join(failures)
    assert matched == len(picks) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPS))
def test_opinfo_samples_all_impls(name, request):
    # Thousands of compilations: too long for the whole suite, which runs slow tests too.
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr or "not slow" in expr:
        pytest.skip("the full OpInfo run is long; ask for it: pytest -m slow "
                    "tests/test_opinfo.py")
    op = OPS[name]
    picks = [(i, impl) for i in range(len(samples(name))) for impl in op.impls]
    matched, failures = run(op, picks)
    print(f"\n{name}: {matched}/{len(picks)} matched "
          f"({len(samples(name))} samples x {len(op.impls)} impls)", *failures, sep="\n")
    assert not failures, "\n".join(failures[:20])


def _error_cases() -> list[tuple[str, int]]:
    return [(n, i) for n in sorted(OPS) if opinfos()[n].error_inputs_func is not None
            for i in range(len(list(opinfos()[n].error_inputs("cpu"))))]


@pytest.mark.parametrize("name,index", _error_cases())
def test_opinfo_error_inputs_raise(name, index):
    op = OPS[name]
    err = list(opinfos()[name].error_inputs("cpu"))[index]
    with pytest.raises(err.error_type, match=err.error_regex):  # torch rejects it ...
        opinfos()[name].op(err.sample_input.input, *err.sample_input.args,
                           **err.sample_input.kwargs)
    with pytest.raises((ValueError, TypeError)):  # ... and so must jconv
        op.jconv_fn(**jconv_kwargs(op, err.sample_input))


@pytest.mark.parametrize("name", sorted(OPS))
def test_positional_parameters_in_torch_order(name):
    """A PyTorch call passes these positionally: jconv's positional parameters after the
    input must be torch's, in torch's order."""
    op = OPS[name]
    params = list(inspect.signature(op.jconv_fn).parameters.values())[1:]
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == [op.jconv_name(p) for p in op.params[:len(positional)]]


def test_conv_broadcasts_one_int_tuples():
    """PyTorch's convolutions broadcast a one-int stride/padding/dilation (its OpInfo error
    inputs pass ``stride=(-1,)`` to conv2d and conv3d); so does jconv."""
    rng = np.random.default_rng(0)
    x, w = jnp.asarray(rng.normal(size=(1, 2, 7, 7))), jnp.asarray(rng.normal(size=(3, 2, 3, 3)))
    np.testing.assert_array_equal(
        jconv.conv2d(x, w, stride=(2,), padding=(1,), dilation=(2,)),
        jconv.conv2d(x, w, stride=2, padding=1, dilation=2))
    with pytest.raises(ValueError, match=r"stride must be >= 1 in every dimension, got \(-1,\)"):
        jconv.conv2d(x, w, stride=(-1,))


def test_fold_on_unfold_samples():
    """PyTorch has no OpInfo for fold: fold unfold's sampled blocks back (the columns of
    each picked unfold sample, into that sample's image size) against torch's fold."""
    op = Op("nn.functional.fold", ("output_size", "kernel_size", "dilation", "padding",
                                   "stride"), (None,))
    unfold = OPS["nn.functional.unfold"]
    for i, _ in fast_picks(unfold):
        s = samples(unfold.key)[i]
        cols = torch.nn.functional.unfold(s.input, *s.args, **s.kwargs).detach()
        sample = cmi.SampleInput(cols.requires_grad_(True),
                                 args=(tuple(s.input.shape[-2:]), *s.args), kwargs=s.kwargs)
        check_sample(op, sample, None, seed=i, torch_fn=torch.nn.functional.fold)
