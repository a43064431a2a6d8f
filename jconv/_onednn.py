"""``impl="onednn"``: oneDNN's CPU convolutions (PyTorch's CPU kernels) inside XLA.

The native part is ``jconv/_onednn.cc``, built by ``setup.py`` into the plain shared library
``jconv/_onednn_ffi*.so`` (loaded with ``ctypes``, no Python API) against the PyPI oneDNN
wheels and jaxlib's XLA FFI headers. It exports three XLA FFI handlers (forward with optional
bias and ReLU/GELU post-op, backward-data, backward-weights with optional bias gradient),
registered here for the ``cpu`` platform and called with ``jax.ffi.ffi_call``.

Differentiation: each pass is a JAX primitive (``onednn_conv_fwd``, ``onednn_conv_bwd_data``,
``onednn_conv_bwd_weights``), bilinear in its two operands, whose transposes are the other two
passes — the structure of ``lax.conv_general_dilated``. So ``jax.jvp`` (by bilinearity),
``jax.grad`` (by transposition), every higher order of either mode and ``impl="auto"``'s
per-pass dispatch (a ``custom_jvp`` whose tangent terms reverse mode transposes) all run
oneDNN. ``vmap`` folds a mapped input with a shared weight into N (one call); anything else
maps sequentially. The fused ``conv_bias_act`` is a ``jax.custom_jvp`` over the primitives
(its tangent linear in the input tangents): forward and reverse mode to any order.

Spatial dims: 1, 2 or 3, in one code path (the handlers read the rank from the operands).
Transposed convolutions are the VJP of the forward one (``jconv.transpose``), so they run
the backward-data primitive.

Platforms: ``lax.platform_dependent`` runs oneDNN when lowering for CPU and XLA's own
convolution (:func:`jconv._lax.conv_lax`) for anything else, so models built with
``impl="onednn"`` still export for GPU/TPU.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir, xla

from ._lax import conv_lax
from ._pallas import ACTIVATIONS
from ._spec import ConvSpec, accum_dtype

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
_ACT_CODE = {None: 0, "relu": 1, "gelu": 2}  # the C++ PostOp enum
_HANDLERS = ("jconv_onednn_fwd", "jconv_onednn_bwd_data", "jconv_onednn_bwd_weights")
_EXTENSION = "jconv._onednn_ffi"
_DNNL_SONAME = "libdnnl.so.3"


Dims = tuple[int, ...]


class Geometry(NamedTuple):
    """What the handlers need besides the operands, for 1, 2 or 3 spatial dims (one entry
    per dim in every tuple; hashable: a primitive parameter and custom_jvp nondiff arg)."""

    stride: Dims
    pad_lo: Dims
    pad_hi: Dims
    dilation: Dims
    groups: int
    channels_last: bool
    in_size: Dims
    out_size: Dims
    kernel: Dims

    @property
    def ndim(self) -> int:
        """The number of spatial dims."""
        return len(self.kernel)

    def act_shape(self, n: int, c: int, size: Dims) -> Dims:
        return (n, *size, c) if self.channels_last else (n, c, *size)

    def channels(self, a: jnp.ndarray) -> int:
        return a.shape[-1] if self.channels_last else a.shape[1]

    def attrs(self) -> dict[str, object]:
        i64 = functools.partial(np.array, dtype=np.int64)
        return dict(stride=i64(self.stride), pad_lo=i64(self.pad_lo), pad_hi=i64(self.pad_hi),
                    dilation=i64(self.dilation), groups=np.int64(self.groups),
                    channels_last=np.int64(self.channels_last))


def geometry(spec: ConvSpec) -> Geometry:
    """The handlers' view of ``spec`` (zero padding: padding modes were applied before)."""
    return Geometry(stride=tuple(spec.stride), pad_lo=tuple(lo for lo, _ in spec.padding),
                    pad_hi=tuple(hi for _, hi in spec.padding), dilation=tuple(spec.dilation),
                    groups=spec.groups, channels_last=spec.channels_last,
                    in_size=tuple(spec.in_size), out_size=tuple(spec.out_size),
                    kernel=tuple(spec.kernel))


