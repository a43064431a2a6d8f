"""The run's overheads are the user's to choose: ``train.eval_every`` and
``train.checkpoint_every`` (the last epoch always gets both), results.json says where the
time went, SIGTERM stops a run as Ctrl-C does, and a resume that only extends the epochs
accepts the warm-up the trainer scaled with them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.cli import main
from train.loop import TIMED, due
from train_helpers import TINY, metrics

SYNTH = ["data.source=synthetic", *TINY]
REPO = Path(__file__).resolve().parents[1]


def test_due_epochs():
    assert [e for e in range(1, 6) if due(e, 2, 5)] == [2, 4, 5]
    assert [e for e in range(1, 6) if due(e, 1, 5)] == [1, 2, 3, 4, 5]
    assert not any(due(e, 0, 5) for e in range(1, 6))


def test_eval_and_checkpoint_every_n_epochs(tmp_path):
    assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path), "--quiet",
                 "train.epochs=3", "train.max_steps_per_epoch=2", "train.eval_every=2",
                 "train.checkpoint_every=2", "train.keep_checkpoints=3", *SYNTH]) == 0
    records = metrics(tmp_path)
    assert [r["test_acc"] is not None for r in records] == [False, True, True]
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == [2, 3]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["timing"]) == set(TIMED)
    assert results["timing"]["train_s"] > 0 and results["timing"]["final_eval_s"] >= 0
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_eval_every_zero_evaluates_only_at_the_end(tmp_path, capsys):
    assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path), "--quiet",
                 "train.epochs=2", "train.max_steps_per_epoch=2", "train.eval_every=0",
                 *SYNTH]) == 0
    out = capsys.readouterr().out
    assert all(r["test_acc"] is None for r in metrics(tmp_path))
    assert "epoch 2/2: loss" in out and "test accuracy" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["timing"]["eval_s"] == 0


@pytest.mark.parametrize("key, value, match", [
    ("train.eval_every", "-1", r"train.eval_every=-1 is invalid: expected an integer >= 0"),
    ("train.checkpoint_every", "0",
     r"train.checkpoint_every=0 is invalid: expected an integer >= 1 \(the last epoch"),
])
def test_bad_every_values(key, value, match):
    from train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=match):
        load_config("vgg.yaml", [f"{key}={value}"])


def test_resume_extending_epochs_accepts_the_scaled_warmup(tmp_path, capsys):
    """``train.epochs=2`` scales cifar_subset.yaml's warm-up (4.6 of 20 epochs) to 0.46; the
    same config resumed without the override extends the run to 20 epochs with the YAML's
    warm-up: the same fraction, so not a config change."""
    from train.config import load_config
    from train.workdir import RunError, check_resume

    short = load_config("cifar_subset.yaml", ["train.epochs=2"], say=lambda _: None)
    (tmp_path / "config.yaml").write_text(
        __import__("train.config", fromlist=["to_yaml"]).to_yaml(short))
    assert check_resume(tmp_path, True, load_config("cifar_subset.yaml")) == 2
    with pytest.raises(RunError, match=r"optim.warmup_epochs 0.46 -> 1.0"):
        check_resume(tmp_path, True, load_config("cifar_subset.yaml",
                                                 ["optim.warmup_epochs=1.0"]))


@pytest.mark.slow  # a real subprocess
def test_sigterm_stops_like_ctrl_c_and_says_how_to_resume(tmp_path):
    args = [sys.executable, "-m", "train", "--config", "vgg.yaml", "--quiet",
            "--workdir", str(tmp_path), "train.epochs=50", *SYNTH]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "checkpoints" / "1" / "meta").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); continue with: python -m train --workdir" in err
    assert "resumes after epoch" in err
    assert "Traceback" not in err


def test_the_compilation_cache_keeps_even_quickly_compiled_programs(tmp_path):
    # In a fresh process: JAX sets its cache up once, at the first compilation.
    script = ("import jax, jax.numpy as jnp\n"
              f"jax.config.update('jax_compilation_cache_dir', {str(tmp_path)!r})\n"
              "from train.process import use_compilation_cache\n"
              "use_compilation_cache()\n"
              "jax.jit(lambda x: x * 3 + 1)(jnp.arange(4.0)).block_until_ready()\n")
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)
    assert any(p.is_file() for p in tmp_path.rglob("*")), "nothing was cached"


def test_a_checkpoint_saved_in_the_background_is_complete_when_read(tmp_path):
    import jax.numpy as jnp

    from train.checkpoint import Checkpoints

    ck = Checkpoints(tmp_path, keep=2)
    for epoch in (1, 2):
        ck.save(epoch, {"w": jnp.full(1000, float(epoch))}, {"epoch": epoch}, test_acc=0.1)
    assert ck.latest() == 2 and ck.all_steps() == [1, 2]
    state, meta = ck.restore(2, {"w": jnp.zeros(1000)})
    ck.close()
    assert meta == {"epoch": 2} and float(state["w"].sum()) == 2000.0


TENSORBOARD_PROBE = """
import struct, sys
from pathlib import Path
from train import report
writer = report.open_tensorboard(Path(sys.argv[1]))
writer.add_scalar("test_acc", 0.75, 3)
writer.close()
imported = "torch" in sys.modules
from tensorboardX.proto.event_pb2 import Event
data = next(Path(sys.argv[1]).iterdir()).read_bytes()
values, at = [], 0
while at < len(data):  # TFRecord framing: uint64 length, uint32 CRC, payload, uint32 CRC
    (n,) = struct.unpack("<Q", data[at:at + 8])
    event = Event.FromString(data[at + 12:at + 12 + n])
    values += [(v.tag, v.simple_value, event.step) for v in event.summary.value]
    at += 16 + n
print(imported, values)
"""


def test_tensorboard_logging_does_not_import_torch(tmp_path):
    """tensorboardX imports PyTorch whenever it is installed; the run's writer must not
    (a second or more of start-up), and its scalars must still reach the event file."""
    pytest.importorskip("tensorboardX")
    out = subprocess.run([sys.executable, "-c", TENSORBOARD_PROBE, str(tmp_path / "tb")],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("\n")[-2] == "False [('test_acc', 0.75, 3)]", out.stdout


def test_torch_still_imports_after_tensorboard(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    code = ("import sys; from pathlib import Path; from train import report; "
            "report.open_tensorboard(Path(sys.argv[1])).close(); import torch; "
            "print(float(torch.ones(2).sum()))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tb")], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "2.0"
