"""The airbench94 port (configs/airbench*.yaml, docs/airbench.md): the whitening computation,
Dirac init, airbench's optimiser units against PyTorch, the schedule, Lookahead, alternating
flip, reflect-padded crops, multi-crop TTA, the validation split, config composition, every
new switch in tiny train steps, and an end-to-end run with exact resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from omegaconf import OmegaConf

from train.cli import main
from train.config import ConfigError, load_config
from train.data import (Normalizer, alternating_flips, augment, load_dataset, synthetic,
                        train_batches)
from train.experiment import Experiment
from train.model import (AirbenchNet, ModelOptions, build_model, count_params, dirac_,
                         set_whitening, whitening_kernel)
from train.optim import airbench_units, make_optimizer, make_schedule, param_labels
from train.steps import lookahead_update, tta_logits, translate

from jconv import nn as jnn
from train_helpers import interrupted_and_resumed, make_cifar_dir


def _net(widths: tuple[int, ...], *overrides: str) -> AirbenchNet:
    """cifar.yaml's network with these widths (and model.* overrides), seed 0."""
    cfg = load_config("cifar.yaml", [f"model.widths=[{','.join(map(str, widths))}]",
                                        *overrides])
    return AirbenchNet(ModelOptions.from_config(cfg.model), rngs=nnx.Rngs(0))

TINY_AB = ["data.source=synthetic", "model.widths=[8,8,8]", "train.batch_size=16",
           "train.eval_batch_size=32", "data.synthetic_train=64", "data.synthetic_test=40",
           "train.tensorboard=false", "optim.warmup_epochs=1"]


def _patches(images: np.ndarray, k: int) -> np.ndarray:
    """Every k x k patch of (N, H, W, C) images, flattened in (C, kH, kW) order, by loops."""
    n, h, w, c = images.shape
    rows = [images[:, i:i + k, j:j + k, :].transpose(0, 3, 1, 2).reshape(n, -1)
            for i in range(h - k + 1) for j in range(w - k + 1)]
    return np.concatenate(rows)


def test_whitening_kernel_whitens_patches():
    rng = np.random.default_rng(0)
    # Correlated channels and neighbouring pixels, like images.
    base = rng.normal(size=(40, 9, 9, 3)) @ np.array([[1, .8, .5], [0, .6, .4], [0, 0, .3]])
    images = base + np.roll(base, 1, axis=2)
    kernel = whitening_kernel(images, 2, eps=0.0)
    assert kernel.shape == (24, 3, 2, 2) and kernel.dtype == np.float32
    p = _patches(images, 2)
    out = p @ kernel.reshape(24, 12).T.astype(np.float64)
    second = out[:, :12].T @ out[:, :12] / len(p)
    np.testing.assert_allclose(second, np.eye(12), atol=1e-4)
    np.testing.assert_array_equal(kernel[12:], -kernel[:12])
    # Largest-variance direction first; eps shrinks each direction by lam / (lam + eps).
    lam = np.linalg.eigvalsh(p.T @ p / len(p))[::-1]
    out_eps = p @ whitening_kernel(images, 2, eps=0.5).reshape(24, 12).T.astype(np.float64)
    np.testing.assert_allclose(np.diag(out_eps[:, :12].T @ out_eps[:, :12] / len(p)),
                               lam / (lam + 0.5), rtol=1e-4)
    with pytest.raises(ValueError, match=r"images must be \(N, H, W, C\) with H, W >= "
                                         r"kernel_size=2, got shape \(2, 1, 5, 3\)"):
        whitening_kernel(np.zeros((2, 1, 5, 3)))


def test_set_whitening_sets_the_model_conv():
    images = np.random.default_rng(1).normal(size=(8, 32, 32, 3))
    model = _net((8, 8, 8))
    set_whitening(model, images)
    np.testing.assert_allclose(np.asarray(model.whiten.kernel[...]), whitening_kernel(images))
    out = np.asarray(model.whiten(jnp.asarray(images, jnp.float32)), np.float64)
    np.testing.assert_allclose(out[..., :12], -out[..., 12:], atol=1e-5)


