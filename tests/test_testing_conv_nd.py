"""jconv.testing's N-D checks: jconv passes them, and they catch N-D bugs (an axis swapped,
reflect taken for replicate, a circular wrap off by one)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jconv
from jconv import testing

F64 = dict(dtypes=("float64",), grads=False)


@pytest.mark.slow
@pytest.mark.parametrize("ndim,fn", [(1, jconv.conv1d), (2, jconv.conv2d), (3, jconv.conv3d)])
def test_jconv_passes_the_default_nd_checks(ndim, fn):
    report = testing.check_conv(fn, ndim=ndim, dtypes=("float64", "float32"),
                                check_grads_cases=1)
    assert report.passed, str(report)


def test_cases_match_pytorch():
    """The oracle the checks use agrees with PyTorch on every hand-picked N-D form."""
    for ndim in (1, 3):
        for case in testing.conv_cases(ndim, "default", n=0):
            x, w, b = case.inputs("float64")
            kw = case.kwargs
            mode = kw.pop("padding_mode", "zeros")
            pads = testing.conv_pads(kw.pop("padding"), w.shape[2:], _tuple(kw["dilation"], ndim),
                                     _tuple(kw["stride"], ndim))
            flat = [v for lo_hi in reversed(pads) for v in lo_hi]
            xt = torch.tensor(x if x.ndim == ndim + 2 else x[None])
            xt = F.pad(xt, flat, mode="constant" if mode == "zeros" else mode)
            want = getattr(F, f"conv{ndim}d")(xt, torch.tensor(w),
                                              None if b is None else torch.tensor(b), **kw)
            got = case.reference(x, w, b)
            got = got if x.ndim == ndim + 2 else got[None]
            np.testing.assert_allclose(got, want.numpy(), atol=1e-12, err_msg=case.name)


def _tuple(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def _axes_swapped(x, w, b=None, *, stride, padding, dilation, groups, padding_mode="zeros"):
    """A conv3d that applies the per-dim arguments in the wrong axis order."""
    def rev(v):
        return v[::-1] if isinstance(v, tuple) else v
    return jconv.conv3d(x, w, b, stride=rev(stride), padding=rev(padding),
                        dilation=rev(dilation), groups=groups, padding_mode=padding_mode)


def _reflect_as_replicate(x, w, b=None, *, padding_mode="zeros", **kw):
    mode = "replicate" if padding_mode == "reflect" else padding_mode
    return jconv.conv1d(x, w, b, padding_mode=mode, **kw)


def _circular_off_by_one(x, w, b=None, *, padding_mode="zeros", **kw):
    """conv1d whose circular padding wraps one element too far."""
    if padding_mode != "circular":
        return jconv.conv1d(x, w, b, padding_mode=padding_mode, **kw)
    spec = jconv.conv_spec(x.shape, w.shape, padding=kw["padding"], stride=kw["stride"],
                           dilation=kw["dilation"], groups=kw["groups"])
    (lo, hi), = spec.padding
    n = x.shape[-1]
    idx = np.arange(-lo, n + hi)
    idx = np.where((idx < 0) | (idx >= n), (idx - 1) % n, idx)
    return jconv.conv1d(x[..., idx], w, b, **{**kw, "padding": 0})


@pytest.mark.parametrize("ndim,mutant,cases", [
    (3, _axes_swapped, "quick"),
    (1, _reflect_as_replicate, "quick"),
    (1, _circular_off_by_one, "quick"),
])
def test_nd_checks_catch_nd_bugs(ndim, mutant, cases):
    report = testing.check_conv(mutant, ndim=ndim, cases=cases, **F64)
    assert not report.passed
    assert report.failures[0].check == "forward"
    # The same function with the bug's trigger absent passes: the failure is the bug.
    assert testing.check_conv(mutant, ndim=ndim, cases=cases, padding_modes=("zeros",),
                              **F64).passed == (mutant is not _axes_swapped)


def test_check_conv1d_and_3d_are_check_conv():
    r1 = testing.check_conv1d(jconv.conv1d, cases="quick", **F64)
    r3 = testing.check_conv3d(jconv.conv3d, cases="quick", **F64)
    assert r1.passed and r3.passed
    assert (r1.op, r3.op) == ("conv1d", "conv3d")
    with pytest.raises(AssertionError, match=r"conv1d case 'reflect'"):
        testing.assert_conv1d(_reflect_as_replicate, cases="quick", **F64)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: testing.check_conv(jconv.conv2d, ndim=4), ValueError,
     r"ndim must be 1, 2 or 3, got 4"),
    (lambda: testing.check_conv(jconv.conv2d, cases="huge"), ValueError,
     r"cases must be one of \('quick', 'default', 'full'\) or a list of ConvNdCase, "
     r"got 'huge'"),
    (lambda: testing.check_conv(jconv.conv2d, cases=[1]), TypeError,
     r"cases must be one of .* or a non-empty list of ConvNdCase of conv2d, got 1"),
    (lambda: testing.check_conv(jconv.conv1d, ndim=1, cases=testing.conv_cases(3, "quick")),
     TypeError,
     r"non-empty list of ConvNdCase of conv1d, got ConvNdCase\(x_shape=\(2, 4, 9, 7, 6\)"),
    (lambda: testing.Conv2dCase((1, 2, 5), (4, 2, 3)), ValueError,
     r"w_shape must be \(C_out, C_in/groups, kH, kW\), got \(4, 2, 3\)"),
    (lambda: testing.conv_cases(1, padding_modes=("mirror",)), ValueError,
     r"padding_modes must be a non-empty sequence of \('zeros', 'reflect', 'replicate', "
     r"'circular'\), got \('mirror',\)"),
    (lambda: testing.conv_cases(0), ValueError, r"ndim must be 1, 2 or 3, got 0"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("impl", ["im2col", "loops", "fft"])
@pytest.mark.parametrize("ndim", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_nd_impls_pass_in_half_and_single_precision(ndim, impl):
    """float32 and bfloat16 within the suite's default tolerances, gradients included."""
    fn = functools.partial(jconv.convnd, impl=impl)
    report = testing.check_conv(fn, ndim=ndim, cases="quick", dtypes=("float32", "bfloat16"),
                                check_grads_cases=0)
    assert report.passed, str(report)


