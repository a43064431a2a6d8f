"""python -m train end to end: smoke runs (synthetic, mock TFDS, python folder), resume
equivalence and the error paths of the command line."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train import loop
from train.cli import main, parse_args

from train_helpers import TINY, interrupted_and_resumed, make_cifar_dir, metrics

SYNTH = ["data.source=synthetic", *TINY]


def test_smoke_synthetic_writes_every_output(tmp_path, capsys, monkeypatch):
    wd = tmp_path / "run"
    titles = []
    real_plot = loop.report.plot_curves
    monkeypatch.setattr(loop.report, "plot_curves",
                        lambda rec, path, title: titles.append(title) or real_plot(rec, path,
                                                                                   title))
    assert main(["--config", "vgg.yaml", "--workdir", str(wd), "--quiet",
                 "train.epochs=2", "train.max_steps_per_epoch=2", "train.tensorboard=true",
                 *SYNTH[:-1]]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "M MACs/image" in out and "test accuracy" in out
    records = metrics(wd)
    assert [r["epoch"] for r in records] == [1, 2] and records[0]["images_per_s"] > 0
    results = json.loads((wd / "results.json").read_text())
    assert results["test_images"] == 40 and len(results["confusion_matrix"]) == 10
    assert sum(map(sum, results["confusion_matrix"])) == 40
    run = json.loads((wd / "run.json").read_text())
    assert run["seed"] == 0 and "jax" in run["versions"] and run["devices"]
    for name in ("curves.png", "config.yaml", "checkpoints"):
        assert (wd / name).exists()
    assert any((wd / "tensorboard").iterdir())
    assert titles == [f"vgg.yaml: run {wd}, seed 0"]
    assert f"outputs: {wd}/(metrics.jsonl, curves.png, results.json, checkpoints/, " \
        "tensorboard/, config.yaml, run.json)" in out


def test_smoke_mock_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=48):
        assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path), "--quiet",
                     "data.source=tfds", "train.epochs=1", *TINY]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["test_images"] == 48


def test_smoke_cifar10_dir_and_bare_config_name(tmp_path):
    folder, _, _ = make_cifar_dir(tmp_path, train_rows=(20, 17), test_rows=9)
    assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path / "run"), "--quiet",
                 "data.source=cifar10_dir", f"data.dir={folder}", "train.epochs=1",
                 *TINY]) == 0
    assert metrics(tmp_path / "run")[0]["epoch"] == 1


def test_smoke_bfloat16_sgd_nesterov_cosine_nchw(tmp_path):
    assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path), "--quiet",
                 "train.epochs=2", "train.max_steps_per_epoch=2", "model.dtype=bfloat16",
                 "model.data_format=NCHW", "optim.name=sgd", "optim.lr=0.05",
                 "optim.schedule=cosine", "model.conv_impl=im2col", *SYNTH]) == 0
    records = metrics(tmp_path)
    assert len(records) == 2 and all(math.isfinite(r["train_loss"]) for r in records)
    assert 0 < records[1]["lr"] < 0.05  # cosine decay under way


def test_resume_after_kill_gives_identicalmetrics(tmp_path, monkeypatch):
    args = ["--config", "vgg.yaml", "--quiet", "train.epochs=3", "train.max_steps_per_epoch=3",
            "train.keep_checkpoints=1", *SYNTH]
    final = interrupted_and_resumed(main, args, tmp_path, monkeypatch)
    assert final[0]["confusion_matrix"] == final[1]["confusion_matrix"]


@pytest.mark.slow  # a real subprocess, killed and resumed
def test_resume_after_sigkill_of_a_real_process(tmp_path):
    """A separate ``python -m train`` process is SIGKILLed (no cleanup, no handler) once
    epoch 1 is on disk; ``--resume`` must then end exactly like an uninterrupted run."""
    # Enough steps per epoch that the kill lands inside epoch 2 or 3, not after the run.
    args = ["--config", "vgg.yaml", "--quiet", "train.epochs=3", "train.keep_checkpoints=1",
            *SYNTH, "data.synthetic_train=4096"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "train", *args]
    subprocess.run([*cmd, "--workdir", str(tmp_path / "full")], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=300)

    victim = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--workdir", str(victim)], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    log = victim / "metrics.jsonl"
    while not (log.exists() and log.read_text().count("\n") >= 1):  # epoch 1 fully written
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before epoch 1"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert len(metrics(victim)) < 3, "the kill came after the run had finished"

    subprocess.run([*cmd, "--workdir", str(victim), "--resume"], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=300)
    full, resumed = metrics(tmp_path / "full"), metrics(victim)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for a, b in zip(full, resumed):
        assert {k: a[k] for k in loop.DETERMINISTIC_FIELDS} == \
            {k: b[k] for k in loop.DETERMINISTIC_FIELDS}
    final = [json.loads((d / "results.json").read_text()) for d in (tmp_path / "full", victim)]
    assert final[0]["confusion_matrix"] == final[1]["confusion_matrix"]


def test_overrides_may_come_anywhere_among_options():
    args = parse_args(["data.source=synthetic", "--quiet", "train.epochs=2", "--config",
                       "vgg.yaml", "optim.lr=0.1", "--resume"])
    assert args.overrides == ["data.source=synthetic", "train.epochs=2", "optim.lr=0.1"]
    assert args.quiet and args.resume and args.config == "vgg.yaml"


def test_existing_run_needs_resume_with_the_same_config(tmp_path, capsys):
    args = ["--config", "vgg.yaml", "--workdir", str(tmp_path), "--quiet", "train.epochs=1",
            "train.max_steps_per_epoch=1", *SYNTH]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run's checkpoints: pass --resume" in capsys.readouterr().err
    assert main([*args, "optim.lr=0.5", "--resume"]) == 2
    assert f"the config differs from the one the run in {tmp_path} started with: optim.lr " \
        "0.004 -> 0.5. Only train.epochs may change on --resume" in capsys.readouterr().err


def test_resume_reads_the_saved_config_extends_epochs_and_knows_a_complete_run(tmp_path,
                                                                                  capsys):
    wd = str(tmp_path)
    assert main(["--config", "vgg.yaml", "--workdir", wd, "--quiet", "train.epochs=1",
                 "train.max_steps_per_epoch=1", *SYNTH]) == 0
    capsys.readouterr()
    assert main(["--workdir", wd, "--resume", "--quiet"]) == 0  # no --config: config.yaml
    out = capsys.readouterr().out
    assert f"--resume: the run in {wd} is already complete (1 epoch, test accuracy " in out
    assert "compiled" not in out and "to train it longer pass train.epochs=N with N > 1" in out
    assert main(["--workdir", wd, "--resume", "--quiet", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "--resume: train.epochs 1 -> 2: the learning-rate schedule now spans 2 epochs" in out
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2]
    assert json.loads((tmp_path / "results.json").read_text())["epochs"] == 2
    assert main(["--workdir", wd, "--resume", "train.epochs=1"]) == 2
    assert "train.epochs=1 is below the 2 epochs the run has done" in capsys.readouterr().err


@pytest.mark.parametrize("args, match", [
    (["--resume"], "--config is required (or --resume --workdir D, which continues"),
    (["--resume", "--workdir", "{tmp}/none"],
     "--resume without --config reads the run's {tmp}/none/config.yaml, which does not exist"),
    (["--config", "nope"], "no such file (also looked in"),
])
def test_config_errors_of_the_command_line(tmp_path, capsys, args, match):
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    assert match.format(tmp=tmp_path) in capsys.readouterr().err


def test_no_data_offline_names_the_offline_ways_and_leaves_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "runs" / "cifar"
    assert main(["--config", "vgg.yaml", "--workdir", str(workdir), *TINY,
                 f"data.dir={tmp_path / 'cache'}", "data.url=file:///no/such/cifar.tar.gz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: downloading file:///no/such/cifar.tar.gz failed")
    assert "offline, train on the real 5,170-image subset (--config cifar_subset.yaml) or on " \
        "random images (data.source=synthetic" in err
    assert not (tmp_path / "runs").exists()


def test_missing_cifar10_dir_says_where_it_looked_and_that_it_never_downloads(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "vgg.yaml", "--workdir", "run", *TINY, "data.source=cifar10_dir",
                 "data.download=true", "data.dir=no/such/folder"]) == 2
    err = capsys.readouterr().err
    assert f"data.dir='no/such/folder' (= {tmp_path}/no/such/folder) does not exist" in err
    assert "(data.source=cifar10_dir never downloads)" in err
    assert "set data.download=true" not in err and not (tmp_path / "run").exists()


def test_subset_config_run_elsewhere_says_its_data_dir_is_relative(tmp_path, capsys,
                                                                   monkeypatch):
    """Outside the repository the subset config's relative data.dir is missing: the error
    says so (cwd, resolved path, the two fixes), not "use --config cifar_subset.yaml", the
    config already in use."""
    from train.config import CONFIG_DIR, load_yaml

    monkeypatch.chdir(tmp_path)
    rel = load_yaml(CONFIG_DIR / "cifar_subset.yaml").data.dir
    assert main(["--config", "cifar_subset.yaml", "--workdir", "run", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: data.dir={rel!r} (= {(tmp_path / rel).resolve()}) does not "
                          f"exist relative to the working directory {tmp_path}: it is the real "
                          f"5,170-image subset's folder, given relative to the repository root "
                          f"({CONFIG_DIR.parent})"), err
    assert "Run from the repository root, or pass data.dir=" in err
    assert str((CONFIG_DIR.parent / rel).resolve()) in err
    assert "--config cifar_subset.yaml" not in err and not (tmp_path / "run").exists()
    # Any other missing relative folder keeps the general advice.
    assert main(["--config", "cifar_subset.yaml", "--workdir", "run", *TINY,
                 "data.dir=no/such/folder"]) == 2
    assert "(--config cifar_subset.yaml)" in capsys.readouterr().err


@pytest.mark.parametrize("extra, match", [
    (["optim.lr=zero"], "optim.lr='zero' is invalid: expected a number"),
    (["data.source=cifar10_dir", "data.dir=/no/such/folder"],
     "data.dir='/no/such/folder' does not exist"),
])
def test_errors_are_one_line_no_traceback(tmp_path, capsys, extra, match):
    assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path), *TINY, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and match in err and "Traceback" not in err


def test_onednn_without_its_extension_stops_with_one_line_naming_the_fix(tmp_path, capsys,
                                                                         monkeypatch):
    from jconv import _onednn

    monkeypatch.setattr(_onednn, "_EXTENSION", "jconv._onednn_ffi_not_built")
    monkeypatch.setattr(_onednn, "_library_or_reason", _onednn._load)
    assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path / "run"),
                 "model.conv_impl=onednn", *SYNTH]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: model.conv_impl='onednn' cannot "
                                                   "run here: ")
    assert "python -m pip install -e ." in err and not (tmp_path / "run").exists()
