"""``impl="lax"``: XLA's own convolution, ``lax.conv_general_dilated``."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._spec import ConvSpec, accum_dtype


def conv_lax(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with OIHW weights; output dtype = input dtype."""
    fmt = spec.data_format
    y = lax.conv_general_dilated(
        x, w, window_strides=spec.stride, padding=spec.padding, rhs_dilation=spec.dilation,
        dimension_numbers=(fmt, "OIHW", fmt), feature_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=accum_dtype(x.dtype))
    return y.astype(x.dtype)
