"""rp.from_jax / from_flax / from_equinox: forward equal to the source framework's, and
relevance equal to the torch-imported twin's (same weights) for the named composites.

Runs in the jax session, which installs flax, equinox and torch beside jax (the nox
session fails if one does not import); elsewhere these tests skip.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND

jax = pytest.importorskip("jax", reason="the JAX importers need jax (jax session)")
nnx = pytest.importorskip("flax.nnx", reason="flax is installed in the jax session")
linen = pytest.importorskip("flax.linen", reason="flax is installed in the jax session")
eqx = pytest.importorskip("equinox", reason="equinox is installed in the jax session")
torch = pytest.importorskip("torch", reason="the torch twins need torch (jax session)")

import jax.numpy as jnp  # noqa: E402

import relprop as rp  # noqa: E402
from relprop.canonizers import MergeBatchNorm  # noqa: E402

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="the JAX importers: jax session")

F64 = jnp.float64
TOL = 1e-10


@pytest.fixture(autouse=True)
def _x64():
    rp._xp.enable_jax_float64()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))


COMPOSITES = {
    "EpsilonPlusFlat": lambda c: rp.composites.EpsilonPlusFlat(canonizers=c),
    "EpsilonGammaBox": lambda c: rp.composites.EpsilonGammaBox(low=-3.0, high=3.0, canonizers=c),
    "EpsilonAlpha2Beta1": lambda c: rp.composites.EpsilonAlpha2Beta1(canonizers=c),
}


def _assert_twin(model, x, twin, to_twin, composite: str, merge: bool) -> None:
    """Relevance of ``model`` on ``x`` equals that of the torch ``twin`` on
    ``to_twin(x)``, brought back with ``to_twin``'s inverse (a layout change)."""
    canonizers = [MergeBatchNorm()] if merge else []
    make = COMPOSITES[composite]
    out = np.asarray(model(x))
    target = np.argmin(out, axis=1)  # not the arg-max: a less trivial backward
    ours = rp.lrp(model, x, target=target.tolist(), composite=make(canonizers))
    x_twin = _t(to_twin(np.asarray(x)))
    theirs = rp.lrp(twin, x_twin, target=target.tolist(), composite=make(canonizers))
    np.testing.assert_allclose(to_twin(np.asarray(ours)), theirs.numpy(), rtol=TOL, atol=TOL)
    assert float(np.abs(np.asarray(ours)).sum()) > 0


def _nhwc_to_nchw(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 3, 1, 2))


def _same(a: np.ndarray) -> np.ndarray:
    return a


# ---------------------------------------------------------------------------------------
# flax nnx CNN (channels-last) and its torch twin
# ---------------------------------------------------------------------------------------


class FlaxCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        kw = {"param_dtype": F64, "dtype": F64, "rngs": rngs}
        self.conv1 = nnx.Conv(3, 4, (3, 3), padding="SAME", **kw)
        self.bn1 = nnx.BatchNorm(4, use_running_average=True, **kw)
        self.conv2 = nnx.Conv(4, 6, (3, 3), padding="SAME", **kw)
        self.bn2 = nnx.BatchNorm(6, use_running_average=True, **kw)
        self.fc = nnx.Linear(2 * 2 * 6, 5, **kw)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = nnx.relu(self.bn2(self.conv2(x)))
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
        return self.fc(x.reshape(x.shape[0], -1))


def _randomise_flax(module: nnx.Module, seed: int) -> None:
    """Non-zero biases and batch-norm statistics (flax starts them at 0 and 1)."""
    rng = _rng(seed)
    for _, node in nnx.iter_graph(module):
        if isinstance(node, (nnx.Conv, nnx.Linear)) and node.bias is not None:
            node.bias[...] = jnp.asarray(rng.normal(0, 0.3, node.bias[...].shape))
        if isinstance(node, nnx.BatchNorm):
            n = node.mean[...].shape
            node.mean[...] = jnp.asarray(rng.normal(0, 0.2, n))
            node.var[...] = jnp.asarray(rng.uniform(0.5, 2.0, n))
            node.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, n))
            node.bias[...] = jnp.asarray(rng.normal(0, 0.2, n))


