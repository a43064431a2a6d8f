"""jconv.xla_options: the Eigen-conv compiler options, jconv.jit, and auto measuring under them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close_global

import jconv
from jconv import _auto, xla_options
from jconv._spec import canonical_conv

cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu",
                              reason="the options only change XLA's CPU backend")


def _operands(fmt: str = "NHWC") -> tuple[jnp.ndarray, jnp.ndarray]:
    rng = np.random.default_rng(0)
    shape = (2, 9, 9, 24) if fmt == "NHWC" else (2, 24, 9, 9)
    return (jnp.asarray(rng.standard_normal(shape), jnp.float32),
            jnp.asarray(rng.standard_normal((20, 24, 3, 3)), jnp.float32))


def _conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    return jconv.conv2d(x, w, padding=1, data_format="NHWC")


@cpu_only
def test_eigen_options_keep_convolutions_away_from_ynnpack():
    x, w = _operands()
    opts = jconv.conv_compiler_options("eigen")
    assert opts == {xla_options.YNN_FUSION_OPTION: xla_options.EIGEN_YNN_FUSION_TYPES}
    # Positive control: without the options XLA:CPU sends this conv to YNNPACK.
    assert "ynn_fusion" in jax.jit(_conv).lower(x, w).compile().as_text()
    hlo = jax.jit(_conv, compiler_options=opts).lower(x, w).compile().as_text()
    assert "convolution(" in hlo and "ynn_fusion" not in hlo


def test_xla_default_and_other_backends_change_nothing():
    assert jconv.conv_compiler_options("xla_default") == {}
    if jax.default_backend() != "cpu":
        assert jconv.conv_compiler_options("eigen") == {}


@pytest.mark.parametrize("bad", ["cudnn", "EIGEN", None, 1])
def test_conv_backend_is_checked(bad):
    with pytest.raises(ValueError, match=r"conv_backend must be one of \('eigen', "
                                         r"'xla_default'\), got"):
        jconv.conv_compiler_options(bad)
    with pytest.raises(ValueError, match="conv_backend must be one of"):
        jconv.jit(_conv, conv_backend=bad)


def test_jit_rejects_a_non_callable():
    with pytest.raises(TypeError, match="fun must be callable, got 3"):
        jconv.jit(3)


@pytest.mark.parametrize("backend", jconv.CONV_BACKENDS)
def test_jit_matches_jax_jit_values_and_gradients(backend):
    x, w = _operands()

    def loss(x, w):
        return jnp.sum(jnp.tanh(_conv(x, w)))

    want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)
    got = jconv.jit(jax.value_and_grad(loss, argnums=(0, 1)), conv_backend=backend)(x, w)
    # Relative to each leaf's largest value: the weight gradient sums over every position,
    # and the Eigen and default kernels sum in different orders (which differ by CPU ISA).
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_close_global(a, b, tol=1e-5)


def test_jit_passes_jax_jit_arguments_through():
    x, w = _operands("NCHW")
    f = jconv.jit(lambda x, w, stride: jconv.conv2d(x, w, stride=stride),
                  static_argnames="stride")
    assert f(x, w, stride=2).shape == (2, 20, 4, 4)


@cpu_only
def test_jit_merges_explicit_compiler_options():
    x, w = _operands()
    seen = {}

    def body(x, w):
        seen.update(_auto.current_compiler_options())
        return _conv(x, w)

    jconv.jit(body, compiler_options={"xla_cpu_enable_fast_math": False})(x, w)
    assert seen == {xla_options.YNN_FUSION_OPTION: xla_options.EIGEN_YNN_FUSION_TYPES,
                    "xla_cpu_enable_fast_math": False}
    assert _auto.current_compiler_options() == {}  # the scope ends with the trace


@cpu_only
def test_auto_measures_and_caches_under_the_jit_options(monkeypatch):
    """impl="auto" inside jconv.jit measures with the jit's options and keys its cache on
    them, so a choice made under XLA's defaults is never reused under Eigen (or back)."""
    _auto.clear_auto_cache()
    _auto.set_auto_measure(True)
    measured_with: list[dict] = []

    def fake_measure(x_shape, w_shape, dtype, spec, reps=_auto.MEASURE_REPS):
        measured_with.append(_auto.current_compiler_options())
        return _auto.AutoChoice("im2col", "loops", "lax", "measured")

    monkeypatch.setattr(_auto, "measure_choice", fake_measure)
    try:
        x, w = _operands()
        f = lambda x, w: jconv.conv2d(x, w, padding=1, data_format="NHWC", impl="auto")
        jconv.jit(f, conv_backend="eigen")(x, w)
        jconv.jit(f, conv_backend="xla_default")(x, w)
        jconv.jit(f, conv_backend="eigen")(x + 1, w)  # cached: no third measurement
    finally:
        _auto.set_auto_measure(None)
        _auto.clear_auto_cache()
    assert measured_with == [jconv.conv_compiler_options("eigen"), {}]


def test_cache_key_includes_compiler_options():
    x, w = _operands()
    spec, _ = canonical_conv(x, w, None, stride=1, padding=1, dilation=1, groups=1,
                             data_format="NHWC", precision=None)
    plain = _auto.cache_key(x.shape, w.shape, x.dtype, spec)
    with _auto.compiler_options_scope({"xla_cpu_enable_fast_math": False}):
        scoped = _auto.cache_key(x.shape, w.shape, x.dtype, spec)
    assert scoped != plain and scoped.startswith(plain) and "xla_cpu_enable_fast_math" in scoped


def test_compiler_options_scope_rejects_a_non_mapping():
    with pytest.raises(TypeError, match="options must be a mapping"):
        with _auto.compiler_options_scope(["xla_cpu_enable_fast_math"]):
            pass


@cpu_only
def test_unknown_option_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(xla_options, "EIGEN_YNN_FUSION_TYPES", "LIBRARY_FUSION_TYPE_NO_SUCH")
    xla_options._eigen_options_accepted.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="rejects xla_cpu_experimental_ynn_fusion_type"):
            assert jconv.conv_compiler_options("eigen") == {}
    finally:
        xla_options._eigen_options_accepted.cache_clear()
