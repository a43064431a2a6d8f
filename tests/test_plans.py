"""The implementation registry, the per-platform execution plans, empty batches and the
process-wide conv-backend opt-in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import normal

import jconv
from jconv import _registry
from jconv._windows import ACCELERATOR_CHUNK_BYTES, CPU_CHUNK_BYTES, batch_chunk, batch_plan


def test_public_names_come_from_the_registry():
    assert tuple(jconv.CONV_IMPLS) == tuple(_registry._REGISTRY)
    assert jconv.AUTO_IMPLS == tuple(n for n, i in jconv.CONV_IMPLS.items() if i.auto_candidate)
    assert jconv.POOL_IMPLS == tuple(n for n, i in jconv.CONV_IMPLS.items() if i.pool)
    assert "auto" in jconv.CONV_IMPLS and "auto" not in jconv.AUTO_IMPLS
    for impl in jconv.CONV_IMPLS.values():
        assert set(impl.plans) == {"cpu", "gpu", "tpu"}, impl.name
        assert impl.exact or impl.restrictions, f"{impl.name}: say what it restricts"


def test_impls_is_a_deprecated_alias_of_auto_impls():
    with pytest.warns(DeprecationWarning, match=r"jconv.IMPLS is deprecated; use "
                                                r"jconv.AUTO_IMPLS"):
        old = jconv.IMPLS
    assert old == jconv.AUTO_IMPLS and "IMPLS" not in jconv.__all__


@pytest.mark.parametrize("old, new", sorted(_registry.DEPRECATED_NAMES.items()))
def test_a_renamed_impl_still_works_under_its_old_name_with_a_warning(old, new):
    assert old not in jconv.CONV_IMPLS and new in jconv.CONV_IMPLS
    x, w = normal(0, (1, 4, 6, 6), (4, 4, 3, 3))
    match = f"impl='{old}' is deprecated; use impl='{new}'"
    with pytest.warns(DeprecationWarning, match=match):
        y = jconv.conv2d(x, w, padding=1, impl=old)
    np.testing.assert_array_equal(y, jconv.conv2d(x, w, padding=1, impl=new))
    with pytest.warns(DeprecationWarning, match=match):
        yt = jconv.conv_transpose2d(x, w, padding=1, impl=old)
    np.testing.assert_array_equal(yt, jconv.conv_transpose2d(x, w, padding=1, impl=new))
    with pytest.warns(DeprecationWarning, match=match):
        layer = jconv.nn.Conv2d(4, 4, 3, padding=1, impl=old, rngs=nnx.Rngs(0))
    assert layer.impl == new
    with pytest.warns(DeprecationWarning, match=match):
        jconv.set_impl(jconv.nn.Conv2d(4, 4, 3, rngs=nnx.Rngs(0)), old)


def test_an_unknown_impl_is_still_a_clear_error():
    with pytest.raises(ValueError, match=r"impl must be one of \('lax', .*\), got 'winograd3'"):
        jconv.conv2d(jnp.ones((1, 1, 5, 5)), jnp.ones((1, 1, 3, 3)), impl="winograd3")


def test_register_rejects_a_duplicate_name():
    with pytest.raises(ValueError, match="an implementation named 'lax' is already registered"):
        _registry.register(jconv.CONV_IMPLS["lax"])


def test_pool_reducer_of_a_conv_only_impl_is_a_clear_error():
    with pytest.raises(ValueError, match=r"impl='fft' has no pooling counterpart; use one of"):
        _registry.pool_reducer("fft")


def test_a_registered_impl_is_usable_everywhere_at_once(monkeypatch):
    lax_conv = _registry.conv_impl("lax")
    double = _registry.Implementation("double", lambda x, w, s: 2 * lax_conv(x, w, s),
                                      "twice lax", exact=False, restrictions="wrong on purpose")
    monkeypatch.setitem(_registry._REGISTRY, "double", double)
    x, w = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3))
    assert "double" in jconv.CONV_IMPLS
    np.testing.assert_allclose(jconv.conv2d(x, w, impl="double"), 2 * jconv.conv2d(x, w))
    layer = jconv.nn.Conv2d(2, 3, 3, impl="double", rngs=nnx.Rngs(0))
    assert layer(x).shape == (1, 3, 3, 3)


@pytest.mark.parametrize("n, per_item, budget, want", [
    (128, 32 * 32 * 9 * 32 * 4, CPU_CHUNK_BYTES, 1),          # CIFAR 32->32 @32 im2col
    (128, 32 * 32 * 9 * 32 * 4, ACCELERATOR_CHUNK_BYTES, 128),
    (8, 56 * 56 * 9 * 64 * 4, ACCELERATOR_CHUNK_BYTES, 8),     # ResNet-18 l1 at batch 8
    (12, 100, 350, 3),                                         # largest divisor that fits
    (7, 10**9, CPU_CHUNK_BYTES, 1),
    (0, 100, CPU_CHUNK_BYTES, 1),
])
def test_batch_chunk_rule(n, per_item, budget, want):
    assert batch_chunk(n, per_item, budget) == want


def test_accelerators_chunk_only_past_their_budget():
    per_image = 2 * ACCELERATOR_CHUNK_BYTES // 5   # two images fit, three do not
    assert batch_plan(64, per_image) == {"cpu": 1, "accelerator": 2}


@pytest.mark.parametrize("impl", list(jconv.CONV_IMPLS))
def test_empty_batch_gives_an_empty_result_like_pytorch(impl):
    x, w = jnp.ones((0, 3, 8, 8)), jnp.ones((4, 3, 3, 3))
    assert jconv.conv2d(x, w, padding=1, impl=impl).shape == (0, 4, 8, 8)
    gw = jax.grad(lambda w: jconv.conv2d(x, w, padding=1, impl=impl).sum())(w)
    np.testing.assert_array_equal(gw, np.zeros((4, 3, 3, 3)))


@pytest.mark.parametrize("impl", jconv.AUTO_IMPLS)
def test_empty_batch_through_transpose_and_layers(impl):
    assert jconv.conv_transpose2d(jnp.ones((0, 3, 8, 8)), jnp.ones((3, 4, 3, 3)),
                                  impl=impl).shape == (0, 4, 10, 10)
    layer = jconv.nn.Conv2d(3, 4, 3, impl=impl, data_format="NHWC", rngs=nnx.Rngs(0))
    assert layer(jnp.ones((0, 8, 8, 3))).shape == (0, 6, 6, 4)
    assert jconv.max_pool2d(jnp.ones((0, 3, 8, 8)), 2, impl=impl).shape == (0, 3, 4, 4)


def _child(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (XLA_FLAGS act once per process)."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    full_env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=300)


_COMPILED_HLO = """
    import jax, jax.numpy as jnp
    x, w = jnp.ones((2, 9, 9, 24)), jnp.ones((20, 24, 3, 3))
    conv = lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "OIHW", "NHWC"))
    print("ynn_fusion" in jax.jit(conv).lower(x, w).compile().as_text())