def _torch_conv(conv_kernel, bias, padding) -> torch.nn.Conv2d:
    kernel = np.asarray(conv_kernel)  # (kh, kw, in, out)
    layer = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2], padding=padding)
    layer.weight.data = _t(np.transpose(kernel, (3, 2, 0, 1)))
    layer.bias.data = _t(bias)
    return layer.double()


def _torch_bn(mean, var, scale, bias, eps: float) -> torch.nn.BatchNorm2d:
    bn = torch.nn.BatchNorm2d(len(np.asarray(mean)), eps=eps).double()
    bn.running_mean.data, bn.running_var.data = _t(mean), _t(var)
    bn.weight.data, bn.bias.data = _t(scale), _t(bias)
    return bn


def _torch_fc_after_nhwc_flatten(kernel, bias, hwc: tuple[int, int, int]) -> torch.nn.Linear:
    """A torch Linear reading an NCHW flatten, equal to flax's Dense on an NHWC flatten."""
    h, w, c = hwc
    kernel = np.asarray(kernel)  # (h*w*c, out), rows in (h, w, c) order
    rows = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    fc = torch.nn.Linear(h * w * c, kernel.shape[1]).double()
    fc.weight.data, fc.bias.data = _t(rows.T), _t(bias)
    return fc


def _flax_cnn_twin(m: FlaxCNN) -> torch.nn.Module:
    def bn(b):
        return _torch_bn(b.mean[...], b.var[...], b.scale[...], b.bias[...], b.epsilon)

    return torch.nn.Sequential(
        _torch_conv(m.conv1.kernel[...], m.conv1.bias[...], 1), bn(m.bn1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        _torch_conv(m.conv2.kernel[...], m.conv2.bias[...], 1), bn(m.bn2), torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        _torch_fc_after_nhwc_flatten(m.fc.kernel[...], m.fc.bias[...], (2, 2, 6)),
    ).eval()


@pytest.fixture(scope="module")
def flax_cnn():
    rp._xp.enable_jax_float64()
    m = FlaxCNN(nnx.Rngs(0))
    _randomise_flax(m, 1)
    x = jnp.asarray(_rng(2).normal(size=(3, 8, 8, 3)))
    return m, x, rp.from_flax(m, x), _flax_cnn_twin(m)


def test_flax_cnn_reads_channels_last_with_two_permutes(flax_cnn) -> None:
    m, x, model, _ = flax_cnn
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(m(x)), rtol=1e-12, atol=1e-12)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Permute", "Conv2d", "Affine", "ReLU", "MaxPool2d", "Conv2d", "Affine",
                     "ReLU", "AvgPool2d", "Permute", "Flatten", "Dense"]
    assert model.names[:3] == ("permute", "conv1", "bn1")
    assert model["conv1"].bias is not None  # flax's `y + bias` is the conv's bias
    fused = rp.canonizers.canonize(model, [MergeBatchNorm()])
    assert not any(isinstance(layer, rp.Affine) for layer in fused)


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "unmerged"])
@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_flax_cnn_relevance_equals_torch_twin(flax_cnn, composite, merge) -> None:
    _, x, model, twin = flax_cnn
    _assert_twin(model, x, twin, _nhwc_to_nchw, composite, merge)


def test_flax_cnn_on_other_backends_and_through_a_file(flax_cnn, tmp_path) -> None:
    _, x, model, _ = flax_cnn
    composite = rp.composites.EpsilonPlusFlat(canonizers=[MergeBatchNorm()])
    want = np.asarray(rp.lrp(model, x, composite=composite))
    on_numpy = rp.lrp(model.to("numpy"), np.asarray(x), composite=composite)
    np.testing.assert_allclose(on_numpy, want, rtol=1e-12, atol=1e-12)
    rp.save(model, tmp_path / "flax.safetensors")
    loaded = rp.load(tmp_path / "flax.safetensors", backend="jax")
    np.testing.assert_array_equal(np.asarray(rp.lrp(loaded, x, composite=composite)), want)


# ---------------------------------------------------------------------------------------
# flax linen CNN with global average pooling, and an nnx MLP
# ---------------------------------------------------------------------------------------


