"""load_torch_state_dict: the same logits as PyTorch for Sequential (NCHW and NHWC with the
flatten reordering) and custom modules; layouts and error messages (NumPy state_dicts)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jconv
from jconv.nn import BatchNorm2d, Conv2d, ConvTranspose2d, MaxPool2d
from jconv.torch_import import SkippedKeys


def _torch_cnn(torch):
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1, bias=False),
                        nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(32 * 8 * 8, 10))
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_()
    return net.eval()


def _jconv_cnn(data_format):
    r, kw = nnx.Rngs(1), dict(data_format=data_format)
    model = nnx.Sequential(
        Conv2d(3, 16, 3, padding=1, rngs=r, **kw), BatchNorm2d(16, rngs=r, **kw), nnx.relu,
        MaxPool2d(2, **kw), Conv2d(16, 32, 3, padding=1, bias=False, rngs=r, **kw),
        BatchNorm2d(32, rngs=r, **kw), nnx.relu, MaxPool2d(2, **kw),
        lambda x: x.reshape(x.shape[0], -1), nnx.Linear(32 * 8 * 8, 10, rngs=r))
    model.eval()
    return model


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_same_logits_as_torch(data_format):
    torch = pytest.importorskip("torch")
    net = _torch_cnn(torch)
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    model = _jconv_cnn(data_format)
    flatten = {"layers.9": (32, 8, 8)} if data_format == "NHWC" else None
    jconv.load_torch_state_dict(model, net.state_dict(), flatten_chw=flatten)
    xj = jnp.asarray(x if data_format == "NCHW" else x.transpose(0, 2, 3, 1))
    got = np.asarray(model(xj))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()


class _JBlock(nnx.Module):
    """Attribute names sort differently from the call order: graph order would mismatch."""

    def __init__(self, rngs):
        self.z_first = Conv2d(2, 4, 3, rngs=rngs)
        self.a_norm = BatchNorm2d(4, rngs=rngs)
        self.m_up = ConvTranspose2d(4, 3, 2, stride=2, rngs=rngs)

    def __call__(self, x):
        return self.m_up(jnp.maximum(self.a_norm(self.z_first(x)), 0.0))


def test_custom_module_matched_in_call_order():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class TBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.up = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), \
                nn.ConvTranspose2d(4, 3, 2, stride=2)

        def forward(self, x):
            return self.up(torch.relu(self.bn(self.conv(x))))

    torch.manual_seed(1)
    net = TBlock().eval()
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(1).normal(size=(2, 2, 7, 6)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    model = _JBlock(nnx.Rngs(0))
    model.eval()
    # No name matches and no input_shape: refused, never paired by position.
    with pytest.raises(ValueError, match=r"state_dict modules \['conv', 'bn', 'up'\] have no "
                                         r"jconv layer of the same name.*never by position: "
                                         r"pass mapping="):
        jconv.load_torch_state_dict(model, net.state_dict())
    jconv.load_torch_state_dict(model, net.state_dict(), input_shape=(2, 2, 7, 6))
    np.testing.assert_allclose(model(jnp.asarray(x)), want, rtol=1e-4, atol=1e-4)


def test_numpy_state_dict_layouts():
    """No torch needed: conv weights pass through (OIHW), Linear is transposed, NHWC flatten
    reorders rows from (C, H, W) to (H, W, C)."""
    r = nnx.Rngs(0)
    model = nnx.Sequential(Conv2d(2, 3, 1, rngs=r), BatchNorm2d(3, rngs=r), nnx.Linear(12, 2,
                                                                                       rngs=r))
    w = np.arange(6.0).reshape(3, 2, 1, 1)
    lin = np.arange(24.0).reshape(2, 12)  # in features in (C=3, H=2, W=2) order
    sd = {"0.weight": w, "0.bias": np.ones(3), "1.weight": np.full(3, 2.0),
          "1.bias": np.zeros(3), "1.running_mean": np.arange(3.0), "1.running_var": np.ones(3),
          "1.num_batches_tracked": np.array(5), "2.weight": lin, "2.bias": np.zeros(2)}
    jconv.load_torch_state_dict(model, sd, flatten_chw={"layers.2": (3, 2, 2)})
    np.testing.assert_array_equal(model.layers[0].kernel[...], w)
    np.testing.assert_array_equal(model.layers[1].mean[...], [0.0, 1.0, 2.0])
    kernel = np.asarray(model.layers[2].kernel[...])
    # NHWC row (h, w, c) must hold torch's column c*4 + h*2 + w.
    for h in range(2):
        for w_ in range(2):
            for c in range(3):
                np.testing.assert_array_equal(kernel[(h * 2 + w_) * 3 + c],
                                              lin[:, c * 4 + h * 2 + w_])


def _small():
    r = nnx.Rngs(0)
    return nnx.Sequential(Conv2d(2, 3, 1, bias=False, rngs=r), nnx.Linear(3, 2, rngs=r))


@pytest.mark.parametrize("sd,kwargs,match", [
    ({"0.weight": np.ones((3, 2, 1, 1))}, {},
     r"missing keys \['1.weight', '1.bias'\] \(pass strict=False"),  # a whole layer missing
    ({"0.weight": np.ones((3, 2, 1, 1)), "1.weight": np.ones((2, 3)), "1.bias": np.ones(2),
      "9.weight": np.ones((2, 3))}, {}, r"unexpected keys \['9.weight'\]"),
    ({"a.weight": np.ones((3, 2, 1, 1)), "1.weight": np.ones((2, 3)), "1.bias": np.ones(2)},
     {}, r"state_dict modules \['a'\] have no jconv layer of the same name, and model layers "
         r"\['layers.0'\] \(as torch would name them: \['0'\]\) have no state_dict entry; "
         r"layers are matched by name, never by position: pass mapping=\{torch name: jconv "
         r"path\} \(e.g. mapping=\{'a': 'layers.0'\}\), rename"),
    ({"a.weight": np.ones((3, 2, 1, 1)), "b.weight": np.ones((2, 3)), "c.weight": np.ones(1)},
     {"input_shape": (1, 2, 1, 3)}, r"state_dict has 3 layers without a name match "
                                    r"\(\['a', 'b', 'c'\]\) but the model has 2"),
    ({"0.weight": np.ones((3, 2, 1, 1)), "1.weight": np.ones((2, 3))},
     {"mapping": {"x": "layers.0"}}, r"mapping names torch modules \['x'\] that the "
                                     r"state_dict does not have; its modules with parameters "
                                     r"are \['0', '1'\]"),
    ({"0.weight": np.ones((3, 2, 1, 1)), "1.weight": np.ones((2, 3))},
     {"mapping": {"0": "conv"}}, r"mapping names jconv paths \['conv'\] that are not layers "
                                 r"with parameters of the model; its layers are \['layers.0', "
                                 r"'layers.1'\]"),
    ({"0.weight": np.ones((3, 2, 1, 1)), "1.weight": np.ones((2, 3))},
     {"mapping": {"0": "layers.1", "1": "layers.1"}},
     r"mapping sends several torch modules to the same jconv layer \['layers.1'\]"),
    ({"0.weight": np.ones((3, 2, 3, 3)), "1.weight": np.ones((2, 3))}, {},
     r"torch '0' -> jconv 'layers.0' \(Conv2d\): shape mismatch for 'kernel': jconv expects "
     r"\(3, 2, 1, 1\), state_dict gives \(3, 2, 3, 3\)"),
    ({"0.weight": np.ones((3, 2, 1, 1)), "0.bias": np.ones(3), "1.weight": np.ones((2, 3))},
     {}, r"state_dict does not match the model: missing keys \['1.bias'\]; unexpected keys "
         r"\['0.bias'\] \(pass strict=False to load the rest and skip these\)"),
    ({"0.weight": np.ones((3, 2)), "1.weight": np.ones((2, 3))}, {},
     r"layer kinds do not match \(state_dict entry is a 2-D weight layer\)"),
    ({"0.weight": np.ones((3, 2, 1, 1)), "0.alpha": np.ones(1), "1.weight": np.ones((2, 3))},
     {}, r"unexpected keys \['0.alpha'\]"),
    ({"0.weight": np.ones((3, 2, 1, 1)), "1.weight": np.ones((2, 3))},
     {"flatten_chw": {"layers.7": (3, 1, 1)}}, r"flatten_chw names \['layers.7'\]"),
    ({"0.weight": np.ones((3, 2, 1, 1)), "1.weight": np.ones((2, 3))},
     {"flatten_chw": {"layers.1": (3, 2, 1)}}, r"has C\*H\*W = 6 but the torch weight has 3"),
])
def test_errors(sd, kwargs, match):
    with pytest.raises(ValueError, match=match):
        jconv.load_torch_state_dict(_small(), sd, **kwargs)


def test_model_type_error():
    with pytest.raises(TypeError, match="model must be a flax.nnx.Module, got dict"):
        jconv.load_torch_state_dict({}, {})


def _conv_bn_linear():
    r = nnx.Rngs(0)
    return nnx.Sequential(Conv2d(2, 3, 1, rngs=r), BatchNorm2d(3, rngs=r),
                          nnx.Linear(3, 2, rngs=r))


def _full_sd():
    return {"0.weight": np.full((3, 2, 1, 1), 0.5), "0.bias": np.ones(3),
            "1.weight": np.full(3, 2.0), "1.bias": np.zeros(3), "1.running_mean": np.ones(3),
            "1.running_var": np.full(3, 4.0), "2.weight": np.ones((2, 3)),
            "2.bias": np.zeros(2)}


@pytest.mark.parametrize("drop, match", [
    (["1.running_var"], r"missing keys \['1.running_var'\] \(pass strict=False"),
    (["0.weight"], r"missing keys \['0.weight'\] \(pass strict=False"),
    (["0.bias", "2.bias"], r"missing keys \['0.bias', '2.bias'\] \(pass strict=False"),
])
def test_missing_keys_raise_and_copy_nothing(drop, match):
    model = _conv_bn_linear()
    before = jax.tree.map(np.asarray, nnx.state(model))
    sd = {k: v for k, v in _full_sd().items() if k not in drop}
    with pytest.raises(ValueError, match=match):
        jconv.load_torch_state_dict(model, sd)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model), before)


def test_strict_false_loads_the_rest_and_returns_what_it_skipped():
    model = _conv_bn_linear()
    var0 = np.asarray(model.layers[1].var[...])
    sd = {k: v for k, v in _full_sd().items() if k != "1.running_var"}
    sd["2.extra"] = np.ones(1)
    skipped = jconv.load_torch_state_dict(model, sd, strict=False)
    assert skipped == SkippedKeys(missing_keys=["1.running_var"],
                                        unexpected_keys=["2.extra"])
    np.testing.assert_array_equal(model.layers[1].mean[...], np.ones(3))  # loaded
    np.testing.assert_array_equal(model.layers[1].var[...], var0)  # kept


@pytest.mark.parametrize("strict", [True, False])
def test_one_return_type_whatever_strict(strict):
    """Like torch's load_state_dict: SkippedKeys either way (empty after a full load)."""
    model = _conv_bn_linear()
    skipped = jconv.load_torch_state_dict(model, _full_sd(), strict=strict)
    assert type(skipped) is SkippedKeys and skipped == ([], [])
    np.testing.assert_array_equal(model.layers[1].var[...], np.full(3, 4.0))


