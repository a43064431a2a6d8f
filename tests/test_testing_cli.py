"""``python -m jconv.testing``: the adapter and tolerance flags, ``--help`` with defaults, and
one ``Error:`` line (exit status 2) for every bad input, a class target included."""

from __future__ import annotations

import re

import pytest
from jax import lax

from jconv import testing
from jconv.testing.__main__ import main
# The CLI loads its targets from this module by name: test_testing's convs and layer.
from test_testing import (_pair, bias_added_in_bfloat16, lax_conv,  # noqa: F401
                          make_one_example_layer)


def nhwc_hwio(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1):
    """A correct channels-last conv taking a Flax/TF-layout (HWIO) kernel."""
    s, d = _pair(stride), _pair(dilation)
    pads = testing.conv_pads(padding, tuple(w.shape[:2]), d, s)
    xb = x[None] if x.ndim == 3 else x
    y = lax.conv_general_dilated(xb, w, s, pads, rhs_dilation=d, feature_group_count=groups,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y if b is None else y + b
    return y[0] if x.ndim == 3 else y


def run(argv: list[str]) -> int:
    """``main``'s exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


QUICK_F32 = ["--cases", "quick", "--dtypes", "float32", "--no-grads"]


@pytest.mark.parametrize("target", ["jconv.nn:Conv2d", "equinox.nn:Conv2d"])
def test_class_target_is_one_error_line_saying_what_to_type(target, capsys):
    pytest.importorskip(target.split(".")[0])
    assert run([target, *QUICK_F32]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"Error: {target!r} is a class, not a conv function: build the layer "
                          f"and use from_layer. Write make(w, b, *, stride, padding, dilation, "
                          f"groups) returning the layer")
    assert "then run: python -m jconv.testing yourmodule:make --layer (add --unbatched" in err


def test_help_lists_the_adapter_and_tolerance_flags_with_defaults(capsys):
    assert run(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for text in ["--op {conv2d,conv_transpose2d,max_pool2d,avg_pool2d}",
                 "implements (default: conv2d)", "(default: default)",
                 "seed of the random cases (default: 0)",
                 "(default: float64,float32,bfloat16)", "--layer", "--unbatched", "--nhwc",
                 "Flax/TF (default: OIHW)", "--tolerance-mode {pytorch,half-sum}",
                 "(default: pytorch)", "--tolerance DTYPE=FWD,GRAD",
                 "mymodule:make_eqx_conv --layer --unbatched"]:
        assert text in out, text


def test_help_counts_the_cases_from_the_grids(capsys):
    assert run(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    grids = (testing.conv2d_cases, testing.conv_transpose2d_cases, testing.max_pool2d_cases,
             testing.avg_pool2d_cases)
    counts = ", ".join(f"{kind} " + "/".join(str(len(grid(kind))) for grid in grids)
                       for kind in testing.KINDS)
    assert f"case list: {counts} for --op conv2d/conv_transpose2d/max_pool2d/avg_pool2d" in out
    assert f"default {len(testing.conv2d_cases('default'))}/" in out


@pytest.mark.parametrize("argv,message", [
    ([], r"the following arguments are required: target"),
    (["jconv:conv2d", "--cases", "nope"], r"argument --cases: invalid choice: 'nope'"),
    (["jconv:conv2d", "--tolerance-mode", "loose"],
     r"argument --tolerance-mode: invalid choice: 'loose'"),
    (["jconv:conv2d", "--seed", "x"], r"argument --seed: invalid int value: 'x'"),
    (["jconv:conv2d", "--tolerance", "bfloat16=1"],
     r"--tolerance must look like DTYPE=FORWARD,GRAD with DTYPE one of \('float64', 'float32', "
     r"'float16', 'bfloat16'\) and non-negative numbers \(e.g. bfloat16=2e-2,3e-2\), "
     r"got 'bfloat16=1'"),
    (["jconv:conv2d", "--tolerance", "float8=1,2"], r"--tolerance must .* got 'float8=1,2'"),
    (["jconv:conv2d", "--tolerance", "bfloat16=-1,2"], r"--tolerance must .* got 'bfloat16=-1,2'"),
    (["jconv:conv2d", "--tolerance", "bfloat16"], r"--tolerance must .* got 'bfloat16'"),
    (["jconv:conv2d", "--unbatched"], r"--unbatched needs --layer"),
    (["jconv:conv2d", "--weight", "HWIO"], r"--weight HWIO needs --nhwc"),
    (["jconv:max_pool2d", "--op", "max_pool2d", "--layer"],
     r"--layer and --unbatched are for --op conv2d or conv_transpose2d, got --op max_pool2d"),
    (["jconv:conv2d", "--dtypes", "float8"], r"dtypes entries must be one of .* got 'float8'"),
    (["jconv:nope"], r"'jconv' has no attribute 'nope'"),
])
def test_bad_input_is_one_error_line_and_exit_2(argv, message, capsys):
    assert run(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("Error: "), err
    assert re.search(message, err), err


def test_layer_flags_adapt_unbatched_layers_and_channels_last_functions(capsys):
    layer = f"{__name__}:make_one_example_layer"
    assert run([layer, "--layer", "--unbatched", *QUICK_F32]) == 0
    assert "check_conv2d(from_layer(make_one_example_layer, batched=False))" in (
        capsys.readouterr().out)
    assert run([layer, "--layer", *QUICK_F32, "--fail-fast"]) == 1  # the batch reaches it
    assert "raised ValueError: expected one example (C, H, W)" in capsys.readouterr().out
    assert run([f"{__name__}:nhwc_hwio", "--nhwc", "--weight", "HWIO", *QUICK_F32]) == 0
    assert run([f"{__name__}:nhwc_hwio", "--nhwc", *QUICK_F32, "--fail-fast"]) == 1


@pytest.mark.slow
def test_tolerance_flags(capsys):
    # PyTorch-exact by default: fails, names the cause and the flag that accepts it.
    target = f"{__name__}:bias_added_in_bfloat16"
    assert run([target, "--cases", "quick", "--dtypes", "bfloat16"]) == 1
    out = capsys.readouterr().out
    assert "tolerance mode 'pytorch': PyTorch-exact" in out
    assert "Likely cause: only the bias gradient fails, only in bfloat16" in out
    assert "(CLI: --tolerance-mode half-sum)" in " ".join(out.split())
    assert run([target, "--cases", "quick", "--dtypes", "bfloat16",
                "--tolerance-mode", "half-sum"]) == 0
    assert "tolerance mode 'half-sum'" in capsys.readouterr().out
    # An explicit tolerance replaces the table's: 1e-9 in float32 fails a correct conv.
    assert run([f"{__name__}:lax_conv", *QUICK_F32, "--tolerance", "float32=1e-9,1e-9",
                "--fail-fast"]) == 1
    assert "> tolerance 1e-09 at output index" in capsys.readouterr().out
