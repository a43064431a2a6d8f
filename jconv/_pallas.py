"""``impl="pallas"``: 2-D convolution as hand-written Pallas kernels (implicit GEMM).

The forward kernel tiles *output pixels x output channels*; each program loops over the
kH*kW kernel taps and the input-channel blocks and accumulates ``window @ w[tap]`` in
float32. The input gradient is the same kernel run on the (stride-dilated, padded)
cotangent with the flipped, transposed weights; the weight gradient is a second kernel that
contracts each tap's input window with the cotangent. Both are wired through
``jax.custom_vjp`` so that every derivative order runs Pallas kernels (the backward of the
weight-gradient kernel is again a forward and an input-gradient conv).

The kernels never reshape or stride inside: the padded input is split into its
``stride_h*stride_w`` *phases* (space-to-depth) and each phase's image is flattened to
``(Hq*Wq, C)`` rows. Output pixel ``(oh, ow)`` is computed on a "wide" row grid
``m = oh*Wq + ow`` (``ow < Wq``, columns ``ow >= W_out`` are discarded), so tap ``(i, j)``
reads the contiguous rows ``m + offset(i, j)`` of one phase: one 2-D slice per tap.
See ``docs/pallas.md`` for the picture, the tile-size rule and what each backend supports.

Backends are picked by the *lowering* platform (``lax.platform_dependent``): Triton on
CUDA/ROCm, Mosaic on TPU, and the Pallas interpreter anywhere else (CPU: slow, for tests).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from ._spec import ConvSpec, Pair, PadPairs, accum_dtype

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu")
RULES: tuple[str, ...] = ("triton", "tpu")


class Geometry(NamedTuple):
    """Static description of one pallas conv call (hashable: a ``custom_vjp`` nondiff arg).

    ``act`` is None, "relu" or "gelu" (tanh approximation); ``rule`` is the tile rule used
    when the call runs in interpret mode (on CUDA/TPU the platform decides it).
    """

    kernel: Pair
    stride: Pair
    dilation: Pair
    padding: PadPairs
    depthwise: bool
    act: str | None = None
    precision: object = None
    rule: str = "triton"


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def _pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def _largest_dividing(v: int, choices: tuple[int, ...]) -> int:
    return next((c for c in choices if v % c == 0), v)


class Tiles(NamedTuple):
    """Tile sizes of one call: rows of output pixels, output channels, input channels
    (contraction block) and the padded channel counts they divide."""

    tm: int
    tn: int
    tk: int
    c_in: int
    c_out: int


def tile_rule(rule: str, m: int, c_in: int, c_out: int, depthwise: bool) -> Tiles:
    """The block-size rule (documented in ``docs/pallas.md``).

    ``m``: output pixels per image on the wide grid; ``c_in``/``c_out``: channels.

    * ``"triton"`` (GPU): every loaded tile must have a power-of-2 size and ``tl.dot`` needs
      each dim >= 16, so channels are padded to powers of 2 (>= 16) and blocked at 64 (input,
      the K of each dot) and 128 (output); 128 pixel rows per program, fewer for small maps.
    * ``"tpu"`` (Mosaic): blocks' last two dims must be multiples of (8, 128) or the whole
      axis; channels above 128 are padded to 128 multiples and blocked at 512 (input) and
      256 (output); pixel rows are a multiple of 8, up to 512 (256 for 256-wide outputs) so
      the float32 accumulator stays at or under 128K elements.

    >>> tile_rule("triton", 56 * 58, 64, 64, False)
    Tiles(tm=128, tn=64, tk=64, c_in=64, c_out=64)
    >>> tile_rule("tpu", 7 * 9, 512, 512, False)
    Tiles(tm=64, tn=256, tk=512, c_in=512, c_out=512)
    """
    if rule == "triton":
        tm = min(128, max(16, _pow2(m)))
        if depthwise:
            tn = min(64, _pow2(c_out))
            return Tiles(tm, tn, tn, _round_up(c_in, tn), _round_up(c_out, tn))
        tk = min(64, max(16, _pow2(c_in)))
        tn = min(128, max(16, _pow2(c_out)))
        return Tiles(tm, tn, tk, _round_up(c_in, tk), _round_up(c_out, tn))
    if rule == "tpu":
        def lanes(c: int) -> int:
            return _round_up(c, 128) if c > 128 else _round_up(c, 8)
        cp_in, cp_out = lanes(c_in), lanes(c_out)
        if depthwise:
            tn = _largest_dividing(cp_out, (128,)) if cp_out > 128 else cp_out
            tm = min(_round_up(m, 8), 512)
            return Tiles(tm, tn, tn, cp_out, cp_out)
        tk = _largest_dividing(cp_in, (512, 256, 128)) if cp_in > 128 else cp_in
        tn = _largest_dividing(cp_out, (256, 128)) if cp_out > 128 else cp_out
        tm = min(_round_up(m, 8), 256 if tn > 128 else 512)
        return Tiles(tm, tn, tk, cp_in, cp_out)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


class _Layout(NamedTuple):
    """How the padded input maps onto phase-major flat rows (all static ints)."""

    phases: int
    wq: int
    rows: int          # L: flat rows per phase, enough for every tap's slice
    m: int             # Ho*Wq: wide output rows actually needed
    m_pad: int         # m rounded up to the pixel tile
    taps: tuple[tuple[int, int], ...]   # (phase, row offset) per tap, row-major


def _layout(geo: Geometry, in_hw: Pair, tm: int) -> tuple[_Layout, Pair]:
    (kh, kw), (sh, sw), (dh, dw), pads = geo.kernel, geo.stride, geo.dilation, geo.padding
    hp, wp = in_hw[0] + sum(pads[0]), in_hw[1] + sum(pads[1])
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    wq = -(-wp // sw)
    taps = tuple((((i * dh) % sh) * sw + (j * dw) % sw, ((i * dh) // sh) * wq + (j * dw) // sw)
                 for i in range(kh) for j in range(kw))
    m = ho * wq
    m_pad = _round_up(m, tm)
    rows = _round_up(m_pad + max(off for _, off in taps), 8)
    return _Layout(sh * sw, wq, rows, m, m_pad, taps), (ho, wo)


def _phase_rows(x: jnp.ndarray, geo: Geometry, lay: _Layout, c_pad: int) -> jnp.ndarray:
    """(N, H, W, C) -> (N, phases, rows, c_pad): padded, split into stride phases, flattened."""
    n, h, w, c = x.shape
    (sh, sw), pads = geo.stride, geo.padding
    hp, wp = h + sum(pads[0]), w + sum(pads[1])
    hq = -(-hp // sh)
    x = jnp.pad(x, ((0, 0), (pads[0][0], pads[0][1] + hq * sh - hp),
                    (pads[1][0], pads[1][1] + lay.wq * sw - wp), (0, c_pad - c)))
    x = x.reshape(n, hq, sh, lay.wq, sw, c_pad).transpose(0, 2, 4, 1, 3, 5)
    x = x.reshape(n, sh * sw, hq * lay.wq, c_pad)
    extra = lay.rows - hq * lay.wq
    # Rows past the last tap's slice are never read: cut them, or pad with zeros to reach it.
    return x[:, :, :lay.rows] if extra < 0 else jnp.pad(x, ((0, 0), (0, 0), (0, extra), (0, 0)))


def _epilogue(acc: jnp.ndarray, act: str | None) -> jnp.ndarray:
    if act == "relu":
        return jnp.maximum(acc, 0.0)
    if act == "gelu":
        # tanh form: Triton has no erf lowering; equals torch's gelu(approximate="tanh").
        return jax.nn.gelu(acc, approximate=True)
    return acc


def _idiv(a: jnp.ndarray, b: int) -> jnp.ndarray:
    # Grid indices are non-negative: truncating division is floor division, and unlike
    # ``//`` it lowers without the sign fix-up (whose Mosaic rule needs a real TPU to query).
    return lax.div(a, jnp.asarray(b, a.dtype))


def _irem(a: jnp.ndarray, b: int) -> jnp.ndarray:
    return lax.rem(a, jnp.asarray(b, a.dtype))


def _tap_phase_offset(t: jnp.ndarray, geo_kernel_w: int, dilation: Pair, stride: Pair,
                      wq: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The traced version of :func:`_layout`'s (phase, row offset) for tap index ``t``."""
    (dh, dw), (sh, sw) = dilation, stride
    rh, rw = _idiv(t, geo_kernel_w) * dh, _irem(t, geo_kernel_w) * dw
    return (_irem(rh, sh) * sw + _irem(rw, sw),
            _idiv(rh, sh) * wq + _idiv(rw, sw))


