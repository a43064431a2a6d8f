"""XLA compiler options that pick which kernels XLA:CPU runs convolutions with, and a
``jax.jit`` that applies them.

jax 0.10's CPU backend hands every float32/float64 2-D convolution in NHWC-able layout to
YNNPACK (its default ``xla_cpu_experimental_ynn_fusion_type`` list holds
``LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION``); without that entry XLA runs the same
convolution with its Eigen kernels, which were faster on the CIFAR CNN's layers on CPU
(measurements in docs/performance.md), so ``conv_backend="eigen"`` drops only that entry and
keeps YNNPACK for dots and reductions. The option is per compilation: it changes nothing outside the jit it is
given to, and it is not an approximation — both backends compute the exact convolution.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from ._auto import compiler_options_scope

CONV_BACKENDS = ("eigen", "xla_default")
YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# jax 0.10.2's default list (read from an XLA dump of its compile options) minus
# LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
EIGEN_YNN_FUSION_TYPES = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


@functools.cache
def _eigen_options_accepted() -> bool:
    """Whether this jaxlib's CPU compiler knows the option (compiles a tiny conv once)."""
    options = {YNN_FUSION_OPTION: EIGEN_YNN_FUSION_TYPES}
    x = jnp.zeros((1, 4, 4, 1), jnp.float32)
    w = jnp.zeros((1, 1, 3, 3), jnp.float32)
    conv = functools.partial(lax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                             dimension_numbers=("NHWC", "OIHW", "NHWC"))
    try:
        jax.jit(conv, compiler_options=options).lower(x, w).compile()
    except Exception as err:  # noqa: BLE001 — any rejection means "not supported here"
        warnings.warn(f"this jaxlib rejects {YNN_FUSION_OPTION}={EIGEN_YNN_FUSION_TYPES!r} "
                      f"({type(err).__name__}: {str(err)[:200]}); conv_backend='eigen' "
                      "falls back to XLA's default kernels", RuntimeWarning, stacklevel=3)
        return False
    return True


def conv_compiler_options(conv_backend: str = "eigen") -> dict[str, Any]:
    """``compiler_options`` for ``jax.jit`` that select XLA's convolution kernels.

    conv_backend: ``"eigen"`` — on the CPU backend, run convolutions with XLA's Eigen kernels
    instead of YNNPACK (dots and reductions keep YNNPACK); ``"xla_default"`` — XLA's own
    choice. Returns ``{}`` where there is nothing to change: another backend (GPU/TPU),
    ``"xla_default"``, or a jaxlib that no longer knows the option (with a ``RuntimeWarning``).

    Example:
      >>> import jax, jconv
      >>> opts = jconv.conv_compiler_options("eigen")
      >>> sorted(opts) == ([] if jax.default_backend() != "cpu"
      ...                  else ["xla_cpu_experimental_ynn_fusion_type"])
      True
      >>> jconv.conv_compiler_options("xla_default")
      {}
    """
    if not isinstance(conv_backend, str) or conv_backend not in CONV_BACKENDS:
        raise ValueError(f"conv_backend must be one of {CONV_BACKENDS}, got {conv_backend!r}")
    if conv_backend == "xla_default" or jax.default_backend() != "cpu":
        return {}
    if not _eigen_options_accepted():
        return {}
    return {YNN_FUSION_OPTION: EIGEN_YNN_FUSION_TYPES}


def jit(fun: Callable[..., Any], *, conv_backend: str = "eigen",
        **jit_kwargs: Any) -> Callable[..., Any]:
    """``jax.jit(fun, **jit_kwargs)`` compiled with :func:`conv_compiler_options`
    (``conv_backend``), whose ``impl="auto"`` convolutions measure their choices under the
    same options — so ``auto`` ranks implementations by what this jit will actually run.

    ``compiler_options`` in ``jit_kwargs`` are merged over the conv options. Shapes are
    ``fun``'s; nothing is approximated.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> step = jconv.jit(lambda x, w: jconv.conv2d(x, w, padding=1))
      >>> step(jnp.ones((2, 3, 8, 8)), jnp.ones((4, 3, 3, 3))).shape
      (2, 4, 8, 8)
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {fun!r}")
    options = {**conv_compiler_options(conv_backend), **(jit_kwargs.pop("compiler_options", None)
                                                         or {})}

    @functools.wraps(fun)
    def traced(*args: Any, **kwargs: Any) -> Any:
        # Runs while jax traces: auto's measurements made now use this jit's options.
        with compiler_options_scope(options):
            return fun(*args, **kwargs)

    return jax.jit(traced, compiler_options=options or None, **jit_kwargs)


def _backends_initialized() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # a jax without this private module: assume the safe answer
        return True
    return bool(xla_bridge.backends_are_initialized())


@functools.cache
def _flag_accepted(flag: str) -> bool:
    """Whether this jaxlib starts with ``flag`` in XLA_FLAGS (XLA aborts the process on an
    unknown flag, so it is tried in a child process once)."""
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip(),
           "JAX_PLATFORMS": "cpu"}
    probe = "import jax, jax.numpy as jnp; jax.block_until_ready(jnp.ones(2) + 1)"
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def set_default_conv_backend(conv_backend: str) -> None:
    """Process-wide opt-in: every CPU compilation of this process, plain ``jax.jit``
    included, runs convolutions with ``conv_backend``'s kernels (see
    :func:`conv_compiler_options`).

    It works by adding the option to the ``XLA_FLAGS`` environment variable, which XLA reads
    once, when JAX starts its backend: so call it before the first JAX computation (right
    after the imports). Calling it later raises a ``RuntimeError``, because the flag could
    no longer take effect. Nothing happens on ``import jconv``; equivalently, start Python
    with ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` followed by
    ``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE``. The flag changes only
    XLA's CPU backend. ``"xla_default"`` removes the flag again (before the first
    computation). A jaxlib that does not know the flag gets a ``RuntimeWarning`` and XLA's
    default kernels.

    Example (in a fresh process)::

        import jconv
        jconv.set_default_conv_backend("eigen")   # before any computation
        ...                                         # jax.jit(f) now uses Eigen convs on CPU
    """
    if not isinstance(conv_backend, str) or conv_backend not in CONV_BACKENDS:
        raise ValueError(f"conv_backend must be one of {CONV_BACKENDS}, got {conv_backend!r}")
    flag = f"--{YNN_FUSION_OPTION}={EIGEN_YNN_FUSION_TYPES}"
    current = os.environ.get("XLA_FLAGS", "")
    others = [f for f in current.split() if not f.startswith(f"--{YNN_FUSION_OPTION}=")]
    wanted = others + ([flag] if conv_backend == "eigen" else [])
    if wanted == current.split():
        return
    if _backends_initialized():
        raise RuntimeError(
            f"set_default_conv_backend({conv_backend!r}) must run before JAX's first "
            "computation: the XLA backend has already started and read XLA_FLAGS. Call it "
            "right after the imports, use jconv.jit(f, conv_backend=...) for one function, "
            f"or start Python with XLA_FLAGS='{flag}'")
    if conv_backend == "eigen" and not _flag_accepted(flag):
        warnings.warn(f"this jaxlib does not accept XLA_FLAGS={flag}; convolutions keep "
                      "XLA's default kernels", RuntimeWarning, stacklevel=2)
        return
    os.environ["XLA_FLAGS"] = " ".join(wanted)