# --- loading the library ----------------------------------------------------------------------

def _dnnl_path() -> Path | None:
    """libdnnl.so.3 from the ``onednn-cpu-gomp`` wheel, wherever pip put it."""
    try:
        files = importlib.metadata.files("onednn-cpu-gomp") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == _DNNL_SONAME:
            return Path(f.locate()).resolve()
    return None


def _load() -> tuple[ctypes.CDLL | None, str]:
    """The library with its handlers registered, or None and what is missing."""
    spec = importlib.util.find_spec(_EXTENSION)
    if spec is None or spec.origin is None:
        return None, ("jconv's oneDNN extension (jconv/_onednn_ffi*.so) was not built; "
                      "building it needs a C++17 compiler, oneDNN's headers (pip package "
                      "onednn-devel-cpu-gomp, Linux x86-64) and jaxlib's XLA FFI headers (the "
                      "install's warning names what was missing); add them and reinstall "
                      "jconv (python -m pip install -e .)")
    dnnl = _dnnl_path()
    if dnnl is None:
        return None, (f"oneDNN's runtime library ({_DNNL_SONAME}, PyPI package "
                      "onednn-cpu-gomp) is not installed: python -m pip install onednn-cpu-gomp")
    try:
        # The extension's DT_NEEDED libdnnl.so.3 resolves to this already-loaded copy, so
        # editable and regular installs work without an rpath into a build environment.
        ctypes.CDLL(str(dnnl), mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(spec.origin)
    except OSError as exc:
        return None, f"loading jconv's oneDNN extension failed: {exc}"
    for name in _HANDLERS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)),
                                    platform="cpu")
    lib.jconv_onednn_probe.restype = ctypes.c_int
    lib.jconv_onednn_probe.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                                       ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
                                       ctypes.c_int, ctypes.c_char_p, ctypes.c_int64]
    lib.jconv_onednn_set_cache_capacity.argtypes = [ctypes.c_int64]
    lib.jconv_onednn_set_num_threads.argtypes = [ctypes.c_int]
    return lib, ""


@functools.cache
def _library_or_reason() -> tuple[ctypes.CDLL | None, str]:
    return _load()


def available() -> bool:
    """Whether ``impl="onednn"`` can run here (the extension and libdnnl load)."""
    return _library_or_reason()[0] is not None


def library() -> ctypes.CDLL:
    """The loaded extension (handlers registered), or a RuntimeError naming what is missing."""
    lib, reason = _library_or_reason()
    if lib is None:
        raise RuntimeError(f"impl='onednn' is unavailable: {reason}")
    return lib


def probe(dtype: str = "float32", data_format: str = "NHWC", pass_: str = "forward",
          n: int = 8, c: int = 48, hw: int = 16) -> str:
    """The oneDNN implementation (e.g. ``"brgconv:avx512_core"``) a convolution with a
    3-wide kernel in every spatial dim of size ``hw`` gets; ``data_format`` (any of jconv's,
    e.g. ``"NCL"``, ``"NHWC"``, ``"NDHWC"``) gives the number of spatial dims and the layout;
    a RuntimeError with oneDNN's message if it has none.

    Example:
      >>> "ref" in probe("float32", "NHWC")   # an optimized kernel, not the reference one
      False
      >>> "ref" in probe("float32", "NCDHW", "weight_grad", hw=8)
      False
    """
    buf = ctypes.create_string_buffer(512)
    code = {"forward": 0, "input_grad": 1, "weight_grad": 2}[pass_]
    rc = library().jconv_onednn_probe(int(dtype == "bfloat16"), int(data_format.endswith("C")),
                                      n, c, hw, code, len(data_format) - 2, buf, len(buf))
    if rc:
        raise RuntimeError(f"oneDNN has no {dtype} convolution here: {buf.value.decode()}")
    return buf.value.decode()