class LinenCNN(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.Conv(5, (3, 3), strides=(2, 2), padding="VALID", param_dtype=F64)(x)
        x = linen.BatchNorm(use_running_average=True, param_dtype=F64)(x)
        x = linen.relu(x)
        x = x.mean(axis=(1, 2))
        return linen.Dense(4, param_dtype=F64)(x)


def test_linen_cnn_with_global_mean_equals_torch_twin() -> None:
    x = jnp.asarray(_rng(3).normal(size=(4, 9, 9, 2)))
    variables = LinenCNN().init(jax.random.PRNGKey(0), x)
    rng = _rng(4)
    variables = jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape) if a.ndim == 1 else a), variables
    )
    model = rp.from_flax(LinenCNN(), x, variables=variables)
    assert model.names == ("permute", "Conv_0", "BatchNorm_0", "relu", "mean", "flatten",
                           "Dense_0")
    np.testing.assert_allclose(
        np.asarray(model(x)), np.asarray(LinenCNN().apply(variables, x)), rtol=1e-12
    )
    p, s = variables["params"], variables["batch_stats"]["BatchNorm_0"]
    bn = p["BatchNorm_0"]
    conv = _torch_conv(p["Conv_0"]["kernel"], p["Conv_0"]["bias"], 0)
    conv.stride = (2, 2)
    fc = torch.nn.Linear(5, 4).double()
    dense = p["Dense_0"]
    fc.weight.data, fc.bias.data = _t(np.asarray(dense["kernel"]).T), _t(dense["bias"])
    twin = torch.nn.Sequential(
        conv, _torch_bn(s["mean"], s["var"], bn["scale"], bn["bias"], 1e-5), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), fc,
    ).eval()
    for composite in COMPOSITES:
        for merge in (True, False):
            _assert_twin(model, x, twin, _nhwc_to_nchw, composite, merge)


def test_nnx_mlp_equals_torch_twin() -> None:
    rngs = nnx.Rngs(5)
    kw = {"param_dtype": F64, "rngs": rngs}
    net = nnx.Sequential(nnx.Linear(6, 8, **kw), nnx.relu, nnx.Linear(8, 8, **kw),
                         jax.nn.relu, nnx.Linear(8, 3, **kw))
    _randomise_flax(net, 6)
    x = jnp.asarray(_rng(7).normal(size=(5, 6)))
    model = rp.from_flax(net, x)
    assert model.names == ("layers.0", "relu", "layers.2", "relu_1", "layers.4")
    linears = [net.layers[i] for i in (0, 2, 4)]
    twin_layers: list[torch.nn.Module] = []
    for i, lin in enumerate(linears):
        fc = torch.nn.Linear(*lin.kernel[...].shape).double()
        fc.weight.data, fc.bias.data = _t(np.asarray(lin.kernel[...]).T), _t(lin.bias[...])
        twin_layers += [fc] + ([torch.nn.ReLU()] if i < 2 else [])
    twin = torch.nn.Sequential(*twin_layers).eval()
    for composite in COMPOSITES:
        _assert_twin(model, x, twin, _same, composite, merge=False)


# ---------------------------------------------------------------------------------------
# equinox CNN and MLP (one sample per call, channels-first)
# ---------------------------------------------------------------------------------------


def _eqx_cnn():
    keys = jax.random.split(jax.random.PRNGKey(8), 3)
    return eqx.nn.Sequential([
        eqx.nn.Conv2d(2, 4, 3, padding=1, key=keys[0], dtype=F64),
        eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.MaxPool2d(2, 2),
        eqx.nn.Conv2d(4, 5, 3, key=keys[1], dtype=F64),
        eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.AvgPool2d(2, 2),
        eqx.nn.Lambda(jnp.ravel),
        eqx.nn.Linear(5 * 1 * 1, 3, key=keys[2], dtype=F64),
    ])


