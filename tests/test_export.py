"""python -m train.export: a trained run's checkpoint, folded and exported with jax.export,
predicts the same logits as the checkpoint's eval-mode model; predict CLI and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train.cli import main as train_main
from train.data import Normalizer, load_dataset
from train.export import (ExportError, export_run, load_predictor, load_run, main,
                          read_image)

from train_helpers import TINY

# Each test trains (once per module) or exports a run: more than ~10 s on a shared 2-core CPU.
pytestmark = pytest.mark.slow

REAL = (Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
        / "cifar-10-batches-py")


def _train(workdir: Path, *overrides: str) -> Path:
    assert train_main(["--config", "vgg.yaml", "--workdir", str(workdir), "--quiet",
                       *TINY, "train.epochs=2", "train.max_steps_per_epoch=2",
                       *overrides]) == 0
    return workdir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("export") / "run", "data.source=synthetic",
                  "train.tta_multicrop=true")


def _reference_logits(workdir: Path, checkpoint: str, images: np.ndarray) -> np.ndarray:
    """The checkpoint's unfolded eval-mode model on normalised images, with the run's flip
    and multicrop test-time augmentation, computed without anything from the export path
    but load_run (the translations written out in NumPy)."""
    run = load_run(workdir, checkpoint)
    x = Normalizer(run.mean, run.std)(images)

    def view(x: np.ndarray) -> np.ndarray:
        logits = np.asarray(run.model(x), np.float64)
        if run.cfg.train.tta_flip:
            logits = 0.5 * (logits + np.asarray(run.model(x[:, :, ::-1]), np.float64))
        return logits

    logits = view(x)
    if run.cfg.train.tta_multicrop:
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        down_right, up_left = padded[:, :-2, :-2], padded[:, 2:, 2:]  # shifted by +1 / -1
        logits = 0.5 * logits + 0.25 * (view(down_right) + view(up_left))
    return logits


def test_export_round_trip_matches_checkpoint(run_dir, tmp_path):
    lines: list[str] = []
    out = tmp_path / "exp"
    s = export_run(run_dir, "latest", out, ["cpu", "cuda"], bench=False, log=lines.append)
    assert [(p.conv, p.bn) for p in s["report"].folded] == [("blocks.0.conv", "blocks.0.bn")]
    assert s["report"].skipped == ()
    assert "cpu" in s["platforms"] and set(s["platforms"]) | set(s["not_lowered"]) == {
        "cpu", "cuda"}
    assert s["test_images"] == 40 and s["max_abs_diff"] < 1e-5
    assert s["params"]["folded"] < s["params"]["unfolded"]  # BN scale+shift -> conv bias
    predictor = load_predictor(out / "model.jaxexport")
    cfg_images = load_dataset(load_run(run_dir, "latest").cfg.data, 0).test
    got = predictor(cfg_images.images)
    want = _reference_logits(run_dir, "latest", cfg_images.images)
    assert got.shape == (40, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The artifact reproduces the run's own reported test accuracy (the final = latest epoch).
    results = json.loads((run_dir / "results.json").read_text())
    assert float((got.argmax(-1) == cfg_images.labels).mean()) == results["test_acc"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["checkpoint_epoch"] == 2 and meta["tta_flip"] is meta["tta_multicrop"] is True
    assert any(line.startswith("check") for line in lines)


def test_predict_cli_on_a_png(run_dir, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "exp"
    assert main(["--workdir", str(run_dir), "--out", str(out), "--platforms", "cpu",
                 "--no-tta", "--bench-batch", "8", "--bench-repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "images/s (unfolded -> folded" in printed and "parameters  unfolded" in printed
    image = load_dataset(load_run(run_dir).cfg.data, 0).test.images[3]
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(np.repeat(np.repeat(image, 2, 0), 2, 1)).save(tmp_path / "big.png")
    assert main(["predict", "--artifact", str(out), str(tmp_path / "img.png"),
                 str(tmp_path / "big.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    name, p = load_predictor(out).classify(image[None])[0]
    assert lines[0] == f"{tmp_path / 'img.png'}: {name} {100 * p:.1f}%"
    assert lines[1].startswith(f"{tmp_path / 'big.png'} (resized from 64x64): ")
    assert np.array_equal(read_image(tmp_path / "img.png")[0], image)


def test_errors(run_dir, tmp_path, capsys):
    cases = [
        (["--workdir", str(tmp_path / "none")], f"--workdir {tmp_path / 'none'} does not exist"),
        (["--workdir", str(tmp_path)], "is not a train run"),
        (["--workdir", str(run_dir), "--checkpoint", "7"],
         r"--checkpoint '7' not found in .*saved epochs \[1, 2\]"),
        (["--workdir", str(run_dir), "--platforms", "cpu,metal"],
         "--platforms 'cpu,metal': expected a comma-separated subset of cpu,cuda,tpu"),
        (["predict", "--artifact", str(tmp_path), "x.png"], "no model.jaxexport there"),
    ]
    for argv, match in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Error: ") and err.count("\n") == 1
        assert __import__("re").search(match, err), err
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ExportError, match="bad.png is not a readable image file"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "run.json"):
        (tmp_path / "empty" / name).write_text("{}")
    with pytest.raises(ExportError, match="has no checkpoints"):
        load_run(tmp_path / "empty")


def test_real_cifar_test_images(tmp_path):
    if not REAL.exists():
        pytest.skip(f"CIFAR-10 subset not found at {REAL} (shared data absent)")
    wd = _train(tmp_path / "real", "data.source=cifar10_dir", f"data.dir={REAL}",
                "data.max_train=256", "train.epochs=1", "train.eval_batch_size=512")
    s = export_run(wd, out=tmp_path / "exp", platforms=["cpu"], bench=False, log=lambda _: 0)
    assert s["test_images"] > 1000 and s["max_abs_diff"] < 1e-5
    assert s["same_predictions"] == s["test_images"]
