"""jconv.testing: the oracles against PyTorch, the checker against deliberately broken convs
(each must FAIL) and correct ones (must PASS), failure reporting, errors, CLI."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jconv
from jconv import testing
from jconv.testing.__main__ import load_target, main


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def lax_conv(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, _pads=None,
             _stride=None, _dilation=None, _dtype=None, _bias_in_x_dtype=False):
    """A correct torch-signature wrapper around lax.conv_general_dilated; the underscore
    knobs let the mutants below break one thing at a time."""
    s, d = _pair(stride), _pair(dilation)
    pads = testing.conv_pads(padding, tuple(w.shape[2:]), d, s)
    pads = _pads(pads, padding) if _pads else pads
    unbatched = x.ndim == 3
    xb = x[None] if unbatched else x
    dtype = x.dtype
    if _dtype is not None:
        xb, w = xb.astype(_dtype), w.astype(_dtype)
    y = lax.conv_general_dilated(xb, w, _stride(s) if _stride else s, pads,
                                 rhs_dilation=_dilation or d, feature_group_count=groups,
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                 precision="highest").astype(dtype)
    if b is not None and _bias_in_x_dtype:
        y = y + b[:, None, None]
    elif b is not None:  # the bias gradient sums many pixels: in float32 at least
        acc = jnp.promote_types(dtype, jnp.float32)
        y = (y.astype(acc) + b.astype(acc)[:, None, None]).astype(dtype)
    return y[0] if unbatched else y


def symmetric_padding(x, w, b=None, **kw):
    return lax_conv(x, w, b, _pads=lambda p, _: ((p[0][0],) * 2, (p[1][0],) * 2), **kw)


def same_extra_pixel_top_left(x, w, b=None, **kw):
    swap = lambda p, padding: tuple(q[::-1] for q in p) if padding == "same" else p  # noqa: E731
    return lax_conv(x, w, b, _pads=swap, **kw)


def stride_axes_swapped(x, w, b=None, **kw):
    return lax_conv(x, w, b, _stride=lambda s: s[::-1], **kw)


def dilation_ignored(x, w, b=None, **kw):
    return lax_conv(x, w, b, _dilation=(1, 1), **kw)


def flipped_kernel(x, w, b=None, **kw):
    return lax_conv(x, w[:, :, ::-1, ::-1], b, **kw)


def groups_interleaved(x, w, b=None, *, groups=1, **kw):
    """Reads group g's channels as every groups-th channel instead of a contiguous block."""
    c = x.shape[-3]
    perm = np.arange(c).reshape(c // groups, groups).T.reshape(-1)
    return lax_conv(jnp.take(x, perm, axis=-3), w, b, groups=groups, **kw)


def bfloat16_inside(x, w, b=None, **kw):
    return lax_conv(x, w, b, _dtype=jnp.bfloat16, **kw)


def bias_added_in_bfloat16(x, w, b=None, **kw):
    """``y + b`` in the input dtype: in bfloat16 the bias gradient is summed in bfloat16."""
    return lax_conv(x, w, b, _bias_in_x_dtype=True, **kw)


def bias_ignored(x, w, b=None, **kw):
    return lax_conv(x, w, None, **kw)


def flipped_kernel_bias_ignored(x, w, b=None, **kw):
    return lax_conv(x, w[:, :, ::-1, ::-1], None, **kw)


def bias_gradient_doubled(x, w, b=None, **kw):
    """Forward right, bias gradient twice too large (the bias added in bfloat16 as well)."""
    b2 = None if b is None else b + (b - lax.stop_gradient(b))
    return lax_conv(x, w, b2, _bias_in_x_dtype=True, **kw)


def bias_gradient_dropped(x, w, b=None, **kw):
    """Forward right, bias gradient zero."""
    return lax_conv(x, w, None if b is None else lax.stop_gradient(b), **kw)


def rejects_unbatched(x, w, b=None, **kw):
    if x.ndim != 4:
        raise ValueError("x must be 4-D")
    return lax_conv(x, w, b, **kw)


def nan_in_corner(x, w, b=None, **kw):
    y = lax_conv(x, w, b, **kw)
    return y.at[..., -1, -1].set(jnp.nan)


def _grad_off_by_one_percent():
    @jax.custom_vjp
    def conv(x, w, b, kw):
        return lax_conv(x, w, b, **dict(kw))

    def fwd(x, w, b, kw):
        return conv(x, w, b, kw), (x, w, b)

    def bwd(kw, res, ct):
        _, pull = jax.vjp(lambda *a: lax_conv(*a, **dict(kw)), *res)
        return tuple(g * 1.01 for g in pull(ct))

    conv.defvjp(fwd, bwd)
    conv = jax.custom_vjp(conv.__wrapped__, nondiff_argnums=(3,))
    conv.defvjp(fwd, bwd)

    def grad_off_by_one_percent(x, w, b=None, **kw):
        b = jnp.zeros(w.shape[0], x.dtype) if b is None else b
        return conv(x, w, b, tuple(sorted(kw.items())))

    return grad_off_by_one_percent


grad_off_by_one_percent = _grad_off_by_one_percent()

# (mutant, the check that must catch it, the dtype it shows in)
MUTANTS = [
    (symmetric_padding, "forward", "float32"),
    (same_extra_pixel_top_left, "forward", "float32"),
    (stride_axes_swapped, "forward", "float32"),
    (dilation_ignored, "forward", "float32"),
    (flipped_kernel, "forward", "float32"),
    (groups_interleaved, "forward", "float32"),
    (bfloat16_inside, "forward", "float32"),
    (rejects_unbatched, "forward", "float32"),
    (nan_in_corner, "forward", "float32"),
    (grad_off_by_one_percent, "grad", "float32"),
    (bias_added_in_bfloat16, "grad", "bfloat16"),
]


@pytest.mark.parametrize("mutant,caught_by,dtype", MUTANTS,
                         ids=[m.__name__ for m, _, _ in MUTANTS])
def test_broken_convs_fail(mutant, caught_by, dtype):
    # Forward bugs need no gradients to show; float32 catches even bfloat16 arithmetic.
    grads = caught_by == "grad"
    report = testing.check_conv2d(mutant, cases="quick", dtypes=(dtype,), grads=grads,
                                  check_grads_cases=0, fail_fast=True)
    assert not report.passed, str(report)
    assert {r.check.split(" ")[0] for r in report.failures} == {caught_by}
    assert "FAIL" in str(report) and f"case = Conv2dCase(" in str(report)
    # The bias summed in bfloat16 is named as the likely cause; no other bug is.
    named = "Likely cause: only the bias gradient fails, only in bfloat16" in str(report)
    assert named == (mutant is bias_added_in_bfloat16), str(report)


@pytest.mark.parametrize("mutant,cause", [
    (flipped_kernel, "Likely cause: the kernel is flipped. In all {n} failing cases the output "
                     "equals PyTorch's conv2d with w flipped along its spatial axes: fn computes "
                     "a true convolution, while torch.nn.functional.conv2d is a "
                     "cross-correlation (the kernel is not flipped)"),
    (bias_ignored, "Likely cause: the bias is ignored. In all {n} failing cases the output "
                   "equals PyTorch's conv2d without the bias b (the cases without a bias "
                   "pass): fn ignores b"),
    (flipped_kernel_bias_ignored, "Likely cause: the kernel is flipped and the bias ignored. "
                                  "In all {n} failing cases the output equals PyTorch's conv2d "
                                  "with w flipped along its spatial axes and without b"),
], ids=["flipped_kernel", "bias_ignored", "both"])
def test_flipped_kernel_and_ignored_bias_named_as_the_likely_cause(mutant, cause):
    # Gradients on: their failures come from the same bug and must not hide the cause.
    report = testing.check_conv2d(mutant, cases="quick", dtypes=("float32",),
                                  check_grads_cases=0)
    failing = {r.case_index for r in report.failures}
    assert failing and any(r.check.startswith("grad") for r in report.failures)
    if mutant is bias_ignored:  # only the biased cases fail
        assert failing == {i for i, c in enumerate(testing.conv2d_cases("quick")) if c.bias}
    assert report.likely_cause().startswith(cause.format(n=len(failing))), report.likely_cause()
    assert "Likely cause: the" in " ".join(str(report).split())


def test_no_likely_cause_for_other_bugs_or_a_mix():
    # A padding bug resembles neither; a flip on some cases only is no pattern either.
    assert testing.check_conv2d(symmetric_padding, cases="quick", dtypes=("float32",),
                                grads=False).likely_cause() == ""
    cases = testing.conv2d_cases("quick")[:3]
    mixed = testing.check_conv2d(
        lambda x, w, b=None, **kw: (flipped_kernel if x.shape[-1] == 9 else bias_ignored)(
            x, w, b, **kw), cases=cases, dtypes=("float32",), grads=False)
    assert {r.resembles for r in mixed.failures if r.check == "forward"} == {
        ("flipped kernel",), ("no bias",)}, str(mixed)
    assert mixed.likely_cause() == ""


def test_flipped_kernel_named_for_transposed_and_1d_convs():
    flipped_t = lambda x, w, b=None, **kw: jconv.conv_transpose2d(  # noqa: E731
        x, w[:, :, ::-1, ::-1], b, **kw)
    report = testing.check_conv_transpose2d(flipped_t, cases="quick", dtypes=("float32",),
                                            grads=False)
    assert report.likely_cause().startswith("Likely cause: the kernel is flipped."), str(report)
    flipped_1d = lambda x, w, b=None, **kw: jconv.conv1d(x, w[:, :, ::-1], b, **kw)  # noqa: E731
    report = testing.check_conv1d(flipped_1d, cases="quick", dtypes=("float32",), grads=False)
    assert "torch.nn.functional.conv1d is a cross-correlation" in report.likely_cause()


@pytest.mark.slow
def test_correct_lax_wrapper_passes_every_dtype_and_check_grads():
    # The richest forms (asymmetric padding, unequal strides, dilation, groups; 'same' with an
    # even kernel; a channel multiplier); jconv's own impls run the whole lists in test_conv.
    forms = ("everything", "same-even-kernel", "depthwise-multiplier")
    cases = [c for c in testing.conv2d_cases("quick") if c.name in forms]
    report = testing.check_conv2d(lax_conv, cases=cases)
    assert report.passed, str(report)
    assert "check_grads(order=2, float64, 1 cases): fwd PASS, rev PASS" in str(report)
    assert report.worst("float64", "grad") < 1e-12


@pytest.mark.slow
def test_custom_vjp_forward_mode_reported_unsupported_not_a_crash():
    @jax.custom_vjp
    def conv(x, w, b):
        return lax_conv(x, w, b, padding=1)

    conv.defvjp(lambda x, w, b: (conv(x, w, b), (x, w, b)),
                lambda res, ct: jax.vjp(lambda *a: lax_conv(*a, padding=1), *res)[1](ct))
    case = testing.Conv2dCase((2, 3, 5, 6), (4, 3, 3, 3), padding=1)
    report = testing.check_conv2d(lambda x, w, b=None, **kw: conv(x, w, b), cases=[case],
                                  dtypes=("float64",))
    assert report.passed, str(report)
    assert "fwd unsupported (custom_vjp: no forward mode), rev PASS" in str(report)


ASYMMETRIC_PAD = [c for c in testing.conv2d_cases("quick") if c.name == "asymmetric-pad"]


def test_bias_summed_in_half_precision_named_and_accepted_by_half_sum():
    # The case where the default run of Equinox, Flax and lax + bias fails (5.04e-02 > 3e-02).
    pytorch = testing.check_conv2d(bias_added_in_bfloat16, cases=ASYMMETRIC_PAD,
                                   dtypes=("bfloat16",))
    text = str(pytorch)
    assert not pytorch.passed and [r.check for r in pytorch.failures] == ["grad b"]
    assert "tolerance mode 'pytorch': PyTorch-exact" in text
    assert "max error 5.04e-02 > tolerance 3e-02 at db" in text
    assert pytorch.likely_cause().startswith("Likely cause: only the bias gradient fails, only "
                                             "in bfloat16")
    assert "tolerance_mode='half-sum' (CLI: --tolerance-mode half-sum)" in pytorch.likely_cause()
    half = testing.check_conv2d(bias_added_in_bfloat16, cases=ASYMMETRIC_PAD,
                                dtypes=("bfloat16",), tolerance_mode="half-sum")
    assert half.passed, str(half)
    text = str(half)
    assert "tolerance mode 'half-sum': PyTorch-exact, except that a half-precision bias" in text
    assert "bfloat16 grad b against the half-sum bound: worst error/bound 0.25" in text
    assert half.likely_cause() == ""


@pytest.mark.parametrize("mutant", [bias_gradient_doubled, bias_gradient_dropped])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_sum_still_catches_wrong_bias_gradients(mutant, dtype):
    cases = [c for c in testing.conv2d_cases("quick") if c.bias][:3]
    report = testing.check_conv2d(mutant, cases=cases, dtypes=(dtype,), check_grads_cases=0,
                                  tolerance_mode="half-sum")
    assert {r.check for r in report.failures} == {"grad b"}, str(report)
    assert len({r.case_index for r in report.failures}) == len(cases)
    assert report.likely_cause() == ""  # far beyond what a half-precision sum gives


def test_half_sum_bound_holds_for_xla_sums_and_is_tighter_than_the_gradient():
    """XLA's own half-precision bias sums (the VJP of ``y + b``) stay within the bound on
    cotangents of the shapes the cases use, while the bound stays below max|db| (so a bias
    gradient of zero cannot pass)."""
    rng = np.random.default_rng(0)
    for dtype in ("bfloat16", "float16"):
        for shape in [(2, 3, 7, 7), (4, 5, 9, 12), (6, 8, 1), (3, 16, 16)]:
            ct = np.asarray(rng.standard_normal(shape).astype(dtype), np.float64)
            b = jnp.zeros(shape[-3], dtype)
            _, pull = jax.vjp(lambda b: jnp.zeros(shape, dtype) + b[:, None, None], b)
            got = np.asarray(pull(jnp.asarray(ct, dtype))[0], np.float64)
            want = ct.sum(axis=tuple(i for i in range(ct.ndim) if i != ct.ndim - 3))
            tol = testing.half_sum_tolerance(ct, want, dtype, ct.ndim - 3)
            assert np.abs(got - want).max() / max(1, np.abs(want).max()) <= tol < 1
    assert testing.half_sum_tolerance(np.ones((1, 2, 3, 3)), np.full(2, 9.0), "float32", 1) is None


def test_assert_conv2d_names_a_runnable_repro():
    with pytest.raises(AssertionError, match=r"FAILED \[float32\] forward: max error") as info:
        testing.assert_conv2d(flipped_kernel, cases="quick", dtypes=("float32",), grads=False,
                              fail_fast=True)
    message = str(info.value)
    assert "at output index (" in message and "tolerance 1e-05" in message
    repro = message.split("repro:\n")[1].split("\n\n")[0]
    scope = {"fn": flipped_kernel, "jconv": jconv}
    exec("\n".join(line[4:] for line in repro.splitlines()), scope)  # noqa: S102
    want = testing.reference_conv2d(*scope["case"].inputs("float32"), **scope["case"].kwargs)
    assert np.abs(np.asarray(scope["y"]) - want).max() > 1e-3  # the repro shows the bug
    assert testing.assert_conv2d(lax_conv, cases=scope["case"], dtypes=("float32",)).passed


def test_wrong_shape_and_dtype_are_failures():
    case = testing.Conv2dCase((1, 2, 5, 5), (3, 2, 3, 3))
    shape = testing.check_conv2d(lambda x, w, b=None, **kw: lax_conv(x, w, b, **kw)[..., 1:],
                                 cases=[case], dtypes=("float32",))
    assert "output shape (1, 3, 3, 2), expected (1, 3, 3, 3)" in shape.first_failure()
    dtype = testing.check_conv2d(lambda x, w, b=None, **kw: lax_conv(x, w, b, **kw).astype(
        jnp.float16), cases=[case], dtypes=("float32",), grads=False)
    assert "output dtype float16, expected float32" in dtype.first_failure()


def test_function_needing_concrete_values_falls_back_to_eager():
    def concrete(x, w, b=None, **kw):
        # A Python branch on values fails under jit: the checker retries eagerly.
        if float(jnp.abs(lax.stop_gradient(x)).max()) > 1e6:
            raise ValueError("huge input")
        return lax_conv(x, w, b, **kw)

    case = testing.conv2d_cases("quick")[0]
    assert testing.check_conv2d(concrete, cases=[case], dtypes=("float32",), grads=False).passed


def make_one_example_layer(w, b=None, **kw):
    """A layer that, like Equinox's, takes one example (C, H, W) and rejects a batch."""
    def layer(x):
        if x.ndim != 3:
            raise ValueError(f"expected one example (C, H, W), got shape {x.shape}")
        return lax_conv(x, w, b, **kw)
    return layer


def test_from_layer_unbatched_maps_the_batch():
    cases = testing.conv2d_cases("quick")[:3] + testing.conv2d_cases("quick")[6:7]
    one = testing.from_layer(make_one_example_layer, batched=False)
    assert one.__qualname__ == "from_layer(make_one_example_layer, batched=False)"
    assert testing.check_conv2d(one, cases=cases, dtypes=("float32",)).passed
    batched = testing.check_conv2d(testing.from_layer(make_one_example_layer), cases=cases,
                                   dtypes=("float32",), grads=False)
    assert "raised ValueError: expected one example (C, H, W), got shape (2, 4, 9, 8)" in str(
        batched)


def make_eqx_conv(w, b, *, stride, padding, dilation, groups):
    """Equinox's Conv2d; it takes one example (C, H, W)."""
    import equinox as eqx

    layer = eqx.nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2:], stride,
                          padding.upper() if isinstance(padding, str) else padding, dilation,
                          groups, use_bias=b is not None, key=jax.random.key(0))
    layer = eqx.tree_at(lambda m: m.weight, layer, w)
    return layer if b is None else eqx.tree_at(lambda m: m.bias, layer, b[:, None, None])