def test_dirac_init_is_identity():
    conv = dirac_(jnn.Conv2d(3, 5, 3, padding=1, bias=False, data_format="NHWC",
                             rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    y = conv(x)
    np.testing.assert_array_equal(np.asarray(y[..., :3]), np.asarray(x))
    assert float(jnp.abs(y[..., 3:]).sum()) > 0  # the other filters keep their init
    model = _net((8, 16, 16), "model.dirac_init=true")
    w = np.asarray(model.groups[1].convs[0].kernel[...])  # 8 -> 16 channels
    np.testing.assert_array_equal(w[:8, :, 1, 1], np.eye(8))
    assert np.abs(w[:8]).sum() == 8 and np.abs(w[8:]).sum() > 0


def test_airbench_net_shapes_and_params():
    model = nnx.eval_shape(lambda: _net((64, 256, 256)))
    # airbench94's 1,971,640 trainable + frozen scalars (BN without scale, bias-free head).
    assert count_params(model) == 1_971_640
    assert model.groups[0].norms[0].scale is None
    with pytest.raises(ValueError, match=r"widths=\[4, 4, 4, 4, 4\]: 5 groups halve"):
        AirbenchNet(replace(ModelOptions.from_config(load_config("cifar.yaml").model),
                            widths=(4,) * 5), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("arch", ["cifar.yaml", "vgg.yaml"])
def test_a_bfloat16_model_computes_only_its_convolutions_in_bfloat16(arch):
    cfg = load_config(arch, ["model.widths=[8,8]", "model.dtype=bfloat16",
                             "model.conv_impl=lax"])
    model = build_model(ModelOptions.from_config(cfg.model), 0)
    graph, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graph, s)(x))(
        state, jnp.zeros((2, 32, 32, 3))).jaxpr
    convs = [e for e in _eqns(jaxpr) if e.primitive.name == "conv_general_dilated"]
    others = {str(v.aval.dtype) for e in _eqns(jaxpr) if e.primitive.name in
              ("reduce_max", "erf", "max", "reduce_sum", "rsqrt") for v in e.outvars}
    # bfloat16 convolutions, as under torch.autocast; BatchNorm, activation, pooling in float32
    assert convs and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)
    assert others == {"float32"}


def _eqns(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for p in e.params.values():
            inner = getattr(p, "jaxpr", p)
            if hasattr(inner, "eqns"):
                yield from _eqns(inner)


def test_triangle_schedule_values():
    cfg = load_config("cifar.yaml").optim
    s = make_schedule(cfg, total_steps=100, steps_per_epoch=10)
    lr = cfg.lr
    steps = np.arange(101)
    expect = np.interp(steps, [0, 23, 100], [0.2 * lr, lr, 0.07 * lr])
    np.testing.assert_allclose([float(s(i)) for i in steps], expect, rtol=1e-5)


def test_airbench_units_match_pytorch_sgd():
    """Three steps of airbench's PyTorch optimiser (summed loss, two parameter groups,
    ``weight_decay = wd / lr``) against ours on the mean loss."""
    torch = pytest.importorskip("torch")
    lr, wd, mom, bs, scaler = 11.5, 0.0153, 0.85, 8, 64.0
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(bs, 4)), rng.normal(size=(bs, 3))
    w0, b0 = rng.normal(size=(4, 3)), rng.normal(size=3)

    kilo = 1024 * (1 + 1 / (1 - mom))
    lr_k, wd_k = lr / kilo, wd * bs / kilo
    tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (w0, b0))
    opt = torch.optim.SGD([dict(params=[tb], lr=lr_k * scaler, weight_decay=wd_k / (lr_k * scaler)),
                           dict(params=[tw], lr=lr_k, weight_decay=wd_k / lr_k)],
                          momentum=mom, nesterov=True)
    for _ in range(3):
        opt.zero_grad()
        ((torch.tensor(x) @ tw + tb - torch.tensor(t)) ** 2).sum().backward()
        opt.step()

    jax.config.update("jax_enable_x64", True)
    try:
        cfg = OmegaConf.create(dict(name="sgd", momentum=mom, nesterov=True, weight_decay=wd,
                                    scaling="airbench", bias_lr_scale=scaler, lr=lr,
                                    whiten_bias_epochs=0.0))
        tx = make_optimizer(cfg, optax.constant_schedule(lr), batch_size=bs)
        params = {"bn": {"bias": jnp.asarray(b0)}, "head": {"kernel": jnp.asarray(w0)}}
        state = tx.init(params)

        def loss(p):
            return (((x @ p["head"]["kernel"] + p["bn"]["bias"] - t) ** 2).sum(-1)).mean()

        for _ in range(3):
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, updates)
    finally:
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_allclose(np.asarray(params["head"]["kernel"]), tw.detach().numpy(),
                               rtol=1e-10)
    np.testing.assert_allclose(np.asarray(params["bn"]["bias"]), tb.detach().numpy(),
                               rtol=1e-10)
    assert airbench_units(11.5, 0.0153, 0.85, 1024) == pytest.approx((11.5 / kilo * 1024,
                                                                       0.0153 / 11.5))


