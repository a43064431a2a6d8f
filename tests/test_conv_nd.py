"""conv1d/conv2d/conv3d/convnd with every padding mode, and conv_transpose1d/3d: every
N-D implementation against the float64 oracle and PyTorch (values and gradients), order-2
gradients, every error message, and lowering for GPU and TPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

import jconv
from jconv import testing
from jconv._spec import CONV_DATA_FORMATS, PADDING_MODES

ND_IMPLS = ("lax", "im2col", "loops", "fft", "auto")
TOL = {"fft": 1e-11}  # the FFT's rounding grows with the transform; the rest 1e-12
FN = {1: jconv.conv1d, 2: jconv.conv2d, 3: jconv.conv3d}
FN_T = {1: jconv.conv_transpose1d, 2: jconv.conv_transpose2d, 3: jconv.conv_transpose3d}

pytestmark = pytest.mark.usefixtures("fresh_auto")


def _err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max()))


def draw_conv(rng: np.random.Generator, nd: int) -> dict:
    """A random conv over the whole argument space: groups, stride, dilation, every padding
    form and mode, bias or not, unbatched or not, sizes that PyTorch's mode rules allow."""
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, c_out = int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4 if nd < 3 else 3, nd))
    d = tuple(int(v) for v in rng.integers(1, 3, nd))
    s = tuple(int(v) for v in rng.integers(1, 3, nd)) if rng.random() < 0.5 else (1,) * nd
    mode = str(rng.choice(PADDING_MODES))
    forms = ["int", "tuple", "pairs", "valid"] + (["same"] if s == (1,) * nd else [])
    form = str(rng.choice(forms))
    p = [int(v) for v in rng.integers(0, 3, 2 * nd)]
    padding = {"int": p[0], "tuple": tuple(p[:nd]), "valid": "valid", "same": "same",
               "pairs": tuple((p[2 * i], p[2 * i + 1]) for i in range(nd))}[form]
    pads = testing.conv_pads(padding, k, d, s)
    # Big enough for the kernel, and for reflect (padding < size).
    size = tuple(max(dd * (kk - 1) + 1 - lo - hi, max(lo, hi) + 1, 1) + int(rng.integers(0, 3))
                 for kk, dd, (lo, hi) in zip(k, d, pads))
    n = int(rng.integers(1, 3))
    x_shape = (groups * cg, *size) if rng.random() < 0.15 else (n, groups * cg, *size)
    return dict(x_shape=x_shape, w_shape=(c_out, cg, *k), bias=bool(rng.random() < 0.7),
                kw=dict(stride=s[0] if len(set(s)) == 1 and rng.random() < 0.5 else s,
                        padding=padding, dilation=d,
                        groups=groups, padding_mode=mode),
                channels_last=bool(rng.random() < 0.3))