def test_equinox_cnn_equals_torch_twin() -> None:
    net = _eqx_cnn()
    sample = jnp.asarray(_rng(9).normal(size=(2, 8, 8)))
    model = rp.from_equinox(net, sample)
    assert [type(layer).__name__ for layer in model] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "AvgPool2d", "Flatten", "Dense"
    ]
    batch = jnp.asarray(_rng(10).normal(size=(4, 2, 8, 8)))
    np.testing.assert_allclose(np.asarray(model(batch)), np.asarray(jax.vmap(net)(batch)),
                               rtol=1e-12, atol=1e-12)

    def conv(c: eqx.nn.Conv2d, padding: int) -> torch.nn.Conv2d:
        layer = torch.nn.Conv2d(c.in_channels, c.out_channels, 3, padding=padding).double()
        layer.weight.data, layer.bias.data = _t(c.weight), _t(np.asarray(c.bias).reshape(-1))
        return layer

    fc = torch.nn.Linear(5, 3).double()
    fc.weight.data, fc.bias.data = _t(net.layers[7].weight), _t(net.layers[7].bias)
    twin = torch.nn.Sequential(
        conv(net.layers[0], 1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        conv(net.layers[3], 0), torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(), fc,
    ).eval()
    for composite in COMPOSITES:
        _assert_twin(model, batch, twin, _same, composite, merge=False)


def test_equinox_3d_cnn_equals_torch_twin() -> None:
    """Volumes: Conv3d, MaxPool3d and AvgPool3d from equinox read as relprop's 3d layers."""
    keys = jax.random.split(jax.random.PRNGKey(11), 2)
    net = eqx.nn.Sequential([
        eqx.nn.Conv3d(2, 3, (2, 3, 3), padding=(0, 1, 1), key=keys[0], dtype=F64),
        eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.MaxPool3d(2, (1, 2, 2)),
        eqx.nn.AvgPool3d((1, 2, 2), (1, 2, 2)),
        eqx.nn.Lambda(jnp.ravel),
        eqx.nn.Linear(3 * 2 * 2 * 2, 3, key=keys[1], dtype=F64),
    ])
    sample = jnp.asarray(_rng(12).normal(size=(2, 4, 8, 8)))
    model = rp.from_equinox(net, sample)
    assert [type(layer).__name__ for layer in model] == [
        "Conv3d", "ReLU", "MaxPool3d", "AvgPool3d", "Flatten", "Dense"
    ]
    batch = jnp.asarray(_rng(13).normal(size=(3, 2, 4, 8, 8)))
    np.testing.assert_allclose(np.asarray(model(batch)), np.asarray(jax.vmap(net)(batch)),
                               rtol=1e-12, atol=1e-12)
    conv = torch.nn.Conv3d(2, 3, (2, 3, 3), padding=(0, 1, 1)).double()
    conv.weight.data = _t(net.layers[0].weight)
    conv.bias.data = _t(np.asarray(net.layers[0].bias).reshape(-1))
    fc = torch.nn.Linear(24, 3).double()
    fc.weight.data, fc.bias.data = _t(net.layers[5].weight), _t(net.layers[5].bias)
    twin = torch.nn.Sequential(
        conv, torch.nn.ReLU(), torch.nn.MaxPool3d(2, (1, 2, 2)), torch.nn.AvgPool3d((1, 2, 2)),
        torch.nn.Flatten(), fc,
    ).eval()
    for composite in COMPOSITES:
        _assert_twin(model, batch, twin, _same, composite, merge=False)


def test_equinox_mlp_with_the_batch_moved_by_vmap() -> None:
    mlp = eqx.nn.MLP(6, 4, 8, depth=2, key=jax.random.PRNGKey(11), dtype=F64)
    model = rp.from_equinox(mlp, jnp.ones(6))
    assert model.names == ("layers.0", "relu", "layers.1", "relu_1", "layers.2")
    x = jnp.asarray(_rng(12).normal(size=(7, 6)))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(jax.vmap(mlp)(x)), rtol=1e-12)
    layers: list[torch.nn.Module] = []
    for i, lin in enumerate(mlp.layers):
        fc = torch.nn.Linear(lin.in_features, lin.out_features).double()
        fc.weight.data, fc.bias.data = _t(lin.weight), _t(lin.bias)
        layers += [fc] + ([torch.nn.ReLU()] if i < 2 else [])
    twin = torch.nn.Sequential(*layers).eval()
    for composite in COMPOSITES:
        _assert_twin(model, x, twin, _same, composite, merge=False)