@functools.cache
def _bf16_kernel() -> str | None:
    """oneDNN's bfloat16 kernel on this CPU, or None when it has only the reference one."""
    try:
        impl = probe("bfloat16")
    except RuntimeError:
        return None
    return None if "ref" in impl else impl


def cache_stats() -> dict[str, int]:
    """The primitive cache: entries, hits, misses (primitives built), capacity."""
    out = (ctypes.c_int64 * 4)()
    library().jconv_onednn_cache_stats(out)
    return dict(zip(("size", "hits", "misses", "capacity"), out))


def set_cache_capacity(n: int) -> None:
    """Keep at most ``n`` primitives (least recently used evicted; default 1024)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    library().jconv_onednn_set_cache_capacity(n)


def clear_cache() -> None:
    library().jconv_onednn_clear_cache()


def set_num_threads(n: int) -> None:
    """oneDNN's OpenMP threads per call from now on; 0 restores the default (the
    ``OMP_NUM_THREADS`` environment variable, else one per core). Unlike
    ``OMP_NUM_THREADS`` it acts at once and leaves other OpenMP users (PyTorch) alone."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    library().jconv_onednn_set_num_threads(n)


# --- the three passes as FFI calls ---------------------------------------------------------------

Shape = tuple[int, ...]


def _fwd_shape(x: Shape, w: Shape, g: Geometry) -> Shape:
    return g.act_shape(x[0], w[0], g.out_size)


def _bwd_data_shape(dy: Shape, w: Shape, g: Geometry) -> Shape:
    return g.act_shape(dy[0], w[1] * g.groups, g.in_size)