def _configs(nd: int, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [draw_conv(rng, nd) for _ in range(n)]


def _arrays(cfg: dict, seed: int):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(cfg["x_shape"]), rng.standard_normal(cfg["w_shape"])
    b = rng.standard_normal(cfg.get("c_out", cfg["w_shape"][0])) if cfg["bias"] else None
    return x, w, b


CONFIGS = [(nd, i, cfg) for nd, n in ((1, 6), (2, 3), (3, 4))
           for i, cfg in enumerate(_configs(nd, n, seed=nd))]


def _jconv_value_and_grads(impl: str, nd: int, cfg: dict, x, w, b, ct):
    """jconv's output and (dx, dw, db) in channels-first layout, computed in ``cfg``'s
    data format."""
    fmt = CONV_DATA_FORMATS[nd][int(cfg["channels_last"])]
    unbatched = len(cfg["x_shape"]) == nd + 1
    move = cfg["channels_last"]
    c_axis = 0 if unbatched else 1

    def to_fmt(a):
        return jnp.moveaxis(a, c_axis, -1) if move else a

    def from_fmt(a):
        return jnp.moveaxis(a, -1, c_axis) if move else a

    def f(x, w, b):
        return FN[nd](to_fmt(x), w, b, impl=impl, data_format=fmt, **cfg["kw"])

    args = [jnp.asarray(x), jnp.asarray(w)] + ([jnp.asarray(b)] if b is not None else [])
    y, vjp = jax.vjp(lambda *a: from_fmt(f(a[0], a[1], a[2] if len(a) > 2 else None)), *args)
    return y, vjp(jnp.asarray(ct))


@pytest.mark.parametrize("impl", ND_IMPLS)
@pytest.mark.parametrize("nd,i,cfg", CONFIGS, ids=[f"{nd}d-{i}" for nd, i, _ in CONFIGS])
def test_random_convs_match_the_oracle_values_and_gradients(nd, i, cfg, impl, x64,
                                                            record_error):
    x, w, b = _arrays(cfg, seed=100 * nd + i)
    want = testing.reference_convnd(x, w, b, **cfg["kw"])
    ct = np.random.default_rng(i).standard_normal(want.shape)
    y, grads = _jconv_value_and_grads(impl, nd, cfg, x, w, b, ct)
    tol = TOL.get(impl, 1e-12)
    assert record_error(f"conv{nd}d", "float64", impl, y, want) <= tol
    for got, ref in zip(grads, testing.reference_convnd_vjp(x, w, b, ct, **cfg["kw"])):
        assert record_error(f"conv{nd}d-grad", "float64", impl, got, ref) <= tol


def _torch_conv(nd: int, cfg: dict, x, w, b, ct):
    """PyTorch's output and gradients: the ConvNd module for the forms it takes (it applies
    padding_mode itself), F.pad + F.convNd for per-side pairs (a jconv extension)."""
    kw = cfg["kw"]
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    if isinstance(kw["padding"], tuple) and isinstance(kw["padding"][0], tuple):
        flat = [v for lo_hi in reversed(kw["padding"]) for v in lo_hi]
        mode = "constant" if kw["padding_mode"] == "zeros" else kw["padding_mode"]
        y = getattr(F, f"conv{nd}d")(F.pad(xt, flat, mode=mode), wt, bt, stride=kw["stride"],
                                     dilation=kw["dilation"], groups=kw["groups"])
    else:
        cls = getattr(torch.nn, f"Conv{nd}d")
        c_in = w.shape[1] * kw["groups"]
        m = cls(c_in, w.shape[0], w.shape[2:], bias=b is not None, **kw).double()
        m.weight, wt = (torch.nn.Parameter(wt),) * 2
        if bt is not None:
            m.bias, bt = (torch.nn.Parameter(bt),) * 2
        y = m(xt)
    (y * torch.tensor(ct)).sum().backward()
    grads = (xt.grad, wt.grad) + ((bt.grad,) if bt is not None else ())
    return y.detach().numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("nd,i,cfg", CONFIGS, ids=[f"{nd}d-{i}" for nd, i, _ in CONFIGS])
def test_oracle_and_jconv_match_pytorch(nd, i, cfg, x64):
    x, w, b = _arrays(cfg, seed=100 * nd + i)
    want = testing.reference_convnd(x, w, b, **cfg["kw"])
    ct = np.random.default_rng(i).standard_normal(want.shape)
    y_t, grads_t = _torch_conv(nd, cfg, x, w, b, ct)
    assert _err(want, y_t) <= 1e-12
    y, grads = _jconv_value_and_grads("lax", nd, cfg, x, w, b, ct)
    assert _err(y, y_t) <= 1e-12
    ref = [g for g in testing.reference_convnd_vjp(x, w, b, ct, **cfg["kw"]) if g is not None]
    for got, oracle, torch_g in zip(grads, ref, grads_t):
        assert _err(oracle, torch_g) <= 1e-12
        assert _err(got, torch_g) <= 1e-12


def draw_transpose(rng: np.random.Generator, nd: int) -> dict:
    groups = int(rng.choice([1, 2]))
    c_in, c_out_g = groups * int(rng.integers(1, 3)), int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    s = tuple(int(v) for v in rng.integers(1, 4, nd))
    d = tuple(int(v) for v in rng.integers(1, 3, nd))
    op = tuple(int(rng.integers(0, max(ss, dd))) for ss, dd in zip(s, d))
    p = tuple(int(rng.integers(0, 2)) for _ in range(nd))
    size = tuple(int(v) for v in rng.integers(2, 5 if nd == 3 else 6, nd))
    n = int(rng.integers(1, 3))
    return dict(x_shape=(n, c_in, *size), w_shape=(c_in, c_out_g, *k), c_out=c_out_g * groups,
                bias=bool(rng.random() < 0.6),
                kw=dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d))


