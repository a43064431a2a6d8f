"""Load a PyTorch ``state_dict`` (Conv1d/2d/3d, ConvTranspose1d/2d/3d, BatchNorm, Linear) into a
jconv / Flax NNX model. PyTorch itself is not needed: tensors are read through ``.numpy()``
(or ``np.asarray``), so a state_dict saved as NumPy arrays works too."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from .nn import _ConvNd, _ConvTransposeNd
from .summary import summary

# Conv1d/2d/3d and ConvTranspose1d/2d/3d, by their common bases.
_LAYER_TYPES = (_ConvNd, _ConvTransposeNd, nnx.BatchNorm, nnx.Linear)
# torch parameter/buffer name -> jconv attribute, per layer kind.
_CONV_KEYS = {"weight": "kernel", "bias": "bias"}
_BN_KEYS = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_IGNORED = {"num_batches_tracked"}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _group(state_dict: Mapping[str, Any]) -> OrderedDict[str, dict[str, np.ndarray]]:
    """``{"features.0": {"weight": ..., "bias": ...}, ...}`` in the state_dict's order."""
    groups: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
    for key, value in state_dict.items():
        prefix, _, name = key.rpartition(".")
        if name in _IGNORED:
            continue
        groups.setdefault(prefix, {})[name] = _to_numpy(value)
    return groups


def _torch_style_names(model: nnx.Module) -> dict[tuple[Any, ...], str]:
    """Every node path -> the name PyTorch would give the same layer: the path joined with
    dots, without the ``layers`` step of an ``nnx.Sequential`` (``features.layers.0`` is
    torch's ``features.0``; an ``nnx.List`` ``blocks.0`` is an ``nn.ModuleList``'s)."""
    sequential = {p for p, n in nnx.iter_graph(model) if isinstance(n, nnx.Sequential)}
    return {p: ".".join(str(part) for i, part in enumerate(p)
                        if not (part == "layers" and p[:i] in sequential))
            for p, _ in nnx.iter_graph(model)}


def _target_layers(model: nnx.Module,
                   input_shape: Sequence[int] | None) -> list[tuple[str, str, nnx.Module]]:
    """(path, torch-style name, layer) of every layer with parameters, in call order when
    ``input_shape`` is given (one traced forward pass), else in graph order."""
    names = _torch_style_names(model)
    by_path = {".".join(map(str, p)): (names[p], n) for p, n in nnx.iter_graph(model)
               if isinstance(n, _LAYER_TYPES)}
    order = list(by_path) if input_shape is None else list(dict.fromkeys(
        r.name for r in summary(model, input_shape).layers if r.name in by_path))
    return [(path, *by_path[path]) for path in order]