def test_airbench_scaling_needs_the_batch_size():
    cfg = load_config("cifar.yaml").optim
    with pytest.raises(ValueError, match=r"optim.scaling=airbench needs the batch size"):
        make_optimizer(cfg, optax.constant_schedule(1.0))


def test_lookahead_matches_airbench_loop():
    total, rng = 12, np.random.default_rng(0)
    net = rng.normal(size=3)
    ema_ref, net_ref = net.copy(), net.copy()
    ema, ours = jnp.asarray(net), jnp.asarray(net)
    for step in range(1, total + 1):
        delta = rng.normal(size=3)
        net_ref, ours = net_ref + delta, ours + delta  # the optimiser step
        if step % 5 == 0:  # airbench94's LookaheadState.update
            decay = 0.95 ** 5 * (step / total) ** 3
            ema_ref = ema_ref + (1 - decay) * (net_ref - ema_ref)
            net_ref = ema_ref.copy()
        if step >= total:
            net_ref = ema_ref.copy()
        ema, ours = lookahead_update(ema, ours, jnp.asarray(step), total)
        np.testing.assert_allclose(np.asarray(ours), net_ref, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(ema), ema_ref, rtol=1e-5)


def test_alternating_flip_pattern_in_batches():
    a0, a1, a2 = (alternating_flips(1000, 3, e) for e in range(3))
    assert 400 < a0.sum() < 600 and (a1 == ~a0).all() and (a2 == a0).all()
    assert not (alternating_flips(1000, 4, 0) == a0).all()  # another seed, another pattern
    ds = synthetic(12, 2, seed=0)
    norm = Normalizer(np.zeros(3, np.float32), np.ones(3, np.float32))
    for epoch in (0, 1):
        b = train_batches(ds.train, norm, batch_size=12, seed=5, epoch=epoch, crop_padding=0,
                          flip=True, alternating_flip=True)[0]
        batch = np.rint(b["image"] * 255).astype(np.uint8)
        rows, mirrored = [], []
        for img in batch:
            same = np.all(ds.train.images == img, axis=(1, 2, 3))
            flipped = np.all(ds.train.images == img[:, ::-1], axis=(1, 2, 3))
            rows.append(int(np.flatnonzero(same | flipped)[0]))
            mirrored.append(bool(flipped.any()))
        assert sorted(rows) == list(range(12))
        np.testing.assert_array_equal(mirrored, alternating_flips(12, 5, epoch)[rows])


def test_reflect_crop_is_a_window_of_the_reflect_padded_image():
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    out = augment(images, np.random.default_rng(1), 2, False, "reflect")
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for img, pad in zip(out, padded):
        assert any(np.array_equal(img, pad[i:i + 8, j:j + 8]) for i in range(5)
                   for j in range(5))
    zero = augment(images, np.random.default_rng(1), 2, False, "zeros")
    assert not np.array_equal(zero, out)  # same offsets, different border


def test_multicrop_tta_is_the_weighted_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    w = rng.normal(size=(75, 4)).astype(np.float32)

    def model(images):
        return images.reshape(len(images), -1) @ w

    def shift(img, dy, dx):  # independent: numpy reflect pad, then the window
        p = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        return p[:, 1 - dy:6 - dy, 1 - dx:6 - dx]

    def mirror(img):
        return 0.5 * (model(img) + model(img[:, :, ::-1]))

    expect = 0.5 * mirror(x) + 0.25 * mirror(shift(x, 1, 1)) + 0.25 * mirror(shift(x, -1, -1))
    got = tta_logits(lambda a: jnp.asarray(a).reshape(len(a), -1) @ w, jnp.asarray(x), True,
                     True)
    np.testing.assert_allclose(np.asarray(got), expect, rtol=1e-5, atol=1e-5)
    no_flip = 0.5 * model(x) + 0.25 * (model(shift(x, 1, 1)) + model(shift(x, -1, -1)))
    np.testing.assert_allclose(np.asarray(tta_logits(model, jnp.asarray(x), False, True)),
                               no_flip, rtol=1e-5, atol=1e-5)
    assert np.asarray(translate(jnp.asarray(x), 1, 1))[0, 1, 1, 0] == x[0, 0, 0, 0]


