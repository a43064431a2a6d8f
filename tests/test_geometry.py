"""The one geometry module: output sizes against PyTorch's own layers, the layout parser."""

from __future__ import annotations

import pytest
import torch

from jconv._geometry import (check_data_format, format_ndim, output_size,
                             transposed_output_size)


@pytest.mark.parametrize("size,k,s,p,d,ceil", [
    (5, 2, 2, 0, 1, False), (5, 2, 2, 0, 1, True), (7, 3, 2, 1, 2, True),
    (6, 3, 3, 1, 1, True), (9, 4, 3, 2, 1, False)])
def test_output_size_matches_torch_max_pool(size, k, s, p, d, ceil):
    y = torch.nn.functional.max_pool1d(torch.zeros(1, 1, size), k, s, p, d, ceil_mode=ceil)
    assert output_size(size, k, s, (p, p), d, ceil) == y.shape[-1]


def test_output_size_is_zero_when_the_kernel_does_not_fit():
    assert output_size(2, 5, 1, (0, 0), 1) == 0


@pytest.mark.parametrize("size,k,s,p,d,op", [(3, 3, 2, 1, 1, 1), (4, 2, 3, 0, 2, 0)])
def test_transposed_output_size_matches_torch(size, k, s, p, d, op):
    w = torch.zeros(1, 1, k)
    y = torch.nn.functional.conv_transpose1d(torch.zeros(1, 1, size), w, stride=s, padding=p,
                                             output_padding=op, dilation=d)
    assert transposed_output_size(size, k, s, (p, p), d, op) == y.shape[-1]


def test_format_ndim_default_or_error():
    assert format_ndim("ndhwc") == 3 and format_ndim("xyz", 2) == 2
    with pytest.raises(ValueError, match=r"data_format must be one of .*NCL.*got 'xyz'"):
        format_ndim("xyz")


def test_check_data_format_names_the_op():
    assert check_data_format("ncl", None) == "NCL"
    with pytest.raises(ValueError, match=r"one of \('NCL', 'NLC'\) for 1-D pooling, got 'NCHW'"):
        check_data_format("NCHW", 1, "1-D pooling")


def test_to_tuple_broadcasts_one_int_unless_told_not_to():
    from jconv._geometry import to_tuple
    assert to_tuple((2,), "stride", 3, minimum=1) == (2, 2, 2)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints, got \(2,\)"):
        to_tuple((2,), "kernel_size", 2, minimum=1, broadcast=False)
    with pytest.raises(ValueError, match=r"padding must be >= 0 in every dimension, got -1"):
        to_tuple(-1, "padding", 2, minimum=0)


def test_the_2d_size_names_are_deprecated():
    from jconv._spec import conv_spec
    spec = conv_spec((1, 3, 8, 8), (4, 3, 3, 3))
    with pytest.warns(DeprecationWarning, match="in_hw is deprecated: use in_size"):
        assert spec.in_hw == spec.in_size == (8, 8)
    with pytest.warns(DeprecationWarning, match="out_hw is deprecated: use out_size"):
        assert spec.out_hw == spec.out_size == (6, 6)