def make_nnx_conv(w, b, *, stride, padding, dilation, groups):
    """Flax's nnx.Conv from an HWIO kernel; it takes NHWC."""
    from flax import nnx

    s, d = _pair(stride), _pair(dilation)
    layer = nnx.Conv(w.shape[2] * groups, w.shape[3], w.shape[:2], strides=s,
                     padding=testing.conv_pads(padding, w.shape[:2], d, s), kernel_dilation=d,
                     feature_group_count=groups, use_bias=b is not None, param_dtype=w.dtype,
                     rngs=nnx.Rngs(0))
    layer.kernel = nnx.Param(w)
    if b is not None:
        layer.bias = nnx.Param(b)
    return layer


@pytest.mark.slow
@pytest.mark.parametrize("name", ["equinox", "flax"])
def test_equinox_and_flax_layers_pass_and_their_bfloat16_bias_is_named(name):
    """Equinox's (unbatched) and Flax's (channels-last) layers through the adapters: PyTorch
    exact in float32, and in bfloat16 only their bias gradient (summed in bfloat16) differs,
    which the report names and 'half-sum' accepts."""
    pytest.importorskip(name)
    checked = (testing.from_layer(make_eqx_conv, batched=False) if name == "equinox" else
               testing.from_nhwc(testing.from_layer(make_nnx_conv), weight="HWIO"))
    assert testing.check_conv2d(checked, cases="quick", dtypes=("float32",)).passed
    pytorch = testing.check_conv2d(checked, cases="quick", dtypes=("bfloat16",))
    assert [(r.case.name, r.check) for r in pytorch.failures] == [("asymmetric-pad", "grad b")]
    assert "Likely cause: only the bias gradient fails" in str(pytorch)
    assert testing.check_conv2d(checked, cases="quick", dtypes=("bfloat16",),
                                tolerance_mode="half-sum").passed