def _check_mapping(mapping: Mapping[str, str] | None, groups: Mapping[str, Any],
                   paths: Sequence[str]) -> dict[str, str]:
    """``mapping`` (torch prefix -> jconv path) checked against both sides."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise TypeError(f"mapping must be a mapping of torch module names to jconv layer paths "
                        f"(str -> str), got {mapping!r}")
    bad_keys = [k for k in mapping if k not in groups]
    if bad_keys:
        raise ValueError(f"mapping names torch modules {bad_keys} that the state_dict does not "
                         f"have; its modules with parameters are {list(groups)}")
    bad_values = [v for v in mapping.values() if v not in paths]
    if bad_values:
        raise ValueError(f"mapping names jconv paths {bad_values} that are not layers with "
                         f"parameters of the model; its layers are {list(paths)} (paths as in "
                         f"jconv.summary)")
    twice = sorted({v for v in mapping.values() if list(mapping.values()).count(v) > 1})
    if twice:
        raise ValueError(f"mapping sends several torch modules to the same jconv layer "
                         f"{twice}: {dict(mapping)}")
    return dict(mapping)


def _pair_layers(groups: Mapping[str, Any], targets: Sequence[tuple[str, str, nnx.Module]],
                 mapping: Mapping[str, str], by_call_order: bool
                 ) -> tuple[list[tuple[str, str, nnx.Module]], list[str],
                            list[tuple[str, str, nnx.Module]]]:
    """(torch prefix, jconv path, layer) pairs, the torch modules no layer takes and the
    layers no torch module fills: ``mapping`` first, then equal names (a jconv path or its
    torch-style name), then — only with ``by_call_order`` — the rest in order. Never pairs
    by position otherwise: when both sides are left with layers, it raises."""
    layer_of = {path: layer for path, _, layer in targets}
    # Both names of a layer find it; they cannot name two different layers (a torch-style
    # name only drops the ``layers`` step of an nnx.Sequential, whose other children are ints).
    index = {name: path for path, torch_name, _ in targets for name in (path, torch_name)}
    pairs = dict(mapping)
    taken = set(pairs.values())
    for prefix in groups:
        path = index.get(prefix)
        if prefix not in pairs and path is not None and path not in taken:
            pairs[prefix] = path
            taken.add(path)
    left_torch = [p for p in groups if p not in pairs]
    left_jconv = [t for t in targets if t[0] not in taken]
    if left_torch and left_jconv:
        if not by_call_order:
            raise ValueError(
                f"state_dict modules {left_torch} have no jconv layer of the same name, and "
                f"model layers {[p for p, _, _ in left_jconv]} (as torch would name them: "
                f"{[n for _, n, _ in left_jconv]}) have no state_dict entry; layers are "
                f"matched by name, never by position: pass mapping={{torch name: jconv path}} "
                f"(e.g. mapping={{{left_torch[0]!r}: {left_jconv[0][0]!r}}}), rename the "
                f"attributes to match, or pass input_shape= to pair the rest in call order "
                f"(right only if the torch module registers them in the order it calls them)")
        if len(left_torch) != len(left_jconv):
            raise ValueError(f"state_dict has {len(left_torch)} layers without a name match "
                             f"({left_torch}) but the model has {len(left_jconv)} "
                             f"({[p for p, _, _ in left_jconv]}): pairing them in call order "
                             f"needs equal counts; pass mapping= for the others")
        pairs.update((p, t[0]) for p, t in zip(left_torch, left_jconv))
        left_torch, left_jconv = [], []
    ordered = [(prefix, pairs[prefix], layer_of[pairs[prefix]]) for prefix in groups
               if prefix in pairs]
    return ordered, left_torch, left_jconv


def _linear_kernel(weight: np.ndarray, chw: Sequence[int] | None, path: str) -> np.ndarray:
    """torch Linear weight (out, in) -> Flax kernel (in, out). With ``chw`` = (C, H, W) the
    input features came from flattening an NCHW tensor in PyTorch but an NHWC one here, so
    the rows are reordered from (C, H, W) to (H, W, C) flatten order."""
    if chw is None:
        return weight.T
    c, h, w = chw
    if weight.shape[1] != c * h * w:
        raise ValueError(f"flatten_chw[{path!r}] = {tuple(chw)} has C*H*W = {c * h * w} but "
                         f"the torch weight has {weight.shape[1]} input features")
    return weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1).T


def _check_shape(var: Any, attr: str, value: np.ndarray, where: str) -> None:
    if tuple(var.shape) != value.shape:
        raise ValueError(f"{where}: shape mismatch for {attr!r}: jconv expects "
                         f"{tuple(var.shape)}, state_dict gives {value.shape} (after layout "
                         f"conversion)")


def _torch_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class SkippedKeys(NamedTuple):
    """What :func:`load_torch_state_dict` left out (torch key names), like the
    ``_IncompatibleKeys`` PyTorch's ``load_state_dict`` returns: ``missing_keys`` the model
    has but the state_dict lacks (those keep their values), ``unexpected_keys`` the state_dict
    has but the model cannot take. Both empty after a strict load (which raises otherwise)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _layer_keys(layer: nnx.Module) -> dict[str, str]:
    """torch parameter/buffer name -> jconv attribute for this kind of layer."""
    return _BN_KEYS if isinstance(layer, nnx.BatchNorm) else _CONV_KEYS


