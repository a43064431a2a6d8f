"""Temporarily replacing classes' ``__call__``: how :func:`jconv.summary` records layer calls
and :func:`jconv.fold_conv_bn_graph` tags them while tracing a model."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


@contextlib.contextmanager
def patched_calls(wrappers: Mapping[type, Wrapper]) -> Iterator[None]:
    """While active, each class's ``__call__`` is ``wrap(its __call__)`` (Python looks special
    methods up on the class, so patching instances would not work). On exit each class gets
    back what it defined itself: an inherited ``__call__`` is deleted again, not left behind
    as the class's own attribute.

    Example:
      >>> class A:
      ...     def __call__(self): return 1
      >>> class B(A): pass
      >>> with patched_calls({B: lambda f: lambda self: f(self) + 1}):
      ...     B()()
      2
      >>> B()(), "__call__" in B.__dict__
      (1, False)
    """
    own = {cls: cls.__dict__.get("__call__") for cls in wrappers}
    originals = {cls: cls.__call__ for cls in wrappers}
    try:
        for cls, wrap in wrappers.items():
            cls.__call__ = wrap(originals[cls])  # type: ignore[method-assign]
        yield
    finally:
        for cls, defined in own.items():
            if defined is None:
                del cls.__call__  # type: ignore[attr-defined]
            else:
                cls.__call__ = defined  # type: ignore[method-assign]