def _fwd_kernel(*refs: Any, taps: tuple[tuple[int, int], ...], tm: int, tk: int, n_k: int,
                depthwise: bool, act: str | None, has_bias: bool, save_z: bool,
                precision: object, acc_t: jnp.dtype) -> None:
    """One (image, pixel block, out-channel block) program: sum over taps x channel blocks."""
    x_ref, w_ref = refs[0], refs[1]
    b_ref = refs[2] if has_bias else None
    outs = refs[2 + has_bias:]
    m0 = pl.multiple_of(pl.program_id(1) * tm, tm)
    tn = outs[0].shape[-1]

    def block(k: int | jnp.ndarray, acc: jnp.ndarray) -> jnp.ndarray:
        # Mosaic needs to know dynamic lane offsets are tile-aligned.
        c0 = k * tk if isinstance(k, int) else pl.multiple_of(k * tk, tk)
        for t, (phase, off) in enumerate(taps):
            if depthwise:
                a = x_ref[phase, pl.ds(m0 + off, tm), :].astype(acc_t)
                acc = acc + a * w_ref[pl.ds(t, 1), :].astype(acc_t)
            else:
                a = x_ref[phase, pl.ds(m0 + off, tm), pl.ds(c0, tk)]
                acc = acc + jnp.dot(a, w_ref[t, pl.ds(c0, tk), :], precision=precision,
                                    preferred_element_type=acc_t)
        return acc

    acc = jnp.zeros((tm, tn), acc_t)
    acc = block(0, acc) if n_k == 1 else lax.fori_loop(0, n_k, block, acc)
    if has_bias:
        acc = acc + b_ref[...].astype(acc_t)
    outs[0][...] = _epilogue(acc, act).astype(outs[0].dtype)
    if save_z:
        outs[1][...] = acc.astype(outs[1].dtype)