def _check_no_skipped(missing: list[str], unexpected: list[str]) -> None:
    """strict loading: any missing or unexpected key is an error, before anything is copied."""
    problems = [f"{what} keys {keys}" for what, keys in (("missing", missing),
                                                         ("unexpected", unexpected)) if keys]
    if problems:
        raise ValueError(f"state_dict does not match the model: {'; '.join(problems)} "
                         "(pass strict=False to load the rest and skip these)")


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                          mapping: Mapping[str, str] | None = None,
                          input_shape: Sequence[int] | None = None,
                          flatten_chw: Mapping[str, Sequence[int]] | None = None,
                          strict: bool = True) -> SkippedKeys:
    """Copy a PyTorch ``state_dict`` into ``model`` in place; returns the keys it skipped
    (:class:`SkippedKeys`, as PyTorch's ``load_state_dict`` returns its ``_IncompatibleKeys``).

    Torch modules (keys grouped by prefix: ``stem.weight`` belongs to ``stem``) are matched
    **by name** with the model's conv, transposed-conv, BatchNorm and Linear layers: the
    attribute path as in :func:`jconv.summary`, an ``nnx.Sequential``'s ``layers`` step
    dropped as PyTorch has none. Where names differ, ``mapping={torch_name: jconv_path}``
    pairs them, or ``input_shape=`` pairs the unmatched ones in call order (one traced
    forward pass); otherwise a ``ValueError`` lists both sides' unmatched names — layers are
    never paired by position silently.

      ConvNd / ConvTransposeNd weight (PyTorch's layout) -> kernel, unchanged
      BatchNorm weight, bias, running_mean, running_var -> scale, bias, mean, var
      Linear weight (out, in) -> kernel (in, out); an NHWC model passes
      ``flatten_chw={path: (C, H, W)}`` for a Linear reading a flattened feature map

    Strict like PyTorch: missing or unexpected keys raise a ``ValueError`` listing them and
    nothing is copied; ``strict=False`` loads the rest and lists them in the result. A kind
    or shape mismatch always raises. The full rules: docs/layers.md, "Importing PyTorch
    weights".

    Example (torch's ``fc`` mapped to jconv's ``layers.0``; NumPy arrays work as tensors):
      >>> import numpy as np; from flax import nnx; import jconv
      >>> model = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
      >>> sd = {"0.weight": np.arange(6.0).reshape(2, 3), "0.bias": np.zeros(2)}
      >>> jconv.load_torch_state_dict(model, sd)
      SkippedKeys(missing_keys=[], unexpected_keys=[])
      >>> model.layers[0].kernel[...].tolist()
      [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
      >>> jconv.load_torch_state_dict(model, {"fc.weight": np.ones((2, 3))}, strict=False,
      ...                             mapping={"fc": "layers.0"})
      SkippedKeys(missing_keys=['fc.bias'], unexpected_keys=[])
    """
    _check_load_args(model, state_dict, strict)
    groups = _group(state_dict)
    targets = _target_layers(model, input_shape)
    paths = [p for p, _, _ in targets]
    pairs, left_torch, left_jconv = _pair_layers(
        groups, targets, _check_mapping(mapping, groups, paths), input_shape is not None)
    flatten = _check_flatten(flatten_chw, paths)
    plan: list[tuple[Any, np.ndarray]] = []
    missing: list[str] = []
    unexpected = [_torch_key(prefix, name) for prefix in left_torch for name in groups[prefix]]
    for prefix, path, layer in pairs:
        _plan_layer(prefix, path, layer, groups[prefix], flatten, plan, missing, unexpected)
    missing += [_torch_key(torch_name, name) for _, torch_name, layer in left_jconv
                for name, attr in _layer_keys(layer).items()
                if getattr(layer, attr, None) is not None]
    if strict:
        _check_no_skipped(missing, unexpected)
    for var, value in plan:
        var[...] = jnp.asarray(value, var[...].dtype)
    return SkippedKeys(missing, unexpected)


def _check_load_args(model: object, state_dict: object, strict: object) -> None:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of torch key names to tensors (e.g. "
                        f"torch_model.state_dict()), got {type(state_dict).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {strict!r}")


def _check_flatten(flatten_chw: Mapping[str, Sequence[int]] | None,
                   paths: list[str]) -> dict[str, Sequence[int]]:
    flatten = dict(flatten_chw or {})
    unknown = set(flatten) - set(paths)
    if unknown:
        raise ValueError(f"flatten_chw names {sorted(unknown)}, which are not layers of the "
                         f"model ({paths})")
    return flatten


def _plan_layer(prefix: str, path: str, layer: Any, tensors: Mapping[str, np.ndarray],
                flatten: Mapping[str, Sequence[int]], plan: list[tuple[Any, np.ndarray]],
                missing: list[str], unexpected: list[str]) -> None:
    """Check one torch module against its jconv layer; add its copies to ``plan`` and its
    missing / unexpected keys to those lists."""
    where = f"torch {prefix!r} -> jconv {path!r} ({type(layer).__name__})"
    is_bn = isinstance(layer, nnx.BatchNorm)
    keys = _layer_keys(layer)
    torch_bn = "running_mean" in tensors or "running_var" in tensors
    weight = tensors.get("weight")
    ndim = 1 if is_bn else 2 if isinstance(layer, nnx.Linear) else layer.ndim + 2
    if torch_bn != is_bn and (torch_bn or weight is not None) or (
            weight is not None and weight.ndim != ndim):
        kind = "BatchNorm" if torch_bn else f"{weight.ndim}-D weight" if weight is not None \
            else "bias-only"
        raise ValueError(f"{where}: layer kinds do not match (state_dict entry is a "
                         f"{kind} layer)")
    missing += [_torch_key(prefix, name) for name, attr in keys.items()
                if getattr(layer, attr, None) is not None and name not in tensors]
    for name, value in tensors.items():
        var = getattr(layer, keys[name], None) if name in keys else None
        if var is None:  # not a torch name for this kind, or e.g. a bias for bias=False
            unexpected.append(_torch_key(prefix, name))
            continue
        if isinstance(layer, nnx.Linear) and name == "weight":
            value = _linear_kernel(value, flatten.get(path), path)
        _check_shape(var, keys[name], value, where)
        plan.append((var, value))
