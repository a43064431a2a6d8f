"""``impl="lax"``: XLA's own convolution, ``lax.conv_general_dilated``."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._spec import ConvSpec, accum_dtype


def conv_lax(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with (C_out, C_in/groups, *kernel) weights;
    output dtype = input dtype."""
    fmt = spec.data_format
    # The weight's spatial letters must be the input's ("OIHW" for "NCHW"/"NHWC").
    w_fmt = "OI" + fmt.replace("N", "").replace("C", "")
    y = lax.conv_general_dilated(
        x, w, window_strides=spec.stride, padding=spec.padding, rhs_dilation=spec.dilation,
        dimension_numbers=(fmt, w_fmt, fmt), feature_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=accum_dtype(x.dtype))
    return y.astype(x.dtype)