def _compute_dtype(dtype: jnp.dtype, rule: str) -> jnp.dtype:
    # TPUs have no float16 arithmetic: Mosaic kernels see float16 operands as float32.
    return jnp.dtype(jnp.float32) if rule == "tpu" and dtype == jnp.float16 else jnp.dtype(dtype)


def _forward(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None, geo: Geometry, rule: str,
             interpret: bool, save_z: bool) -> tuple[jnp.ndarray, ...]:
    """NHWC x, OIHW w -> NHWC act(conv + b) [and the pre-activation], in x.dtype."""
    n, h, wd, c = x.shape
    c_out = w.shape[0]
    kh, kw = geo.kernel
    out_dtype = x.dtype
    cdt = _compute_dtype(x.dtype, rule)
    x, w = x.astype(cdt), w.astype(cdt)
    probe, _ = _layout(geo, (h, wd), 8)
    tiles = tile_rule(rule, probe.m, c, c_out, geo.depthwise)
    lay, (ho, wo) = _layout(geo, (h, wd), tiles.tm)
    xs = _phase_rows(x, geo, lay, tiles.c_in)
    if geo.depthwise:
        # (C, 1, kH, kW) -> (taps, C): one row of per-channel weights per tap.
        wt = jnp.pad(w.reshape(c_out, kh * kw).T, ((0, 0), (0, tiles.c_out - c_out)))
        x_spec = pl.BlockSpec((None, lay.phases, lay.rows, tiles.tn), lambda i, m, j: (i, 0, 0, j))
        w_spec = pl.BlockSpec((kh * kw, tiles.tn), lambda i, m, j: (0, j))
        n_k = 1
    else:
        # (C_out, C_in, kH, kW) -> (taps, C_in, C_out): one (K, N) matrix per tap.
        wt = w.transpose(2, 3, 1, 0).reshape(kh * kw, c, c_out)
        wt = jnp.pad(wt, ((0, 0), (0, tiles.c_in - c), (0, tiles.c_out - c_out)))
        x_spec = pl.BlockSpec((None, lay.phases, lay.rows, tiles.c_in),
                              lambda i, m, j: (i, 0, 0, 0))
        w_spec = pl.BlockSpec((kh * kw, tiles.c_in, tiles.tn), lambda i, m, j: (0, 0, j))
        n_k = tiles.c_in // tiles.tk
    args, in_specs = [xs, wt], [x_spec, w_spec]
    if b is not None:
        args.append(jnp.pad(b.astype(cdt), (0, tiles.c_out - c_out)).reshape(1, tiles.c_out))
        in_specs.append(pl.BlockSpec((1, tiles.tn), lambda i, m, j: (0, j)))
    grid = (n, lay.m_pad // tiles.tm, tiles.c_out // tiles.tn)
    out_block = pl.BlockSpec((None, tiles.tm, tiles.tn), lambda i, m, j: (i, m, j))
    shape = jax.ShapeDtypeStruct((n, lay.m_pad, tiles.c_out), cdt)
    kernel = functools.partial(
        _fwd_kernel, taps=lay.taps, tm=tiles.tm, tk=tiles.tk, n_k=n_k, depthwise=geo.depthwise,
        act=geo.act, has_bias=b is not None, save_z=save_z, precision=geo.precision,
        acc_t=accum_dtype(cdt))
    outs = pl.pallas_call(
        kernel, out_shape=[shape] * (1 + save_z), grid=grid, in_specs=in_specs,
        out_specs=[out_block] * (1 + save_z), interpret=interpret,
        compiler_params=_compiler_params(rule, interpret, 3), name="jconv_conv_fwd")(*args)
    return tuple(o[:, :lay.m, :c_out].reshape(n, ho, lay.wq, c_out)[:, :, :wo].astype(out_dtype)
                 for o in outs)


def _compiler_params(rule: str, interpret: bool, n_grid: int, n_reduce: int = 0) -> object:
    if interpret:
        return None
    if rule == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        return pltpu.CompilerParams(
            dimension_semantics=("parallel",) * (n_grid - n_reduce) + ("arbitrary",) * n_reduce)
    from jax.experimental.pallas import triton as pltriton
    return pltriton.CompilerParams(num_warps=4, num_stages=2)


def _wgrad_kernel_loop(x_ref: Any, g_ref: Any, o_ref: Any, *, kernel: Pair, dilation: Pair,
                       stride: Pair, wq: int, tm: int, n_img: int, n_m: int, depthwise: bool,
                       precision: object, acc_t: jnp.dtype) -> None:
    """Triton: one (image split, tap, in block, out block) program; loops over its images
    and every pixel block, accumulating ``window^T @ g`` in float32."""
    phase, off = _tap_phase_offset(pl.program_id(1), kernel[1], dilation, stride, wq)
    n0 = pl.program_id(0) * n_img

    def body(step: jnp.ndarray, acc: jnp.ndarray) -> jnp.ndarray:
        i, mb = n0 + _idiv(step, n_m), _irem(step, n_m)
        m0 = pl.multiple_of(mb * tm, tm)
        a = x_ref[i, phase, pl.ds(m0 + off, tm), :]
        g = g_ref[i, pl.ds(m0, tm), :]
        if depthwise:
            return acc + jnp.sum(a.astype(acc_t) * g.astype(acc_t), axis=0,
                                 keepdims=True)
        return acc + lax.dot_general(a, g, (((0,), (0,)), ((), ())), precision=precision,
                                     preferred_element_type=acc_t)

    acc = jnp.zeros(o_ref.shape, acc_t)
    o_ref[...] = lax.fori_loop(0, n_img * n_m, body, acc)


def _wgrad_kernel_grid(x_ref: Any, g_ref: Any, o_ref: Any, *, tm: int,
                       offset: Callable[[jnp.ndarray], jnp.ndarray], depthwise: bool,
                       precision: object, acc_t: jnp.dtype) -> None:
    """Mosaic TPU: images and pixel blocks are the two innermost ("arbitrary") grid axes and
    the output block stays resident in VMEM while they accumulate into it."""
    t, i, mb = pl.program_id(0), pl.program_id(3), pl.program_id(4)

    @pl.when((i == 0) & (mb == 0))
    def _() -> None:
        o_ref[...] = jnp.zeros(o_ref.shape, o_ref.dtype)

    m0 = pl.multiple_of(mb * tm, tm)
    a = x_ref[pl.ds(m0 + offset(t), tm), :]
    g = g_ref[...]
    if depthwise:
        o_ref[...] += jnp.sum(a.astype(acc_t) * g.astype(acc_t), axis=0,
                              keepdims=True)
    else:
        o_ref[...] += lax.dot_general(a, g, (((0,), (0,)), ((), ())), precision=precision,
                                      preferred_element_type=acc_t)


def _weight_grad_impl(x: jnp.ndarray, g: jnp.ndarray, geo: Geometry, rule: str,
                      interpret: bool) -> jnp.ndarray:
    """dw (OIHW, x.dtype) from NHWC x (N, H, W, C_in) and NHWC cotangent g (N, Ho, Wo, C_out)."""
    n, h, wd, c = x.shape
    _, ho, wo, c_out = g.shape
    kh, kw = geo.kernel
    taps = kh * kw
    out_dtype = x.dtype
    cdt = _compute_dtype(x.dtype, rule)
    x, g = x.astype(cdt), g.astype(cdt)
    probe, _ = _layout(geo, (h, wd), 8)
    tiles = tile_rule(rule, probe.m, c, c_out, geo.depthwise)
    lay, _ = _layout(geo, (h, wd), tiles.tm)
    xs = _phase_rows(x, geo, lay, tiles.c_in)
    # Cotangent on the same wide row grid; the discarded columns and tail rows are zero.
    gw = jnp.pad(g, ((0, 0), (0, 0), (0, lay.wq - wo), (0, tiles.c_out - c_out)))
    gw = jnp.pad(gw.reshape(n, ho * lay.wq, tiles.c_out), ((0, 0), (0, lay.m_pad - lay.m), (0, 0)))
    n_m = lay.m_pad // tiles.tm
    acc_t = accum_dtype(cdt)
    if geo.depthwise:
        tci = tco = tiles.tn
        out_shape, n_ci = (taps, 1, tiles.c_out), 1
    else:
        # The contraction here is over pixels: the K of the dot is tm, channel blocks are M, N.
        tci, tco = (min(tiles.c_in, 64), min(tiles.c_out, 64)) if rule == "triton" else \
            (tiles.tk if tiles.tk <= 256 else 256, tiles.tn)
        out_shape, n_ci = (taps, tiles.c_in, tiles.c_out), tiles.c_in // tci
    n_co = tiles.c_out // tco
    blocks = (tci, tco, n_ci, n_co, n_m, out_shape, acc_t)
    call = _wgrad_grid if rule == "tpu" else _wgrad_loop
    dwt = call(xs, gw, geo, lay, tiles, blocks, rule, interpret)
    if geo.depthwise:
        dwt = dwt[:, 0, :c_out].T.reshape(c_out, 1, kh, kw)
    else:
        dwt = dwt[:, :c, :c_out].reshape(kh, kw, c, c_out).transpose(3, 2, 0, 1)
    return dwt.astype(out_dtype)


def _wgrad_grid(xs: jnp.ndarray, gw: jnp.ndarray, geo: Geometry, lay: _Layout, tiles: Any,
                blocks: tuple, rule: str, interpret: bool) -> jnp.ndarray:
    """The weight-gradient kernel on a (tap, C_in block, C_out block, image, row block) grid
    that accumulates in its output block (TPU): (taps, C_in, C_out) in ``acc_t``."""
    tci, tco, n_ci, n_co, n_m, out_shape, acc_t = blocks
    kw = geo.kernel[1]

    def phase(t: jnp.ndarray) -> jnp.ndarray:
        return _tap_phase_offset(t, kw, geo.dilation, geo.stride, lay.wq)[0]

    def offset(t: jnp.ndarray) -> jnp.ndarray:
        return _tap_phase_offset(t, kw, geo.dilation, geo.stride, lay.wq)[1]

    ci_blk = (lambda t, a, bb, i, mb: (i, phase(t), 0, bb)) if geo.depthwise else \
        (lambda t, a, bb, i, mb: (i, phase(t), 0, a))
    in_specs = [pl.BlockSpec((None, None, lay.rows, tci), ci_blk),
                pl.BlockSpec((None, tiles.tm, tco), lambda t, a, bb, i, mb: (i, mb, bb))]
    out_spec = pl.BlockSpec((None, 1 if geo.depthwise else tci, tco),
                            lambda t, a, bb, i, mb: (t, 0 if geo.depthwise else a, bb))
    kernel = functools.partial(_wgrad_kernel_grid, tm=tiles.tm, offset=offset,
                               depthwise=geo.depthwise, precision=geo.precision, acc_t=acc_t)
    grid = (out_shape[0], n_ci, n_co, xs.shape[0], n_m)
    return pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct(out_shape, acc_t), grid=grid,
        in_specs=in_specs, out_specs=out_spec, interpret=interpret,
        compiler_params=_compiler_params(rule, interpret, 5, 2),
        name="jconv_conv_wgrad")(xs, gw)


