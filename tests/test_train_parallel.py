"""Data-parallel training: 4 virtual CPU devices (``--xla_force_host_platform_device_count``,
in a subprocess, since the device count is fixed when JAX starts) compute the same
per-epoch metrics as 1 device, a SIGKILLed sharded run resumes to identical metrics, and 2
processes x 2 devices on 127.0.0.1 match 1 process x 4 devices (through a death and a
resume)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from train import loop
from train.cli import main
from train.parallel import check_batch_size

from train_helpers import TINY

REPO = Path(__file__).resolve().parents[1]
# 32 steps per epoch: long enough that a SIGKILL lands inside the run; the 40 test images
# in eval batches of at most 14 are balanced to 3 x 14 on 1 device and 3 x 16 on 4 (14
# rounded up to split over them), so the last batch is padded and masked on both.
ARGS = ["--config", "vgg.yaml", "--quiet", "data.source=synthetic", *TINY,
        "data.synthetic_train=512", "train.epochs=3", "train.eval_batch_size=14",
        "train.keep_checkpoints=1"]
F64 = ["model.dtype=float64", "model.conv_impl=lax", "train.max_steps_per_epoch=4",
       "train.epochs=2"]
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")


def _env(devices: int) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _run(workdir: Path, devices: int, *extra: str) -> list[dict]:
    subprocess.run([sys.executable, "-m", "train", *ARGS, *extra, "--workdir", str(workdir)],
                   cwd=REPO, env=_env(devices), check=True, capture_output=True, timeout=600)
    return _metrics(workdir)


def max_rel_diff(a: list[dict], b: list[dict]) -> float:
    """Worst |x - y| / |y| over the per-epoch metrics of two runs."""
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    return max(abs(x[k] - y[k]) / abs(y[k]) if y[k] else abs(x[k] - y[k])
               for x, y in zip(a, b) for k in METRICS)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> Path:
    """Work directory of an uninterrupted float32 run on 4 devices."""
    wd = tmp_path_factory.mktemp("four") / "run"
    _run(wd, 4)
    return wd


@pytest.mark.slow
def test_four_devices_match_one_device_float32(four_devices, tmp_path):
    assert main([*ARGS, "--workdir", str(tmp_path)]) == 0  # this process: 1 CPU device
    one, four = _metrics(tmp_path), _metrics(four_devices)
    assert max_rel_diff(four, one) <= 1e-4
    run = json.loads((four_devices / "run.json").read_text())
    assert run["mesh"] == {"data": 4} and len(run["devices"]) == 4
    assert all(r["images_per_s_per_device"] * 4 == pytest.approx(r["images_per_s"], rel=0.01)
               for r in four)
    assert json.loads((tmp_path / "run.json").read_text())["mesh"] == {"data": 1}


@pytest.mark.slow
def test_four_devices_match_one_device_float64(tmp_path):
    four = _run(tmp_path / "four", 4, *F64)
    try:
        assert main([*ARGS, *F64, "--workdir", str(tmp_path / "one")]) == 0
    finally:
        jax.config.update("jax_enable_x64", False)  # run() switched it on for float64
    assert max_rel_diff(four, _metrics(tmp_path / "one")) <= 1e-10


@pytest.mark.slow
def test_sharded_run_killed_then_resumed_ends_identical(four_devices, tmp_path):
    victim = tmp_path / "killed"
    cmd = [sys.executable, "-m", "train", *ARGS, "--workdir", str(victim)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(4), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    log = victim / "metrics.jsonl"
    while not (log.exists() and (victim / "checkpoints" / "1").is_dir()):  # epoch 1 saved
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before epoch 1"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert len(_metrics(victim)) < 3, "the kill came after the run had finished"

    subprocess.run([*cmd, "--resume"], cwd=REPO, env=_env(4), check=True, capture_output=True,
                   timeout=600)
    full, resumed = _metrics(four_devices), _metrics(victim)
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for a, b in zip(full, resumed):
        assert {k: a[k] for k in loop.DETERMINISTIC_FIELDS} == \
            {k: b[k] for k in loop.DETERMINISTIC_FIELDS}
    final = [json.loads((d / "results.json").read_text()) for d in (four_devices, victim)]
    assert final[0]["confusion_matrix"] == final[1]["confusion_matrix"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_two_processes(workdir: Path, logs: Path, *extra: str) -> list[subprocess.Popen]:
    """Two ``python -m train`` processes with 2 CPU devices each, joined on 127.0.0.1;
    process ``i`` writes its stdout/stderr to ``logs``/``{i}.out``/``{i}.err``."""
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, "-m", "train", *ARGS, *extra, "--workdir", str(workdir),
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
         "--dist-timeout", "20"], cwd=REPO, env=_env(2),
        stdout=open(f"{logs}{i}.out", "w"), stderr=open(f"{logs}{i}.err", "w"))
        for i in range(2)]


@pytest.mark.slow
def test_two_processes_match_four_devices_stop_when_one_dies_and_resume(four_devices,
                                                                         tmp_path):
    """2 processes x 2 devices: process 1 is SIGKILLed once epoch 1 is on disk, process 0
    must stop with an error within the 20 s heartbeat timeout (plus slack), and both,
    restarted with --resume, end with the per-epoch metrics of 1 process x 4 devices."""
    wd = tmp_path / "run"
    first = _start_two_processes(wd, tmp_path / "first")
    deadline = time.monotonic() + 600
    while not (wd / "checkpoints" / "1").is_dir():  # epoch 1 saved
        assert all(p.poll() is None for p in first) and time.monotonic() < deadline, \
            (tmp_path / "first0.err").read_text()[-2000:]
        time.sleep(0.05)
    first[1].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    assert first[0].wait(timeout=180) != 0
    assert time.monotonic() - t_kill < 120
    err = (tmp_path / "first0.err").read_text()
    # Three ways a survivor stops, depending on where it is when its peer dies: a failed
    # collective (our one line), JAX's heartbeat check, or gloo aborting a collective the
    # peer's last bytes mismatched (its own message; docs/training.md names all three).
    assert ("an operation with the other processes failed, most likely because one of them "
            "died" in err) or "another task died" in err or "gloo::EnforceNotMet" in err, \
        err[-2000:]
    assert len(_metrics(wd)) < 3, "the kill came after the run had finished"

    second = _start_two_processes(wd, tmp_path / "second", "--resume")
    for i, p in enumerate(second):
        assert p.wait(timeout=600) == 0, (tmp_path / f"second{i}.err").read_text()[-2000:]
    assert max_rel_diff(_metrics(wd), _metrics(four_devices)) <= 1e-4
    assert json.loads((wd / "run.json").read_text())["mesh"] == {"data": 4}
    # Only process 0 reports.
    assert "test accuracy" in (tmp_path / "second0.out").read_text()
    assert "test accuracy" not in (tmp_path / "second1.out").read_text()


class _FourDeviceMesh:
    shape = {"data": 4}


def test_batch_size_must_divide_by_the_device_count():
    check_batch_size("train.batch_size", 16, _FourDeviceMesh())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"train.batch_size=18 is invalid: expected a "
                                         r"multiple of the 4 devices it is split over \(mesh "
                                         r"axis 'data'\), e.g. 16"):
        check_batch_size("train.batch_size", 18, _FourDeviceMesh())  # type: ignore[arg-type]


def test_max_rel_diff_sees_a_difference():
    a = [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.5, "test_loss": 1.0, "test_acc": 0.25}]
    b = [{**a[0], "test_loss": 1.001}]
    assert max_rel_diff(a, b) == pytest.approx(0.001 / 1.001)
    assert max_rel_diff(a, a) == 0.0 and np.isfinite(max_rel_diff(b, a))


@pytest.mark.parametrize("args, match", [
    (["--num-processes", "2"], r"--num-processes and --process-id need --coordinator"),
    (["--coordinator", "localhost"], r"--coordinator 'localhost' is invalid: expected "
                                     r"HOST:PORT"),
    (["--coordinator", "127.0.0.1:1234", "--process-id", "0"],
     r"--coordinator needs --num-processes N and --process-id I"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"],
     r"--process-id 2 is invalid: expected 0 <= I < --num-processes 2"),
    (["--coordinator", "127.0.0.1:1234", "--num-processes", "0", "--process-id", "0"],
     r"--num-processes 0 is invalid: expected >= 1"),
])
def test_multi_process_argument_errors(tmp_path, capsys, args, match):
    assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path), *args, *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert __import__("re").search(match, err)
