"""``impl="auto"``: the fastest implementation per layer, forward and backward chosen apart.

This module *chooses*; :mod:`jconv._auto_dispatch` runs a choice (a ``jax.custom_jvp`` whose
JVP rule runs the forward implementation and two tangent terms with the implementations
whose *transposes* are fastest, so each pass gets its own), and :mod:`jconv._auto_cache`
keeps measured choices on disk.

The choice is made per *platform the computation is lowered for* (``lax.platform_dependent``
emits one branch per platform and lowering keeps only its own): on the platform jax is running
on (the host backend) it is measured once per (platform, shapes, dtype, spec) — like
``cudnn.benchmark`` — on fresh concrete arrays outside any trace, with jconv's one stopwatch
(:mod:`jconv.stopwatch`), then cached in memory and on disk
(:func:`jconv._auto_cache.disk_cache_path`: per user by default, ``JCONV_AUTO_CACHE`` names
another file or switches it off). For every other platform, and with measuring off
(``JCONV_AUTO_MEASURE=0`` or :func:`set_auto_measure`), the documented
:func:`heuristic_choice` is used: host kernels are never timed to choose for another
platform (e.g. while exporting for ``cuda`` on a CPU machine).

Measurements compile with the XLA compiler options of the jit that is being traced, when
that jit says so through :func:`compiler_options_scope` (``jconv.jit`` does): on CPU those
options decide which kernels XLA runs a convolution with, and so which implementation wins.
The options are part of the cache key.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from . import _auto_cache
from ._auto_dispatch import candidates, conv_bilinear, dispatch
from ._spec import ConvSpec
from .stopwatch import interleaved_minima

# Platforms a choice is made for; jax.default_backend() names the host the same way.
PLATFORMS = ("cpu", "gpu", "tpu")
MEASURE_ENV = "JCONV_AUTO_MEASURE"
MEASURE_REPS = 5
PASS_NAMES = ("forward", "input gradient", "weight gradient")

_MEMORY: dict[str, "AutoChoice"] = {}
_MEASURE_OVERRIDE: list[bool | None] = [None]
# The compiler options of the jit being traced (sorted (name, value) pairs): a context
# variable, so nested or concurrent traces each see their own.
_COMPILER_OPTIONS: contextvars.ContextVar[tuple[tuple[str, Any], ...]] = contextvars.ContextVar(
    "jconv_auto_compiler_options", default=())


@dataclass(frozen=True)
class AutoChoice:
    """Implementations for the forward pass, the input gradient and the weight gradient.

    ``times_ms`` holds the measured per-pass minima {impl: (fwd, dx, dw)} (``inf`` for a pass
    that failed) and ``joint_ms`` the forward+backward minima {"fwd/dx/dw": ms} of the triples
    compared last (both empty when not measured); ``failed`` names what measuring dropped
    because it failed to compile or run ({"impl pass" or "fwd/dx/dw": the error's first
    line}); ``source`` is ``"measured"``, ``"heuristic"`` or ``"disk"``.
    ``fwd_only`` is the implementation of calls that are not differentiated (inference): the
    fastest forward pass timed alone, which can differ from ``fwd`` because the joint
    forward+backward timing decides ``fwd`` (``None``: same as ``fwd``).
    """

    fwd: str
    dx: str
    dw: str
    source: str
    times_ms: tuple[tuple[str, tuple[float, float, float]], ...] = ()
    joint_ms: tuple[tuple[str, float], ...] = ()
    fwd_only: str | None = None
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def impls(self) -> tuple[str, str, str]:
        return (self.fwd, self.dx, self.dw)

    @property
    def inference(self) -> str:
        """The implementation a call without derivatives runs."""
        return self.fwd_only or self.fwd


def set_auto_measure(enabled: bool | None) -> None:
    """Turn measuring for ``impl="auto"`` on/off for this process (``None``: follow the
    ``JCONV_AUTO_MEASURE`` environment variable, default on). Cached choices are kept.

    Example:
      >>> import jconv
      >>> jconv.set_auto_measure(False)  # use the heuristic, never time anything
      >>> jconv.set_auto_measure(None)
    """
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool or None, got {enabled!r}")
    _MEASURE_OVERRIDE[0] = enabled


def measuring_enabled() -> bool:
    if _MEASURE_OVERRIDE[0] is not None:
        return _MEASURE_OVERRIDE[0]
    return os.environ.get(MEASURE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def compiler_options_scope(options: Mapping[str, Any] | None) -> Iterator[None]:
    """While active, ``impl="auto"`` measures (and caches) its choices compiled with these XLA
    compiler options — those of the jit whose trace is running. ``jconv.jit`` enters it for
    you; use it directly around ``jax.jit(f, compiler_options=opts).lower(...)``.

    Example:
      >>> from jconv._auto import compiler_options_scope, current_compiler_options
      >>> with compiler_options_scope({"xla_cpu_enable_fast_math": False}):
      ...     current_compiler_options()
      {'xla_cpu_enable_fast_math': False}
      >>> current_compiler_options()
      {}
    """
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping of XLA option names to values or None, "
                        f"got {options!r}")
    token = _COMPILER_OPTIONS.set(tuple(sorted((options or {}).items())))
    try:
        yield
    finally:
        _COMPILER_OPTIONS.reset(token)


def current_compiler_options() -> dict[str, Any]:
    """The compiler options ``impl="auto"`` measures with right now (``{}``: XLA's defaults)."""
    return dict(_COMPILER_OPTIONS.get())


def clear_auto_cache() -> None:
    """Forget every in-memory choice (a disk cache file is left alone, but re-read)."""
    _MEMORY.clear()
    _auto_cache.forget()


def host_platform() -> str:
    """The platform jax runs on here: ``"cpu"``, ``"gpu"`` or ``"tpu"``."""
    return jax.default_backend()


def heuristic_choice(w_shape: tuple[int, ...], spec: ConvSpec,
                     platform: str = "cpu") -> AutoChoice:
    """The choice used when measuring is off, and for platforms other than the host.

    On GPU and TPU: ``lax`` everywhere — XLA's convolution there is the vendor library
    (cuDNN) or the TPU's own, and no jconv implementation has been measured to beat it.
    On CPU, from the measurements in docs/performance.md (``docs/bench/layers_full.json``;
    the figures are there):

    - depthwise (one input channel per group): ``loops`` — a fused multiply-add per tap —
      in every direction (XLA's depthwise conv was slower in every direction);
    - other grouped convs: ``im2col`` everywhere (XLA's grouped conv was much slower);
    - a small contraction, ``C_in/groups * kH * kW < 32`` (e.g. a 3x3 RGB stem; the
      product of every kernel dim for 1-D and 3-D convs, whose rule is this 2-D one; how it
      fares on 1-D and 3-D layers is measured in docs/performance.md):
      ``im2col`` everywhere (XLA's conv cannot use its GEMM well there);
    - everything else: ``lax`` everywhere, which the chunked alternatives did not beat
      reliably on the CIFAR and ResNet-18 layers.

    Example:
      >>> import jconv
      >>> spec = jconv.conv_spec((1, 3, 8, 8), (8, 3, 3, 3), padding=1)
      >>> heuristic_choice((8, 3, 3, 3), spec).impls
      ('im2col', 'im2col', 'im2col')
    """
    if platform != "cpu":
        return AutoChoice("lax", "lax", "lax", "heuristic")
    c_per_group, taps = w_shape[1], int(np.prod(w_shape[2:]))
    if spec.groups > 1:
        impl = "loops" if c_per_group == 1 else "im2col"
    else:
        impl = "im2col" if c_per_group * taps < 32 else "lax"
    return AutoChoice(impl, impl, impl, "heuristic")


def cache_key(x_shape: tuple[int, ...], w_shape: tuple[int, ...], dtype: jnp.dtype,
              spec: ConvSpec, platform: str | None = None) -> str:
    """The cache key: platform (default: the host's), shapes, dtype, every field of the spec,
    the jax version, for the host the device kind (so a disk cache shared by upgrades or
    machines measures again) and, when the traced jit has any, its compiler options."""
    platform = platform or host_platform()
    parts = [platform, tuple(x_shape), tuple(w_shape), jnp.dtype(dtype).name,
             spec.stride, spec.padding, spec.dilation, spec.groups, spec.data_format,
             spec.precision, f"jax {jax.__version__}"]
    if platform == host_platform():
        parts.append(jax.devices()[0].device_kind)
    options = _COMPILER_OPTIONS.get()
    if options:
        parts.append(options)
    return "|".join(str(v) for v in parts)


def measure_choice(x_shape: tuple[int, ...], w_shape: tuple[int, ...], dtype: jnp.dtype,
                   spec: ConvSpec, reps: int = MEASURE_REPS) -> AutoChoice:
    """Measure which implementations to use, in two stages, on random arrays of these shapes
    (each timing: ``reps`` alternating rounds after a compile/warm-up call, summarised by
    its *minimum* — on a shared machine noise only ever adds time), among the candidates for
    the host platform, ``dtype`` and number of spatial dims (:func:`candidates`: ``onednn``
    too on a CPU host for float32/bfloat16 2-D convolutions):

    1. every candidate's forward, input-gradient and weight-gradient pass on its own; the
       fastest per pass makes the mixed triple (``times_ms`` holds these minima);
    2. forward+backward together (value and both gradients, as in training) for the mixed
       triple and for each candidate used in all three roles; the fastest wins
       (``joint_ms``). Passes timed alone can mislead where the passes share work — e.g.
       ``im2col``'s forward and weight gradient build the same patch matrix, which XLA
       computes once in the joint graph.

    A candidate pass (or joint triple) that fails to compile or run is dropped for this
    shape with one ``RuntimeWarning`` naming it, the shape and the error's first line
    (``failed``); only when every candidate fails a pass does measuring raise.
    Ties go to the mixed triple, then to the earlier candidate in :func:`candidates`. Calls
    that are not differentiated run stage 1's fastest forward (``fwd_only``).
    Compiled with the options of the enclosing :func:`compiler_options_scope`, if any."""
    rng = np.random.default_rng(0)
    # Only implementations that compute this many spatial dims (Winograd, Pallas: 2-D only).
    cands = candidates(host_platform(), dtype, spec.ndim)
    jit = functools.partial(jax.jit, compiler_options=current_compiler_options() or None)
    n, c_out = x_shape[0], w_shape[0]
    y_shape = ((n, *spec.out_size, c_out) if spec.channels_last
               else (n, c_out, *spec.out_size))
    where = (f"x {tuple(x_shape)} w {tuple(w_shape)} {jnp.dtype(dtype).name} "
             f"groups={spec.groups} stride={spec.stride} {spec.data_format}")
    # Measuring runs while an outer jit/grad may be tracing: evaluate eagerly, on concrete data.
    with jax.ensure_compile_time_eval():
        x, w, dy = (jnp.asarray(rng.standard_normal(s), dtype) for s in (x_shape, w_shape, y_shape))
        low, failed, runnable = _measure_passes(cands, spec, jit, (x, w, dy), reps, where)
        mixed = tuple(min(cands, key=lambda name: low[name][k]) for k in range(3))
        triples = list(dict.fromkeys([mixed] + [(c, c, c) for c in runnable]))
        joint = _measure_joint(triples, spec, jit, (x, w, dy), reps, where, failed)
    best = min(joint, key=lambda t: joint[t])
    return AutoChoice(*best, source="measured",
                      times_ms=tuple((name, low[name]) for name in cands),
                      joint_ms=tuple(("/".join(t), ms) for t, ms in joint.items()),
                      failed=tuple(failed.items()), fwd_only=mixed[0])


def _measure_passes(cands: dict[str, Callable[..., jnp.ndarray]], spec: ConvSpec,
                    jit: Callable, xwdy: tuple[jnp.ndarray, ...], reps: int, where: str
                    ) -> tuple[dict[str, tuple[float, ...]], dict[str, str], list[str]]:
    """Stage 1: each candidate's forward, input- and weight-gradient pass alone. Returns the
    minima per candidate (inf where a pass failed), the failures, and the candidates that
    ran all three passes; raises when no candidate can run a pass."""
    x, w, dy = xwdy
    fns: dict[tuple[str, int], Callable[..., jnp.ndarray]] = {}
    for name, impl in cands.items():
        conv = functools.partial(impl, spec=spec)
        fns[(name, 0)] = jit(conv)
        fns[(name, 1)] = jit(lambda x, w, dy, conv=conv:
                             jax.vjp(lambda a: conv(a, w), x)[1](dy)[0])
        fns[(name, 2)] = jit(lambda x, w, dy, conv=conv:
                             jax.vjp(lambda b: conv(x, b), w)[1](dy)[0])
    passes, errors = _minima(fns, {key: (x, w) if key[1] == 0 else (x, w, dy)
                                   for key in fns}, reps)
    failed = {f"{name} {PASS_NAMES[k]}": err for (name, k), err in errors.items()}
    for name in cands:
        _warn_dropped(name, [PASS_NAMES[k] for k in range(3) if (name, k) in errors],
                      where, [errors[(name, k)] for k in range(3) if (name, k) in errors])
    for k in range(3):
        if all((name, k) in errors for name in cands):
            raise RuntimeError(f"impl='auto': no candidate can run the {PASS_NAMES[k]} of "
                               f"{where}: " + "; ".join(
                                   f"{name}: {errors[(name, k)]}" for name in cands))
    low = {name: tuple(passes.get((name, k), math.inf) for k in range(3)) for name in cands}
    runnable = [c for c in cands if not any((c, k) in errors for k in range(3))]
    return low, failed, runnable


def _measure_joint(triples: list[tuple[str, ...]], spec: ConvSpec, jit: Callable,
                   xwdy: tuple[jnp.ndarray, ...], reps: int, where: str,
                   failed: dict[str, str]) -> dict[tuple[str, ...], float]:
    """Stage 2: forward+backward together for each (fwd, dx, dw) triple; failures are added
    to ``failed``; raises when none runs."""
    joint_fns = {t: jit(_joint_fn(spec, t)) for t in triples}
    joint, joint_errors = _minima(joint_fns, {t: xwdy for t in triples}, reps)
    for t, err in joint_errors.items():
        failed["/".join(t)] = err
        _warn_dropped("/".join(t), ["forward+backward"], where, [err])
    if not joint:
        raise RuntimeError(f"impl='auto': no forward+backward combination can run {where}: "
                           + "; ".join(f"{'/'.join(t)}: {e}" for t, e in joint_errors.items()))
    return joint


def _first_line(err: BaseException) -> str:
    """``Type: first line of the message`` — XLA's errors run to many lines."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _warn_dropped(what: str, passes: list[str], where: str, errors: list[str]) -> None:
    if passes:
        warnings.warn(f"impl='auto' dropped {what!r} for the {', '.join(passes)} of {where}: "
                      f"it failed to compile or run ({errors[0]})", RuntimeWarning, stacklevel=2)


def _joint_fn(spec: ConvSpec, impls: tuple[str, str, str]) -> Callable[..., tuple]:
    """(x, w, dy) -> (<conv(x, w), dy>, (d/dx, d/dw)): one training-like forward+backward."""
    def fn(x: jnp.ndarray, w: jnp.ndarray, dy: jnp.ndarray) -> tuple:
        return jax.value_and_grad(
            lambda a, b: jnp.vdot(conv_bilinear(a, b, spec, impls, impls[0]), dy),
            argnums=(0, 1))(x, w)
    return fn


def _minima(fns: Mapping[Any, Callable[..., Any]], args: Mapping[Any, tuple],
            reps: int) -> tuple[dict[Any, float], dict[Any, str]]:
    """(minimum ms per function over ``reps`` interleaved rounds of the one stopwatch after
    one compile/warm-up call each, the first line of the error of each function that failed
    to compile or run)."""
    calls = {key: functools.partial(_blocking_call, fn, args[key]) for key, fn in fns.items()}
    errors: dict[Any, str] = {}
    for key, call in calls.items():
        try:
            call()
        except Exception as err:  # noqa: BLE001 — any failure drops this function, not auto
            errors[key] = _first_line(err)
    return interleaved_minima({k: c for k, c in calls.items() if k not in errors}, reps), errors


def _blocking_call(fn: Callable[..., Any], args: tuple) -> None:
    jax.block_until_ready(fn(*args))


def _load_disk(path: Path) -> None:
    for key, impls in _auto_cache.load_once(path, candidates()).items():
        _MEMORY.setdefault(key, AutoChoice(*impls[:3], source="disk",
                                           fwd_only=impls[3] if len(impls) == 4 else None))


def _save_disk(path: Path) -> None:
    ours = {k: list(c.impls) + ([c.fwd_only] if c.fwd_only else [])
            for k, c in _MEMORY.items() if c.source != "heuristic"}
    _auto_cache.save(path, ours, candidates())


def auto_choice(x_shape: tuple[int, ...], w_shape: tuple[int, ...], dtype: jnp.dtype,
                spec: ConvSpec, platform: str | None = None) -> AutoChoice:
    """The cached (or newly measured / heuristic) choice for a batched conv of these shapes,
    for ``platform`` (``"cpu"``, ``"gpu"`` or ``"tpu"``; default: the host's). Only the host
    platform is ever measured; any other gets :func:`heuristic_choice`.

    x_shape: (N, C_in, H, W) or (N, H, W, C_in) per ``spec.data_format``; w_shape OIHW.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> spec = jconv.conv_spec((2, 16, 8, 8), (16, 1, 3, 3), padding=1, groups=16)
      >>> jconv.set_auto_measure(False)
      >>> jconv.auto_choice((2, 16, 8, 8), (16, 1, 3, 3), jnp.float32, spec).impls
      ('loops', 'loops', 'loops')
      >>> jconv.set_auto_measure(None)
    """
    platform = platform or host_platform()
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, got {platform!r}")
    measure = measuring_enabled() and platform == host_platform()
    key = cache_key(x_shape, w_shape, dtype, spec, platform)
    disk = _auto_cache.disk_cache_path()
    if disk is not None:
        _load_disk(disk)
    choice = _MEMORY.get(key)
    # A choice naming an implementation that cannot run here any more (e.g. read from disk
    # after the oneDNN extension went missing) is measured again.
    runnable = set(candidates(platform, dtype, spec.ndim))
    if (choice is not None and (choice.source != "heuristic" or not measure)
            and {*choice.impls, choice.inference} <= runnable):
        return choice
    if not measure:
        choice = heuristic_choice(tuple(w_shape), spec, platform)
    else:
        choice = measure_choice(tuple(x_shape), tuple(w_shape), dtype, spec)
    _MEMORY[key] = choice
    if disk is not None and choice.source == "measured":
        _save_disk(disk)
    return choice


def conv_auto(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with OIHW weights via the implementations chosen
    for each platform; lowering for one platform keeps only that platform's choice."""
    choices = {p: auto_choice(tuple(x.shape), tuple(w.shape), x.dtype, spec, p)
               for p in PLATFORMS}
    return dispatch(x, w, spec, {p: (c.impls, c.inference) for p, c in choices.items()})