T_CONFIGS = [(nd, i, draw_transpose(np.random.default_rng(10 * nd + i), nd))
             for nd in (1, 3) for i in range(3)]


@pytest.mark.parametrize("impl", ND_IMPLS)
@pytest.mark.parametrize("nd,i,cfg", T_CONFIGS, ids=[f"{nd}d-{i}" for nd, i, _ in T_CONFIGS])
def test_random_transposed_convs_match_oracle_and_pytorch(nd, i, cfg, impl, x64,
                                                          record_error):
    x, w, b = _arrays(cfg, seed=7 * nd + i)
    want = testing.reference_conv_transposend(x, w, b, **cfg["kw"])
    ct = np.random.default_rng(i).standard_normal(want.shape)
    args = [jnp.asarray(x), jnp.asarray(w)] + ([jnp.asarray(b)] if b is not None else [])
    y, vjp = jax.vjp(lambda *a: FN_T[nd](*a, impl=impl, **cfg["kw"]), *args)
    tol = TOL.get(impl, 1e-12)
    assert record_error(f"convT{nd}d", "float64", impl, y, want) <= tol
    ref = testing.reference_conv_transposend_vjp(x, w, b, ct, **cfg["kw"])
    for got, oracle in zip(vjp(jnp.asarray(ct)), ref):
        assert record_error(f"convT{nd}d-g", "float64", impl, got, oracle) <= tol
    if impl == "lax":
        tensors = [torch.tensor(a, requires_grad=True) for a in (x, w, b) if a is not None]
        y_t = getattr(F, f"conv_transpose{nd}d")(*tensors, **cfg["kw"])
        (y_t * torch.tensor(ct)).sum().backward()
        assert _err(want, y_t.detach().numpy()) <= 1e-12
        for oracle, t in zip(ref, tensors):
            assert _err(oracle, t.grad.numpy()) <= 1e-12


@pytest.mark.parametrize("impl", ["lax"] + [pytest.param(i, marks=pytest.mark.slow)
                                            for i in ND_IMPLS[1:]])
@pytest.mark.parametrize("nd,mode", [(1, "reflect"), (3, "circular")])
def test_order2_gradients(nd, mode, impl, x64):
    rng = np.random.default_rng(nd)
    x = jnp.asarray(rng.standard_normal((1, 2, *(5, 3, 3)[:nd])))
    w = jnp.asarray(rng.standard_normal((2, 2, *(3, 2, 2)[:nd])))
    # jit: check_grads evaluates each derivative many times; compiled once, each is fast.
    check_grads(jax.jit(lambda x, w: FN[nd](x, w, padding=1, stride=(2, 1, 1)[:nd],
                                            impl=impl, padding_mode=mode)),
                (x, w), order=2, modes=("rev",))
    if nd == 1:
        check_grads(jax.jit(lambda x, w: FN_T[nd](x, w, stride=2, padding=1, output_padding=1,
                                                  impl=impl)), (x, w), order=2, modes=("rev",))


def test_padding_mode_semantics_by_hand():
    x = jnp.array([[[1.0, 2.0, 3.0]]])
    e = jnp.ones((1, 1, 1))  # a 1-tap identity kernel shows the padded input
    pad = dict(padding=((2, 1),))
    assert jconv.conv1d(x, e, **pad, padding_mode="reflect").tolist() == [[[3, 2, 1, 2, 3, 2]]]
    assert jconv.conv1d(x, e, **pad, padding_mode="replicate").tolist() == [[[1, 1, 1, 2, 3, 3]]]
    assert jconv.conv1d(x, e, **pad, padding_mode="circular").tolist() == [[[2, 3, 1, 2, 3, 1]]]
    assert jconv.conv1d(x, e, **pad).tolist() == [[[0, 0, 1, 2, 3, 0]]]
    # 'same' with an even kernel puts the extra element at the end, as nn.Conv1d does.
    y = jconv.conv1d(x, jnp.array([[[1.0, 10.0]]]), padding="same", padding_mode="reflect")
    assert y.tolist() == [[[21.0, 32.0, 23.0]]]