# ---------------------------------------------------------------------------------------
# plain JAX functions: graphs, activations, jit, layouts
# ---------------------------------------------------------------------------------------


def _params(seed: int, *shapes: tuple[int, ...]) -> list[jax.Array]:
    rng = _rng(seed)
    return [jnp.asarray(rng.normal(0, 0.5, s)) for s in shapes]


def test_residual_and_concat_become_a_graph_equal_to_torch_fx_twin() -> None:
    w1, b1, w2, b2, w3 = _params(13, (4, 4), (4,), (4, 3), (3,), (7, 2))

    def fn(x):
        h = jax.nn.relu(x @ w1 + b1)
        h = h + x  # residual
        g = jax.nn.relu(h @ w2 + b2)
        return jnp.concatenate([h, g], axis=1) @ w3

    x = jnp.asarray(_rng(14).normal(size=(5, 4)))
    model = rp.from_jax(fn, x)
    assert isinstance(model, rp.Graph)
    assert [type(layer).__name__ for layer in model] == [
        "Dense", "ReLU", "Add", "Dense", "ReLU", "Concat", "Dense"
    ]

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)
            self.fc3 = torch.nn.Linear(7, 2, bias=False)
            for fc, w, b in ((self.fc1, w1, b1), (self.fc2, w2, b2), (self.fc3, w3, None)):
                fc.weight.data = _t(np.asarray(w).T)
                if b is not None:
                    fc.bias.data = _t(b)

        def forward(self, x):
            h = torch.relu(self.fc1(x)) + x
            return self.fc3(torch.cat([h, torch.relu(self.fc2(h))], dim=1))

    twin = Twin().double().eval()
    for composite in COMPOSITES:
        _assert_twin(model, x, twin, _same, composite, merge=False)


@pytest.mark.parametrize(
    ("activation", "layer"),
    [
        (jax.nn.relu, rp.ReLU()),
        (jax.nn.relu6, rp.Hardtanh(0.0, 6.0)),
        (jax.nn.silu, rp.SiLU()),
        (jax.nn.sigmoid, rp.Sigmoid()),
        (jnp.tanh, rp.Tanh()),
        (jax.nn.softplus, rp.Softplus()),
        (jax.nn.hard_tanh, rp.Hardtanh()),
        (lambda x: jax.nn.leaky_relu(x, 0.2), rp.LeakyReLU(0.2)),
        (lambda x: jax.nn.elu(x, 0.7), rp.ELU(0.7)),
    ],
    ids=["relu", "relu6", "silu", "sigmoid", "tanh", "softplus", "hard_tanh", "leaky_relu",
         "elu"],
)
def test_activations_become_their_layers(activation, layer) -> None:
    (w,) = _params(15, (3, 4))
    x = jnp.asarray(_rng(16).normal(0, 3, size=(6, 3)))
    model = rp.from_jax(lambda a: activation(a @ w), x)
    assert [type(m).__name__ for m in model] == ["Dense", type(layer).__name__]
    assert model[1].config() == layer.config()


def test_equinox_grouped_transposed_conv_with_output_padding() -> None:
    """eqx.nn.ConvTranspose2d records a grouped convolution of the dilated input whose
    padding carries the output padding: read as one grouped rp.ConvTranspose2d (its
    groups' weights arranged as torch's) that computes what equinox computes. (Grouped
    transposed convolutions' relevance is tested against zennit in the CNN parity tests.)"""
    keys = jax.random.split(jax.random.PRNGKey(26), 2)
    net = eqx.nn.Sequential([
        eqx.nn.Conv2d(2, 4, 3, key=keys[0], dtype=F64), eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2,
                               key=keys[1], dtype=F64),
    ])
    model = rp.from_equinox(net, jnp.zeros((2, 7, 7)))
    up = model[2]
    assert isinstance(up, rp.ConvTranspose2d) and up.groups == 2
    assert tuple(up.weight.shape) == (4, 3, 3, 2)  # torch's (in, out / groups, *kernel)
    batch = jnp.asarray(_rng(27).normal(size=(3, 2, 7, 7)))
    np.testing.assert_allclose(np.asarray(model(batch)), np.asarray(jax.vmap(net)(batch)),
                               rtol=1e-12, atol=1e-12)