def _wgrad_loop(xs: jnp.ndarray, gw: jnp.ndarray, geo: Geometry, lay: _Layout, tiles: Any,
                blocks: tuple, rule: str, interpret: bool) -> jnp.ndarray:
    """The weight-gradient kernel that loops over images and row blocks inside each program
    (GPU, interpret): (taps, C_in, C_out) in ``acc_t``."""
    tci, tco, n_ci, n_co, n_m, out_shape, acc_t = blocks
    n, taps = xs.shape[0], out_shape[0]
    # Split the batch so the grid has enough programs to fill a GPU (about 256); the
    # partial sums are added outside the kernel.
    programs = taps * n_ci * n_co
    splits = max(d for d in range(1, n + 1)
                 if n % d == 0 and d * programs <= max(256, programs))
    x_spec = pl.BlockSpec((n, lay.phases, lay.rows, tci),
                          (lambda s, t, a, bb: (0, 0, 0, bb)) if geo.depthwise else
                          (lambda s, t, a, bb: (0, 0, 0, a)))
    g_spec = pl.BlockSpec((n, lay.m_pad, tco), lambda s, t, a, bb: (0, 0, bb))
    out_spec = pl.BlockSpec((None, None, 1 if geo.depthwise else tci, tco),
                            lambda s, t, a, bb: (s, t, 0 if geo.depthwise else a, bb))
    kernel = functools.partial(
        _wgrad_kernel_loop, kernel=geo.kernel, dilation=geo.dilation, stride=geo.stride,
        wq=lay.wq, tm=tiles.tm, n_img=n // splits, n_m=n_m, depthwise=geo.depthwise,
        precision=geo.precision, acc_t=acc_t)
    parts = pl.pallas_call(
        kernel, out_shape=jax.ShapeDtypeStruct((splits, *out_shape), acc_t),
        grid=(splits, taps, n_ci, n_co), in_specs=[x_spec, g_spec], out_specs=out_spec,
        interpret=interpret, compiler_params=_compiler_params(rule, interpret, 4),
        name="jconv_conv_wgrad")(xs, gw)
    return parts.sum(axis=0)