def test_convnd_infers_the_dims_and_the_layers_agree():
    x, w = jnp.ones((2, 3, 5, 6, 7)), jnp.ones((4, 3, 2, 2, 2))
    assert jconv.convnd(x, w).shape == jconv.conv3d(x, w).shape == (2, 4, 4, 5, 6)
    xl = jnp.ones((2, 6, 7, 3))
    assert jconv.convnd(xl, jnp.ones((4, 3, 2, 2)), data_format="NHWC").shape == (2, 5, 6, 4)
    assert jconv.convnd(jnp.ones((3, 9)), jnp.ones((4, 3, 3)), stride=2).shape == (4, 4)


def test_registry_records_the_dims_each_implementation_computes():
    ndims = {name: impl.ndims for name, impl in jconv.CONV_IMPLS.items()}
    assert ndims == {"lax": (1, 2, 3), "im2col": (1, 2, 3), "loops": (1, 2, 3),
                     "winograd_f4x4": (2,), "winograd_f2x2": (2,), "fft": (1, 2, 3),
                     "pallas": (2,), "onednn": (1, 2, 3), "auto": (1, 2, 3)}


X1, W1 = jnp.ones((1, 2, 5)), jnp.ones((3, 2, 3))
X3, W3 = jnp.ones((1, 2, 4, 4, 4)), jnp.ones((3, 2, 3, 3, 3))

