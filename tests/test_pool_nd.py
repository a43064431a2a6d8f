"""The N-D pooling family (max/avg/lp/adaptive pooling in 1-D, 2-D and 3-D, return_indices,
max_unpool): every function against jconv.testing's float64 oracle and PyTorch, values and
gradients, on random configurations; every error message."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jconv
from jconv import testing

IMPLS = ["lax", "im2col", "loops"]
WINDOWED = [f for f in testing.POOL_FUNCTIONS if not f.startswith("adaptive")]
ADAPTIVE = [f for f in testing.POOL_FUNCTIONS if f.startswith("adaptive")]


def _fn(function: str, impl: str | None):
    fn = getattr(jconv, function)
    return fn if impl is None else functools.partial(fn, impl=impl)


# The random configurations of every function, the 2-D ones included (their cases="quick"
# is the hand-picked 2-D grid, which tests/test_pool.py runs per impl).
@pytest.mark.parametrize("function", WINDOWED + ADAPTIVE)
def test_oracle_quick_float64_with_check_grads(function):
    """Values and gradients in float64 (1e-12), plus check_grads(order=2) on one case."""
    impl = None if function.startswith("adaptive") else "lax"
    report = testing.check_pool(_fn(function, impl), function,
                                cases=testing.pool_cases(function, "quick"),
                                dtypes=("float64",))
    assert report.passed, str(report)
    assert report.worst("float64", "forward") < 1e-12, str(report)


@pytest.mark.parametrize("function", [f for f in WINDOWED if f.endswith("3d")])
@pytest.mark.parametrize("impl", ["im2col", "loops"])
def test_oracle_quick_other_impls_3d(function, impl):
    report = testing.check_pool(_fn(function, impl), function,
                                cases=testing.pool_cases(function, "quick"),
                                dtypes=("float64",), check_grads_cases=0)
    assert report.passed, str(report)


@pytest.mark.slow  # the whole family x impls x dtypes: several minutes on 2 cores
@pytest.mark.parametrize("function", WINDOWED + ADAPTIVE)
def test_oracle_default_every_impl_and_dtype(function):
    impls = [None] if function.startswith("adaptive") else IMPLS
    for impl in impls:
        report = testing.check_pool(_fn(function, impl), function,
                                    cases=testing.pool_cases(function, "default"),
                                    dtypes=("float64", "float32", "bfloat16"),
                                    check_grads_cases=0)
        assert report.passed, str(report)


def _torch_kwargs(case):
    kw = dict(case.kwargs)
    if case.function == "lp_pool1d":  # PyTorch's lp_pool1d wants an int kernel
        kw["kernel_size"] = kw["kernel_size"][0]
    return kw


@pytest.mark.parametrize("function", WINDOWED + ADAPTIVE)
def test_matches_pytorch_values_and_grads(function, x64):
    torch = pytest.importorskip("torch")
    impls = [None] if function.startswith("adaptive") else IMPLS
    for i, case in enumerate(testing.pool_cases(function, "quick", seed=3)[:2]):
        (x,) = case.inputs("float64")
        kw = _torch_kwargs(case)
        xt = torch.from_numpy(x).requires_grad_()
        want = getattr(torch.nn.functional, function)(xt, **kw)
        ct = np.random.default_rng(1).standard_normal(want.shape)
        (want * torch.from_numpy(ct)).sum().backward()
        for impl in impls[i % len(impls):][:1]:  # one impl per case keeps compiles few
            fn = _fn(function, impl)
            got, pull = jax.vjp(lambda x: fn(x, **kw), jnp.asarray(x))
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=1e-12,
                                       err_msg=f"{case!r} {impl}")
            np.testing.assert_allclose(pull(jnp.asarray(ct))[0], xt.grad.numpy(), rtol=0,
                                       atol=1e-12, err_msg=f"{case!r} {impl} grad")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_return_indices_and_unpool_match_pytorch(nd, x64):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for case, impl in zip(testing.pool_cases(f"max_pool{nd}d", "quick", seed=5), IMPLS):
        (x,) = case.inputs("float64")
        kw = case.kwargs
        y_t, i_t = getattr(F, f"max_pool{nd}d")(torch.from_numpy(x), **kw, return_indices=True)
        y, i = getattr(jconv, f"max_pool{nd}d")(jnp.asarray(x), **kw, return_indices=True,
                                                impl=impl)
        np.testing.assert_array_equal(y, y_t.numpy())
        np.testing.assert_array_equal(i, i_t.numpy())
        assert i.dtype == jnp.int32
        size = tuple(x.shape[-nd:])
        args = (kw["kernel_size"], kw["stride"], kw["padding"], size)
        try:
            want = getattr(F, f"max_unpool{nd}d")(y_t, i_t, *args).numpy()
        except (RuntimeError, ValueError):  # e.g. dilation: the input size is no valid output
            with pytest.raises(ValueError):
                getattr(jconv, f"max_unpool{nd}d")(jnp.asarray(y_t.numpy()),
                                                   jnp.asarray(i_t.numpy()), *args)
            continue
        got = getattr(jconv, f"max_unpool{nd}d")(jnp.asarray(y_t.numpy()),
                                                 jnp.asarray(i_t.numpy()), *args)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, testing.reference_max_unpool(
            y_t.numpy(), i_t.numpy(), size, ndim=nd))
    ya, ia = getattr(jconv, f"adaptive_max_pool{nd}d")(jnp.asarray(x), 2, return_indices=True)
    yt, it = getattr(F, f"adaptive_max_pool{nd}d")(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(ya, yt.numpy())
    np.testing.assert_array_equal(ia, it.numpy())


def test_ties_nan_and_minus_inf_indices():
    """First index on ties (PyTorch's strict >), NaN the largest, and an all -inf window
    points at its first real element, never at padding."""
    x = jnp.array([[[1.0, 3.0, 3.0, 0.0], [3.0, 2.0, 1.0, 0.0]]])
    for impl in IMPLS:
        y, i = jconv.max_pool2d(x, 2, return_indices=True, impl=impl)
        assert i.tolist() == [[[1, 2]]] and y.tolist() == [[[3.0, 3.0]]]
        _, i = jconv.max_pool1d(jnp.array([[1.0, jnp.nan, 2.0, jnp.nan]]), 4,
                                return_indices=True, impl=impl)
        assert i.tolist() == [[1]]
        _, i = jconv.max_pool1d(jnp.full((1, 3), -jnp.inf), 2, padding=1, return_indices=True,
                                impl=impl)
        assert i.tolist() == [[0, 1]]
    _, i = jconv.adaptive_max_pool2d(x, 1, return_indices=True)
    assert i.tolist() == [[[1]]]


@pytest.mark.parametrize("impl", IMPLS)
def test_return_indices_gradient_goes_to_the_index(impl):
    x = jnp.array([[[2.0, 2.0, 1.0, 5.0]]])
    g = jax.grad(lambda x: jconv.max_pool1d(x, 2, return_indices=True, impl=impl)[0].sum())(x)
    np.testing.assert_array_equal(g, [[[1.0, 0.0, 0.0, 1.0]]])


@pytest.mark.parametrize("nd,fmt", [(1, "NLC"), (2, "NHWC"), (3, "NDHWC")])
def test_channels_last_and_unbatched_and_jit(nd, fmt):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 3, *(7,) * nd)), jnp.float32)
    xl = jnp.moveaxis(x, 1, -1)
    calls = [
        lambda x, **f: getattr(jconv, f"max_pool{nd}d")(x, 3, 2, 1, **f),
        lambda x, **f: getattr(jconv, f"max_pool{nd}d")(x, 3, 2, 1, return_indices=True, **f)[1],
        lambda x, **f: getattr(jconv, f"avg_pool{nd}d")(x, 2, ceil_mode=True, **f),
        lambda x, **f: getattr(jconv, f"adaptive_avg_pool{nd}d")(x, 3, **f),
        lambda x, **f: getattr(jconv, f"adaptive_max_pool{nd}d")(x, 3, True, **f)[1],
        lambda x, **f: getattr(jconv, f"lp_pool{nd}d")(jnp.abs(x), 2, 2, **f),
    ]
    # atol too: an average of mixed-sign values can cancel to near zero, where XLA's
    # summation order (by layout and CPU ISA) shows as a large relative error.
    for call in calls:
        want = call(x)
        np.testing.assert_allclose(jnp.moveaxis(call(xl, data_format=fmt), -1, 1), want,
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(jax.jit(call)(x[1]), want[1], rtol=1e-6, atol=1e-6)


def test_low_precision_keeps_dtype():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 6, 6, 6)), jnp.bfloat16)
    assert jconv.avg_pool3d(x, 2).dtype == jnp.bfloat16
    assert jconv.adaptive_avg_pool3d(x, 2).dtype == jnp.bfloat16
    ref = testing.reference_adaptive_avg_pool(np.asarray(x.astype(jnp.float32)), 2, ndim=3)
    np.testing.assert_allclose(jconv.adaptive_avg_pool3d(x, 2).astype(jnp.float32), ref,
                               atol=2e-2)


X1, X2, X3 = jnp.ones((1, 2, 6)), jnp.ones((1, 2, 6, 6)), jnp.ones((1, 2, 4, 4, 4))
IDX2 = jnp.zeros((1, 2, 3, 3), jnp.int32)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: jconv.max_pool1d(X2, 2), ValueError,
     r"x must be 2-D or 3-D \(NCL batched or unbatched\), got shape \(1, 2, 6, 6\)"),
    (lambda: jconv.max_pool3d(jnp.ones((6, 6)), 2), ValueError, r"x must be 4-D or 5-D \(NCDHW"),
    (lambda: jconv.max_pool1d(X1, (2, 2)), TypeError, r"kernel_size must be an int, got \(2, 2\)"),
    (lambda: jconv.max_pool3d(X3, (2, 2)), TypeError,
     r"kernel_size must be an int or a tuple of 3 ints, got \(2, 2\)"),
    (lambda: jconv.max_pool1d(X1, 2, data_format="NCHW"), ValueError,
     r"data_format must be one of \('NCL', 'NLC'\) for 1-D pooling, got 'NCHW'"),
    (lambda: jconv.max_pool3d(X3, 2, padding=2), ValueError,
     r"padding must be at most half of kernel_size"),
    (lambda: jconv.max_pool3d(X3, 5), ValueError,
     r"pooling window larger than the padded input along D: effective kernel 5 > padded size 4"),
    (lambda: jconv.max_pool2d(X2, 2, return_indices=1), TypeError,
     r"return_indices must be a bool, got 1"),
    (lambda: jconv.max_pool1d(X1, 2, impl="fft"), ValueError, r"impl must be one of"),
    (lambda: jconv.avg_pool2d(X2, 2, divisor_override=0), ValueError,
     r"divisor_override must be None or a non-zero int, got 0"),
    (lambda: jconv.avg_pool3d(X3, 2, divisor_override=1.5), ValueError,
     r"divisor_override must be None or a non-zero int, got 1.5"),
    (lambda: jconv.avg_pool1d(X1, 2, count_include_pad="no"), TypeError,
     r"count_include_pad must be a bool, got 'no'"),
    (lambda: jconv.avg_pool1d(jnp.ones((1, 2, 6), jnp.int32), 2), TypeError,
     r"x must be a floating-point array"),
    (lambda: jconv.lp_pool2d(X2, 0, 2), ValueError, r"norm_type must be a non-zero number, got 0"),
    (lambda: jconv.lp_pool1d(X1, "2", 2), ValueError, r"norm_type must be a non-zero number"),
    (lambda: jconv.adaptive_avg_pool2d(X2, (2, 2, 2)), TypeError,
     r"output_size must be an int, None or a tuple of 2 ints or Nones, got \(2, 2, 2\)"),
    (lambda: jconv.adaptive_max_pool1d(X1, 0), ValueError,
     r"output_size must be >= 1 \(or None: keep the input size\) in every dimension, got 0"),
    (lambda: jconv.adaptive_avg_pool3d(jnp.ones((1, 2, 0, 3, 3)), 1), ValueError,
     r"x must have non-zero channels and spatial sizes, got shape \(1, 2, 0, 3, 3\)"),
    (lambda: jconv.adaptive_max_pool2d(X2, 2, return_indices="yes"), TypeError,
     r"return_indices must be a bool, got 'yes'"),
    (lambda: jconv.adaptive_avg_pool1d(X1, 2, data_format="NHWC"), ValueError,
     r"data_format must be one of \('NCL', 'NLC'\) for 1-D pooling"),
    (lambda: jconv.max_unpool2d(X2[:, :, :3, :3], IDX2.astype(jnp.float32), 2), TypeError,
     r"indices must be an integer array \(from return_indices=True\), got float32"),
    (lambda: jconv.max_unpool2d(X2[:, :, :3, :3], IDX2[..., :2], 2), ValueError,
     r"indices must have the shape of x \(1, 2, 3, 3\), got \(1, 2, 3, 2\)"),
    (lambda: jconv.max_unpool2d(X2[:, :, :3, :3], IDX2, 2, output_size=(6, 6, 6)), ValueError,
     r"output_size must be None or a sequence of 2 or 4 ints, got \(6, 6, 6\)"),
    (lambda: jconv.max_unpool2d(X2[:, :, :3, :3], IDX2, 2, output_size=(8, 6)), ValueError,
     r"output_size \(8, 6\) is invalid: dim 0 must lie strictly between 4 and 8, got 8"),
    (lambda: jconv.max_unpool2d(X2[:, :, :3, :3], IDX2 + 36, 2), ValueError,
     r"indices must lie in \[0, 36\) \(the output's spatial volume\), found 36"),
    (lambda: jconv.max_unpool1d(X1, -jnp.ones((1, 2, 6), jnp.int32), 2), ValueError,
     r"indices must lie in \[0, 12\) .* found -1"),
    (lambda: jconv.max_unpool1d(jnp.ones((1, 2, 1)), jnp.zeros((1, 2, 1), jnp.int32), 1,
                                padding=1), ValueError, r"output size \(-1,\) is not positive"),
    # PyTorch's pooling lets only the batch be empty (OpInfo error_inputs).
    (lambda: jconv.max_pool1d(jnp.ones((0, 10)), 1), ValueError,
     r"x must have non-zero channels and spatial sizes \(only the batch may be empty, as in "
     r"PyTorch\), got shape \(0, 10\)"),
    (lambda: jconv.avg_pool2d(jnp.ones((2, 1, 10, 0)), 1), ValueError,
     r"x must have non-zero channels .* got shape \(2, 1, 10, 0\)"),
    (lambda: jconv.max_pool3d(jnp.ones((0, 1, 2, 10)), 1), ValueError,
     r"x must have non-zero channels .* got shape \(0, 1, 2, 10\)"),
    (lambda: jconv.max_pool2d(X2, (2, 2, 2)), TypeError,
     r"kernel_size must be an int or a pair of ints, got \(2, 2, 2\)"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_unpool_under_jit_drops_out_of_range_indices():
    x = jnp.array([[1.0, 2.0]])
    f = jax.jit(lambda i: jconv.max_unpool1d(x, i, 2))
    assert f(jnp.array([[0, 99]])).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert f(jnp.array([[-1, 3]])).tolist() == [[0.0, 0.0, 0.0, 2.0]]


def test_empty_batch_still_pools():
    assert jconv.max_pool1d(jnp.ones((0, 2, 10)), 2).shape == (0, 2, 5)
    assert jconv.avg_pool3d(jnp.ones((0, 1, 4, 4, 4)), 2).shape == (0, 1, 2, 2, 2)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_one_int_tuples_broadcast_and_empty_stride_is_the_kernel(nd):
    """PyTorch reads ``padding=(1,)`` as 1 on every dim and ``stride=()`` as the kernel
    size (what its max_pool passes for ``stride=None``)."""
    x = jnp.asarray(np.random.default_rng(nd).normal(size=(2, 3) + (7,) * nd))
    mp, ap = getattr(jconv, f"max_pool{nd}d"), getattr(jconv, f"avg_pool{nd}d")
    np.testing.assert_array_equal(mp(x, (3,), (), (1,), (2,)), mp(x, 3, 3, 1, 2))
    np.testing.assert_array_equal(ap(x, (3,), (1,), (1,), True, False),
                                  ap(x, 3, 1, 1, True, False))
    np.testing.assert_array_equal(ap(x, 2, ()), ap(x, 2, None))
    y, i = mp(x[(...,) + (slice(0, 6),) * nd], 2, return_indices=True)  # unpools to 6
    up = getattr(jconv, f"max_unpool{nd}d")
    np.testing.assert_array_equal(up(y, i, (2,), (), (0,)), up(y, i, 2))
    layer = getattr(jconv.nn, f"AvgPool{nd}d")((3,), (), (1,))
    np.testing.assert_array_equal(layer(x), ap(x, 3, 3, 1))


def test_avg_pool2d_one_int_padding_matches_pytorch():
    # The OpInfo sample that once raised "padding must be an int or a pair of ints".
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, 3, 9, 9)).astype(np.float32)
    want = torch.nn.functional.avg_pool2d(torch.from_numpy(x), (3, 3), (1, 1), (1,), True,
                                          False, 2).numpy()
    got = jconv.avg_pool2d(jnp.asarray(x), (3, 3), (1, 1), (1,), True, False, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unpool_gradient_is_pytorchs_gather_where_indices_repeat(nd, x64):
    """Overlapping windows (stride 1 < kernel 3) repeat indices: PyTorch's backward gives
    every copy the gradient (grad_y.flatten()[indices]), not only the one written."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(nd)
    x = torch.from_numpy(rng.normal(size=(2, 3) + (6,) * nd))
    y_t, i_t = getattr(F, f"max_pool{nd}d")(x, 3, 1, return_indices=True)
    assert len(np.unique(i_t.numpy()[0, 0])) < i_t[0, 0].numel()  # the case under test
    y_t.requires_grad_(True)
    out_t = getattr(F, f"max_unpool{nd}d")(y_t, i_t, 3, 1)
    cot = rng.normal(size=tuple(out_t.shape))
    (want,) = torch.autograd.grad(out_t, y_t, torch.from_numpy(cot))
    unpool = functools.partial(getattr(jconv, f"max_unpool{nd}d"),
                               indices=jnp.asarray(i_t.numpy()), kernel_size=3, stride=1)
    out, vjp = jax.vjp(unpool, jnp.asarray(y_t.detach().numpy()))
    np.testing.assert_array_equal(out, out_t.detach().numpy())
    np.testing.assert_allclose(vjp(jnp.asarray(cot))[0], want.numpy(), rtol=1e-12)
    # Forward mode is the same linear map: <jvp(t), cot> == <t, vjp(cot)>.
    t = jnp.asarray(rng.normal(size=tuple(y_t.shape)))
    _, jvp = jax.jvp(unpool, (jnp.asarray(y_t.detach().numpy()),), (t,))
    np.testing.assert_allclose(jnp.vdot(jvp, cot), jnp.vdot(t, vjp(jnp.asarray(cot))[0]),
                               rtol=1e-12)


def test_unpool_second_order_gradients(x64):
    """Unique indices (non-overlapping windows): the derivative is the scatter's, and
    check_grads' finite differences confirm it to second order in both modes."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 6, 6)))
    y, i = jconv.max_pool2d(x, 2, return_indices=True)
    check_grads(lambda v: jconv.max_unpool2d(v, i, 2) ** 2, (y,), order=2,
                              modes=("fwd", "rev"))


@pytest.mark.parametrize("fmt,shape", [("NCL", (2, 3, 9)), ("NHWC", (2, 7, 6, 3)),
                                       ("NCDHW", (1, 2, 5, 6, 4))])
def test_the_nd_cores_are_the_ranked_functions(fmt, shape):
    """max_poolnd / avg_poolnd / lp_poolnd take their rank from data_format and give what the
    1-D/2-D/3-D functions give."""
    nd = len(fmt) - 2
    x = jnp.asarray(np.random.default_rng(0).uniform(0.1, 2.0, shape), jnp.float32)
    ranked = {1: (jconv.max_pool1d, jconv.avg_pool1d, jconv.lp_pool1d),
              2: (jconv.max_pool2d, jconv.avg_pool2d, jconv.lp_pool2d),
              3: (jconv.max_pool3d, jconv.avg_pool3d, jconv.lp_pool3d)}[nd]
    np.testing.assert_array_equal(jconv.max_poolnd(x, 3, 2, 1, data_format=fmt),
                                  ranked[0](x, 3, 2, 1, data_format=fmt))
    np.testing.assert_array_equal(jconv.avg_poolnd(x, 2, 1, 1, True, False, data_format=fmt),
                                  ranked[1](x, 2, 1, 1, True, False, data_format=fmt))
    np.testing.assert_array_equal(jconv.lp_poolnd(x, 2.0, 2, data_format=fmt),
                                  ranked[2](x, 2.0, 2, data_format=fmt))


def test_the_nd_cores_need_a_known_data_format():
    with pytest.raises(ValueError, match=r"data_format must be one of .*got 'NCXY'"):
        jconv.max_poolnd(jnp.ones((1, 1, 4, 4)), 2, data_format="NCXY")


@pytest.mark.parametrize("fmt,shape", [("NCL", (2, 3, 9)), ("NHWC", (2, 7, 6, 3)),
                                       ("NCDHW", (1, 2, 5, 6, 4))])
def test_poolnd_cores_match_the_per_rank_functions(fmt, shape):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    nd = len(shape) - 2
    per_rank = {1: (jconv.max_pool1d, jconv.avg_pool1d, jconv.lp_pool1d),
                2: (jconv.max_pool2d, jconv.avg_pool2d, jconv.lp_pool2d),
                3: (jconv.max_pool3d, jconv.avg_pool3d, jconv.lp_pool3d)}[nd]
    np.testing.assert_array_equal(jconv.max_poolnd(x, 2, 1, 1, data_format=fmt),
                                  per_rank[0](x, 2, 1, 1, data_format=fmt))
    np.testing.assert_array_equal(jconv.avg_poolnd(x, 3, 2, 1, True, data_format=fmt),
                                  per_rank[1](x, 3, 2, 1, True, data_format=fmt))
    np.testing.assert_array_equal(jconv.lp_poolnd(abs(x), 2.0, 2, data_format=fmt),
                                  per_rank[2](abs(x), 2.0, 2, data_format=fmt))


@pytest.mark.parametrize("layer", ["MaxPool1d", "AvgPool1d", "MaxPool3d", "AvgPool3d"])
def test_set_impl_reaches_1d_and_3d_pool_layers(layer):
    from jconv import nn
    model = getattr(nn, layer)(2)
    jconv.set_impl(model, "im2col")
    assert model.impl == "im2col"
