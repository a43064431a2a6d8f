"""train.errors: one base class, the built-in exception of each cause, and one CLI wrapper
that every ``python -m train*`` entry point shares (one ``Error:`` line, exit status)."""

from __future__ import annotations

import importlib

import pytest

from train import errors
from train.config import load_config, load_yaml
from train.errors import (CheckpointError, ConfigError, ConfigTypeError, DataError,
                          ExportError, RaceError, RunError, TrainError, command)


@pytest.mark.parametrize("cls, builtin", [
    (ConfigError, ValueError), (ConfigTypeError, TypeError), (ConfigTypeError, ValueError),
    (DataError, RuntimeError), (RunError, RuntimeError), (CheckpointError, RuntimeError),
    (ExportError, RuntimeError), (RaceError, RuntimeError)])
def test_every_error_is_a_train_error_and_its_builtin(cls, builtin):
    assert issubclass(cls, TrainError) and issubclass(cls, builtin)


def test_the_modules_raise_the_one_set_of_classes():
    for module, name in [("train.config", "ConfigError"), ("train.data", "DataError"),
                         ("train.workdir", "RunError"), ("train.checkpoint", "CheckpointError"),
                         ("train.export", "ExportError"), ("train.race", "RaceError")]:
        assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_command_prints_one_line_and_returns_the_exit_code(capsys):
    @command
    def fails(argv=None):
        raise RaceError("jconv run of seed 0 exited with 1; its log: x.log")

    assert fails([]) == 1
    assert capsys.readouterr().err == "Error: jconv run of seed 0 exited with 1; its log: x.log\n"


def test_command_leaves_a_bug_its_traceback():
    @command
    def buggy(argv=None):
        raise KeyError("not a TrainError")

    with pytest.raises(KeyError, match="not a TrainError"):
        buggy([])


@pytest.mark.parametrize("module, argv, match", [
    ("train.cli", ["--config", "no_such_config.yaml"], r"--config 'no_such_config.yaml': no "
                                                       r"such file"),
    ("train.bench", ["--config", "cifar_subset.yaml", "--rounds", "0"],
     r"--rounds and --steps >= 1"),
    ("train.bench", ["--config", "cifar_subset.yaml", "--formats", "NWHC"],
     r"--formats must be NHWC and/or NCHW, got 'NWHC'"),
    ("train.check", ["--config", "cifar_subset.yaml", "--steps", "0"],
     r"--steps and --batch-size must be >= 1"),
    ("train.check", ["--config", "cifar_subset.yaml", "--impls", "nope"],
     r"--impls/--reference \['nope'\] not in"),
    ("train.profile", ["--config", "cifar_subset.yaml", "--steps", "0"],
     r"--steps must be >= 1, got 0"),
    ("train.export", ["--workdir", "/no/such/run"], r"--workdir /no/such/run does not exist"),
    ("train.race", ["--seeds", "a,b"], r"--seeds must be comma-separated integers"),
    ("train.race", ["--seeds", ""], r"--seeds must name at least one seed"),
])
def test_every_entry_point_says_bad_input_in_one_line(module, argv, match, capsys):
    import re

    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err
    assert re.match(rf"^Error: .*{match}", err) and err.count("\n") == 1, err


def test_a_yaml_of_the_wrong_type_is_a_type_error(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(TypeError, match=r"list.yaml: the YAML holds a list, expected a "
                                        r"mapping of sections"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "base.yaml").write_text("base: 3\n")
    with pytest.raises(ConfigTypeError, match=r"base=3 is invalid: expected the file name"):
        load_yaml(tmp_path / "base.yaml")
    (tmp_path / "empty.yaml").write_text("base: ''\n")
    with pytest.raises(ConfigError, match=r"base='' is invalid") as info:
        load_yaml(tmp_path / "empty.yaml")
    assert not isinstance(info.value, TypeError)


def test_a_bad_coordinator_is_a_config_error():
    from train.parallel import init_distributed

    with pytest.raises(ConfigError, match=r"--coordinator 'x' is invalid: expected HOST:PORT"):
        init_distributed("x", 2, 0)