ERRORS = [
    (lambda: jconv.conv1d(X1, W1, padding_mode="mirror"), ValueError,
     r"padding_mode must be one of \('zeros', 'reflect', 'replicate', 'circular'\), "
     r"got 'mirror'"),
    (lambda: jconv.conv1d(X1, W1, padding=5, padding_mode="reflect"), ValueError,
     r"padding_mode='reflect' needs padding < the input size along L \(PyTorch rule\), "
     r"got padding \(5, 5\) for size 5"),
    (lambda: jconv.conv3d(X3, W3, padding=(0, 4, 0), padding_mode="reflect"), ValueError,
     r"needs padding < the input size along H"),
    (lambda: jconv.conv1d(X1, W1, padding=6, padding_mode="circular"), ValueError,
     r"padding_mode='circular' needs padding <= the input size along L \(it wraps around "
     r"once, PyTorch rule\), got padding \(6, 6\) for size 5"),
    (lambda: jconv.conv1d(jnp.ones((1, 2, 0)), jnp.ones((3, 2, 1)), padding=1,
                          padding_mode="replicate"), ValueError,
     r"padding_mode='replicate' needs a non-empty input along L, got size 0"),
    (lambda: jconv.conv1d(X1, W1, impl="winograd_f4x4"), ValueError,
     r"impl='winograd_f4x4' computes 2-D convolutions only, got a 1-D one; use one of "
     r"\('lax', 'im2col', 'loops', 'fft', 'onednn', 'auto'\)"),
    (lambda: jconv.conv3d(X3, W3, impl="pallas"), ValueError,
     r"impl='pallas' computes 2-D convolutions only, got a 3-D one"),
    (lambda: jconv.conv_transpose3d(X3, jnp.ones((2, 3, 3, 3, 3)), impl="winograd_f2x2"),
     ValueError, r"impl='winograd_f2x2' computes 2-D convolutions only, got a 3-D one"),
    (lambda: jconv.conv1d(X1, W1, data_format="NCHW"), ValueError,
     r"data_format must be one of \('NCL', 'NLC'\), got 'NCHW'"),
    (lambda: jconv.conv3d(X3, W3, data_format="NHWC"), ValueError,
     r"data_format must be one of \('NCDHW', 'NDHWC'\), got 'NHWC'"),
    (lambda: jconv.conv3d(jnp.ones((2, 4, 4)), W3), ValueError,
     r"x must be 4-D or 5-D \(N, C_in, D, H, W\) or \(C_in, D, H, W\) for "
     r"data_format='NCDHW', got shape \(2, 4, 4\)"),
    (lambda: jconv.conv1d(X1, W3), ValueError,
     r"w must be 3-D \(C_out, C_in/groups, kL\), got shape \(3, 2, 3, 3, 3\)"),
    (lambda: jconv.conv1d(jnp.ones((1, 5, 2)), W1, data_format="NLC", groups=2), ValueError,
     r"groups=2 must divide both C_in=2 and C_out=3"),
    (lambda: jconv.convnd(X1, jnp.ones((3, 2))), ValueError,
     r"w must be 3-D, 4-D or 5-D \(C_out, C_in/groups, \*kernel\) for 1, 2 or 3 spatial "
     r"dims, got shape \(3, 2\)"),
    (lambda: jconv.conv3d(X3, W3, padding=(1, 1)), TypeError,
     r"padding must be an int, a tuple of 3 ints, 3 \(low, high\) pairs, 'valid' or "
     r"'same', got \(1, 1\)"),
    (lambda: jconv.conv1d(X1, W1, padding=(1, 2)), TypeError,
     r"padding must be an int, a 1-tuple, one \(low, high\) pair, 'valid' or 'same', "
     r"got \(1, 2\)"),
    (lambda: jconv.conv1d(X1, W1, padding="full"), ValueError,
     r"padding must be .*'valid' or 'same', got 'full'"),
    (lambda: jconv.conv3d(X3, W3, stride=(1, 2)), TypeError,
     r"stride must be an int or a tuple of 3 ints, got \(1, 2\)"),
    (lambda: jconv.conv1d(X1, W1, dilation=(0,)), ValueError,
     r"dilation must be >= 1 in every dimension, got \(0,\)"),
    (lambda: jconv.conv1d(X1, W1, stride=2, padding="same", padding_mode="circular"),
     ValueError, r"padding='same' requires stride 1, got stride=\(2,\)"),
    (lambda: jconv.conv3d(X3, jnp.ones((3, 2, 5, 5, 5))), ValueError,
     r"kernel larger than the padded input along D"),
    (lambda: jconv.conv_transpose1d(X1, jnp.ones((3, 2, 3))), ValueError,
     r"channel mismatch: x has C_in=2 channels but w has shape \(3, 2, 3\), expected "
     r"\(C_in=2, C_out/groups, kL\)"),
    (lambda: jconv.conv_transpose3d(X3, jnp.ones((2, 2, 3, 3, 3)), stride=2,
                                    output_padding=(0, 2, 0)), ValueError,
     r"output_padding must be smaller than either stride or dilation \(PyTorch rule\)"),
    (lambda: jconv.conv_transpose1d(X1, jnp.ones((2, 2, 3)), data_format="NHWC"), ValueError,
     r"data_format must be one of \('NCL', 'NLC'\), got 'NHWC'"),
    (lambda: jconv.conv_transpose3d(X3, jnp.ones((2, 2, 3, 3))), ValueError,
     r"w must be 5-D \(C_in, C_out/groups, kD, kH, kW\), got shape \(2, 2, 3, 3\)"),
    (lambda: jconv.conv_spec((1, 2, 5), (3, 2, 3), padding_mode="zero"), ValueError,
     r"padding_mode must be one of"),
]


@pytest.mark.parametrize("call,exc,match", ERRORS, ids=range(len(ERRORS)))
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_padding_modes_match_torch_error_boundaries():
    """The sizes at which PyTorch starts refusing are the ones jconv refuses at."""
    x = torch.zeros(1, 1, 3)
    F.pad(x, (2, 2), mode="reflect")
    F.pad(x, (3, 3), mode="circular")
    with pytest.raises(RuntimeError):
        F.pad(x, (3, 3), mode="reflect")
    with pytest.raises(RuntimeError):
        F.pad(x, (4, 4), mode="circular")
    xj, w = jnp.zeros((1, 1, 3)), jnp.ones((1, 1, 1))
    jconv.conv1d(xj, w, padding=2, padding_mode="reflect")
    jconv.conv1d(xj, w, padding=3, padding_mode="circular")
    with pytest.raises(ValueError, match="reflect"):
        jconv.conv1d(xj, w, padding=3, padding_mode="reflect")
    with pytest.raises(ValueError, match="circular"):
        jconv.conv1d(xj, w, padding=4, padding_mode="circular")