def _bwd_weights_shape(x: Shape, dy: Shape, g: Geometry) -> Shape:
    c = -1 if g.channels_last else 1
    return (dy[c], x[c] // g.groups, *g.kernel)


def _ffi(name: str, out: object) -> object:
    return jax.ffi.ffi_call(name, out, vmap_method="sequential")


def _fwd_call(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None, g: Geometry,
              act: str | None) -> jnp.ndarray:
    out = jax.ShapeDtypeStruct(_fwd_shape(x.shape, w.shape, g), x.dtype)
    bias = jnp.zeros((0,), x.dtype) if b is None else b
    return _ffi(_HANDLERS[0], out)(x, w, bias, **g.attrs(), act=np.int64(_ACT_CODE[act]),
                                   has_bias=np.int64(b is not None))


def _bwd_data_call(dy: jnp.ndarray, w: jnp.ndarray, g: Geometry) -> jnp.ndarray:
    out = jax.ShapeDtypeStruct(_bwd_data_shape(dy.shape, w.shape, g), dy.dtype)
    return _ffi(_HANDLERS[1], out)(dy, w, **g.attrs())


def _bwd_weights_call(x: jnp.ndarray, dy: jnp.ndarray, g: Geometry) -> jnp.ndarray:
    # The handler can also return the bias gradient (has_bias); the fused op's custom_jvp
    # leaves that sum to XLA, the transpose of its bias tangent.
    dw = jax.ShapeDtypeStruct(_bwd_weights_shape(x.shape, dy.shape, g), x.dtype)
    db = jax.ShapeDtypeStruct((0,), x.dtype)
    return _ffi(_HANDLERS[2], (dw, db))(x, dy, **g.attrs(), has_bias=np.int64(False))[0]


# --- the three passes as JAX primitives -----------------------------------------------------------
# Like lax.conv_general_dilated: each pass is a primitive, bilinear in its two operands, whose
# transposes are the other two passes. JAX derives everything else from that: jvp by
# bilinearity (symbolic-zero tangents skip a pass), grad by transposing, every higher order of
# either mode, and ``impl="auto"``'s custom_jvp transposes its tangent terms through it.

def _fold_batch(prim: Primitive, a: jnp.ndarray, b: jnp.ndarray, bdim: int,
                g: Geometry) -> jnp.ndarray:
    """prim(a, b) for ``a`` mapped along ``bdim`` and ``b`` not: the mapped axis joins N (both
    layouts put N first), so one call computes every mapped element."""
    a = jnp.moveaxis(a, bdim, 0)
    out = prim.bind(a.reshape(a.shape[0] * a.shape[1], *a.shape[2:]), b, geometry=g)
    return out.reshape(a.shape[0], a.shape[1], *out.shape[1:])


def _batch_rule(prim: Primitive, fold_lhs: bool) -> Callable[..., tuple[jnp.ndarray, int]]:
    def rule(args: tuple[jnp.ndarray, jnp.ndarray], dims: tuple[int | None, int | None], *,
             geometry: Geometry) -> tuple[jnp.ndarray, int]:
        (a, b), (da, db) = args, dims
        if fold_lhs and db is None:
            return _fold_batch(prim, a, b, da, geometry), 0
        # A mapped weight (or an operand of backward-weights, which sums over N): one call per
        # mapped element; an unmapped operand is shared, not copied.
        pairs = ((a, da), (b, db))
        mapped = [jnp.moveaxis(v, d, 0) for v, d in pairs if d is not None]

        def one(elements: list[jnp.ndarray]) -> jnp.ndarray:
            each = iter(elements)
            return prim.bind(*(v if d is None else next(each) for v, d in pairs),
                             geometry=geometry)

        return lax.map(one, mapped), 0
    return rule


Pass = Callable[[jnp.ndarray, jnp.ndarray, Geometry], jnp.ndarray]


def _lowering(call: Pass, shape: Callable[[Shape, Shape, Geometry], Shape],
              ) -> Callable[..., jnp.ndarray]:
    def lower(a: jnp.ndarray, b: jnp.ndarray, *, geometry: Geometry) -> jnp.ndarray:
        if a.size == 0 or b.size == 0:
            # Nothing to sum (e.g. vmap over an empty axis folded into N): oneDNN rejects
            # zero-sized memory descriptors.
            return jnp.zeros(shape(a.shape, b.shape, geometry), a.dtype)
        library()  # the handlers registered (or the RuntimeError naming what is missing)
        return call(a, b, geometry)
    return lower


def _fwd_plain(x: jnp.ndarray, w: jnp.ndarray, g: Geometry) -> jnp.ndarray:
    return _fwd_call(x, w, None, g, None)


def _primitive(name: str, call: Pass, shape: Callable[[Shape, Shape, Geometry], Shape],
               fold_lhs: bool) -> Primitive:
    """The primitive ``name(a, b, geometry=g)``: ``call`` (an FFI call) of ``shape``'s result;
    ``fold_lhs``: a mapped ``a`` with an unmapped ``b`` is folded into N under vmap (valid
    when the pass keeps N)."""
    prim = Primitive(name)
    prim.def_impl(functools.partial(xla.apply_primitive, prim))
    prim.def_abstract_eval(lambda a, b, *, geometry: ShapedArray(
        shape(a.shape, b.shape, geometry), a.dtype))
    # For every platform, although only the CPU branch of conv_onednn_bias_act's
    # platform_dependent runs it: lowering for several platforms at once (export for cpu and
    # cuda) lowers that branch for all of them.
    mlir.register_lowering(prim, mlir.lower_fun(_lowering(call, shape), multiple_results=False))
    batching.primitive_batchers[prim] = _batch_rule(prim, fold_lhs)
    return prim


# y = conv(x, w): x batched in the geometry's layout, w (C_out, C_in/groups, *kernel).
conv_p = _primitive("onednn_conv_fwd", _fwd_plain, _fwd_shape, fold_lhs=True)
# dx of conv for the output cotangent dy (backward-data); <gx, dx(dy, w)> = <conv(gx, w), dy>.
input_grad_p = _primitive("onednn_conv_bwd_data", _bwd_data_call, _bwd_data_shape,
                          fold_lhs=True)
# dw of conv (backward-weights); <gw, dw(x, dy)> = <conv(x, gw), dy>. It sums over N, so a
# mapped operand cannot join N.
weight_grad_p = _primitive("onednn_conv_bwd_weights", _bwd_weights_call, _bwd_weights_shape,
                           fold_lhs=False)


def conv(x: jnp.ndarray, w: jnp.ndarray, g: Geometry) -> jnp.ndarray:
    return conv_p.bind(x, w, geometry=g)


def input_grad(dy: jnp.ndarray, w: jnp.ndarray, g: Geometry) -> jnp.ndarray:
    return input_grad_p.bind(dy, w, geometry=g)


def weight_grad(x: jnp.ndarray, dy: jnp.ndarray, g: Geometry) -> jnp.ndarray:
    return weight_grad_p.bind(x, dy, geometry=g)


# Transposes (ct: the output's cotangent; the operand being transposed is an UndefinedPrimal).
ad.defbilinear(conv_p,
               lambda ct, x, w, *, geometry: input_grad(ct, w, geometry),
               lambda ct, x, w, *, geometry: weight_grad(x, ct, geometry))
ad.defbilinear(input_grad_p,
               lambda ct, dy, w, *, geometry: conv(ct, w, geometry),
               lambda ct, dy, w, *, geometry: weight_grad(ct, dy, geometry))
ad.defbilinear(weight_grad_p,
               lambda ct, x, dy, *, geometry: input_grad(dy, ct, geometry),
               lambda ct, x, dy, *, geometry: conv(x, ct, geometry))


# --- the fused conv + bias + activation: a custom_jvp over the primitives ------------------------
# Its tangent is linear in the input tangents and built from the primitives above (whose
# transposes JAX knows), so forward mode, reverse mode (by transposing the tangent) and every
# higher order of either run oneDNN; the un-differentiated call stays one fused primitive.

def _channel_bias(b: jnp.ndarray, g: Geometry) -> jnp.ndarray:
    """``b`` (C,) shaped to broadcast over an activation's channel axis."""
    return b if g.channels_last else b.reshape(-1, *(1,) * g.ndim)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def conv_bias_act(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray, g: Geometry,
                  act: str | None) -> jnp.ndarray:
    """act(conv(x, w) + b) in one oneDNN primitive (bias and activation as post-ops)."""
    return _fwd_call(x, w, b, g, act)


def _activate(z: jnp.ndarray, act: str) -> jnp.ndarray:
    """ReLU or (tanh) GELU of z, computed in the accumulation dtype."""
    acc = z.astype(accum_dtype(z.dtype))
    y = jax.nn.relu(acc) if act == "relu" else jax.nn.gelu(acc, approximate=True)
    return y.astype(z.dtype)


def _is_zero(t: object) -> bool:
    return isinstance(t, jax.custom_derivatives.SymbolicZero)


def _pre_activation_tangent(x: jnp.ndarray, w: jnp.ndarray, tx: object, tw: object,
                            tb: object, g: Geometry) -> jnp.ndarray:
    """d(conv(x, w) + b): one primitive per non-zero tangent, summed in the accumulation
    dtype (linear in (tx, tw, tb), so reverse mode transposes it)."""
    acc = accum_dtype(x.dtype)
    terms = ([] if _is_zero(tx) else [conv(tx, w, g)]) + (
        [] if _is_zero(tw) else [conv(x, tw, g)])
    terms = [t.astype(acc) for t in terms]
    if not _is_zero(tb):
        terms.append(_channel_bias(tb.astype(acc), g))
    if not terms:
        return jnp.zeros(_fwd_shape(x.shape, w.shape, g), x.dtype)
    total = functools.reduce(jnp.add, terms)
    return jnp.broadcast_to(total, _fwd_shape(x.shape, w.shape, g)).astype(x.dtype)


def _cba_jvp(g: Geometry, act: str | None, primals: tuple, tangents: tuple
             ) -> tuple[jnp.ndarray, jnp.ndarray]:
    x, w, b = primals
    dz = _pre_activation_tangent(x, w, *tangents, g)
    if act == "gelu":
        # GELU's derivative needs the pre-activation: the primitive with the bias post-op
        # only, GELU (and its derivative) in XLA.
        z = conv_bias_act(x, w, b, g, None)
        return jax.jvp(functools.partial(_activate, act=act), (z,), (dz,))
    y = conv_bias_act(x, w, b, g, act)
    if act == "relu":
        dz = jnp.where(y > 0, dz, jnp.zeros_like(dz))  # ReLU's derivative: its output's mask
    return y, dz


conv_bias_act.defjvp(_cba_jvp, symbolic_zeros=True)


# --- the registry's entry points ------------------------------------------------------------------

def check_supported(dtype: jnp.dtype) -> None:
    """float32 and bfloat16 (where this CPU has bfloat16 kernels) only, and a loaded library."""
    name = jnp.dtype(dtype).name
    if name not in DTYPES:
        raise ValueError(f"impl='onednn' supports dtypes {DTYPES}, got {name}; "
                         "use impl='lax' for it")
    library()
    if name == "bfloat16" and _bf16_kernel() is None:
        raise ValueError("impl='onednn' with bfloat16 needs a CPU with bfloat16 kernels in "
                         "oneDNN (avx512_bf16 or AMX); this CPU has only the reference "
                         "kernel; use float32 or impl='lax'")


def auto_where(platform: str, dtype: jnp.dtype) -> bool:
    """Whether ``impl="auto"`` measures ``onednn`` for a ``platform`` host and ``dtype``: on
    CPU for the dtypes it computes here (elsewhere it is ``lax``, which auto measures anyway).

    Example:
      >>> auto_where("cpu", jnp.float64), auto_where("gpu", jnp.float32)
      (False, False)
    """
    if platform != "cpu":
        return False
    try:
        check_supported(dtype)
    except (ValueError, RuntimeError):
        return False
    return True


def _empty(x: jnp.ndarray, w: jnp.ndarray, g: Geometry) -> jnp.ndarray | None:
    """All zeros when an operand has no elements (no window has anything to sum)."""
    if x.size and w.size:
        return None
    return jnp.zeros(_fwd_shape(x.shape, w.shape, g), x.dtype)


def conv_onednn(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with OIHW weights; output dtype = input dtype."""
    return conv_onednn_bias_act(x, w, None, spec, None)


def conv_onednn_bias_act(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None, spec: ConvSpec,
                         act: str | None) -> jnp.ndarray:
    """Batched ``act(conv(x, w) + b)``: one oneDNN primitive on CPU, XLA's ops elsewhere."""
    if act is not None and act not in ACTIVATIONS:
        raise ValueError(f"act must be None or one of {ACTIVATIONS}, got {act!r}")
    g = geometry(spec)

    def elsewhere(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None) -> jnp.ndarray:
        z = conv_lax(x, w, spec)
        if b is not None:
            z = (z.astype(accum_dtype(z.dtype)) + _channel_bias(b, g)).astype(z.dtype)
        return z if act is None else _activate(z, act)

    if jax.default_backend() != "cpu":
        # A GPU/TPU host runs the computation there: XLA's convolution, as platform_dependent's
        # default branch would, without needing the CPU extension or its dtype limits.
        return elsewhere(x, w, b)
    check_supported(x.dtype)
    empty = _empty(x, w, g)

    def on_cpu(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None) -> jnp.ndarray:
        if empty is not None:
            z = empty if b is None else empty + _channel_bias(b, g)
            return z if act is None else _activate(z, act)
        if b is None and act is None:
            return conv(x, w, g)
        if b is None:
            b = jnp.zeros((w.shape[0],), x.dtype)
        return conv_bias_act(x, w, b, g, act)

    return lax.platform_dependent(x, w, b, cpu=on_cpu, default=elsewhere)