def _on_platform(fn: Callable[..., tuple[jnp.ndarray, ...]], geo: Geometry,
                 *args: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """Run ``fn(*args, rule=..., interpret=...)`` with the backend of the lowering platform."""
    return lax.platform_dependent(
        *args,
        cuda=functools.partial(fn, rule="triton", interpret=False),
        rocm=functools.partial(fn, rule="triton", interpret=False),
        tpu=functools.partial(fn, rule="tpu", interpret=False),
        default=functools.partial(fn, rule=geo.rule, interpret=True))


Array = jnp.ndarray
Residuals = tuple[Array, Array, 'Array | None', 'Array | None']


def _fwd_call(x: Array, w: Array, b: Array | None, geo: Geometry,
              save_z: bool) -> tuple[Array, ...]:
    def fn(x: Array, w: Array, b: Array | None, rule: str, interpret: bool) -> tuple[Array, ...]:
        return _forward(x, w, b, geo, rule, interpret, save_z)
    return _on_platform(fn, geo, x, w, b)


def _wgrad_call(x: Array, g: Array, geo: Geometry) -> Array:
    def fn(x: Array, g: Array, rule: str, interpret: bool) -> tuple[Array]:
        return (_weight_grad_impl(x, g, geo, rule, interpret),)
    return _on_platform(fn, geo, x, g)[0]


# --- differentiation -------------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv_nhwc(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None,
              geo: Geometry) -> jnp.ndarray:
    """act(conv(x, w) + b) with NHWC x (N, H, W, C_in), OIHW w, b (C_out,) or None ->
    (N, H_out, W_out, C_out), all Pallas kernels (forward and every derivative order)."""
    return _fwd_call(x, w, b, geo, False)[0]


