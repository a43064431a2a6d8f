"""Bad configs, unusable work directories and diverging training: one error line each, and
a diverged run keeps its last good checkpoint and valid JSON metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train import report
from train.cli import main
from train.config import ConfigError, load_config
from train.workdir import check_workdir

from train_helpers import TINY

SYNTH = ["data.source=synthetic", *TINY]


@pytest.mark.parametrize("override, match", [
    ("optim.lr=inf", r"optim.lr=inf is invalid: expected a finite number"),
    ("optim.lr=nan", r"optim.lr=nan is invalid: expected a finite number"),
    ("optim.weight_decay=-inf", r"optim.weight_decay=-inf is invalid: expected a finite"),
    ("model.head_scale=inf", r"model.head_scale=inf is invalid: expected a finite number"),
    ("optim.warmup_epochs=nan", r"optim.warmup_epochs=nan is invalid: expected a finite"),
    ("seed=-1", r"seed=-1 is invalid: expected an int >= 0"),
])
def test_non_finite_floats_and_negative_seed_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("vgg.yaml", [override])


def test_yaml_holding_a_list_is_a_config_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- seed: 0\n- data: {}\n")
    with pytest.raises(ConfigError, match=r"list.yaml: the YAML holds a list, expected a "
                                          r"mapping of sections \(seed, data, model"):
        load_config(path)


def test_workdir_that_is_a_file_or_under_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"--workdir '.*afile' is a file, expected a folder"):
        check_workdir(f)
    with pytest.raises(ConfigError, match=r"--workdir '.*afile/run' cannot be created or "
                                          r"written to \(Not a directory\)"):
        check_workdir(f / "run")


def test_unwritable_workdir(tmp_path):
    target = Path("/sys/jconv-test-run")  # read-only even for root, unlike a chmod-ed folder
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")
    with pytest.raises(ConfigError, match=r"--workdir '/sys/jconv-test-run' cannot be created "
                                          r"or written to \(.+\); choose a writable folder"):
        check_workdir(target)


@pytest.mark.parametrize("args, match", [
    (["seed=-1"], "Error: seed=-1 is invalid"),
    (["optim.lr=inf"], "Error: optim.lr=inf is invalid: expected a finite number"),
    (["--workdir", "{file}"], "is a file, expected a folder"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, match):
    f = tmp_path / "afile"
    f.write_text("x")
    args = [a.format(file=f) for a in args]
    workdir = [] if "--workdir" in args else ["--workdir", str(tmp_path / "run")]
    assert main(["--config", "vgg.yaml", *workdir, *SYNTH, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and match in err and len(err.strip().splitlines()) == 1


def test_cli_yaml_list_is_one_line(tmp_path, capsys):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    assert main(["--config", str(path), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "the YAML holds a list" in err and len(err.strip().splitlines()) == 1


def test_metrics_log_writes_null_for_non_finite_values(tmp_path):
    log = report.MetricsLog(tmp_path / "m.jsonl")
    log.write({"epoch": 1, "test_loss": float("nan"), "lr": float("inf"), "acc": 0.5})
    line = (tmp_path / "m.jsonl").read_text()
    assert json.loads(line) == {"epoch": 1, "test_loss": None, "lr": None, "acc": 0.5}
    assert "NaN" not in line and "Infinity" not in line


@pytest.mark.slow
def test_diverging_run_stops_at_once_keeping_the_last_good_checkpoint(tmp_path, capsys,
                                                                      monkeypatch):
    """A NaN pixel in epoch 2's batches makes that epoch's first loss NaN: the run stops
    there with one error line, epoch 1 stays checkpointed and logged as valid JSON."""
    from train import experiment

    real = experiment.config_batches

    def poisoned(*args, epoch, **kwargs):
        batches = real(*args, epoch=epoch, **kwargs)
        if epoch == 1:
            first = dict(batches[0])
            first["image"] = first["image"].copy()
            first["image"][0, 0, 0, 0] = np.nan
            return [first, *[batches[i] for i in range(1, len(batches))]]
        return batches

    monkeypatch.setattr(experiment, "config_batches", poisoned)
    wd = tmp_path / "run"
    assert main(["--config", "vgg.yaml", "--workdir", str(wd), "--quiet", "train.epochs=3",
                 "train.max_steps_per_epoch=2", *SYNTH]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: training diverged: the loss is nan at epoch 2, step 1 of 2")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ["1"]
    records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and np.isfinite(records[0]["train_loss"])