@pytest.mark.parametrize("sd, kwargs, match", [
    (None, {}, r"state_dict must be a mapping of torch key names to tensors \(e.g. "
               r"torch_model.state_dict\(\)\), got NoneType"),
    ([("0.weight", np.ones(1))], {}, r"state_dict must be a mapping .* got list"),
    ({}, {"strict": "yes"}, r"strict must be a bool, got 'yes'"),
    ({}, {"mapping": {"0": 1}}, r"mapping must be a mapping of torch module names to jconv "
                                r"layer paths \(str -> str\), got \{'0': 1\}"),
])
def test_argument_type_errors(sd, kwargs, match):
    with pytest.raises(TypeError, match=match):
        jconv.load_torch_state_dict(_small(), sd, **kwargs)


class _StemBody(nnx.Module):
    """Attribute names sort (body < stem) against the call order (stem first)."""

    def __init__(self, rngs):
        self.stem = Conv2d(8, 8, 3, rngs=rngs)
        self.body = Conv2d(8, 8, 3, rngs=rngs)

    def __call__(self, x):
        return self.body(jnp.maximum(self.stem(x), 0.0))


def _torch_stem_body(torch, stem_first=True):
    nn = torch.nn

    class TStemBody(nn.Module):
        def __init__(self):
            super().__init__()
            if stem_first:
                self.stem, self.body = nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3)
            else:  # registered in the other order than called
                self.body, self.stem = nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3)

        def forward(self, x):
            return self.body(torch.relu(self.stem(x)))

    torch.manual_seed(2)
    return TStemBody().eval()


