"""rp.from_keras: Keras 3 Sequential and functional models (on the JAX backend here) give
Keras's outputs and the torch twin's relevance (same weights, float64).

Runs in the jax session, which installs keras with flax, equinox and torch and sets
KERAS_BACKEND=jax (the nox session fails if keras does not import); elsewhere these
tests skip.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import BACKEND

os.environ.setdefault("KERAS_BACKEND", "jax")
pytest.importorskip("jax", reason="Keras runs on its JAX backend here (jax session)")
keras = pytest.importorskip("keras", reason="keras is installed in the jax session")
torch = pytest.importorskip("torch", reason="the torch twins need torch (jax session)")

import relprop as rp  # noqa: E402
from relprop.canonizers import MergeBatchNorm  # noqa: E402

pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="the Keras importer: jax session")

TOL = 1e-10
F64 = "float64"
# Keras computes batch norms and global pools in float32 even for float64 layers
# (result_type(float64, "float32") in keras/src/layers/...); its own outputs are that close
KERAS_RTOL = 1e-6
COMPOSITES = {
    "EpsilonPlusFlat": lambda c: rp.composites.EpsilonPlusFlat(canonizers=c),
    "EpsilonGammaBox": lambda c: rp.composites.EpsilonGammaBox(low=-3.0, high=3.0, canonizers=c),
    "EpsilonAlpha2Beta1": lambda c: rp.composites.EpsilonAlpha2Beta1(canonizers=c),
}


@pytest.fixture(autouse=True)
def _x64():
    rp._xp.enable_jax_float64()


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(keras.ops.convert_to_numpy(a), dtype=np.float64))


def _randomise_batch_norms(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.2, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.normal(0, 0.2, n))


def _randomise_biases(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape))


def _conv(layer, padding) -> torch.nn.Conv2d:
    kernel = keras.ops.convert_to_numpy(layer.kernel)  # (kh, kw, in, out)
    conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2],
                           stride=tuple(layer.strides), padding=padding).double()
    conv.weight.data = _t(np.transpose(kernel, (3, 2, 0, 1)))
    conv.bias.data = _t(layer.bias)
    return conv


def _bn(layer) -> torch.nn.BatchNorm2d:
    bn = torch.nn.BatchNorm2d(layer.moving_mean.shape[0], eps=layer.epsilon).double()
    bn.running_mean.data, bn.running_var.data = _t(layer.moving_mean), _t(layer.moving_variance)
    bn.weight.data, bn.bias.data = _t(layer.gamma), _t(layer.beta)
    return bn


def _fc(layer, rows=None) -> torch.nn.Linear:
    kernel = keras.ops.convert_to_numpy(layer.kernel)  # (in, out)
    if rows is not None:
        kernel = kernel[rows]
    fc = torch.nn.Linear(*kernel.shape).double()
    fc.weight.data, fc.bias.data = _t(kernel.T), _t(layer.bias)
    return fc


def _assert_twin(model, x: np.ndarray, twin, to_twin, *, merge_options=(True, False)) -> None:
    target = np.argmin(np.asarray(model(x)), axis=1).tolist()
    for composite in COMPOSITES.values():
        for merge in merge_options:
            canonizers = [MergeBatchNorm()] if merge else []
            ours = np.asarray(rp.lrp(model, x, target=target, composite=composite(canonizers)))
            theirs = rp.lrp(twin, _t(to_twin(x)), target=target,
                            composite=composite(canonizers)).numpy()
            np.testing.assert_allclose(to_twin(ours), theirs, rtol=TOL, atol=TOL)


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 3, 1, 2))


def _cnn():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same", dtype=F64),
        keras.layers.BatchNormalization(dtype=F64),
        keras.layers.ReLU(dtype=F64),
        keras.layers.MaxPooling2D(dtype=F64),
        keras.layers.ZeroPadding2D(((1, 0), (0, 1)), dtype=F64),
        keras.layers.Conv2D(6, 3, padding="valid", activation="relu", dtype=F64),
        keras.layers.Flatten(dtype=F64),
        keras.layers.Dropout(0.5, dtype=F64),
        keras.layers.Dense(5, activation="softmax", dtype=F64),
    ])  # 8x8 -> pool 4x4 -> pad 5x5 -> conv 3x3
    _randomise_batch_norms(net, 1)
    _randomise_biases(net, 2)
    return net


def test_sequential_cnn_forward_and_torch_twin() -> None:
    net = _cnn()
    with pytest.warns(UserWarning, match="explains the logits"):
        model = rp.from_keras(net, backend="numpy")
    assert [type(layer).__name__ for layer in model] == [
        "Permute", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "ZeroPad2d", "Conv2d", "ReLU",
        "Permute", "Flatten", "Dense"]
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 3))
    probabilities = keras.ops.convert_to_numpy(net(x, training=False))
    logits = np.asarray(model(x))
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, probabilities, rtol=KERAS_RTOL, atol=1e-8)

    conv1, bn, _, _, _, conv2, _, _, fc = net.layers
    rows = np.arange(3 * 3 * 6).reshape(3, 3, 6).transpose(2, 0, 1).reshape(-1)  # NCHW order
    twin = torch.nn.Sequential(
        _conv(conv1, 1), _bn(bn), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.ZeroPad2d((0, 1, 1, 0)),  # torch's order: left, right, top, bottom
        _conv(conv2, 0), torch.nn.ReLU(), torch.nn.Flatten(), _fc(fc, rows),
    ).eval()
    _assert_twin(model, x, twin, _nchw)


def test_functional_model_with_residual_concat_and_rescaling() -> None:
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Rescaling(2.0, offset=-1.0, dtype=F64)(inputs)
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", dtype=F64)(x)
    b = keras.layers.Conv2D(4, 3, padding="same", dtype=F64)(a)
    h = keras.layers.Add(dtype=F64)([a, b])
    h = keras.layers.Activation("relu", dtype=F64)(h)
    h = keras.layers.UpSampling2D(2, dtype=F64)(h)
    pooled = keras.layers.GlobalAveragePooling2D(dtype=F64)(h)
    maxed = keras.layers.GlobalMaxPooling2D(dtype=F64)(h)
    joined = keras.layers.Concatenate(dtype=F64)([pooled, maxed])
    outputs = keras.layers.Dense(3, dtype=F64)(joined)
    net = keras.Model(inputs, outputs)
    _randomise_biases(net, 5)
    model = rp.from_keras(net)  # RELPROP_BACKEND=jax: jax arrays
    conv = next(layer for layer in model if isinstance(layer, rp.Conv2d))
    assert isinstance(model, rp.Graph) and rp.library_of(conv.weight) == "jax"
    model = model.to("numpy")
    x = np.random.default_rng(6).uniform(size=(3, 6, 6, 2))
    np.testing.assert_allclose(np.asarray(model(x)),
                               keras.ops.convert_to_numpy(net(x, training=False)), rtol=KERAS_RTOL)

    conv_a, conv_b = net.layers[2], net.layers[3]
    dense = net.layers[-1]

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.fc = _conv(conv_a, 1), _conv(conv_b, 1), _fc(dense)

        def forward(self, x):
            x = x * 2.0 - 1.0
            a = torch.relu(self.a(x))
            h = torch.relu(a + self.b(a))
            h = torch.nn.functional.interpolate(h, scale_factor=2)
            pooled = h.mean((2, 3))
            maxed = torch.nn.functional.max_pool2d(h, 12).flatten(1)
            return self.fc(torch.cat([pooled, maxed], dim=1))

    _assert_twin(model, x, Twin().eval(), _nchw, merge_options=(False,))


def test_dense_network_with_normalization_and_activations() -> None:
    keras.utils.set_random_seed(7)
    norm = keras.layers.Normalization(mean=[0.5, -1.0, 2.0, 0.0], variance=[4.0, 1.0, 0.25, 9.0],
                                      dtype=F64)
    net = keras.Sequential([
        keras.Input((4,)), norm,
        keras.layers.Dense(6, activation="tanh", dtype=F64),
        keras.layers.Dense(6, dtype=F64), keras.layers.LeakyReLU(0.1, dtype=F64),
        keras.layers.Dense(6, activation="elu", dtype=F64),
        keras.layers.Dense(2, dtype=F64),
    ])
    _randomise_biases(net, 8)
    model = rp.from_keras(net, backend="numpy")
    assert [type(layer).__name__ for layer in model] == [
        "Affine", "Dense", "Tanh", "Dense", "LeakyReLU", "Dense", "ELU", "Dense"]
    x = np.random.default_rng(9).normal(size=(5, 4))
    np.testing.assert_allclose(np.asarray(model(x)),
                               keras.ops.convert_to_numpy(net(x, training=False)), rtol=KERAS_RTOL)
    mean, std = np.array([0.5, -1.0, 2.0, 0.0]), np.array([2.0, 1.0, 0.5, 3.0])

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fcs = torch.nn.ModuleList([_fc(layer) for layer in net.layers[1::2][:1]]
                                           + [_fc(net.layers[i]) for i in (2, 4, 5)])

        def forward(self, x):
            x = (x - _t(mean)) / _t(std)
            x = torch.tanh(self.fcs[0](x))
            x = torch.nn.functional.leaky_relu(self.fcs[1](x), 0.1)
            x = torch.nn.functional.elu(self.fcs[2](x))
            return self.fcs[3](x)

    _assert_twin(model, x, Twin().eval(), lambda a: a, merge_options=(False,))


def test_conv2d_transpose_equals_torch_twin() -> None:
    net = keras.Sequential([
        keras.Input((5, 6, 2)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", dtype=F64),
        keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="relu",
                                     dtype=F64),
        keras.layers.GlobalAveragePooling2D(dtype=F64), keras.layers.Dense(2, dtype=F64),
    ])
    _randomise_biases(net, 12)
    model = rp.from_keras(net, backend="numpy")
    assert "ConvTranspose2d" in [type(layer).__name__ for layer in model]
    x = np.random.default_rng(13).normal(size=(3, 5, 6, 2))
    np.testing.assert_allclose(np.asarray(model(x)),
                               keras.ops.convert_to_numpy(net(x, training=False)),
                               rtol=KERAS_RTOL, atol=KERAS_RTOL)  # a float32 global pool
    conv, up = net.layers[0], net.layers[1]
    first = torch.nn.Conv2d(2, 4, 3, padding=1).double()
    first.weight.data = _t(np.transpose(keras.ops.convert_to_numpy(conv.kernel), (3, 2, 0, 1)))
    first.bias.data = _t(conv.bias)
    second = torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1).double()
    # Keras's (*k, out, in) is torch's (in, out, *k), unflipped
    second.weight.data = _t(np.transpose(keras.ops.convert_to_numpy(up.kernel), (3, 2, 0, 1)))
    second.bias.data = _t(up.bias)
    twin = torch.nn.Sequential(first, torch.nn.ReLU(), second, torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               _fc(net.layers[3])).eval()
    _assert_twin(model, x, twin, _nchw, merge_options=(False,))


def test_volume_cnn_equals_torch_twin() -> None:
    net = keras.Sequential([
        keras.Input((4, 6, 6, 2)), keras.layers.ZeroPadding3D(((0, 1), (1, 0), (1, 1))),
        keras.layers.Conv3D(3, (2, 3, 3), activation="relu", dtype=F64),
        keras.layers.MaxPooling3D((1, 2, 2)), keras.layers.AveragePooling3D(2),
        keras.layers.GlobalAveragePooling3D(), keras.layers.Dense(2, dtype=F64),
    ])
    _randomise_biases(net, 16)
    model = rp.from_keras(net, backend="numpy")
    assert [type(layer).__name__ for layer in model][1:6] == [
        "ZeroPad3d", "Conv3d", "ReLU", "MaxPool3d", "AvgPool3d"]
    x = np.random.default_rng(17).normal(size=(3, 4, 6, 6, 2))
    np.testing.assert_allclose(np.asarray(model(x)),
                               keras.ops.convert_to_numpy(net(x, training=False)),
                               rtol=KERAS_RTOL, atol=KERAS_RTOL)
    conv = torch.nn.Conv3d(2, 3, (2, 3, 3)).double()
    kernel = keras.ops.convert_to_numpy(net.layers[1].kernel)  # (*k, in, out)
    conv.weight.data, conv.bias.data = _t(np.transpose(kernel, (4, 3, 0, 1, 2))), _t(
        net.layers[1].bias)
    twin = torch.nn.Sequential(
        torch.nn.ZeroPad3d((1, 1, 1, 0, 0, 1)), conv, torch.nn.ReLU(),
        torch.nn.MaxPool3d((1, 2, 2)), torch.nn.AvgPool3d(2), torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(), _fc(net.layers[5]),
    ).eval()
    _assert_twin(model, x, twin, lambda a: np.transpose(a, (0, 4, 1, 2, 3)),
                 merge_options=(False,))


def test_embedding_equals_torch_twin() -> None:
    net = keras.Sequential([
        keras.Input((5,), dtype="int32"), keras.layers.Embedding(11, 4, dtype=F64),
        keras.layers.Flatten(), keras.layers.Dense(3, dtype=F64),
    ])
    _randomise_biases(net, 14)
    model = rp.from_keras(net, backend="numpy")
    assert [type(layer).__name__ for layer in model] == ["Embedding", "Flatten", "Dense"]
    ids = np.random.default_rng(15).integers(0, 11, size=(4, 5))
    np.testing.assert_allclose(np.asarray(model(ids)),
                               keras.ops.convert_to_numpy(net(ids, training=False)),
                               rtol=KERAS_RTOL)
    embed = torch.nn.Embedding(11, 4).double()
    embed.weight.data = _t(keras.ops.convert_to_numpy(net.layers[0].embeddings))
    twin = torch.nn.Sequential(embed, torch.nn.Flatten(), _fc(net.layers[2])).eval()
    target = [0, 2, 1, 1]
    for composite in COMPOSITES.values():
        ours = rp.lrp(model, ids, target=target, composite=composite([]))
        theirs = rp.lrp(twin, torch.from_numpy(ids), target=target, composite=composite([]))
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=TOL, atol=TOL)


def test_gelu_activation_equals_torch_twin() -> None:
    net = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(5, activation="gelu", dtype=F64),
        keras.layers.Dense(3, dtype=F64), keras.layers.Activation("gelu", dtype=F64),
        keras.layers.Dense(2, dtype=F64),
    ])
    _randomise_biases(net, 10)
    model = rp.from_keras(net, backend="numpy")
    assert [repr(layer) for layer in model][1::2] == ["GELU()", "GELU()"]
    x = np.random.default_rng(11).normal(size=(5, 4))
    np.testing.assert_allclose(np.asarray(model(x)),
                               keras.ops.convert_to_numpy(net(x, training=False)),
                               rtol=KERAS_RTOL)  # Keras's float64 GELU agrees to ~1e-8 only
    fcs = [_fc(net.layers[i]) for i in (0, 1, 3)]
    twin = torch.nn.Sequential(fcs[0], torch.nn.GELU(), fcs[1], torch.nn.GELU(), fcs[2]).eval()
    _assert_twin(model, x, twin, lambda a: a, merge_options=(False,))


def test_unsupported_layers_and_settings_are_named() -> None:
    net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Cropping2D(1),
                            keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match=r"layer 'cropping2d.*' \(Cropping2D\).*supported"):
        rp.from_keras(net)
    mish = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="mish")])
    with pytest.raises(TypeError, match="activation='mish'"):
        rp.from_keras(mish)
    with pytest.raises(TypeError, match="keras.Model"):
        rp.from_keras(lambda x: x)
    open_shape = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="fixed input shape"):
        rp.from_keras(open_shape)


def test_supported_keras_layers_are_the_handlers() -> None:
    names = rp.interop.keras.supported_keras_layers()
    assert {"Dense", "Conv2D", "BatchNormalization", "Add", "Concatenate"} <= set(names)
    assert list(names) == sorted(names)
