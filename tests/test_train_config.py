"""train.config: the YAML + CLI config is typed and validated before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from jconv import CONV_IMPLS
from train.config import CONFIG_DIR, ConfigError, load_config, resolve_config_path


def test_defaults_load_and_bare_name_resolves():
    cfg = load_config("cifar.yaml")
    assert resolve_config_path("cifar.yaml") == CONFIG_DIR / "cifar.yaml"
    assert cfg.data.source == "auto" and cfg.data.download and cfg.model.conv_impl == "onednn"
    # The main config is airbench94's recipe; vgg.yaml keeps its data source.
    assert cfg.model.arch == "airbench" and cfg.optim.lookahead
    vgg = load_config("vgg.yaml")
    assert vgg.model.arch == "vgg" and vgg.optim.name == "adamw"
    assert vgg.data.source == cfg.data.source and vgg.data.url == cfg.data.url


@pytest.mark.parametrize("old, new", [("airbench.yaml", "cifar.yaml"),
                                      ("airbench_subset", "cifar_subset.yaml")])
def test_a_renamed_config_names_its_new_name(old, new):
    with pytest.raises(ConfigError, match=rf"--config '{old}': no such file .*; "
                                          rf"{old.removesuffix('.yaml')}.yaml is now {new} "
                                          r"\(the airbench94 recipe is the main config\)"):
        load_config(old)


def test_overrides_are_applied_and_typed():
    cfg = load_config(CONFIG_DIR / "vgg.yaml",
                      ["optim.lr=0.05", "model.widths=[8,16]", "data.source=synthetic"])
    assert cfg.optim.lr == 0.05 and list(cfg.model.widths) == [8, 16]
    assert cfg.data.source == "synthetic"


@pytest.mark.parametrize("impl", sorted(CONV_IMPLS))
def test_every_registered_conv_impl_is_accepted(impl):
    assert load_config("vgg.yaml", [f"model.conv_impl={impl}"]).model.conv_impl == impl


@pytest.mark.parametrize("old, new", [("winograd", "winograd_f4x4"),
                                      ("winograd2", "winograd_f2x2")])
def test_deprecated_conv_impl_names_warn_and_become_the_current_name(old, new):
    with pytest.warns(DeprecationWarning, match=f"impl='{old}' is deprecated; use impl='{new}'"):
        cfg = load_config("vgg.yaml", [f"model.conv_impl={old}"])
    assert cfg.model.conv_impl == new


def test_validate_accepts_a_deprecated_name_in_a_read_only_config():
    from omegaconf import OmegaConf

    from train.config import validate

    cfg = OmegaConf.merge(load_config("vgg.yaml"), {"model": {"conv_impl": "winograd2"}})
    OmegaConf.set_readonly(cfg, True)
    with pytest.warns(DeprecationWarning, match="impl='winograd2' is deprecated"):
        validate(cfg)
    assert cfg.model.conv_impl == "winograd2"  # left as given: nothing may be written


@pytest.mark.parametrize("override, match", [
    ("optim.foo=1", r"bad config key 'optim.foo'.*not in 'OptimConfig'"),
    ("bogus=1", r"bad config key 'bogus'"),
    ("optim.lr=fast", r"optim.lr='fast' is invalid: expected a number \(set in .*vgg.yaml"),
    ("train.epochs=2.5", r"train.epochs=2.5 is invalid: expected an int"),
    ("train.tensorboard=maybe", r"train.tensorboard='maybe' is invalid: expected true or false"),
    ("optim.lr=-1", r"optim.lr=-1.0 is invalid: expected a positive number"),
    ("train.epochs=0", r"train.epochs=0 is invalid: expected a positive int"),
    ("model.conv_impl=fast", r"model.conv_impl='fast' is invalid: expected one of"),
    ("model.conv_backend=cudnn",
     r"model.conv_backend='cudnn' is invalid: expected one of \('eigen', 'xla_default'\)"),
    ("model.pool_impl=fast", r"model.pool_impl='fast' is invalid"),
    ("model.data_format=NCWH", r"model.data_format='NCWH' is invalid"),
    ("model.dtype=float16", r"model.dtype='float16' is invalid"),
    ("data.source=imagenet", r"data.source='imagenet' is invalid"),
    ("optim.name=rmsprop", r"optim.name='rmsprop' is invalid"),
    ("optim.schedule=step", r"optim.schedule='step' is invalid"),
    ("optim.label_smoothing=1.0", r"optim.label_smoothing=1.0 is invalid"),
    ("optim.warmup_epochs=100", r"optim.warmup_epochs=100.0 is invalid: expected a number in "
                                r"\[0, train.epochs=20\); set optim.warmup_epochs=2 \(a tenth"),
    ("train.batch_size=0", r"train.batch_size=0 is invalid"),
    ("model.widths=[]", r"model.widths=\[\] is invalid"),
    ("model.widths=[8,8,8,8,8,8]", r"at most 5 stages"),
    ("data.crop_padding=40", r"data.crop_padding=40 is invalid"),
    ("data.cutout=33", r"data.cutout=33 is invalid: expected an int in \[0, 32\]"),
    ("optim.lr", r"override 'optim.lr' must look like key=value"),
])
def test_bad_overrides_are_clear_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("vgg.yaml", [override])


def test_epochs_override_scales_the_yaml_warmup_and_says_so():
    notes: list[str] = []
    cfg = load_config("vgg_subset.yaml", ["train.epochs=2"], say=notes.append)
    assert cfg.optim.warmup_epochs == 0.16  # the YAML's 2 of 25 epochs, scaled to 2 epochs
    assert notes == ["optim.warmup_epochs=2.0 of the YAML does not fit train.epochs=2: scaled "
                     "with the epochs to 0.16 (2.0 x 2/25); set optim.warmup_epochs to "
                     "choose it"]
    notes.clear()
    assert load_config("vgg_subset.yaml", ["train.epochs=3"],
                       say=notes.append).optim.warmup_epochs == 2.0 and not notes  # fits


def test_explicit_warmup_is_kept_and_an_unfitting_one_says_what_to_set():
    with pytest.raises(ConfigError, match=r"optim.warmup_epochs=2.0 is invalid: expected a "
                                          r"number in \[0, train.epochs=2\); set "
                                          r"optim.warmup_epochs=0.2 \(a tenth"):
        load_config("vgg_subset.yaml", ["train.epochs=2", "optim.warmup_epochs=2"])


def test_missing_key_in_yaml_is_an_error(tmp_path: Path):
    text = (CONFIG_DIR / "cifar.yaml").read_text().replace("  label_smoothing: 0.2\n", "")
    assert "label_smoothing" not in text
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"missing value for optim.label_smoothing"):
        load_config(tmp_path / "c.yaml")


def test_unknown_key_in_yaml_is_an_error(tmp_path: Path):
    (tmp_path / "c.yaml").write_text((CONFIG_DIR / "cifar.yaml").read_text()
                                     + "extra: 1\n")
    with pytest.raises(ConfigError, match=r"bad config key 'extra'"):
        load_config(tmp_path / "c.yaml")


def test_missing_and_broken_files(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"--config 'nope.yaml': no such file \(also looked in "
                                          r".*configs, which holds cifar.yaml, "
                                          r"cifar_subset.yaml, vgg.yaml, vgg_subset.yaml"):
        load_config("nope.yaml")
    assert resolve_config_path("vgg_subset") == CONFIG_DIR / "vgg_subset.yaml"
    (tmp_path / "bad.yaml").write_text("seed: [1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_onednn_in_float64_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.dtype='float64' is invalid: expected float32 "
                                          r"or bfloat16 with model.conv_impl=onednn .*"
                                          r"model.conv_impl=lax"):
        load_config("vgg.yaml", ["model.conv_impl=onednn", "model.dtype=float64"])


def test_onednn_without_its_extension_is_a_config_error_naming_the_fix(monkeypatch):
    from jconv import _onednn

    # The extension as an install without a compiler leaves it: not there to import.
    monkeypatch.setattr(_onednn, "_EXTENSION", "jconv._onednn_ffi_not_built")
    monkeypatch.setattr(_onednn, "_library_or_reason", _onednn._load)
    with pytest.raises(ConfigError, match=r"model.conv_impl='onednn' cannot run here: .*was "
                                          r"not built.*pip install -e \.\); or train with "
                                          r"model.conv_impl=lax"):
        load_config("vgg.yaml", ["model.conv_impl=onednn"])


def test_onednn_in_bfloat16_without_the_cpus_kernels_is_a_config_error(monkeypatch):
    from jconv import _onednn

    monkeypatch.setattr(_onednn, "_bf16_kernel", lambda: None)  # a CPU without avx512_bf16
    with pytest.raises(ConfigError, match=r"model.conv_impl='onednn' cannot run here: .*"
                                          r"bfloat16 needs a CPU with bfloat16 kernels"):
        load_config("vgg.yaml", ["model.conv_impl=onednn", "model.dtype=bfloat16"])