@pytest.mark.parametrize("stem_first", [True, False])
@pytest.mark.parametrize("input_shape", [None, (2, 8, 9, 9)])
def test_custom_module_matched_by_name(stem_first, input_shape):
    """Two same-shaped layers: each gets its own weights, exactly, whatever the attribute
    order, the registration order or the call order."""
    torch = pytest.importorskip("torch")
    net = _torch_stem_body(torch, stem_first)
    model = _StemBody(nnx.Rngs(0))
    assert jconv.load_torch_state_dict(model, net.state_dict(),
                                       input_shape=input_shape) == ([], [])
    for name in ("stem", "body"):
        np.testing.assert_array_equal(getattr(model, name).kernel[...],
                                      getattr(net, name).weight.detach().numpy())
        np.testing.assert_array_equal(getattr(model, name).bias[...],
                                      getattr(net, name).bias.detach().numpy())
    x = np.random.default_rng(3).standard_normal((2, 8, 9, 9)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)


def test_mapping_pairs_differently_named_layers():
    torch = pytest.importorskip("torch")
    net = _torch_stem_body(torch)
    sd = {k.replace("stem", "first").replace("body", "second"): v
          for k, v in net.state_dict().items()}
    model = _StemBody(nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"state_dict modules \['first', 'second'\] have no "
                                         r"jconv layer of the same name"):
        jconv.load_torch_state_dict(model, sd)
    jconv.load_torch_state_dict(model, sd, mapping={"first": "stem", "second": "body"})
    np.testing.assert_array_equal(model.stem.kernel[...], net.stem.weight.detach().numpy())
    np.testing.assert_array_equal(model.body.kernel[...], net.body.weight.detach().numpy())
    # A partial mapping: the rest still by name ("body" -> "body").
    sd = {k.replace("stem", "first"): v for k, v in net.state_dict().items()}
    model = _StemBody(nnx.Rngs(0))
    jconv.load_torch_state_dict(model, sd, mapping={"first": "stem"})
    np.testing.assert_array_equal(model.stem.kernel[...], net.stem.weight.detach().numpy())


class _Nested(nnx.Module):
    def __init__(self, rngs):
        self.features = nnx.Sequential(Conv2d(3, 4, 3, rngs=rngs), nnx.relu,
                                       Conv2d(4, 4, 3, rngs=rngs))
        self.blocks = nnx.List([Conv2d(4, 4, 1, rngs=rngs), Conv2d(4, 4, 1, rngs=rngs)])

    def __call__(self, x):
        x = self.features(x)
        for b in self.blocks:
            x = b(x)
        return x


def test_nested_sequential_and_list_names_match_torch():
    """nnx.Sequential's ``layers`` step is dropped (features.layers.2 = torch features.2);
    nnx.List indexes like nn.ModuleList."""
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TNested(tnn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = tnn.ModuleList([tnn.Conv2d(4, 4, 1), tnn.Conv2d(4, 4, 1)])
            self.features = tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.ReLU(), tnn.Conv2d(4, 4, 3))

        def forward(self, x):
            x = self.features(x)
            for b in self.blocks:
                x = b(x)
            return x

    torch.manual_seed(4)
    net = TNested().eval()
    model = _Nested(nnx.Rngs(0))
    jconv.load_torch_state_dict(model, net.state_dict())
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)
