"""Load a PyTorch ``state_dict`` (Conv1d/2d/3d, ConvTranspose1d/2d/3d, BatchNorm, Linear) into a
jconv / Flax NNX model. PyTorch itself is not needed: tensors are read through ``.numpy()``
(or ``np.asarray``), so a state_dict saved as NumPy arrays works too."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal, Mapping, NamedTuple, Sequence, overload

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


def _target_layers(model: nnx.Module,
                   input_shape: Sequence[int] | None) -> list[tuple[str, nnx.Module]]:
    """Layers with parameters, in call order (traced, if ``input_shape`` is given) or else in
    graph order (``nnx.iter_graph``: layer order for ``nnx.Sequential``, attribute names
    sorted for custom modules)."""
    by_path = {".".join(map(str, p)): n for p, n in nnx.iter_graph(model)
               if isinstance(n, _LAYER_TYPES)}
    if input_shape is None:
        return list(by_path.items())
    order = dict.fromkeys(r.name for r in summary(model, input_shape).layers
                          if r.name in by_path)
    return [(name, by_path[name]) for name in order]


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
    """What ``load_torch_state_dict(..., strict=False)`` left out (torch key names):
    ``missing_keys`` the model has but the state_dict lacks (those keep their values),
    ``unexpected_keys`` the state_dict has but the model cannot take."""

    missing_keys: list[str]
    unexpected_keys: list[str]


@overload
def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                          input_shape: Sequence[int] | None = ...,
                          flatten_chw: Mapping[str, Sequence[int]] | None = ...,
                          strict: Literal[True] = ...) -> nnx.Module: ...


@overload
def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                          input_shape: Sequence[int] | None = ...,
                          flatten_chw: Mapping[str, Sequence[int]] | None = ...,
                          strict: Literal[False]) -> tuple[nnx.Module, SkippedKeys]: ...


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                          input_shape: Sequence[int] | None = None,
                          flatten_chw: Mapping[str, Sequence[int]] | None = None,
                          strict: bool = True) -> nnx.Module | tuple[nnx.Module, SkippedKeys]:
    """Copy a PyTorch ``state_dict`` into ``model`` in place (and return it).

    The torch layers (keys grouped by module prefix, in the state_dict's order, which is
    PyTorch's registration order) are matched one-to-one with the model's parameterised
    layers (:class:`jconv.nn.Conv1d`/``Conv2d``/``Conv3d``,
    :class:`jconv.nn.ConvTranspose1d`/``2d``/``3d``, ``nnx.BatchNorm`` /
    :class:`jconv.nn.BatchNorm2d`, ``nnx.Linear``) in call order when ``input_shape`` is
    given (a traced forward pass, see :func:`jconv.summary`), else in graph order, which is
    the layer order of an ``nnx.Sequential``. Layouts:

      ConvNd weight (C_out, C_in/groups, *kernel) -> kernel, unchanged (PyTorch's layout)
      ConvTransposeNd weight (C_in, C_out/groups, *kernel) -> kernel, unchanged
      BatchNorm2d weight, bias, running_mean, running_var -> scale, bias, mean, var
      Linear weight (out, in) -> kernel (in, out), transposed

    An NCHW jconv model flattens in PyTorch's (C, H, W) order, so nothing else changes. For
    an NHWC model pass ``flatten_chw={path: (C, H, W)}`` for each Linear that reads a
    flattened feature map (``path`` as in :func:`jconv.summary`, e.g. ``"layers.9"``): its
    input rows are reordered to (H, W, C). ``num_batches_tracked`` is ignored.

    Strict like PyTorch's ``load_state_dict``: a key the model has but the state_dict lacks
    (e.g. no ``running_var``) or one the model cannot take (e.g. a bias for ``bias=False``)
    raises ``ValueError`` listing them all, and nothing is copied. With ``strict=False``
    those are skipped (missing ones keep the model's values) and the result is ``(model,
    SkippedKeys(missing_keys, unexpected_keys))``. Either way a layer count, kind or shape
    mismatch raises ``ValueError`` naming the torch key.

    Example (a Linear layer; a torch state_dict holds torch tensors, NumPy works as well):
      >>> import numpy as np; from flax import nnx; import jconv
      >>> model = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
      >>> sd = {"0.weight": np.arange(6.0).reshape(2, 3), "0.bias": np.zeros(2)}
      >>> jconv.load_torch_state_dict(model, sd).layers[0].kernel[...].tolist()
      [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
      >>> _, skipped = jconv.load_torch_state_dict(model, {"0.weight": np.ones((2, 3))},
      ...                                          strict=False)
      >>> skipped
      SkippedKeys(missing_keys=['0.bias'], unexpected_keys=[])
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of torch key names to tensors (e.g. "
                        f"torch_model.state_dict()), got {type(state_dict).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {strict!r}")
    groups = _group(state_dict)
    targets = _target_layers(model, input_shape)
    if len(groups) != len(targets):
        raise ValueError(f"state_dict has {len(groups)} layers ({list(groups)}) but the model "
                         f"has {len(targets)} layers with parameters "
                         f"({[p for p, _ in targets]})")
    flatten_chw = dict(flatten_chw or {})
    unknown = set(flatten_chw) - {p for p, _ in targets}
    if unknown:
        raise ValueError(f"flatten_chw names {sorted(unknown)}, which are not layers of the "
                         f"model ({[p for p, _ in targets]})")
    plan: list[tuple[Any, np.ndarray]] = []
    missing: list[str] = []
    unexpected: list[str] = []
    for (prefix, tensors), (path, layer) in zip(groups.items(), targets):
        where = f"torch {prefix!r} -> jconv {path!r} ({type(layer).__name__})"
        is_bn = isinstance(layer, nnx.BatchNorm)
        keys = _BN_KEYS if is_bn else _CONV_KEYS
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
                value = _linear_kernel(value, flatten_chw.get(path), path)
            _check_shape(var, keys[name], value, where)
            plan.append((var, value))
    if strict and (missing or unexpected):
        problems = [f"{what} keys {keys}" for what, keys in (("missing", missing),
                                                             ("unexpected", unexpected)) if keys]
        raise ValueError(f"state_dict does not match the model: {'; '.join(problems)} "
                         "(pass strict=False to load the rest and skip these)")
    for var, value in plan:
        var[...] = jnp.asarray(value, var[...].dtype)
    return model if strict else (model, SkippedKeys(missing, unexpected))