def _conv_fwd(x: Array, w: Array, b: Array | None, geo: Geometry) -> tuple[Array, Residuals]:
    # The forward rule calls the custom_vjp functions, not the kernels: under a second
    # derivative JAX differentiates this rule, and a raw pallas_call has no usable JVP.
    if geo.act == "gelu":
        y, z = conv_nhwc_with_z(x, w, b, geo)
        return y, (x, w, b, z)
    y = conv_nhwc(x, w, b, geo)
    return y, (x, w, b, y if geo.act == "relu" else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv_nhwc_with_z(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None,
                     geo: Geometry) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(act(z), z) with z = conv(x, w) + b: one kernel, two outputs (GELU's residual)."""
    return _fwd_call(x, w, b, geo, True)


def _with_z_fwd(x: Array, w: Array, b: Array | None,
                geo: Geometry) -> tuple[tuple[Array, Array], Residuals]:
    y, z = conv_nhwc_with_z(x, w, b, geo)
    return (y, z), (x, w, b, z)


def _with_z_bwd(geo: Geometry, res: Residuals,
                g: tuple[Array, Array]) -> tuple[Array, Array, Array | None]:
    gy, gz = g
    x, w, b, z = res
    return _conv_bwd(geo._replace(act=None), (x, w, b, None), _act_grad(gy, z, geo.act) + gz)


def _act_grad(g: jnp.ndarray, saved: jnp.ndarray | None, act: str | None) -> jnp.ndarray:
    if act == "relu":
        return jnp.where(saved > 0, g, jnp.zeros_like(g))
    if act == "gelu":
        acc = accum_dtype(g.dtype)
        _, pullback = jax.vjp(functools.partial(jax.nn.gelu, approximate=True),
                              saved.astype(acc))
        return pullback(g.astype(acc))[0].astype(g.dtype)
    return g


def _conv_bwd(geo: Geometry, res: Residuals, g: Array) -> tuple[Array, Array, Array | None]:
    x, w, b, saved = res
    gz = _act_grad(g, saved, geo.act)
    plain = geo._replace(act=None)
    dx = input_grad(gz, w, plain, x.shape[1:3])
    dw = weight_grad(x, gz, plain)
    db = None if b is None else \
        jnp.sum(gz.astype(accum_dtype(gz.dtype)), axis=(0, 1, 2)).astype(b.dtype)
    return dx, dw, db


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)
conv_nhwc_with_z.defvjp(_with_z_fwd, _with_z_bwd)


def input_grad(g: jnp.ndarray, w: jnp.ndarray, geo: Geometry, in_hw: Pair) -> jnp.ndarray:
    """dx (N, H, W, C_in) for cotangent g (N, Ho, Wo, C_out): the stride-1 conv of the
    stride-dilated, re-padded cotangent with the flipped, transposed weights (the forward
    kernel again, so it is differentiable like any forward call)."""
    pads = []
    for size, k, s, d, (lo, _), out in zip(in_hw, geo.kernel, geo.stride, geo.dilation,
                                           geo.padding, g.shape[1:3]):
        eff = d * (k - 1) + 1
        before = eff - 1 - lo
        # lax.pad takes negative edges: crops where the forward padding exceeded the kernel.
        after = size + eff - 1 - ((out - 1) * s + 1) - before
        pads.append((before, after, s - 1))
    gp = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0), pads[0], pads[1], (0, 0, 0)])
    wf = w[:, :, ::-1, ::-1]
    if not geo.depthwise:
        wf = wf.transpose(1, 0, 2, 3)
    return conv_nhwc(gp, wf, None, geo._replace(stride=(1, 1), padding=((0, 0), (0, 0))))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def weight_grad(x: jnp.ndarray, g: jnp.ndarray, geo: Geometry) -> jnp.ndarray:
    """dw (C_out, C_in or 1, kH, kW) from x (N, H, W, C_in) and cotangent g (N, Ho, Wo, C_out)."""
    return _wgrad_call(x, g, geo)