def test_conv2d_cases_are_nd_cases_and_check_conv_takes_them():
    """conv2d is the N-D conv under its 2-D name: one case class, one oracle, one check."""
    cases = testing.conv2d_cases("quick")
    assert all(isinstance(c, testing.ConvNdCase) and "padding_mode" not in c.kwargs
               for c in cases)
    x, w, b = cases[0].inputs()
    np.testing.assert_array_equal(cases[0].reference(x, w, b),
                                  testing.reference_convnd(x, w, b, **cases[0].kwargs))
    report = testing.check_conv(jconv.conv2d, ndim=2, cases=cases[:2], **F64)
    assert report.passed and report.n_cases == 2 and report.op == "conv2d"
    assert eval(repr(cases[0]), vars(testing)) == cases[0]


def test_transpose_cases_match_pytorch():
    """The transposed-conv oracle agrees with PyTorch on the 1-D and 3-D forms and draws."""
    for ndim in (1, 3):
        for case in testing.conv_transpose_cases(ndim, "default"):
            x, w, b = case.inputs("float64")
            batched = x.ndim == ndim + 2
            want = getattr(F, f"conv_transpose{ndim}d")(
                torch.tensor(x if batched else x[None]), torch.tensor(w),
                None if b is None else torch.tensor(b), **case.kwargs)
            got = case.reference(x, w, b)
            np.testing.assert_allclose(got if batched else got[None], want.numpy(),
                                       atol=1e-12, err_msg=case.name)


def _transpose_ignoring_output_padding(x, w, b=None, **kw):
    return jconv.conv_transpose1d(x, w, b, **{**kw, "output_padding": 0})


def test_transpose_checks_are_one_check_and_catch_a_bug():
    r1 = testing.check_conv_transpose1d(jconv.conv_transpose1d, cases="quick", **F64)
    r3 = testing.check_conv_transpose(jconv.conv_transpose3d, ndim=3, cases="quick", **F64)
    assert r1.passed and r3.passed and (r1.op, r3.op) == ("conv_transpose1d", "conv_transpose3d")
    two = testing.check_conv_transpose2d(jconv.conv_transpose2d, cases="quick", **F64)
    nd = testing.check_conv_transpose(jconv.conv_transpose2d, ndim=2, cases="quick", **F64)
    assert [r.case for r in two.results] == [r.case for r in nd.results]
    assert isinstance(two.results[0].case, testing.ConvTransposeNdCase)
    with pytest.raises(AssertionError, match=r"conv_transpose1d case 'upsample-2x'.*forward"):
        testing.assert_conv_transpose1d(_transpose_ignoring_output_padding, cases="quick",
                                        **F64)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: testing.check_conv_transpose(jconv.conv_transpose2d, ndim=0), ValueError,
     r"ndim must be 1, 2 or 3, got 0"),
    (lambda: testing.conv_transpose_cases(4), ValueError, r"ndim must be 1, 2 or 3, got 4"),
    (lambda: testing.check_conv_transpose1d(jconv.conv_transpose1d,
                                            cases=testing.conv_transpose2d_cases("quick")),
     TypeError, r"non-empty list of ConvTransposeNdCase of conv_transpose1d, got "
                r"ConvTranspose2dCase\(x_shape=\(2, 4, 5, 4\)"),
])
def test_transpose_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