def test_val_fraction_holds_out_the_end_and_never_reads_the_test_set(tmp_path):
    folder, images, labels = make_cifar_dir(tmp_path, train_rows=(7, 13), test_rows=6)
    (folder / "test_batch").unlink()  # a validation run must not need it
    cfg = OmegaConf.create(dict(source="cifar10_dir", dir=str(folder), max_train=None,
                                val_fraction=0.25))
    ds = load_dataset(cfg, seed=0)
    assert len(ds.train) == 15 and len(ds.test) == 5 and "VALIDATION" in ds.description
    np.testing.assert_array_equal(ds.test.images, images[15:])
    np.testing.assert_array_equal(ds.test.labels, labels[15:])
    from train.data import DataError
    with pytest.raises(DataError, match=r"data.val_fraction=0.01 of 20 training images holds "
                                        r"out 0: expected at least 1"):
        load_dataset(OmegaConf.merge(cfg, {"val_fraction": 0.01}), seed=0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_composition_and_its_errors(tmp_path):
    subset = load_config("cifar_subset.yaml")
    full = load_config("cifar.yaml")
    assert subset.optim.lr == full.optim.lr and subset.model.arch == full.model.arch
    assert list(subset.model.widths) == [48, 192, 192] and subset.train.epochs == 20
    changed = {k for k in full.model if full.model[k] != subset.model[k]}
    assert changed == {"widths"}  # the rest of the model section comes from the base
    assert subset.data.source == "cifar10_dir" and full.data.source == "auto"
    assert load_config("vgg_subset.yaml").model == load_config("vgg.yaml").model
    # A chain of two bases, each overriding one key; a user file next to its base.
    _write(tmp_path / "a.yaml", "base: cifar.yaml\ntrain:\n  epochs: 3\n")
    child = _write(tmp_path / "b.yaml", "base: a.yaml\noptim:\n  lr: 2.0\n")
    cfg = load_config(child)
    assert (cfg.train.epochs, cfg.optim.lr, cfg.model.arch) == (3, 2.0, "airbench")
    missing = _write(tmp_path / "m.yaml", "base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"m.yaml: base='nope.yaml': no such file"):
        load_config(missing)
    _write(tmp_path / "x.yaml", "base: y.yaml\n")
    _write(tmp_path / "y.yaml", "base: x.yaml\n")
    with pytest.raises(ConfigError, match=r"base: cycle x.yaml -> y.yaml -> x.yaml"):
        load_config(tmp_path / "x.yaml")
    bad = _write(tmp_path / "bad.yaml", "base: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"base=\[1, 2\] is invalid: expected the file name"):
        load_config(bad)


@pytest.mark.parametrize("override,match", [
    ("model.arch=resnet", r"model.arch='resnet' is invalid: expected one of \('vgg', "),
    ("model.act=tanh", r"model.act='tanh' is invalid: expected one of \('relu', 'gelu'\)"),
    ("model.bn_eps=0", r"model.bn_eps=0.0 is invalid: expected a positive number"),
    ("data.crop_padding_mode=edge", r"data.crop_padding_mode='edge' is invalid"),
    ("data.val_fraction=1.0", r"data.val_fraction=1.0 is invalid: expected a number in"),
    ("optim.scaling=linear", r"optim.scaling='linear' is invalid: expected one of"),
    ("optim.bias_lr_scale=0", r"optim.bias_lr_scale=0.0 is invalid: expected a positive"),
    ("optim.whiten_bias_epochs=-1", r"optim.whiten_bias_epochs=-1.0 is invalid"),
    ("optim.start_factor=2", r"optim.start_factor=2.0 is invalid: expected a number in"),
    ("optim.end_factor=-1", r"optim.end_factor=-1.0 is invalid: expected a number in"),
    ("optim.name=adamw", r"optim.scaling='airbench' is invalid: expected 'none' with "
                         r"optim.name=adamw"),
    ("model.pool_first=false", r"model.pool_first=False is invalid: expected true with "
                               r"model.arch=airbench"),
    ("model.widths=[4,4,4,4,4]", r"at most 4 groups with model.arch=airbench"),
])
def test_new_keys_are_validated(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("cifar.yaml", [override])


def test_whiten_needs_the_airbench_arch():
    with pytest.raises(ConfigError, match=r"model.whiten=True is invalid: expected false with "
                                          r"model.arch=vgg"):
        load_config("vgg.yaml", ["model.whiten=true"])


def test_dtypes_have_one_definition():
    import dataclasses

    import jax.numpy as jnp

    import train.config
    import train.model
    assert train.model.dtypes is train.config.dtypes
    # impl lax: onednn in bfloat16 needs a CPU with oneDNN's bfloat16 kernels.
    cfg = load_config("cifar.yaml", ["model.dtype=bfloat16", "model.widths=[8,16]",
                                     "model.conv_impl=lax"])
    o = train.model.ModelOptions.from_config(cfg.model)
    assert (o.compute_dtype, o.param_dtype) == (jnp.bfloat16, jnp.float32)
    # ModelOptions is the config's model section: every key, no copy to keep in step.
    keys = {f.name for f in dataclasses.fields(train.config.ModelConfig)}
    assert {k: getattr(o, k) for k in keys} == {**{k: cfg.model[k] for k in keys},
                                                "widths": (8, 16)}


def _steps(overrides: list[str], n: int = 3, with_history: bool = False):
    """(initial state, state after ``n`` train steps (or the list of the states after each
    step), parameter labels) of a tiny airbench run of ``n`` epochs of one step of 8
    synthetic images, built as the trainer builds it."""
    cfg = load_config("cifar.yaml", [
        "model.widths=[4,4,4]", "data.source=synthetic", "data.synthetic_train=16",
        "data.synthetic_test=2", "train.batch_size=8", f"train.epochs={n}",
        "train.max_steps_per_epoch=1", *overrides], say=lambda note: None)
    exp = Experiment.from_config(cfg)
    start = jax.tree.map(np.array, exp.state)
    step, state, history = exp.train_step(), exp.state, []
    images = exp.data.norm(exp.data.dataset.train.images[:8])
    for _ in range(n):
        state, metrics = step(state, images, exp.data.dataset.train.labels[:8])
        assert np.isfinite(float(metrics["loss"]))
        history.append(jax.tree.map(np.array, state))
    if with_history:
        return start, history, None
    return start, history[-1], param_labels(start.params, True)


@pytest.fixture(scope="module")
def base_run():
    """4 steps of cifar.yaml's model (widths 4) without Lookahead, the whitening bias
    trained for 2 epochs of 1 step."""
    return _steps(["optim.whiten_bias_epochs=2", "optim.lookahead=false"], n=4,
                  with_history=True)


def test_switch_whiten_frozen_kernel_and_whiten_bias_epochs(base_run):
    start, hist, _ = base_run
    np.testing.assert_array_equal(start.params["whiten"]["kernel"],
                                  hist[-1].params["whiten"]["kernel"])
    # The bias trains in steps 1-2 only, the other parameters all along.
    bias = [start.params["whiten"]["bias"]] + [h.params["whiten"]["bias"] for h in hist]
    assert not np.array_equal(bias[0], bias[1]) and not np.array_equal(bias[1], bias[2])
    np.testing.assert_array_equal(bias[2], bias[4])
    head = [h.params["head"]["kernel"] for h in hist]
    assert not np.array_equal(head[1], head[3])
    # model.whiten=false: a trainable first conv with its default init.
    s, e, _ = _steps(["model.whiten=false", "optim.lookahead=false"], n=1)
    assert not np.array_equal(s.params["whiten"]["kernel"], e.params["whiten"]["kernel"])
    assert not np.allclose(s.params["whiten"]["kernel"], start.params["whiten"]["kernel"])


def test_the_step_after_the_whitening_bias_skips_its_gradient_and_updates_the_same():
    cfg = load_config("cifar.yaml", [
        "model.widths=[4,4,4]", "model.conv_impl=lax", "data.source=synthetic",
        "data.synthetic_train=16", "data.synthetic_test=2", "train.batch_size=8",
        "train.epochs=3", "train.max_steps_per_epoch=1", "optim.whiten_bias_epochs=1",
        "optim.lookahead=false"], say=lambda note: None)
    exp = Experiment.from_config(cfg)
    assert exp.whiten_bias_until == 1
    x = exp.data.norm(exp.data.dataset.train.images[:8])
    y = exp.data.dataset.train.labels[:8]
    early, late = exp.train_step(), exp.train_step(whiten_bias=False)
    # The late step's program has no transpose through the whitening: one convolution
    # fewer (the second conv's data gradient).
    convs = [f.lower(exp.state, x, y).as_text().count("stablehlo.convolution")
             for f in (early, late)]
    assert convs[1] == convs[0] - 1, convs
    state, _ = early(exp.state, x, y)  # step 0: the bias trains
    copy, bias = jax.tree.map(jnp.copy, state), np.asarray(state.params["whiten"]["bias"])
    want, _ = early(state, x, y)  # step 1 as before: its bias gradient computed, unused
    got, _ = late(copy, x, y)  # (each step donates its input state)
    np.testing.assert_array_equal(got.params["whiten"]["bias"], bias)
    for a, b in zip(jax.tree.leaves(got.weights), jax.tree.leaves(want.weights)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    steps = exp.compile()
    assert steps.late_from == 1
    assert [steps.train_at(i) is steps.late_train for i in range(3)] == [False, True, True]


def test_no_late_step_when_the_whitening_bias_trains_all_run():
    cfg = load_config("cifar.yaml", [
        "model.widths=[4,4,4]", "data.source=synthetic", "data.synthetic_train=16",
        "data.synthetic_test=2", "train.batch_size=8", "train.epochs=2",
        "train.max_steps_per_epoch=1", "optim.whiten_bias_epochs=2"], say=lambda note: None)
    assert Experiment.from_config(cfg).whiten_bias_until is None
    vgg = load_config("vgg.yaml", ["data.source=synthetic", "data.synthetic_train=16",
                                   "data.synthetic_test=2", "train.batch_size=8"],
                      say=lambda note: None)
    assert Experiment.from_config(vgg).whiten_bias_until is None  # no whitening conv


def test_a_bias_that_never_trains_compiles_one_train_step():
    cfg = load_config("cifar.yaml", [
        "model.widths=[4,4,4]", "data.source=synthetic", "data.synthetic_train=16",
        "data.synthetic_test=2", "train.batch_size=8", "train.epochs=2",
        "train.max_steps_per_epoch=1", "optim.whiten_bias_epochs=0"], say=lambda note: None)
    steps = Experiment.from_config(cfg).compile()
    assert steps.late_from == 0 and steps.train is steps.late_train


def test_switches_bn_scale_and_act(base_run):
    start, _, _ = base_run
    assert "scale" not in start.params["groups"][0]["norms"][0]
    labels = param_labels(start.params, True)
    assert labels["groups"][0]["norms"][0]["bias"] == "bn_bias"
    assert labels["whiten"] == {"bias": "whiten_bias", "kernel": "frozen"}
    scaled = nnx.eval_shape(lambda: _net((4, 4, 4), "model.bn_scale=true"))
    assert scaled.groups[0].norms[0].scale is not None
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    logits = {act: nnx.jit(lambda m, x: m(x))(_net((4, 4, 4), f"model.act={act}"), x)
              for act in ("relu", "gelu")}
    assert not np.allclose(np.asarray(logits["relu"]), np.asarray(logits["gelu"]))


def test_switch_lookahead_state():
    start, end, _ = _steps([], n=5)
    assert start.ema is not None and start.ema.params.keys() == start.params.keys()
    # After step 5 (a lookahead step and the last) the weights are the EMA copy, which
    # moved off the initial weights.
    for a, b in zip(jax.tree.leaves(end.ema), jax.tree.leaves(end.weights)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(end.params["head"]["kernel"], start.params["head"]["kernel"])


@pytest.mark.slow
def test_airbench_run_every_switch_on_and_exact_resume(tmp_path, monkeypatch, capsys):
    """cifar_subset.yaml (all switches on) on synthetic data, then killed in epoch 2 and
    resumed: the same metrics (the Lookahead copy is in the checkpoint)."""
    args = ["--config", "cifar_subset.yaml", "--quiet", "train.epochs=3",
            "train.max_steps_per_epoch=2", "train.keep_checkpoints=1", *TINY_AB]
    interrupted_and_resumed(main, args, tmp_path, monkeypatch)
    assert "flip + multicrop TTA" in capsys.readouterr().out


@pytest.mark.slow
def test_validation_run_end_to_end(tmp_path, capsys):
    folder, _, _ = make_cifar_dir(tmp_path, train_rows=(40,), test_rows=6)
    (folder / "test_batch").unlink()
    assert main(["--config", "cifar_subset.yaml", "--workdir", str(tmp_path / "run"),
                 "--quiet", f"data.dir={folder}", "data.val_fraction=0.2", "train.epochs=3",
                 "train.max_steps_per_epoch=1",
                 *TINY_AB[1:]]) == 0
    out = capsys.readouterr().out
    assert "VALIDATION accuracy" in out and "on 8 images" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["eval_split"] == "validation" and results["test_images"] == 8