def _wgrad_fwd(x: Array, g: Array, geo: Geometry) -> tuple[Array, tuple[Array, Array]]:
    return weight_grad(x, g, geo), (x, g)


def _wgrad_bwd(geo: Geometry, res: tuple[Array, Array], ddw: Array) -> tuple[Array, Array]:
    # dw is bilinear in (x, g): its transpose is an input-gradient conv and a forward conv.
    x, g = res
    return input_grad(g, ddw, geo, x.shape[1:3]), conv_nhwc(x, ddw, None, geo)


weight_grad.defvjp(_wgrad_fwd, _wgrad_bwd)


# --- the impl entry point -----------------------------------------------------------------------

def geometry(spec: ConvSpec, c_in: int, act: str | None = None, rule: str = "triton") -> Geometry:
    """Check that pallas supports ``spec`` (groups 1 or depthwise) and build its Geometry."""
    if spec.groups not in (1, c_in):
        raise ValueError(f"impl='pallas' supports groups=1 and depthwise groups=C_in={c_in}, "
                         f"got groups={spec.groups}")
    if act is not None and act not in ACTIVATIONS:
        raise ValueError(f"act must be None or one of {ACTIVATIONS}, got {act!r}")
    return Geometry(kernel=spec.kernel, stride=spec.stride, dilation=spec.dilation,
                    padding=spec.padding, depthwise=spec.groups > 1, act=act,
                    precision=spec.precision, rule=rule)


def conv_pallas_bias_act(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None, spec: ConvSpec,
                         act: str | None = None, rule: str = "triton") -> jnp.ndarray:
    """Batched ``act(conv(x, w) + b)`` in ``spec.data_format``; output dtype = input dtype."""
    nchw = spec.data_format == "NCHW"
    xh = jnp.transpose(x, (0, 2, 3, 1)) if nchw else x
    c_in = xh.shape[-1]
    geo = geometry(spec, c_in, act, rule)
    if geo.depthwise and w.shape[0] != c_in:
        # Channel multiplier: output channel o reads input channel o // multiplier.
        xh = jnp.repeat(xh, w.shape[0] // c_in, axis=-1)
    y = conv_nhwc(xh, w, b, geo)
    return jnp.transpose(y, (0, 3, 1, 2)) if nchw else y


def conv_pallas(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with OIHW weights; output dtype = input dtype."""
    return conv_pallas_bias_act(x, w, None, spec)