def test_flax_and_equinox_embeddings_equal_torch_twin() -> None:
    """nnx.Embed (jnp.take, which wraps negative indices first) and eqx.nn.Embedding
    (vmapped, a gather of index pairs) both become rp.Embedding."""

    class Tokens(nnx.Module):
        def __init__(self) -> None:
            kw = {"param_dtype": F64, "rngs": nnx.Rngs(28)}
            self.embed = nnx.Embed(11, 4, **kw)
            self.fc = nnx.Linear(20, 3, **kw)

        def __call__(self, ids):
            h = nnx.gelu(self.embed(ids), approximate=False)
            return self.fc(h.reshape(h.shape[0], -1))

    class EqxTokens(eqx.Module):
        embed: eqx.nn.Embedding
        fc: eqx.nn.Linear

        def __call__(self, ids):
            return self.fc(jax.nn.gelu(jax.vmap(self.embed)(ids), approximate=False).ravel())

    flax_net = Tokens()
    eqx_net = EqxTokens(eqx.nn.Embedding(weight=jnp.asarray(flax_net.embed.embedding[...])),
                        eqx.nn.Linear(20, 3, key=jax.random.PRNGKey(29), dtype=F64))
    ids = jnp.asarray(_rng(30).integers(0, 11, size=(4, 5)))
    for model, table, kernel, bias in (
        (rp.from_flax(flax_net, ids), flax_net.embed.embedding[...],
         np.asarray(flax_net.fc.kernel[...]).T, flax_net.fc.bias[...]),
        (rp.from_equinox(eqx_net, ids[0]), eqx_net.embed.weight, eqx_net.fc.weight,
         eqx_net.fc.bias),
    ):
        assert [type(layer).__name__ for layer in model][:2] == ["Embedding", "GELU"]
        embed = torch.nn.Embedding(11, 4).double()
        embed.weight.data = _t(table)
        fc = torch.nn.Linear(20, 3).double()
        fc.weight.data, fc.bias.data = _t(kernel), _t(bias)
        twin = torch.nn.Sequential(embed, torch.nn.GELU(), torch.nn.Flatten(), fc).eval()
        target = [2, 0, 1, 1]
        for composite in ("EpsilonPlusFlat", "EpsilonAlpha2Beta1"):
            make = COMPOSITES[composite]
            ours = rp.lrp(model, ids, target=target, composite=make([]))
            theirs = rp.lrp(twin, torch.from_numpy(np.asarray(ids)), target=target,
                            composite=make([]))
            np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=TOL, atol=TOL)


def test_flax_conv_transpose_equals_torch_twin() -> None:
    kw = {"param_dtype": F64, "rngs": nnx.Rngs(23)}
    net = nnx.Sequential(
        nnx.Conv(2, 4, (3, 3), strides=(2, 2), padding="VALID", **kw), nnx.relu,
        nnx.ConvTranspose(4, 3, (3, 3), strides=(2, 2), padding="VALID", **kw),
    )
    _randomise_flax(net, 24)
    x = jnp.asarray(_rng(25).normal(size=(2, 9, 9, 2)))
    model = rp.from_flax(net, x)
    assert [type(m).__name__ for m in model] == ["Permute", "Conv2d", "ReLU",
                                                 "ConvTranspose2d", "Permute"]
    conv, transposed = net.layers[0], net.layers[2]
    down = _torch_conv(conv.kernel[...], conv.bias[...], 0)
    down.stride = (2, 2)
    up = torch.nn.ConvTranspose2d(4, 3, 3, stride=2).double()
    # flax convolves the dilated input with the kernel as it is (transpose_kernel=False):
    # torch's transposed convolution flips it
    kernel = np.asarray(transposed.kernel[...])  # (kh, kw, in, out)
    up.weight.data = _t(np.flip(np.transpose(kernel, (2, 3, 0, 1)), axis=(2, 3)))
    up.bias.data = _t(transposed.bias[...])

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down, self.up = down, up

        def forward(self, a):
            return self.up(torch.relu(self.down(a))).flatten(1)

    twin = Twin().double().eval()
    twin_out = twin(_t(_nhwc_to_nchw(np.asarray(x)))).detach().numpy()
    ours_out = np.asarray(model(x)).transpose(0, 3, 1, 2).reshape(2, -1)
    np.testing.assert_allclose(ours_out, twin_out, rtol=1e-12, atol=1e-12)
    _assert_transposed_twin(model, x, twin)


