"""Load a PyTorch ``state_dict`` (Conv2d / ConvTranspose2d / BatchNorm2d / Linear) into a
jconv / Flax NNX model. PyTorch itself is not needed: tensors are read through ``.numpy()``
(or ``np.asarray``), so a state_dict saved as NumPy arrays works too."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from .nn import Conv2d, ConvTranspose2d
from .summary import summary

_LAYER_TYPES = (Conv2d, ConvTranspose2d, nnx.BatchNorm, nnx.Linear)
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


def _assign(layer: nnx.Module, attr: str, value: np.ndarray, where: str) -> None:
    var = getattr(layer, attr, None)
    if var is None:
        raise ValueError(f"{where}: the jconv layer has no {attr!r} (e.g. bias=False) but the "
                         f"state_dict provides one")
    if tuple(var.shape) != value.shape:
        raise ValueError(f"{where}: shape mismatch for {attr!r}: jconv expects "
                         f"{tuple(var.shape)}, state_dict gives {value.shape} (after layout "
                         f"conversion)")
    var[...] = jnp.asarray(value, var[...].dtype)


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], *,
                          input_shape: Sequence[int] | None = None,
                          flatten_chw: Mapping[str, Sequence[int]] | None = None) -> nnx.Module:
    """Copy a PyTorch ``state_dict`` into ``model`` in place (and return it).

    The torch layers (keys grouped by module prefix, in the state_dict's order, which is
    PyTorch's registration order) are matched one-to-one with the model's parameterised
    layers (:class:`jconv.nn.Conv2d`, :class:`jconv.nn.ConvTranspose2d`, ``nnx.BatchNorm`` /
    :class:`jconv.nn.BatchNorm2d`, ``nnx.Linear``) in call order when ``input_shape`` is
    given (a traced forward pass, see :func:`jconv.summary`), else in graph order, which is
    the layer order of an ``nnx.Sequential``. Layouts:

      Conv2d weight (C_out, C_in/groups, kH, kW) -> kernel, unchanged (jconv uses OIHW)
      ConvTranspose2d weight (C_in, C_out/groups, kH, kW) -> kernel, unchanged
      BatchNorm2d weight, bias, running_mean, running_var -> scale, bias, mean, var
      Linear weight (out, in) -> kernel (in, out), transposed

    An NCHW jconv model flattens in PyTorch's (C, H, W) order, so nothing else changes. For
    an NHWC model pass ``flatten_chw={path: (C, H, W)}`` for each Linear that reads a
    flattened feature map (``path`` as in :func:`jconv.summary`, e.g. ``"layers.9"``): its
    input rows are reordered to (H, W, C). ``num_batches_tracked`` is ignored. Raises
    ``ValueError`` on any count, kind or shape mismatch, naming the torch key.

    Example (a Linear layer; a torch state_dict holds torch tensors, NumPy works as well):
      >>> import numpy as np; from flax import nnx; import jconv
      >>> model = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
      >>> sd = {"0.weight": np.arange(6.0).reshape(2, 3), "0.bias": np.zeros(2)}
      >>> jconv.load_torch_state_dict(model, sd).layers[0].kernel[...].tolist()
      [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
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
    for (prefix, tensors), (path, layer) in zip(groups.items(), targets):
        where = f"torch {prefix!r} -> jconv {path!r} ({type(layer).__name__})"
        is_bn = "running_mean" in tensors
        keys = _BN_KEYS if is_bn else _CONV_KEYS
        extra = set(tensors) - set(keys)
        if extra:
            names = sorted(f"{prefix}.{k}" for k in extra)
            raise ValueError(f"{where}: unexpected entries {names}")
        weight = tensors.get("weight")
        if isinstance(layer, nnx.BatchNorm) != is_bn or (
                weight is not None and not is_bn
                and weight.ndim != (2 if isinstance(layer, nnx.Linear) else 4)):
            kind = "BatchNorm" if is_bn else f"{weight.ndim}-D weight" if weight is not None \
                else "bias-only"
            raise ValueError(f"{where}: layer kinds do not match (state_dict entry is a "
                             f"{kind} layer)")
        for name, value in tensors.items():
            if isinstance(layer, nnx.Linear) and name == "weight":
                value = _linear_kernel(value, flatten_chw.get(path), path)
            _assign(layer, keys[name], value, where)
    return model
