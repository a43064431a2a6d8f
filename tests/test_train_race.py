"""train.race: both sides run as the user runs them, the table reports what they measured,
and every way the race cannot start says why in one line."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from train.config import load_config
from train.race import (COMPILED, JCONV, REUSE_TUNABLES, TORCH, TORCH_BF16, TORCH_REUSE, main,
                        peer_env, recipe_differences, table)
from train_helpers import make_cifar_dir

SUBSET = Path(__file__).resolve().parents[2] / "shared/data/cifar10-subset/cifar-10-batches-py"
PEER = Path(__file__).resolve().parents[2] / "shared/peers/airbench94_torch.py"
TINY_AB = ["model.widths=[8,8,8]", "train.batch_size=16", "train.eval_batch_size=32",
           "train.epochs=1", "train.max_steps_per_epoch=2", "train.tensorboard=false",
           "optim.warmup_epochs=0"]


def fake_peer(tmp_path: Path) -> Path:
    """A stand-in for airbench94's script, shaped like it (``make_net``, ``main(seed, d)``, a
    ``__main__`` block): prints its result line from its environment, and whether its
    network's forward ran under torch.autocast."""
    script = tmp_path / "peer.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys

        def make_net():
            class Net:
                def forward(self, x):
                    torch = sys.modules.get("torch")
                    return torch.tensor(float(torch.is_autocast_enabled("cpu"))) if torch else None
            return Net()

        def main(seed, d):
            assert os.path.isdir(d)
            out = make_net().forward(None)
            return {"seed": seed, "tta_acc": 0.5, "train_s": 2.0,
                    "total_s": 3.0, "steps": 4, "env": [os.environ["AB_EPOCHS"],
                    os.environ["AB_BATCH"], os.environ["AB_WIDTHS"],
                    os.environ["AB_COMPILE"],
                    os.environ.get("GLIBC_TUNABLES", "")],
                    "autocast": out is not None and bool(out.item())}

        if __name__ == "__main__":
            print(json.dumps(main(int(sys.argv[2]), sys.argv[1])))
    """))
    return script


def test_race_runs_both_sides_and_tabulates(tmp_path, capsys):
    folder, _, _ = make_cifar_dir(tmp_path, train_rows=(20, 20), test_rows=8)
    work = tmp_path / "race"
    assert main(["--config", "cifar_subset.yaml", "--seeds", "0,1", "--compile-seeds", "1",
                 "--reuse-seeds", "0", "--autocast-seeds", "1",
                 "--peer", str(fake_peer(tmp_path)), "--workdir", str(work),
                 f"data.dir={folder}", *TINY_AB]) == 0
    out = capsys.readouterr().out
    record = json.loads((work / "race.json").read_text())
    runs = record["runs"]
    # seed 0: PyTorch first; seed 1: jconv first, then the compiled peer
    assert [(r["side"], r["seed"]) for r in runs] == [
        (JCONV, 0), (JCONV, 1), (TORCH, 0), (TORCH, 1), (COMPILED, 1), (TORCH_REUSE, 0),
        (TORCH_BF16, 1)]
    peer = [r for r in runs if r["side"] == TORCH][0]
    # 2 of the 2 full steps of 16 images per epoch: one whole epoch for the peer
    assert peer["extra"]["peer"]["env"] == ["1", "16", "8,8,8", "0", ""]
    assert runs[-3]["extra"]["peer"]["env"][3] == "1"  # AB_COMPILE
    assert runs[-2]["extra"]["peer"]["env"][4] == REUSE_TUNABLES
    # only the autocast row runs its network inside torch.autocast("cpu", dtype=torch.bfloat16)
    assert [r["extra"]["peer"]["autocast"] for r in runs if r["side"] != JCONV] == \
        [False, False, False, False, True]
    assert peer["images_per_s"] == 4 * 16 / 2.0 and peer["eval_s"] == 1.0
    jc = runs[0]
    assert jc["wall_s"] > jc["startup_s"] > 0 and 0 <= jc["accuracy"] <= 1
    assert "| jconv | 0,1 |" in out and "| PyTorch eager | 0,1 |" in out
    assert "| PyTorch torch.compile | 1 |" in out and record["machine"]["cores"] >= 1


def test_table_mean_and_sd():
    from train.race import RunResult

    rs = [RunResult(JCONV, s, a, w, 100.0, 1.0, 1.0, 0.0, 0.0, 0.0, "")
          for s, a, w in ((0, 0.8, 90.0), (1, 0.82, 110.0))] + \
        [RunResult(TORCH, 0, 0.8, 200.0, 50.0, 1.0, 1.0, 0.0, 0.0, 0.0, "")]
    rows = table(rs).splitlines()
    assert rows[2].startswith("| jconv | 0,1 | 81.00 ± 1.41% | 100.0 ± 14.1 |")
    assert rows[2].endswith("| 0.50 |") and rows[3].endswith("| 1.00 |")


def test_recipe_differences_and_peer_sizes():
    cfg = load_config("cifar_subset.yaml", ["model.widths=[16,32,32]", "optim.momentum=0.9"])
    assert recipe_differences(cfg) == ["optim.momentum=0.9 (airbench94: 0.85)"]
    assert peer_env(cfg, 1000) == {"AB_EPOCHS": "20", "AB_BATCH": "256",
                                   "AB_WIDTHS": "16,32,32"}


@pytest.mark.parametrize("args, match", [
    (["--seeds", "a,b"], r"--seeds must be comma-separated integers, e.g. 0,1,2; got 'a,b'"),
    (["--seeds", ""], r"--seeds must name at least one seed"),
    (["--config", "vgg_subset.yaml"], r"model.arch='vgg'; the race's peer is airbench94"),
    (["data.dir=/no/such/folder"], r"data.dir='/no/such/folder' is not a cifar-10-batches-py"),
    (["data.val_fraction=0.1"], r"leave data.val_fraction=0 and data.max_train=null"),
    (["--peer", "/no/peer.py", f"data.dir={SUBSET}"], r"--peer /no/peer.py: no such file"),
])
def test_race_errors(args, match, capsys, tmp_path):
    if "--peer" in args:
        pytest.importorskip("torch")
        if not SUBSET.is_dir():
            pytest.skip(f"the real CIFAR-10 subset is absent ({SUBSET})")
    assert main(["--workdir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1
    assert re.search(match, err), err


def test_a_failed_run_names_its_log(tmp_path, capsys):
    folder, _, _ = make_cifar_dir(tmp_path, train_rows=(20, 20), test_rows=8)
    bad = tmp_path / "bad_peer.py"
    bad.write_text("import sys; print('boom'); sys.exit(3)\n")
    assert main(["--seeds", "0", "--peer", str(bad), "--workdir", str(tmp_path / "r"),
                 f"data.dir={folder}", *TINY_AB]) == 1
    err = capsys.readouterr().err
    assert "PyTorch eager run of seed 0 failed (exit 3); its log:" in err and "boom" in err


@pytest.mark.slow  # both real sides on the real subset, a few steps each
def test_race_smoke_on_the_real_subset_against_airbench94(tmp_path, capsys):
    if not SUBSET.is_dir() or not PEER.is_file():
        pytest.skip(f"the real CIFAR-10 subset or the peer script is absent ({SUBSET}, {PEER})")
    pytest.importorskip("torch", reason="the PyTorch side needs torch")
    assert main(["--config", "cifar_subset.yaml", "--seeds", "0", "--workdir", str(tmp_path),
                 f"data.dir={SUBSET}", "model.widths=[8,16,16]", "train.batch_size=64",
                 "train.epochs=1", "train.max_steps_per_epoch=2"]) == 0
    runs = json.loads((tmp_path / "race.json").read_text())["runs"]
    assert {r["side"] for r in runs} == {JCONV, TORCH}
    assert all(r["extra"].get("peer", {}).get("steps", 2) == 2 for r in runs)