def test_nhwc_adapter_and_hwio_weights():
    def nhwc_hwio(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
        s, d = _pair(stride), _pair(dilation)
        pads = testing.conv_pads(padding, tuple(w.shape[:2]), d, s)
        y = lax.conv_general_dilated(x, w, s, pads, rhs_dilation=d, feature_group_count=groups,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y if b is None else y + b

    checked = testing.from_nhwc(nhwc_hwio, weight="HWIO")
    cases = [c for c in testing.conv2d_cases("quick") if len(c.x_shape) == 4][:2]
    assert testing.check_conv2d(checked, cases=cases, dtypes=("float32",)).passed


@pytest.mark.parametrize("call,exc,match", [
    (lambda: testing.check_conv2d(lax_conv, cases="fast"), ValueError,
     r"cases must be one of \('quick', 'default', 'full'\) .*got 'fast'"),
    (lambda: testing.check_conv2d(lax_conv, cases=[1]), TypeError,
     r"non-empty list of Conv2dCase, got 1"),
    (lambda: testing.check_conv2d(lax_conv, cases="quick", dtypes=("float8",)), ValueError,
     r"dtypes entries must be one of .* got 'float8'"),
    (lambda: testing.check_conv2d(42, cases="quick"), TypeError, r"fn must be callable, got 42"),
    (lambda: testing.check_conv2d(jconv.nn.Conv2d, cases="quick"), TypeError,
     r"fn is a class \(Conv2d\), not a conv function: build the layer and check it with "
     r"jconv.testing.from_layer\(make\)"),
    (lambda: testing.check_conv2d(lax_conv, tolerance_mode="loose"), ValueError,
     r"tolerance_mode must be one of \('pytorch', 'half-sum'\), got 'loose'"),
    (lambda: testing.from_layer(make_one_example_layer, batched="no"), TypeError,
     r"batched must be True or False, got 'no'"),
    (lambda: testing.check_conv2d(lax_conv, check_grads_cases=-1), ValueError,
     r"check_grads_cases must be a non-negative int, got -1"),
    (lambda: testing.conv2d_cases("huge"), ValueError, r"kind must be one of .* got 'huge'"),
    (lambda: testing.conv2d_cases("quick", n=-2), ValueError,
     r"n must be a non-negative int or None, got -2"),
    (lambda: testing.from_nhwc(lax_conv, weight="OHWI"), ValueError,
     r"weight must be 'OIHW' or 'HWIO', got 'OHWI'"),
    (lambda: testing.pytest_cases("quick", op="conv4d"), ValueError,
     r"op must be one of .* got 'conv4d'"),
    (lambda: testing.reference_conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), stride=2,
                                      padding="same"), ValueError,
     r"padding='same' needs stride 1, got stride=\(2, 2\)"),
    (lambda: testing.reference_conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)),
                                      padding="full"), ValueError,
     r"padding must be 'valid' or 'same' when a string, got 'full'"),
    (lambda: testing.reference_conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)),
                                      padding=-1), ValueError,
     r"padding must be non-negative, got -1"),
    (lambda: testing.reference_conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)),
                                      stride=1.5), TypeError,
     r"stride must be an int or a pair of ints, got 1.5"),
    (lambda: testing.reference_conv2d(np.ones((1, 4, 5, 5)), np.ones((2, 2, 3, 3)), groups=3),
     ValueError, r"shapes x \(1, 4, 5, 5\), w \(2, 2, 3, 3\) do not fit groups=3"),
    (lambda: testing.reference_conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))), ValueError,
     r"output size \(0, 0\) is not positive"),
    (lambda: testing.reference_conv2d(np.ones((5, 5)), np.ones((1, 1, 3, 3))), ValueError,
     r"x must be \(N, C, H, W\) or \(C, H, W\), got shape \(5, 5\)"),
    (lambda: testing.reference_max_pool2d(np.ones((1, 1, 5, 5)), 2, padding=2), ValueError,
     r"padding \(2, 2\) must be at most half of kernel_size \(2, 2\)"),
    (lambda: testing.reference_conv_transpose2d(np.ones((1, 4, 3, 3)), np.ones((2, 2, 3, 3))),
     ValueError, r"shapes x \(1, 4, 3, 3\), w \(2, 2, 3, 3\) do not fit groups=1"),
])
def test_bad_arguments_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("target,match", [
    ("jconv", r"target must look like 'package.module:function' \(or 'package.module' to "
              r"check package.module.<op>\), got 'jconv'"),
    ("no_such_module_x:f", r"cannot import module 'no_such_module_x'"),
    ("jconv:nope", r"'jconv' has no attribute 'nope'"),
    ("jconv:__version__", r"'jconv:__version__' is not callable \(got str\)"),
])
def test_cli_bad_target(target, match):
    with pytest.raises(ValueError, match=match):
        load_target(target)