def _assert_transposed_twin(model, x, twin) -> None:
    """Relevance started at two output entries of the transposed convolution."""
    out = np.asarray(model(x))  # (batch, h, w, c)
    start = np.zeros_like(out)
    start[:, 3, 4, 1] = out[:, 3, 4, 1]
    start[:, 6, 2, 0] = out[:, 6, 2, 0]
    start_nchw = start.transpose(0, 3, 1, 2).reshape(start.shape[0], -1)
    for composite in COMPOSITES.values():
        ours = np.asarray(rp.lrp(model, x, target=jnp.asarray(start), composite=composite([])))
        theirs = rp.lrp(twin, _t(_nhwc_to_nchw(np.asarray(x))), target=_t(start_nchw),
                        composite=composite([])).numpy()
        np.testing.assert_allclose(_nhwc_to_nchw(ours), theirs, rtol=TOL, atol=TOL)


def test_a_jitted_function_reads_like_the_plain_one() -> None:
    w, b = _params(17, (3, 2), (2,))

    def fn(x):
        return jax.nn.relu(x @ w + b)

    x = jnp.ones((2, 3))
    assert repr(rp.from_jax(jax.jit(fn), x)) == repr(rp.from_jax(fn, x))


def test_input_normalisation_and_nchw_conv_in_a_plain_function() -> None:
    (kernel,) = _params(18, (4, 2, 3, 3))  # OIHW

    def fn(x):
        x = (x - 0.5) / 0.25
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        y = jnp.pad(jax.nn.relu(y), ((0, 0), (0, 0), (1, 0), (2, 1)))
        return jnp.max(y, axis=(2, 3))

    x = jnp.asarray(_rng(19).uniform(size=(2, 2, 5, 5)))
    model = rp.from_jax(fn, x)
    assert [type(m).__name__ for m in model] == ["Affine", "Conv2d", "ReLU", "ZeroPad2d",
                                                 "MaxPool2d", "Flatten"]
    assert model[3].padding == ((1, 0), (2, 1))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(fn(x)), rtol=1e-12)


