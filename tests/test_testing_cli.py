"""``python -m jconv.testing``: the adapter and tolerance flags, ``--help`` with defaults, and
one ``Error:`` line (exit status 2) for every bad input, a class target included."""

from __future__ import annotations

import functools
import re

import pytest
from jax import lax

from jconv import testing
from jconv.testing._grids import GRIDS
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
    for text in ["--op OP[,OP...]|all", "(default: conv2d)", "--cases {quick,default,full}, "
                 "--grid {quick,default,full}", "(default: default)",
                 "seed of the random cases (default: 0)",
                 "(default: float64,float32,bfloat16)", "--layer", "--unbatched", "--nhwc",
                 "Flax/TF (default: OIHW)", "--tolerance-mode {pytorch,half-sum}",
                 "(default: pytorch)", "--tolerance DTYPE=FWD,GRAD",
                 "mymodule:make_eqx_conv --layer --unbatched"]:
        assert text in out, text


def test_help_lists_every_op_with_the_grids_case_counts(capsys):
    assert run(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # Every op of the public grids, counted through the public functions.
    grids = {"conv1d": lambda k: testing.conv_cases(1, k),
             "conv2d": testing.conv2d_cases,
             "conv3d": lambda k: testing.conv_cases(3, k),
             "conv_transpose1d": lambda k: testing.conv_transpose_cases(1, k),
             "conv_transpose2d": testing.conv_transpose2d_cases,
             "conv_transpose3d": lambda k: testing.conv_transpose_cases(3, k),
             **{f: functools.partial(testing.pool_cases, f) for f in testing.POOL_FUNCTIONS},
             "max_pool2d": testing.max_pool2d_cases, "avg_pool2d": testing.avg_pool2d_cases,
             "unfold": testing.unfold_cases, "fold": testing.fold_cases}
    assert set(grids) == set(GRIDS)
    counts = ", ".join(f"{op} " + "/".join(str(len(grid(kind))) for kind in testing.KINDS)
                       for op, grid in grids.items() if op in GRIDS)
    listed = re.search(r"case counts: (.*) \(default: conv2d\)", out).group(1)
    assert sorted(listed.split(", ")) == sorted(counts.split(", "))
    assert "conv2d 10/49/225" in listed  # the docs' table, not a stale hard-coded count


@pytest.mark.parametrize("argv,message", [
    ([], r"the following arguments are required: target"),
    (["jconv:conv2d", "--cases", "nope"], r"argument --cases/--grid: invalid choice: 'nope'"),
    (["jconv:conv2d", "--op", "conv4d"], r"--op must be 'all' or comma-separated ops of "
                                         r"conv1d, conv2d, conv3d, .*, fold, got 'conv4d'"),
    (["jconv:conv2d", "--op", "conv1d,"], r"--op must be .* got 'conv1d,'"),
    (["jconv:conv1d", "--op", "conv1d,conv3d"],
     r"several ops need a module TARGET \(checked as TARGET.<op>\), got 'jconv:conv1d'"),
    (["train", "--op", "conv1d"], r"'train' has no attribute 'conv1d'"),
    ([":conv2d"], r"target must look like 'package.module:function' \(or 'package.module' "
                  r"to check package.module.<op>\), got ':conv2d'"),
    (["jconv", "--op", "max_pool3d", "--nhwc"],
     r"--nhwc is for the ops with two spatial dims \(conv2d, conv_transpose2d, max_pool2d, "
     r".*\), got --op max_pool3d"),
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


def test_module_target_checks_each_op_by_name(capsys):
    assert run(["jconv", "--op", "conv1d,max_pool3d,fold", *QUICK_F32]) == 0
    out = capsys.readouterr().out
    for op, n in [("conv1d", 4), ("max_pool3d", 3), ("fold", 3)]:
        assert f"check_{op}({op}): {n} cases ('quick', seed 0) -> PASS" in out
    assert out.rstrip().endswith("3 of 3 ops passed")


def test_a_failing_op_among_several_exits_1_and_is_named(capsys):
    # This module's conv1d ignores the bias: that op fails, the other passes.
    assert run([f"{__name__}", "--op", "conv1d,max_pool1d", *QUICK_F32]) == 1
    assert capsys.readouterr().out.rstrip().endswith("1 of 2 ops passed; failed: conv1d")


def conv1d(x, w, b=None, **kw):
    """Not conv1d: ignores the bias (for the failing-op test above)."""
    import jconv

    return jconv.conv1d(x, w, None, **kw)


def max_pool1d(x, **kw):
    import jconv

    return jconv.max_pool1d(x, **kw)


@pytest.mark.slow  # every op of the table, one compile per case: a few seconds
def test_op_all_checks_every_op_of_the_table(capsys):
    assert run(["jconv", "--op", "all", *QUICK_F32]) == 0
    out = capsys.readouterr().out
    assert [line.split("(")[0] for line in out.splitlines() if line.startswith("check_")
            and "cases (" in line] == [f"check_{op}" for op in GRIDS]
    assert out.rstrip().endswith(f"{len(GRIDS)} of {len(GRIDS)} ops passed")