def test_cli_exit_codes(capsys):
    assert main([f"{__name__}:flipped_kernel", "--cases", "quick", "--dtypes", "float32",
                 "--no-grads", "--fail-fast"]) == 1
    out = capsys.readouterr().out
    assert "-> FAIL" in out and "FAILED [float32] forward" in out
    assert main(["jconv:max_pool2d", "--op", "max_pool2d", "--cases", "quick", "--dtypes",
                 "float32", "--seed", "3", "--no-grads"]) == 0
    assert "('quick', seed 3) -> PASS" in capsys.readouterr().out
    assert main(["jconv:nope"]) == 2
    assert capsys.readouterr().err == "Error: 'jconv' has no attribute 'nope'\n"


def test_import_jconv_stays_light_and_cli_runs_as_a_module():
    """One subprocess (importing jax is the slow part): ``import jconv`` loads neither pytest
    nor jconv.testing, ``jconv.testing`` loads on first use, and ``python -m jconv.testing``
    turns a bad target into one Error line and exit status 2."""
    code = ("import runpy, sys, jconv\n"
            "print('pytest' in sys.modules, 'jconv.testing' in sys.modules)\n"
            "jconv.testing.conv2d_cases\n"
            "print('jconv.testing' in sys.modules, 'pytest' in sys.modules, flush=True)\n"
            "sys.argv = ['jconv.testing', 'jconv.nothing:f']\n"
            "runpy.run_module('jconv.testing', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["False", "False", "True", "False"]
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: cannot import module 'jconv.nothing'")
    assert "Traceback" not in proc.stderr


def test_pytest_cases_ids_are_unique_and_cover_the_forms():
    ids = [p.id for p in testing.pytest_cases("default")]
    assert len(ids) == len(set(ids)) == 49
    cases = testing.conv2d_cases("full")
    paddings = {type(c.padding).__name__ if not isinstance(c.padding, str) else c.padding
                for c in cases}
    assert {"int", "tuple", "valid", "same"} <= paddings
    assert any(isinstance(c.padding, tuple) and isinstance(c.padding[0], tuple) for c in cases)
    assert any(len(c.x_shape) == 3 for c in cases)
    assert any(c.groups == c.x_shape[-3] and c.w_shape[0] > c.groups for c in cases)
    assert testing.conv2d_cases("default", seed=1) != testing.conv2d_cases("default", seed=2)


# --- the oracles themselves against PyTorch, forward and gradients -------------------------

def _torch_grads(torch, out, leaves, ct):
    out.backward(torch.from_numpy(ct))
    return [None if a is None else a.grad.numpy() for a in leaves]


def _check_against_torch(case, torch_fn, prepad=None):
    torch = pytest.importorskip("torch")
    inputs = case.inputs("float64")
    want = case.reference(*inputs)
    ct = case.cotangent(want.shape)
    leaves = [None if a is None else torch.tensor(a, requires_grad=True) for a in inputs]
    out = torch_fn(torch, *leaves)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    got = _torch_grads(torch, out, leaves, ct)
    for g, w in zip(got, case.reference_vjp(inputs, ct)):
        if g is not None:
            np.testing.assert_allclose(w, g, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", testing.pytest_cases("default"))
def test_conv_oracle_matches_pytorch(case):
    def run(torch, x, w, b):
        kw = case.kwargs
        pads = testing.conv_pads(kw["padding"], case.w_shape[2:], _pair(kw["dilation"]),
                                 _pair(kw["stride"]))
        padding = kw["padding"]
        if not isinstance(padding, str) and (pads[0][0] != pads[0][1] or pads[1][0] != pads[1][1]):
            # torch.conv2d has no asymmetric padding: pad explicitly first
            x = torch.nn.functional.pad(x, (*pads[1], *pads[0]))
            padding = 0
        return torch.nn.functional.conv2d(x, w, b, stride=kw["stride"], padding=padding,
                                          dilation=kw["dilation"], groups=kw["groups"])

    _check_against_torch(case, run)


@pytest.mark.parametrize("case", testing.pytest_cases("default", op="conv_transpose2d"))
def test_transpose_oracle_matches_pytorch(case):
    _check_against_torch(case, lambda torch, x, w, b: torch.nn.functional.conv_transpose2d(
        x, w, b, **case.kwargs))


@pytest.mark.parametrize("case", testing.pytest_cases("default", op="max_pool2d")
                         + testing.pytest_cases("default", op="avg_pool2d"))
def test_pool_oracles_match_pytorch(case):
    name = "max_pool2d" if isinstance(case, testing.MaxPool2dCase) else "avg_pool2d"
    _check_against_torch(case, lambda torch, x: getattr(torch.nn.functional, name)(
        x, **case.kwargs))