def test_relprop_models_from_jax_jit_and_vmap_over_inputs() -> None:
    net = _eqx_cnn()
    model = rp.from_equinox(net, jnp.ones((2, 8, 8)))
    x = jnp.asarray(_rng(20).normal(size=(3, 2, 8, 8)))
    composite = rp.composites.EpsilonPlusFlat()
    eager = rp.lrp(model, x, composite=composite)
    jitted = jax.jit(lambda m, a: rp.lrp(m, a, composite=composite))(model, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# errors a user can hit
# ---------------------------------------------------------------------------------------


def test_unsupported_primitive_names_it_and_the_fix() -> None:
    (w,) = _params(21, (3, 2))
    with pytest.raises(TypeError, match=r"primitive 'dot_general'.* made of 'exp' .*none of "
                       r"relprop's activations.*rp.Lambda.*supported_primitives\(\)"):
        rp.from_jax(lambda x: jnp.exp(x) @ w, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=r"output reads .* made of 'mul'"):
        rp.from_jax(lambda x: x * jnp.tanh(jax.nn.softplus(x)), jnp.ones((2, 3)))  # mish


def test_trailing_softmax_is_refused_with_the_logits_hint() -> None:
    (w,) = _params(22, (3, 2))
    with pytest.raises(TypeError, match="explain the logits"):
        rp.from_jax(lambda x: jax.nn.softmax(x @ w), jnp.ones((2, 3)))


def test_product_of_two_inputs_is_a_gate() -> None:
    """A product of two values of one shape is a gate (rp.Multiply)."""
    (w,) = _params(23, (3, 3))
    x = jnp.asarray(_rng(26).normal(size=(2, 3)))
    model = rp.from_jax(lambda a: (a @ w) * a, x)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Multiply"]
    np.testing.assert_allclose(rp.to_numpy(model(x)), np.asarray((x @ w) * x), rtol=1e-6)


@pytest.mark.parametrize(
    ("activation", "layer", "torch_activation"),
    [
        (jax.nn.gelu, rp.GELU("tanh"), torch.nn.GELU("tanh")),
        (lambda h: jax.nn.gelu(h, approximate=False), rp.GELU(), torch.nn.GELU()),
        (lambda h: h * jax.nn.sigmoid(h), rp.SiLU(), torch.nn.SiLU()),
        (lambda h: 0.5 * h * (1.0 + jnp.tanh(0.7978845608 * (h + 0.044715 * h ** 3))),
         rp.GELU("tanh"), torch.nn.GELU("tanh")),
    ],
    ids=["gelu-tanh", "gelu-exact", "silu-written-out", "gelu-by-hand"],
)
def test_activations_written_out_become_their_layers(activation, layer, torch_activation):
    """jax.nn.gelu is traced as its primitives (erfc, or integer_pow and tanh): the
    element-wise steps of one tensor are read as one function and matched to a layer."""
    w1, b1, w2 = _params(24, (4, 5), (5,), (5, 3))
    x = jnp.asarray(_rng(25).normal(size=(6, 4)))
    model = rp.from_jax(lambda a: activation(a @ w1 + b1) @ w2, x)
    assert [repr(item) for item in model][1] == repr(layer)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(activation(x @ w1 + b1) @ w2),
                               rtol=1e-12, atol=1e-12)
    fc1, fc2 = torch.nn.Linear(4, 5).double(), torch.nn.Linear(5, 3, bias=False).double()
    fc1.weight.data, fc1.bias.data, fc2.weight.data = _t(w1).T, _t(b1), _t(w2).T
    twin = torch.nn.Sequential(fc1, torch_activation, fc2).eval()
    for composite in ("EpsilonPlusFlat", "EpsilonGammaBox"):
        _assert_twin(model, x, twin, _same, composite, merge=False)


def test_training_mode_batch_norm_is_refused() -> None:
    bn = nnx.BatchNorm(3, use_running_average=False, rngs=nnx.Rngs(0), param_dtype=F64)
    with pytest.raises(ValueError, match=r"'\(root\)' \(BatchNorm\).*module.eval\(\)"):
        rp.from_flax(bn, jnp.ones((4, 3)))
    net = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(1)))
    with pytest.raises(ValueError, match=r"'layers.1' \(Dropout\)"):
        rp.from_flax(net, jnp.ones((4, 3)))
    net.eval()
    assert [type(m).__name__ for m in rp.from_flax(net, jnp.ones((4, 3)))] == ["Dense"]
    # a plain function that takes batch statistics: the reduction over the batch is named
    with pytest.raises(TypeError, match="batch axis.*training"):
        rp.from_jax(lambda x: x - jnp.mean(x, axis=0), jnp.ones((4, 3)))


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"needs a batch axis first"):
        rp.from_jax(lambda x: x, jnp.ones(3))
    with pytest.raises(ValueError, match="returns 2 arrays"):
        rp.from_jax(lambda x: (x, x), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="variables="):
        rp.from_flax(LinenCNN(), jnp.ones((1, 9, 9, 2)))
    with pytest.raises(TypeError, match="rp.from_jax"):
        rp.from_flax(lambda x: x, jnp.ones((1, 3)))
    with pytest.raises(TypeError, match="rp.from_jax"):
        rp.from_equinox(lambda x: x, jnp.ones(3))


def test_supported_primitives_are_the_handlers() -> None:
    names = rp.interop.jax.supported_primitives()
    assert {"dot_general", "conv_general_dilated", "reduce_window_max", "add"} <= set(names)
    assert list(names) == sorted(names)
