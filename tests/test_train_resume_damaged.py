"""--resume with damaged checkpoints: it falls back to the newest one that loads, says which
it skipped and why, ignores stray step folders, and still ends with the metrics of an
uninterrupted run; when none loads it stops with one line listing what it tried."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import jax.numpy as jnp
import optax
import pytest

from train import loop
from train.checkpoint import CheckpointError, Checkpoints
from train.cli import main

from train_helpers import TINY



def _state(value: float) -> dict:
    """A pytree like a training state: arrays and an optimiser state of named tuples (whose
    types only ``_METADATA`` records)."""
    params = {"w": jnp.full((4, 3), value, jnp.float32), "b": jnp.full(3, -value, jnp.float32)}
    return {"params": params, "opt": optax.adam(1e-3).init(params),
            "step": jnp.asarray(value, jnp.int32)}


LIKE = _state(0.0)


def _data_file(step_dir: Path) -> Path:
    return sorted((step_dir / "state" / "d").iterdir())[0]


def _truncate(step_dir: Path) -> None:
    f = _data_file(step_dir)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _zero(step_dir: Path) -> None:
    f = _data_file(step_dir)
    f.write_bytes(bytes(f.stat().st_size))


# What Orbax 0.12.8 writes per step: <step>/{_CHECKPOINT_METADATA, state/{_METADATA,
# manifest.ocdbt, d/<data>, ocdbt.process_0/...}, meta/metadata}.
DAMAGE = {  # kind -> (damage to a step folder, words the skip message must hold)
    "truncated data file": (_truncate, "OUT_OF_RANGE"),
    "zeroed data file": (_zero, "DATA_LOSS"),
    "no manifest.ocdbt": (lambda d: (d / "state" / "manifest.ocdbt").unlink(), "NOT_FOUND"),
    "no _METADATA": (lambda d: (d / "state" / "_METADATA").unlink(), "pytree structure"),
    "no meta/metadata": (lambda d: (d / "meta" / "metadata").unlink(),
                         "FileNotFoundError: File meta/metadata not found."),
}


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ck") / "checkpoints"
    ck = Checkpoints(d, keep=3)
    for step in (1, 2, 3):
        ck.save(step, _state(float(step)), {"epoch": step}, test_acc=0.1)
    ck.close()
    return d


def _restore(directory: Path) -> tuple[tuple | None, list[str], Checkpoints]:
    said: list[str] = []
    ck = Checkpoints(directory, keep=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leaked "Event loop is closed" either
        found = ck.restore_newest(LIKE, say=said.append)
    return found, said, ck


@pytest.mark.parametrize("kind", DAMAGE)
def test_each_damage_kind_falls_back_to_the_previous_checkpoint(three_checkpoints, tmp_path,
                                                                capfd, kind):
    d = tmp_path / "checkpoints"
    shutil.copytree(three_checkpoints, d)
    damage, words = DAMAGE[kind]
    damage(d / "3")
    found, said, ck = _restore(d)
    assert found is not None
    step, state, meta = found
    assert step == 2 and meta == {"epoch": 2} and state["params"]["w"].tolist() == [[2.0] * 3] * 4
    assert len(said) == 1 and said[0].startswith("checkpoint 3 is unreadable (")
    assert said[0].endswith("); resuming from 2") and words in said[0]
    assert "Traceback" not in capfd.readouterr().err
    # The damaged one is set aside, so that epoch 3 can be saved again.
    assert (tmp_path / "checkpoints.damaged" / "3").is_dir() and ck.all_steps() == [1, 2]
    ck.save(3, state, {"epoch": 3}, test_acc=0.2)
    assert ck.all_steps() == [1, 2, 3]
    ck.close()


def test_stray_empty_step_folder_is_ignored(three_checkpoints, tmp_path):
    d = tmp_path / "checkpoints"
    shutil.copytree(three_checkpoints, d)
    (d / "7").mkdir()
    found, said, ck = _restore(d)
    ck.close()
    assert found is not None and found[0] == 3
    assert said == ["ignoring checkpoint folder 7: not a complete checkpoint (no state/, meta/)"]
    assert not (d / "7").exists()


def test_no_loadable_checkpoint_raises_listing_what_was_tried(three_checkpoints, tmp_path):
    d = tmp_path / "checkpoints"
    shutil.copytree(three_checkpoints, d)
    _truncate(d / "3")
    for step in ("1", "2"):
        (d / step / "meta" / "metadata").unlink()
    ck = Checkpoints(d, keep=3)
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*checkpoints could be "
                       r"restored \(tried 3: ValueError: OUT_OF_RANGE.*; 2: FileNotFoundError: "
                       r"File meta/metadata not found\.; 1: FileNotFoundError"):
        ck.restore_newest(LIKE, say=lambda line: None)
    ck.close()
    assert sorted(p.name for p in d.iterdir()) == ["1", "2", "3"]  # nothing moved


def test_empty_directory_restores_nothing(tmp_path):
    found, said, ck = _restore(tmp_path / "checkpoints")
    ck.close()
    assert found is None and said == []


ARGS = ["--config", "vgg.yaml", "--quiet", "train.epochs=3", "train.max_steps_per_epoch=2",
        "train.keep_checkpoints=3", "data.source=synthetic", *TINY]


def _metrics(workdir: Path) -> list[dict]:
    return [{k: r[k] for k in loop.DETERMINISTIC_FIELDS}
            for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_cli_resume_falls_back_with_identical_metrics_or_stops_in_one_line(tmp_path, capsys):
    full = tmp_path / "full"
    assert main([*ARGS, "--workdir", str(full)]) == 0
    wd = tmp_path / "damaged"
    shutil.copytree(full, wd)
    _zero(wd / "checkpoints" / "3")
    # Without its results the run is not complete (killed at the end): --resume retrains.
    (wd / "results.json").unlink()
    capsys.readouterr()
    assert main([*ARGS, "--workdir", str(wd), "--resume"]) == 0
    out, err = capsys.readouterr()
    assert "--resume: checkpoint 3 is unreadable (ValueError: DATA_LOSS" in out
    assert "; resuming from 2\n--resume: continuing after epoch 2" in out
    assert "Traceback" not in err
    assert _metrics(wd) == _metrics(full)  # epoch 3 retrained to the same numbers

    for step in ("1", "2", "3"):
        (wd / "checkpoints" / step / "meta" / "metadata").unlink()
    (wd / "results.json").unlink()
    assert main([*ARGS, "--workdir", str(wd), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: --resume: no checkpoint in ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