S = jax.ShapeDtypeStruct


@pytest.mark.parametrize("platform", ("cuda", "tpu"))
@pytest.mark.parametrize("impl", ND_IMPLS)
def test_nd_functions_and_gradients_lower_for_accelerators(impl, platform):
    """conv1d (reflect), conv3d (circular), conv_transpose1d/3d and their gradients lower
    for the accelerator; sized so that the CPU plan would chunk the batch, and the
    accelerator program has no sequential chunk loop."""

    def loss(x1, w1, x3, w3):
        y = jnp.sum(jconv.conv1d(x1, w1, padding="same", padding_mode="reflect", impl=impl,
                                 dilation=2) ** 2)
        y += jnp.sum(jconv.conv3d(x3, w3, padding=1, padding_mode="circular", impl=impl) ** 2)
        y += jnp.sum(jconv.conv_transpose1d(x1, w1.transpose(1, 0, 2), stride=2, impl=impl))
        y += jnp.sum(jconv.conv_transpose3d(x3, w3.transpose(1, 0, 2, 3, 4), stride=2,
                                            padding=1, output_padding=1, impl=impl))
        return y

    args = (S((32, 64, 512), jnp.float32), S((64, 64, 3), jnp.float32),
            S((16, 8, 8, 16, 16), jnp.float32), S((8, 8, 3, 3, 3), jnp.float32))
    fn = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
    text = jax.export.export(jax.jit(fn), platforms=[platform])(*args).mlir_module()
    assert "func.func public @main" in text
    assert "stablehlo.while" not in text


@pytest.mark.parametrize("nd,i,cfg", CONFIGS[::2], ids=[f"{nd}d-{i}" for nd, i, _ in CONFIGS[::2]])
def test_shape_and_cost_helpers_agree_with_the_conv(nd, i, cfg):
    kw = {k: v for k, v in cfg["kw"].items() if k not in ("groups", "padding_mode")}
    x_shape = cfg["x_shape"] if len(cfg["x_shape"]) == nd + 2 else (1, *cfg["x_shape"])
    spec = jconv.conv_spec(x_shape, cfg["w_shape"], groups=cfg["kw"]["groups"], **kw)
    k = cfg["w_shape"][2:]
    assert jconv.conv_output_shape(x_shape[2:], k, **kw) == spec.out_size
    c_out, cg = cfg["w_shape"][:2]
    macs = jconv.conv_macs(x_shape, c_out, k, groups=cfg["kw"]["groups"], **kw)
    assert macs == x_shape[0] * c_out * np.prod(spec.out_size) * cg * np.prod(k)
    assert jconv.conv_flops(x_shape, c_out, k, groups=cfg["kw"]["groups"], bias=True,
                            **kw) == 2 * macs + x_shape[0] * c_out * np.prod(spec.out_size)
    assert jconv.conv_params(x_shape[1], c_out, k, cfg["kw"]["groups"],
                             ndim=nd) == c_out * cg * np.prod(k) + c_out


@pytest.mark.parametrize("call,exc,match", [
    (lambda: jconv.conv_output_shape(8, 3, ndim=4), ValueError, r"ndim must be 1, 2 or 3, got 4"),
    (lambda: jconv.conv_output_shape((8, 8, 8), (3, 3)), TypeError,
     r"kernel_size must be an int or a tuple of 3 ints, got \(3, 3\)"),
    (lambda: jconv.conv_output_shape((4,), 7), ValueError,
     r"kernel_size=7 with dilation=1 does not fit in input \(4,\)"),
    (lambda: jconv.conv_macs((1, 2, 3, 4, 5, 6, 7), 4, 3), ValueError,
     r"input_shape must be \(N, C_in, \*spatial\) with 1, 2 or 3 spatial dims"),
    (lambda: jconv.conv_macs((2, 8, 8), 4, 3, ndim=3), ValueError,
     r"input_shape must be \(N, C, D, H, W\) or \(C, D, H, W\), got \(2, 8, 8\)"),
])
def test_shape_and_cost_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