"""


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the flag changes XLA:CPU only")
def test_set_default_conv_backend_reaches_plain_jax_jit():
    before = _child("import jconv\n" + textwrap.dedent(_COMPILED_HLO))
    after = _child("import jconv\njconv.set_default_conv_backend('eigen')\n"
                   + textwrap.dedent(_COMPILED_HLO))
    assert before.returncode == 0 and after.returncode == 0, before.stderr + after.stderr
    # Positive control first: without the opt-in XLA:CPU sends this conv to YNNPACK.
    assert before.stdout.split() == ["True"]
    assert after.stdout.split() == ["False"]


@pytest.mark.slow
def test_set_default_conv_backend_too_late_is_a_clear_error():
    done = _child("""
        import jax.numpy as jnp, jconv
        jnp.ones(3).block_until_ready()
        try:
            jconv.set_default_conv_backend("eigen")
        except RuntimeError as err:
            print(err)
    """)
    assert "must run before JAX's first computation" in done.stdout, done.stderr
    assert "XLA_FLAGS='--xla_cpu_experimental_ynn_fusion_type=" in done.stdout


def test_set_default_conv_backend_validates_and_is_idempotent(monkeypatch):
    with pytest.raises(ValueError, match=r"conv_backend must be one of \('eigen', "
                                         r"'xla_default'\), got 'fast'"):
        jconv.set_default_conv_backend("fast")
    # Already in the requested state: nothing to change, so no error even after start-up.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    jconv.set_default_conv_backend("xla_default")
    assert "XLA_FLAGS" not in os.environ
