"""The run configuration: a typed OmegaConf schema, filled from YAML + command-line dotlist.

The YAML is the single source of defaults: the schema declares every field ``MISSING``, so a
field the YAML leaves out is an error, an unknown key is an error and a wrong type is an
error (all from OmegaConf), and :func:`validate` adds the value checks OmegaConf cannot do.

A YAML may start from another one: a top-level ``base: other.yaml`` (looked up next to the
file, then in ``configs/``) is loaded first (recursively) and this file's keys are merged
over it, so a variant states only what it changes.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import jax.numpy as jnp
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from .errors import ConfigError, ConfigTypeError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# model.dtype names -> compute dtypes (the one table; :func:`dtypes` says what each implies)
DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
                          "float64": jnp.float64}
SOURCES = ("auto", "tfds", "cifar10_dir", "synthetic")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
ARCHS = ("vgg", "airbench")
ACTS = ("relu", "gelu")
SCALINGS = ("none", "airbench")
PAD_MODES = ("zeros", "reflect")


@dataclass
class DataConfig:
    source: str = MISSING  # one of SOURCES
    # auto/cifar10_dir: folder holding data_batch_* and test_batch (None: the user cache dir)
    dir: Optional[str] = MISSING
    download: bool = MISSING  # auto: fetch data.url into data.dir when it is missing
    url: str = MISSING  # the CIFAR-10 python archive (.tar.gz)
    md5: Optional[str] = MISSING  # its MD5 (None: not checked, with a warning)
    tfds_name: str = MISSING  # tfds: dataset name, e.g. "cifar10"
    data_dir: Optional[str] = MISSING  # tfds: data_dir (None: $TFDS_DATA_DIR or tfds default)
    synthetic_train: int = MISSING  # synthetic: number of training / test images
    synthetic_test: int = MISSING
    crop_padding: int = MISSING  # random-crop padding in pixels (0: no crop)
    crop_padding_mode: str = MISSING  # zeros | reflect: what the crop padding holds
    flip: bool = MISSING  # random horizontal flip for training
    alternating_flip: bool = MISSING  # with flip: each image flipped every other epoch
    cutout: int = MISSING  # > 0: a random cutout x cutout square of each training image set
    # to the mean colour (airbench96); 0: off
    max_train: Optional[int] = MISSING  # keep only the first N training images (None: all)
    val_fraction: float = MISSING  # > 0: evaluate on the last fraction of the training
    # images (held out from training) instead of the test set, which is then never read


@dataclass
class ModelConfig:
    arch: str = MISSING  # vgg (train.model.CifarCNN) | airbench (train.model.AirbenchNet)
    widths: List[int] = MISSING  # channels of each stage; each stage halves H and W
    convs_per_stage: int = MISSING
    pool_first: bool = MISSING  # pool after a stage's first conv (airbench) or its last
    whiten: bool = MISSING  # airbench: frozen patch-whitening first conv from the data
    dirac_init: bool = MISSING  # identity init of each conv's first C_in filters
    act: str = MISSING  # relu | gelu
    bn_scale: bool = MISSING  # BatchNorm learns a scale (False: fixed at 1)
    bn_eps: float = MISSING
    conv_impl: str = MISSING  # any name in jconv.CONV_IMPLS
    conv_backend: str = MISSING  # jconv.CONV_BACKENDS: XLA:CPU conv kernels of the jitted steps
    pool_impl: str = MISSING  # any name in jconv.POOL_IMPLS
    data_format: str = MISSING  # NHWC or NCHW
    dtype: str = MISSING  # compute dtype: float32 | bfloat16 (params stay float32)
    bn_momentum: float = MISSING  # PyTorch meaning
    head_scale: float = MISSING  # multiplies the logits
    onednn_batch_norm: bool = MISSING  # GELU networks on onednn convs: oneDNN's BatchNorm


@dataclass
class OptimConfig:
    name: str = MISSING  # sgd (Nesterov when nesterov) | adamw
    lr: float = MISSING  # peak learning rate
    momentum: float = MISSING  # sgd momentum / adamw beta1
    nesterov: bool = MISSING
    weight_decay: float = MISSING  # decoupled for adamw, added to the gradient for sgd
    schedule: str = MISSING  # onecycle | cosine (with linear warm-up) | constant
    warmup_epochs: float = MISSING
    start_factor: float = MISSING  # warm-up starts at lr * start_factor
    end_factor: float = MISSING  # onecycle ends at lr * end_factor
    label_smoothing: float = MISSING
    scaling: str = MISSING  # none | airbench (lr, weight_decay in airbench's units)
    bias_lr_scale: float = MISSING  # BatchNorm biases: lr x this, weight decay / this
    whiten_bias_epochs: float = MISSING  # train the whitening conv's bias this long only
    lookahead: bool = MISSING  # airbench's Lookahead/EMA of the weights every 5 steps


@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    max_steps_per_epoch: Optional[int] = MISSING  # cap for smoke runs (None: full epochs)
    tta_flip: bool = MISSING  # evaluate on mean logits of image and its mirror
    tta_multicrop: bool = MISSING  # also the images translated by (-1,-1) and (1,1)
    epoch_tta: bool = MISSING  # per-epoch evaluations use the TTA too (False: plain logits;
    # the final evaluation always uses it)
    eval_every: int = MISSING  # evaluate after every N-th epoch (and the last); 0: only the
    # final (TTA) evaluation
    checkpoint_every: int = MISSING  # checkpoint after every N-th epoch and the last
    keep_checkpoints: int = MISSING  # the last N are kept, plus the best
    reuse_host_memory: bool = MISSING  # jconv.reuse_host_memory() before the run starts
    tensorboard: bool = MISSING


@dataclass
class Config:
    seed: int = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Configs whose recipe moved: airbench94's port became the main config (cifar.yaml, see
# docs/training.md#which-recipe-cifaryaml-is), and the VGG recipe it replaced is vgg.yaml.
RENAMED_CONFIGS = {"airbench.yaml": "cifar.yaml", "airbench_subset.yaml": "cifar_subset.yaml"}


def dtypes(name: str) -> tuple[Any, Any]:
    """``(compute dtype, storage dtype)`` of ``model.dtype`` ``name``: the one place that
    decides what float64 means. float64 compute (the exactness check of ``train.check``;
    it needs ``jax_enable_x64``) keeps the parameters, BatchNorm statistics and the fed
    images in float64; any other compute dtype keeps them float32.

    Example:
      >>> [d.__name__ for d in dtypes("bfloat16")], [d.__name__ for d in dtypes("float64")]
      (['bfloat16', 'float32'], ['float64', 'float64'])
    """
    compute = DTYPES[name]
    return compute, jnp.float64 if compute == jnp.float64 else jnp.float32


def resolve_config_path(path: str | Path) -> Path:
    """``path`` as given if it exists, else ``configs/<path>``, each also with ``.yaml``
    appended; a clear error listing the configs in ``configs/`` otherwise.

    Example:
      >>> resolve_config_path("cifar.yaml").name, resolve_config_path("cifar_subset").name
      ('cifar.yaml', 'cifar_subset.yaml')
    """
    p = Path(path)
    tries = [p] if p.suffix in (".yaml", ".yml") else [p, p.with_name(p.name + ".yaml")]
    if not p.is_absolute():
        tries += [CONFIG_DIR / t for t in tries]
    found = next((t for t in tries if t.is_file()), None)
    if found is not None:
        return found
    known = ", ".join(sorted(f.name for f in CONFIG_DIR.glob("*.yaml")))
    renamed = RENAMED_CONFIGS.get(p.name if p.suffix else p.name + ".yaml")
    hint = (f"; {p.stem}.yaml is now {renamed} (the airbench94 recipe is the main config)"
            if renamed else "")
    raise ConfigError(f"--config {str(path)!r}: no such file (also looked in {CONFIG_DIR}, "
                      f"which holds {known}){hint}")


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                say: Callable[[str], None] = _note) -> Config:
    """Read ``path`` (see :func:`resolve_config_path`), apply ``key=value`` ``overrides`` and
    return the validated, read-only config.

    An override of ``train.epochs`` that leaves the YAML's ``optim.warmup_epochs`` too long
    (not below the epochs) scales the warm-up with the epochs, keeping the YAML's fraction of
    the run, and says so through ``say``; an explicit ``optim.warmup_epochs`` is kept as set.

    Example:
      >>> cfg = load_config("cifar.yaml", ["optim.lr=0.05", "data.source=synthetic"])
      >>> cfg.optim.lr, cfg.data.source
      (0.05, 'synthetic')
      >>> load_config("cifar_subset.yaml", ["train.epochs=2"], say=print).optim.warmup_epochs
      optim.warmup_epochs=4.6 of the YAML does not fit train.epochs=2: scaled with the epochs to 0.46 (4.6 x 2/20); set optim.warmup_epochs to choose it
      0.46
    """
    file = resolve_config_path(path)
    try:
        base = OmegaConf.merge(OmegaConf.structured(Config), load_yaml(file))
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, file)) from None
    return _apply(base, overrides, file, say)


def override(cfg: Config, overrides: list[str] | tuple[str, ...],
             say: Callable[[str], None] = _note) -> Config:
    """``cfg`` with ``key=value`` ``overrides`` applied and validated as on the command line
    (a new read-only config; ``cfg`` is unchanged).

    Example:
      >>> override(load_config("cifar.yaml"), ["optim.lr=0.5"]).optim.lr
      0.5
    """
    return _apply(cfg, overrides, "the config", say)


def _apply(base: Any, overrides: list[str] | tuple[str, ...], file: Path | str,
           say: Callable[[str], None]) -> Config:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, "
                              "e.g. optim.lr=0.05")
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, file)) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{file}: missing value for {', '.join(missing)} "
                          "(every key must be set in the YAML)")
    OmegaConf.set_readonly(cfg, False)
    _fit_warmup(cfg, base, overrides, say)
    _current_names(cfg)
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg  # type: ignore[return-value]


def _fit_warmup(cfg: Any, base: Any, overrides: list[str] | tuple[str, ...],
                say: Callable[[str], None]) -> None:
    """Scale the YAML's warm-up with ``train.epochs`` when only the epochs were overridden
    and the warm-up no longer fits them (see :func:`load_config`)."""
    keys = {item.split("=", 1)[0].strip() for item in overrides}
    o, epochs = cfg.optim, cfg.train.epochs
    if "optim.warmup_epochs" in keys or "train.epochs" not in keys or \
            not isinstance(epochs, int) or not 0 < epochs <= o.warmup_epochs:
        return
    yaml_epochs = OmegaConf.select(base, "train.epochs")
    if not isinstance(yaml_epochs, int) or not 0 <= o.warmup_epochs < yaml_epochs:
        return
    scaled = round(o.warmup_epochs * epochs / yaml_epochs, 4)
    say(f"optim.warmup_epochs={o.warmup_epochs} of the YAML does not fit train.epochs="
        f"{epochs}: scaled with the epochs to {scaled:g} ({o.warmup_epochs} x {epochs}/"
        f"{yaml_epochs}); set optim.warmup_epochs to choose it")
    o.warmup_epochs = scaled


def load_yaml(file: str | Path, _chain: tuple[Path, ...] = ()) -> DictConfig:
    """The mapping in YAML ``file`` with its ``base:`` chain resolved: the base file (a path
    relative to ``file``'s folder, else to ``configs/``) is loaded the same way and ``file``'s
    keys are merged over it. Not validated (see :func:`load_config`).

    Example:
      >>> cfg = load_yaml(CONFIG_DIR / "cifar_subset.yaml")
      >>> cfg.data.source, cfg.model.widths[0], "base" in cfg
      ('cifar10_dir', 48, False)
    """
    file = Path(file)
    if file.resolve() in _chain:
        cycle = " -> ".join(str(p.name) for p in (*_chain, file.resolve()))
        raise ConfigError(f"{file}: base: cycle {cycle}; a config cannot extend itself")
    try:
        loaded = OmegaConf.load(file)
    except Exception as e:  # yaml errors carry their own position info
        raise ConfigError(f"{file}: not valid YAML: {e}") from None
    if not isinstance(loaded, DictConfig):
        kind = "list" if isinstance(loaded, ListConfig) else type(loaded).__name__
        raise ConfigTypeError(f"{file}: the YAML holds a {kind}, expected a mapping of sections "
                          "(seed, data, model, optim, train)")
    if "base" not in loaded:
        return loaded
    base = loaded.pop("base")
    if not isinstance(base, str) or not base:
        raise (ConfigError if isinstance(base, str) else ConfigTypeError)(
            f"{file}: base={base!r} is invalid: expected the file name of the YAML this one "
            "extends, e.g. base: cifar.yaml")
    candidates = [file.parent / base, CONFIG_DIR / base]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ConfigError(f"{file}: base={base!r}: no such file (looked in {file.parent} and "
                          f"{CONFIG_DIR})")
    parent = load_yaml(found, (*_chain, file.resolve()))
    try:
        return OmegaConf.merge(parent, loaded)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e, file)) from None


# OmegaConf's type names in its conversion errors -> what a user types instead.
_EXPECTED = {"Float": "a number", "Integer": "an int", "Boolean": "true or false",
             "String": "a string"}


def _describe(e: OmegaConfBaseException, file: Path | str) -> str:
    key = getattr(e, "full_key", None)
    first = str(e).splitlines()[0]
    where = f"{file} (or a command-line override)"
    if isinstance(e, ValidationError) and key:
        kind = re.search(r"converted to (\w+)|not a valid (\w+)", first)
        name = next((g for g in kind.groups() if g), "") if kind else ""
        expected = _EXPECTED.get(name.capitalize() if name != "bool" else "Boolean", name)
        return (f"{key}={getattr(e, 'value', None)!r} is invalid: expected "
                f"{expected or first} (set in {file} or on the command line)")
    return f"{where}: bad config key {key!r}: {first}" if key else f"{where}: {first}"


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


def _floats(tree: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted key, value) of every float in a plain nested config container."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) \
        if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}.{key}" if isinstance(key, str) and prefix else \
            f"{prefix}[{key}]" if isinstance(key, int) else str(key)
        if isinstance(value, float):
            yield name, value
        else:
            yield from _floats(value, name)


def _check_onednn(dtype: Any) -> None:
    """A ConfigError naming the fix unless jconv's oneDNN extension loads here and has
    ``dtype`` kernels: caught with the config, before a run prepares its work directory and
    traces its steps."""
    # No jax.default_backend() here: it would start the XLA backend before a multi-process
    # run's jax.distributed.initialize().
    import jconv

    try:
        jconv.check_onednn(dtype)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"model.conv_impl='onednn' cannot run here: {e}; or train with "
                          "model.conv_impl=lax") from None


def validate(cfg: Config) -> None:
    """Value checks beyond types: choices, ranges and combinations. Changes nothing (a
    deprecated ``model.conv_impl`` name is accepted with jconv's DeprecationWarning;
    :func:`load_config` replaces it by its current name first, see :func:`_current_names`).

    Example:
      >>> cfg = OmegaConf.merge(load_config("cifar.yaml"), {"optim": {"lr": -1.0}})
      >>> validate(cfg)
      Traceback (most recent call last):
      ...
      train.errors.ConfigError: optim.lr=-1.0 is invalid: expected a positive number
    """
    for key, value in _floats(OmegaConf.to_container(cfg)):
        _check(math.isfinite(value), key, value, "a finite number")
    _check(cfg.seed >= 0, "seed", cfg.seed, "an int >= 0")
    _check_data(cfg.data)
    _check_model(cfg.model)
    _check_optim(cfg.optim)
    _check_train(cfg.train, cfg.optim)


def _current_impl(name: str) -> str | None:
    """``name``'s current conv implementation name (a deprecated one's with jconv's
    DeprecationWarning), None when jconv has no such implementation."""
    import jconv

    try:
        return jconv.check_conv_impl(name)
    except ValueError:
        return None


def _current_names(cfg: Any) -> None:
    """Replace a deprecated ``model.conv_impl`` name in the (writable) ``cfg`` by its
    current one, so that the run, its logs and its checkpoints say the current name."""
    impl = _current_impl(cfg.model.conv_impl)
    if impl is not None and impl != cfg.model.conv_impl:
        cfg.model.conv_impl = impl


def _check_data(d: DataConfig) -> None:
    _check(d.source in SOURCES, "data.source", d.source, f"one of {SOURCES}")
    _check(d.url.startswith(("https://", "http://", "file://")), "data.url", d.url,
           "an https://, http:// or file:// URL")
    _check(d.md5 is None or re.fullmatch(r"[0-9a-fA-F]{32}", d.md5) is not None, "data.md5",
           d.md5, "null or 32 hexadecimal digits")
    _check(d.synthetic_train > 0, "data.synthetic_train", d.synthetic_train, "a positive int")
    _check(d.synthetic_test > 0, "data.synthetic_test", d.synthetic_test, "a positive int")
    _check(0 <= d.crop_padding <= 16, "data.crop_padding", d.crop_padding, "an int in [0, 16]")
    _check(0 <= d.cutout <= 32, "data.cutout", d.cutout, "an int in [0, 32]")
    _check(d.max_train is None or d.max_train > 0, "data.max_train", d.max_train,
           "null or a positive int")
    _check(d.crop_padding_mode in PAD_MODES, "data.crop_padding_mode", d.crop_padding_mode,
           f"one of {PAD_MODES}")
    _check(d.crop_padding_mode == "zeros" or d.crop_padding < 32, "data.crop_padding",
           d.crop_padding, "less than 32 with crop_padding_mode=reflect")
    _check(0.0 <= d.val_fraction < 1.0, "data.val_fraction", d.val_fraction,
           "a number in [0, 1)")


def _check_model(m: ModelConfig) -> None:
    from jconv import CONV_BACKENDS, CONV_IMPLS, POOL_IMPLS

    _check(m.arch in ARCHS, "model.arch", m.arch, f"one of {ARCHS}")
    _check(m.act in ACTS, "model.act", m.act, f"one of {ACTS}")
    _check(m.bn_eps > 0, "model.bn_eps", m.bn_eps, "a positive number")
    _check(m.arch == "airbench" or not m.whiten, "model.whiten", m.whiten,
           "false with model.arch=vgg (the whitening conv is part of the airbench network)")
    _check(m.arch == "vgg" or len(m.widths) <= 4, "model.widths", list(m.widths),
           "at most 4 groups with model.arch=airbench (each halves the 31x31 map)")
    _check(m.arch == "vgg" or m.pool_first, "model.pool_first", m.pool_first,
           "true with model.arch=airbench (its groups pool after their first conv)")
    _check(len(m.widths) > 0 and all(w > 0 for w in m.widths), "model.widths",
           list(m.widths), "a non-empty list of positive ints")
    _check(len(m.widths) <= 5, "model.widths", list(m.widths),
           "at most 5 stages (each halves the 32x32 image)")
    _check(m.convs_per_stage > 0, "model.convs_per_stage", m.convs_per_stage, "a positive int")
    impl = _current_impl(m.conv_impl)
    _check(impl is not None, "model.conv_impl", m.conv_impl, f"one of {tuple(CONV_IMPLS)}")
    _check(m.conv_backend in CONV_BACKENDS, "model.conv_backend", m.conv_backend,
           f"one of {CONV_BACKENDS}")
    _check(m.pool_impl in POOL_IMPLS, "model.pool_impl", m.pool_impl,
           f"one of {POOL_IMPLS}")
    _check(m.data_format in ("NHWC", "NCHW"), "model.data_format", m.data_format,
           "'NHWC' or 'NCHW'")
    _check(m.dtype in DTYPES, "model.dtype", m.dtype, f"one of {DTYPES}")
    if m.conv_impl == "onednn":
        _check(m.dtype != "float64", "model.dtype", m.dtype, "float32 or bfloat16 with "
               "model.conv_impl=onednn (oneDNN has no float64 convolution; add "
               "model.conv_impl=lax)")
        _check_onednn(DTYPES[m.dtype])
    _check(0.0 < m.bn_momentum <= 1.0, "model.bn_momentum", m.bn_momentum, "a number in (0, 1]")
    _check(m.head_scale > 0, "model.head_scale", m.head_scale, "a positive number")


def _check_optim(o: OptimConfig) -> None:
    _check(o.name in OPTIMIZERS, "optim.name", o.name, f"one of {OPTIMIZERS}")
    _check(o.lr > 0, "optim.lr", o.lr, "a positive number")
    _check(0.0 <= o.momentum < 1.0, "optim.momentum", o.momentum, "a number in [0, 1)")
    _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "a number >= 0")
    _check(o.schedule in SCHEDULES, "optim.schedule", o.schedule, f"one of {SCHEDULES}")
    _check(0.0 <= o.start_factor <= 1.0, "optim.start_factor", o.start_factor,
           "a number in [0, 1]")
    _check(0.0 <= o.end_factor <= 1.0, "optim.end_factor", o.end_factor, "a number in [0, 1]")
    _check(o.scaling in SCALINGS, "optim.scaling", o.scaling, f"one of {SCALINGS}")
    _check(o.scaling == "none" or o.name == "sgd", "optim.scaling", o.scaling,
           "'none' with optim.name=adamw (airbench's units are for Nesterov SGD)")
    _check(o.bias_lr_scale > 0, "optim.bias_lr_scale", o.bias_lr_scale, "a positive number")
    _check(o.whiten_bias_epochs >= 0, "optim.whiten_bias_epochs", o.whiten_bias_epochs,
           "a number >= 0")


def _check_train(t: TrainConfig, o: OptimConfig) -> None:
    _check(t.epochs > 0, "train.epochs", t.epochs, "a positive int")
    _check(0 <= o.warmup_epochs < t.epochs, "optim.warmup_epochs", o.warmup_epochs,
           f"a number in [0, train.epochs={t.epochs}); set optim.warmup_epochs="
           f"{round(0.1 * t.epochs, 2):g} (a tenth of the run) or 0 for none")
    _check(0.0 <= o.label_smoothing < 1.0, "optim.label_smoothing", o.label_smoothing,
           "a number in [0, 1)")
    _check(t.batch_size > 0, "train.batch_size", t.batch_size, "a positive int")
    _check(t.eval_batch_size > 0, "train.eval_batch_size", t.eval_batch_size, "a positive int")
    _check(t.max_steps_per_epoch is None or t.max_steps_per_epoch > 0,
           "train.max_steps_per_epoch", t.max_steps_per_epoch, "null or a positive int")
    _check(isinstance(t.eval_every, int) and t.eval_every >= 0, "train.eval_every",
           t.eval_every, "an integer >= 0 (0: only the final evaluation)")
    _check(isinstance(t.checkpoint_every, int) and t.checkpoint_every >= 1,
           "train.checkpoint_every", t.checkpoint_every,
           "an integer >= 1 (the last epoch is always checkpointed)")
    _check(t.keep_checkpoints > 0, "train.keep_checkpoints", t.keep_checkpoints,
           "a positive int")


def config_diff(old: Any, new: Any) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` of every key whose value differs between
    two configs (or plain mappings, e.g. a run's saved ``config.yaml``).

    Example:
      >>> a = load_config("cifar.yaml")
      >>> config_diff(a, load_config("cifar.yaml", ["optim.lr=0.1", "train.epochs=30"]))
      {'optim.lr': (11.5, 0.1), 'train.epochs': (10, 30)}
    """
    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix: tree}
        return {k: v for key, value in tree.items()
                for k, v in flat(value, f"{prefix}.{key}" if prefix else str(key)).items()}

    a, b = (flat(OmegaConf.to_container(OmegaConf.create(c) if isinstance(c, dict) else c))
            for c in (old, new))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)}


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text (what a run saves next to its outputs).

    Example:
      >>> "conv_impl:" in to_yaml(load_config("cifar.yaml"))
      True
    """
    return OmegaConf.to_yaml(cfg)


def as_dict(cfg: Config) -> dict:
    """Plain-dict copy of ``cfg`` (for JSON run records).

    Example:
      >>> as_dict(load_config("cifar.yaml"))["model"]["data_format"]
      'NHWC'
    """
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]

