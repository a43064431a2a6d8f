"""Builds jconv's one native part, ``jconv/_onednn_ffi*.so`` (``impl="onednn"``): XLA FFI
handlers for oneDNN's convolutions, from ``jconv/_onednn.cc``. Everything else about the
package is in pyproject.toml.

The extension is optional: without a C++17 compiler, oneDNN's headers (the
``onednn-devel-cpu-gomp`` wheel) or jaxlib's FFI headers the install still succeeds, with a
warning, and ``impl="onednn"`` raises an error naming what is missing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _wheel_file(dist: str, name: str) -> Path | None:
    """Where pip put ``name`` (a path suffix) of the installed distribution ``dist``."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/").endswith(name):
            return Path(f.locate()).resolve()
    return None


def _native_inputs() -> tuple[dict[str, list[str]], str]:
    """Include/library dirs for the extension, or ({}, what is missing)."""
    header = _wheel_file("onednn-devel-cpu-gomp", "include/oneapi/dnnl/dnnl.hpp")
    lib = _wheel_file("onednn-cpu-gomp", "libdnnl.so")
    spec = importlib.util.find_spec("jaxlib")
    ffi = None
    if spec is not None and spec.submodule_search_locations:
        ffi = Path(next(iter(spec.submodule_search_locations))) / "include"
    if header is None:
        return {}, "oneDNN headers (pip package onednn-devel-cpu-gomp)"
    if lib is None:
        return {}, "oneDNN library (pip package onednn-cpu-gomp)"
    if ffi is None or not (ffi / "xla/ffi/api/ffi.h").exists():
        return {}, "XLA FFI headers (pip package jaxlib)"
    return {"include_dirs": [str(header.parents[2]), str(ffi)],
            "library_dirs": [str(lib.parent)]}, ""


class BuildExt(build_ext):
    """Finds the oneDNN wheels' and jaxlib's files at build time; skips, with a warning,
    what cannot be built."""

    def build_extension(self, ext: Extension) -> None:
        dirs, missing = _native_inputs()
        if missing:
            self.warn(f"not building {ext.name} (impl='onednn'): {missing} not found")
            return
        ext.include_dirs += dirs["include_dirs"]
        ext.library_dirs += dirs["library_dirs"]
        super().build_extension(ext)


setup(
    ext_modules=[Extension(
        "jconv._onednn_ffi",
        sources=["jconv/_onednn.cc"],
        language="c++",
        extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden"],
        libraries=["dnnl", "gomp", "stdc++"],
        # site-packages/jconv -> <prefix>/lib, where the onednn-cpu-gomp wheel puts
        # libdnnl.so.3; jconv/_onednn.py also preloads it, which covers editable installs.
        runtime_library_dirs=["$ORIGIN/../../.."],
        optional=True,  # a failed compile or link warns instead of failing the install
    )],
    cmdclass={"build_ext": BuildExt},
)
