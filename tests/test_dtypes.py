"""Every registered implementation in every dtype it supports, grouped and not, at a size
where XLA:CPU runs real dots, forward and both gradients against the float64 oracle.

Size matters: XLA:CPU rewrites a grouped contraction with C_in/groups < 4 or
C_out/groups < 2 into multiplies and adds, and runs larger ones as batched dots; bfloat16
ones of those crashed ``impl="loops"`` (``UNIMPLEMENTED: Unsupported element type for
DotThunk::Execute: BF16 x BF16 = F32``, issue 21) while every small case of the suite
passed. (8, 16, 16, 16) -> 32 channels is past that threshold in all three groupings below.
Inputs are random: constant inputs are folded at compile time and hide such failures.
"""

from __future__ import annotations

import functools
import re
import warnings

import jax
import jax.numpy as jnp
import pytest

import jconv
from jconv import _auto, testing
from jconv.testing import Conv2dCase

DTYPES = ("float64", "float32", "bfloat16", "float16")
CASES = {
    "dense": Conv2dCase((8, 16, 16, 16), (32, 16, 3, 3), True, 1, 1, 1, 1, seed=21),
    "groups-2": Conv2dCase((8, 16, 16, 16), (32, 8, 3, 3), True, 1, 1, 1, 2, seed=22),
    "depthwise": Conv2dCase((8, 16, 16, 16), (32, 1, 3, 3), True, 1, 1, 1, 16, seed=23),
}
# The issue-21 crash (grouped loops and im2col, whose contractions it concerned) and the
# cheap grouped auto and Pallas rejection run in the default suite; the rest took 2-19 s each
# on the shared 2-core CPU (Pallas interpreted the longest), 2.5 min together: slow.
FAST = {(impl, "groups-2") for impl in ("im2col", "loops", "auto", "pallas")}


def _params():
    for impl in jconv.CONV_IMPLS:
        for name in CASES:
            marks = () if (impl, name) in FAST else (pytest.mark.slow,)
            yield pytest.param(impl, name, marks=marks, id=f"{impl}-{name}")


def _accepts(impl: str, case: Conv2dCase, dtype: str) -> bool:
    """Whether ``impl`` claims this case in this dtype: it traces (``jax.eval_shape``, no
    compile). Only an implementation that documents restrictions may reject (ValueError);
    one whose runtime is missing here (RuntimeError) is skipped."""
    x, w, b = (None if a is None else jax.ShapeDtypeStruct(a.shape, dtype)
               for a in case.inputs("float32"))
    with jax.enable_x64(dtype == "float64"):
        try:
            jax.eval_shape(lambda x, w, b: jconv.conv2d(x, w, b, impl=impl, **case.kwargs),
                           x, w, b)
        except ValueError:
            if jconv.CONV_IMPLS[impl].exact or not jconv.CONV_IMPLS[impl].restrictions:
                raise
            return False
        except RuntimeError as err:
            pytest.skip(f"impl={impl!r} cannot run here: {err}")
    return True


@pytest.mark.usefixtures("fresh_auto")
@pytest.mark.parametrize("impl,name", list(_params()))
def test_every_impl_every_dtype_against_the_float64_oracle(impl, name, record_error):
    case = CASES[name]
    dtypes = tuple(d for d in DTYPES if _accepts(impl, case, d))
    if name == "dense":  # every implementation takes a plain 3x3 conv, at least in float32
        assert "float32" in dtypes
    if not dtypes:
        return  # a documented restriction (e.g. Pallas: groups 1 or depthwise), traced above
    report = testing.check_conv2d(functools.partial(jconv.conv2d, impl=impl), cases=[case],
                                  dtypes=dtypes, check_grads_cases=0)
    for dtype in dtypes:
        record_error("conv", dtype, impl, report.worst(dtype, "forward"))
        record_error("conv-grad", dtype, impl, report.worst(dtype, "grad"))
    assert report.passed, str(report)


def test_pallas_rejection_of_groups_2_is_the_documented_one():
    """What the parametrized test skips for Pallas is its documented ValueError."""
    case = CASES["groups-2"]
    assert not _accepts("pallas", case, "float32")
    with pytest.raises(ValueError, match=r"impl='pallas' supports groups=1 and depthwise "
                                         r"groups=C_in=16, got groups=2"):
        jconv.conv2d(*case.arrays("float32"), impl="pallas", **case.kwargs)


def test_the_issue_21_crash_runs_and_matches_lax():
    """The exact command from the issue: jit, bfloat16, random normal inputs."""
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (8, 16, 16, 16), jnp.bfloat16)
    w = jax.random.normal(kw, (32, 8, 3, 3), jnp.bfloat16)
    y = jax.jit(lambda x, w: jconv.conv2d(x, w, impl="loops", groups=2, padding=1))(x, w)
    want = jconv.conv2d(x.astype(jnp.float32), w.astype(jnp.float32), groups=2, padding=1,
                        precision="highest")
    assert y.dtype == jnp.bfloat16
    # Both accumulate exact products in float32; y is rounded once to bfloat16.
    err = jnp.abs(y.astype(jnp.float32) - want) / jnp.maximum(1.0, jnp.abs(want))
    assert float(err.max()) <= 2 ** -8


def _dot_operand_types(text: str) -> set[str]:
    """Element types of the operands of every dot_general in a StableHLO module."""
    ops = re.findall(r"stablehlo\.dot_general.*?: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)",
                     text)
    return {t for pair in ops for t in pair}


@pytest.mark.parametrize("impl", ["im2col", "loops"])
def test_grouped_half_contractions_widen_on_cpu_only(impl):
    """CPU programs contract float32 operands (what XLA:CPU can run); GPU programs keep the
    bfloat16 operands their matrix units take."""
    x = jax.ShapeDtypeStruct((8, 16, 16, 16), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((32, 8, 3, 3), jnp.bfloat16)

    def fwd(x, w):
        return jconv.conv2d(x, w, impl=impl, groups=2, padding=1)

    def lowered(platform):
        return jax.export.export(jax.jit(fwd), platforms=[platform])(x, w).mlir_module()

    assert _dot_operand_types(lowered("cpu")) == {"f32"}
    assert _dot_operand_types(lowered("cuda")) == {"bf16"}


@pytest.mark.usefixtures("fresh_auto")
def test_auto_measures_grouped_bfloat16_without_dropping_anything():
    """The issue's ``impl="auto"`` crash: measuring runs every candidate on the grouped
    bfloat16 layer; none fails now, and the choice is exact."""
    jconv.set_auto_measure(True)
    case = CASES["groups-2"]
    x, w, b = case.arrays("bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = testing.check_conv2d(functools.partial(jconv.conv2d, impl="auto"),
                                      cases=[case], dtypes=("bfloat16",), check_grads_cases=0)
    assert report.passed, str(report)
    choice = jconv.auto_choice(x.shape, w.shape, x.dtype,
                               jconv.conv_spec(x.shape, w.shape, padding=1, groups=2))
    assert choice.source == "measured" and choice.failed == ()
    assert {name for name, _ in choice.times_ms} == set(_auto.candidates("cpu", x.dtype))
