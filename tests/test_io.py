"""rp.save / rp.load: safetensors files with a JSON architecture, on every backend.

The oracle of a round trip is the saved model itself: the loaded model must have the same
node names, layer types, hyper-parameters (tuples stay tuples), inputs and parameter values
(compared exactly, after conversion to NumPy), on the library RELPROP_BACKEND (or
``backend=``) names, with the stored dtype. Files that are not relprop files (pickles,
npz archives, truncated or foreign safetensors files) are refused without being unpickled.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from array_api_compat import device
from helpers import BACKEND, TOLERANCE, assert_close, on_backend

import relprop as rp
from relprop._xp import library_of
from relprop.io import LAYER_TYPES, METADATA_KEY

RTOL = {"float64": 0.0, "float32": TOLERANCE["float32"]}
"""Loaded and saved models compute the same thing: bit-equal in float64."""


def _normal(rng, *shape):
    return rng.normal(size=shape) / np.sqrt(max(1, int(np.prod(shape[1:]))))


def _dense_model(rng, dtype):
    def a(*shape):
        return on_backend(_normal(rng, *shape), dtype)

    return rp.Sequential([
        ("fc1", rp.Dense(a(5, 4), a(5))),
        ("act1", rp.LeakyReLU(0.1)),
        ("drop", rp.Dropout(0.25)),
        ("fc2", rp.Dense(a(6, 5))),  # no bias: recorded as absent
        ("act2", rp.Softplus(beta=2.0)),
        ("fc3", rp.Dense(a(6, 6), a(6))),
        ("tanh", rp.Tanh()),
        ("id", rp.Identity()),
        ("fc4", rp.Dense(a(3, 6), a(3))),
        ("sig", rp.Sigmoid()),
        ("elu", rp.ELU(0.5)),
        ("silu", rp.SiLU()),
        ("hardtanh", rp.Hardtanh(-0.5, 2.0)),
        ("affine", rp.Affine(a(3), on_backend(np.asarray(0.5), dtype))),  # a 0-d shift
    ]), (2, 4)


def _cnn_model(rng, dtype):
    def a(*shape):
        return on_backend(_normal(rng, *shape), dtype)

    def var(n):
        return on_backend(rng.uniform(0.5, 2.0, size=n), dtype)

    return rp.Sequential([
        ("conv1", rp.Conv2d(a(4, 2, 3, 3), a(4), padding=((1, 0), (0, 1)))),
        ("bn1", rp.BatchNorm2d(a(4), var(4), a(4), a(4), eps=1e-3)),
        ("relu1", rp.ReLU()),
        ("pool1", rp.MaxPool2d((2, 2), stride=(2, 1), padding=(1, 0))),
        ("conv2", rp.Conv2d(a(4, 2, 2, 2), None, stride=(1, 2), dilation=(1, 1), groups=2)),
        ("bn2", rp.BatchNorm2d(a(4), var(4))),  # affine=False: weight and bias absent
        ("relu2", rp.ReLU()),
        ("avg", rp.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)),
        ("up", rp.ConvTranspose2d(a(4, 2, 3, 3), a(4), stride=2, padding=((1, 0), (2, 1)),
                                  output_padding=1, groups=2)),
        ("down", rp.Conv2d(a(4, 4, 3, 3), None, stride=2, padding=1)),
        ("bigger", rp.Upsample(scale_factor=(1.5, 2.0), mode="bilinear", align_corners=True)),
        ("smaller", rp.AvgPool2d((3, 2))),
        ("pad", rp.ZeroPad2d(((1, 0), (0, 2)))),
        ("unpad", rp.Conv2d(a(4, 4, 2, 3), None)),
        ("up1d_in", rp.Flatten(2)),
        ("pad1d", rp.ZeroPad1d(((0, 2),))),
        ("up1d", rp.ConvTranspose1d(a(4, 4, 2), None, stride=1, dilation=2)),
        ("max1d", rp.AdaptiveMaxPool1d(5)),
        ("up1d_out", rp.Reshape((4, 5, 1))),
        ("max2d", rp.AdaptiveMaxPool2d((5, 1))),
        ("adapt", rp.AdaptiveAvgPool2d((2, 1))),
        ("permute", rp.Permute((0, 2, 3, 1))),  # channels last
        ("reshape", rp.Reshape((2, -1))),
        ("flat", rp.Flatten()),
        ("fc", rp.Dense(a(3, 8), a(3))),
    ]), (2, 2, 7, 7)


def _volume_model(rng, dtype):
    def a(*shape):
        return on_backend(_normal(rng, *shape), dtype)

    return rp.Sequential([
        ("conv", rp.Conv3d(a(4, 2, 2, 3, 2), a(4), padding=((1, 0), (1, 1), (0, 0)))),
        ("bn", rp.BatchNorm3d(a(4), on_backend(rng.uniform(0.5, 2.0, size=4), dtype))),
        ("pad", rp.ZeroPad3d(((0, 1), (1, 0), (0, 1)))),
        ("max", rp.MaxPool3d((2, 2, 1), stride=(1, 2, 1), ceil_mode=True)),
        ("up", rp.ConvTranspose3d(a(4, 2, 2, 2, 2), None, stride=(2, 1, 1), groups=2)),
        ("avg", rp.AvgPool3d(2, stride=1, padding=1, count_include_pad=False)),
        ("amax", rp.AdaptiveMaxPool3d((3, 2, None))),  # overlapping windows
        ("aavg", rp.AdaptiveAvgPool3d(1)),
        ("flat", rp.Flatten()),
        ("fc", rp.Dense(a(3, 4), a(3))),
    ]), (2, 2, 4, 5, 3)


def _token_model(rng, dtype):
    def a(*shape):
        return on_backend(_normal(rng, *shape), dtype)

    return rp.Sequential([
        ("embed", rp.Embedding(a(7, 4))),
        ("gelu", rp.GELU("tanh")),
        ("flat", rp.Flatten()),
        ("fc", rp.Dense(a(3, 12), a(3))),
        ("gelu_exact", rp.GELU()),
    ]), (2, 3)


def _graph_model(rng, dtype):
    def a(*shape):
        return on_backend(_normal(rng, *shape), dtype)

    return rp.Graph([
        ("stem.conv", rp.Conv1d(a(3, 2, 3), a(3), padding=1), "input"),
        ("stem.relu", rp.ReLU(), "stem.conv"),
        ("branch", rp.Conv1d(a(3, 3, 3), None, padding=((2, 0),), dilation=1), "stem.relu"),
        ("bn", rp.BatchNorm1d(a(3), on_backend(rng.uniform(0.5, 2, size=3), dtype)), "branch"),
        ("add", rp.Add(), ["bn", "stem.relu"]),
        ("relu", rp.ReLU(), "add"),
        ("cat", rp.Concat(axis=1), ["relu", "stem.conv", "input"]),
        ("max", rp.MaxPool1d(2, stride=2, ceil_mode=True), "cat"),
        ("avg", rp.AvgPool1d(3, stride=1, padding=1), "max"),
        ("gap", rp.AdaptiveAvgPool1d(1), "avg"),
        ("flat", rp.Flatten(start_dim=1), "gap"),
        ("fc", rp.Dense(a(2, 8), a(2)), "flat"),
    ]), (2, 2, 9)


def _attention_model(rng, dtype):
    """A pre-norm transformer block: self-attention and a gated MLP, each residual."""
    def a(*shape):
        return on_backend(_normal(rng, *shape), dtype)

    return rp.Graph([
        ("ln", rp.LayerNorm(4, a(4), a(4)), "input"),
        ("q", rp.Dense(a(4, 4), a(4)), "ln"),
        ("k", rp.Dense(a(4, 4)), "ln"),
        ("v", rp.Dense(a(4, 4), a(4)), "ln"),
        ("k.t", rp.Permute((0, 2, 1)), "k"),
        ("scores", rp.MatMul(), ["q", "k.t"]),
        ("scaled", rp.Affine(on_backend(np.asarray(0.5), dtype)), "scores"),
        ("attention", rp.Softmax(), "scaled"),
        ("mixed", rp.MatMul(), ["attention", "v"]),
        ("residual", rp.Add(), ["mixed", "input"]),
        ("rms", rp.RMSNorm(4, a(4), eps=1e-5), "residual"),
        ("gate", rp.Dense(a(6, 4)), "rms"),
        ("silu", rp.SiLU(), "gate"),
        ("up", rp.Dense(a(6, 4)), "rms"),
        ("gated", rp.Multiply(), ["silu", "up"]),
        ("down", rp.Dense(a(4, 6)), "gated"),
        ("out", rp.Add(), ["down", "residual"]),
        ("first", rp.Slice(1, 0, 1), "out"),  # the first token, repeated
        ("repeated", rp.Broadcast((3, 4)), "first"),
        ("flat", rp.Flatten(), "repeated"),
        ("head", rp.Dense(a(2, 12), a(2)), "flat"),
    ]), (2, 3, 4)


MODELS = {"dense": _dense_model, "cnn": _cnn_model, "volume": _volume_model,
          "tokens": _token_model, "graph": _graph_model, "attention": _attention_model}
COMPOSITES = {
    "dense": rp.composites.EpsilonPlus,
    "cnn": rp.composites.EpsilonPlusFlat,
    "volume": lambda: rp.composites.EpsilonGammaBox(low=-3.0, high=3.0),
    "tokens": rp.composites.EpsilonPlus,
    "graph": rp.composites.EpsilonAlpha2Beta1,
    "attention": rp.composites.EpsilonPlus,
}


def _make(kind, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    model, shape = MODELS[kind](rng, dtype)
    if kind == "tokens":  # token indices
        return model, rp.asarray(rng.integers(0, 7, size=shape), backend=BACKEND)
    x = on_backend(rng.normal(size=shape), dtype)
    return model, x


def _config(layer):
    """Hyper-parameters as the test sees them (independent of relprop.io's table)."""
    config = dict(layer.config()) if hasattr(layer, "config") else {}
    for key, value in vars(layer).items():
        if key in ("negative_slope", "beta", "start_dim", "p", "axis"):
            config[key] = value
    return config


def _assert_same_model(loaded, model, dtype):
    assert type(loaded) is type(model)
    assert loaded.names == model.names
    for new, old in zip(loaded.nodes(), model.nodes(), strict=True):
        assert new.inputs == old.inputs
        assert type(new.layer) is type(old.layer), (new.name, new.layer, old.layer)
        new_config, old_config = _config(new.layer), _config(old.layer)
        assert new_config == old_config, new.name
        # tuples come back as tuples (JSON has only lists)
        assert {k: type(v) for k, v in new_config.items()} == {
            k: type(v) for k, v in old_config.items()
        }, new.name
        new_params, old_params = new.layer.params(), old.layer.params()
        assert new_params.keys() == old_params.keys()
        for key, value in old_params.items():
            if value is None:
                assert new_params[key] is None, f"{new.name}.{key} should be absent"
            else:
                assert_close(new_params[key], rp.to_numpy(value), dtype=dtype, rtol=0.0)


def test_every_layer_type_is_covered():
    used = set()
    for kind in MODELS:
        model, _ = _make(kind)
        used |= {type(layer).__name__ for layer in model.layers}
    assert used == set(LAYER_TYPES)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trip(tmp_path, kind, dtype):
    model, x = _make(kind, dtype)
    path = tmp_path / f"{kind}.safetensors"
    rp.save(model, path)
    loaded = rp.load(path)
    _assert_same_model(loaded, model, dtype)
    for value in loaded.named_params().values():
        assert library_of(value) == BACKEND
    if BACKEND == "jax" and dtype == "float32":
        return  # JAX compiles every op per shape and dtype: the float64 case runs the model
    assert_close(loaded(x), rp.to_numpy(model(x)), dtype=dtype, rtol=RTOL[dtype])


@pytest.mark.parametrize(
    "kind", [k for k in MODELS if BACKEND != "jax" or k == "dense"]  # JAX: compile time
)
def test_lrp_round_trip(tmp_path, kind):
    model, x = _make(kind)
    path = tmp_path / f"{kind}.safetensors"
    rp.save(model, path)
    loaded = rp.load(path)
    expected = rp.to_numpy(rp.lrp(model, x, target=1, composite=COMPOSITES[kind]()))
    assert np.abs(expected).sum() > 0
    actual = rp.lrp(loaded, x, target=1, composite=COMPOSITES[kind]())
    assert_close(actual, expected, rtol=0.0)


def test_file_layout(tmp_path):
    """The tensors are named "<node>.<param>"; the architecture is JSON metadata."""
    from safetensors import safe_open

    model, _ = _make("cnn", "float32")
    path = tmp_path / "cnn.safetensors"
    rp.save(model, str(path))
    with safe_open(str(path), framework="np") as handle:
        keys = set(handle.keys())
        header = json.loads(handle.metadata()[METADATA_KEY])
        weight = handle.get_tensor("conv1.weight")
    assert keys == {
        "conv1.weight", "conv1.bias",
        "bn1.running_mean", "bn1.running_var", "bn1.weight", "bn1.bias",
        "conv2.weight", "bn2.running_mean", "bn2.running_var",
        "up.weight", "up.bias", "down.weight", "unpad.weight", "up1d.weight",
        "fc.weight", "fc.bias",
    }
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight, rp.to_numpy(model["conv1"].weight))
    assert header["kind"] == "sequential"
    assert header["format_version"] == 1
    nodes = {node["name"]: node for node in header["nodes"]}
    assert list(nodes) == list(model.names)
    assert nodes["conv1"]["type"] == "Conv2d"
    assert nodes["conv1"]["config"]["padding"] == [[1, 0], [0, 1]]
    assert nodes["conv1"]["params"]["weight"] == {
        "tensor": "conv1.weight", "dtype": "float32", "shape": [4, 2, 3, 3],
    }
    assert "bias" not in nodes["conv2"]["params"]
    assert set(nodes["bn2"]["params"]) == {"running_mean", "running_var"}
    assert nodes["relu1"]["inputs"] == ["bn1"]
    assert nodes["conv1"]["inputs"] == ["input"]


def test_non_contiguous_parameters(tmp_path):
    """A transposed weight is written in its logical order (safetensors takes raw memory)."""
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(4, 3))
    transposed = on_backend(np.ascontiguousarray(weight.T))  # (3, 4) in memory
    xp = rp.array_namespace(w=transposed)
    model = rp.Sequential([rp.Dense(xp.permute_dims(transposed, (1, 0)))])
    rp.save(model, tmp_path / "t.safetensors")
    loaded = rp.load(tmp_path / "t.safetensors")
    assert_close(loaded[0].weight, weight, rtol=0.0)


def test_backend_override(tmp_path, monkeypatch):
    """backend= wins over RELPROP_BACKEND; without it RELPROP_BACKEND is used."""
    model, x = _make("graph")
    path = tmp_path / "g.safetensors"
    rp.save(model, path)
    expected = rp.to_numpy(model(x))
    # point RELPROP_BACKEND elsewhere: an ignored backend= would give other arrays
    elsewhere = "array_api_strict" if BACKEND == "numpy" else "numpy"
    monkeypatch.setenv("RELPROP_BACKEND", elsewhere)
    loaded = rp.load(path, backend=BACKEND, device=device(x))
    assert_close(loaded(x), expected, rtol=0.0)
    if BACKEND != "numpy":
        monkeypatch.setenv("RELPROP_BACKEND", BACKEND)
        on_numpy = rp.load(path, backend="numpy")
        for value in on_numpy.named_params().values():
            assert isinstance(value, np.ndarray) and value.dtype == np.float64
        np.testing.assert_allclose(on_numpy(rp.to_numpy(x)), expected, rtol=TOLERANCE["float64"])


@pytest.mark.skipif(BACKEND != "jax", reason="JAX-specific: 64-bit mode off by default")
def test_jax_float64_kept_without_x64(tmp_path):
    """A fresh process (x64 off, unlike this suite) still loads float64 as float64."""
    import os
    import subprocess
    import sys

    path = tmp_path / "m.safetensors"
    rp.save(rp.Sequential([("fc", rp.Dense(np.eye(2), np.ones(2)))]), path)
    code = (
        "import jax, relprop as rp\n"
        "assert not jax.config.jax_enable_x64\n"
        f"m = rp.load({str(path)!r}, backend='jax')\n"
        "print(m['fc'].weight.dtype, m['fc'].bias.dtype)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), JAX_PLATFORMS="cpu")
    env.pop("JAX_ENABLE_X64", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["float64", "float64"]


def test_dtype_override(tmp_path):
    model64, _ = _make("cnn", "float64")
    model32, x32 = _make("cnn", "float32")
    path = tmp_path / "cnn.safetensors"
    rp.save(model64, path)
    loaded = rp.load(path, dtype="float32")
    for name, value in loaded.named_params().items():
        assert_close(value, rp.to_numpy(model32.named_params()[name]), dtype="float32",
                     rtol=0.0)
    if BACKEND != "jax":  # JAX compiles every op per dtype; the parameters decide the result
        assert_close(loaded(x32), rp.to_numpy(model32(x32)), dtype="float32", rtol=0.0)


def test_lambda_refused(tmp_path):
    model = rp.Sequential([
        ("fc", rp.Dense(on_backend(np.eye(2)))),
        ("double", rp.Lambda(lambda a: 2.0 * a, name="double")),
    ])
    path = tmp_path / "lambda.safetensors"
    with pytest.raises(TypeError, match=r"(?s)'double'.*Lambda.*arbitrary.*code"):
        rp.save(model, path)
    assert not path.exists()


def test_custom_layer_refused(tmp_path):
    class Square(rp.layers.Activation):
        def forward(self, x, xp):
            return x * x

    model = rp.Sequential([("sq", Square())])
    with pytest.raises(TypeError, match=r"(?s)'sq'.*Square.*Dense"):
        rp.save(model, tmp_path / "custom.safetensors")


def test_not_a_model_refused(tmp_path):
    path = tmp_path / "relu.safetensors"
    with pytest.raises(TypeError, match="Sequential or rp.Graph"):
        rp.save(rp.ReLU(), path)
    assert not path.exists()


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every unpickling path fail loudly: a refusal must not come from unpickling."""

    def forbidden(*args, **kwargs):
        raise AssertionError("rp.load tried to unpickle the file")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    real_np_load = np.load

    def np_load(*args, allow_pickle=False, **kwargs):
        if allow_pickle:
            forbidden()
        return real_np_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(np, "load", np_load)


def test_pickle_refused(tmp_path, no_unpickling):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"fc.weight": np.ones((2, 2))}))
    with pytest.raises(ValueError, match=r"(?s)not a valid relprop model file.*pickle"):
        rp.load(path)
    # the same bytes under the expected suffix are refused too
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="pickle"):
        rp.load(disguised)


def test_npz_with_objects_refused(tmp_path, no_unpickling):
    path = tmp_path / "model.npz"
    with open(path, "wb") as handle:
        np.savez(handle, weight=np.ones(2), config=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"(?s)not a valid relprop model file.*zip"):
        rp.load(path)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.save files need torch")
def test_torch_file_refused(tmp_path, no_unpickling):
    import torch

    path = tmp_path / "model.pt"
    torch.save({"weight": torch.ones(2, 2)}, path)
    with pytest.raises(ValueError, match="not a valid relprop model file"):
        rp.load(path)


def test_truncated_file_refused(tmp_path):
    model, _ = _make("dense")
    path = tmp_path / "m.safetensors"
    rp.save(model, path)
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(ValueError, match="not a valid relprop model file"):
        rp.load(path)
    path.write_bytes(data[:5])
    with pytest.raises(ValueError, match="not a valid relprop model file"):
        rp.load(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        rp.load("/nonexistent/relprop/model.safetensors")


def _rewrite(path, edit):
    """Re-save the file at ``path`` with its architecture JSON passed through ``edit``."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="np") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        header = json.loads(handle.metadata()[METADATA_KEY])
    tensors, header = edit(tensors, header)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(header)})


@pytest.fixture
def saved(tmp_path):
    model, _ = _make("dense")
    path = tmp_path / "m.safetensors"
    rp.save(model, path)
    return path


def test_unknown_layer_type_refused(saved):
    def edit(tensors, header):
        header["nodes"][1]["type"] = "os.system"
        return tensors, header

    _rewrite(saved, edit)
    with pytest.raises(ValueError, match=r"(?s)'act1'.*unknown layer type 'os.system'.*Dense"):
        rp.load(saved)


def test_foreign_safetensors_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"weight": np.ones((2, 2))}, str(path))
    with pytest.raises(ValueError, match="metadata"):
        rp.load(path)


@pytest.mark.parametrize("problem", ["newer", "missing tensor", "extra tensor", "bad config"])
def test_inconsistent_file_refused(saved, problem):
    def edit(tensors, header):
        if problem == "newer":
            header["format_version"] = 99
        elif problem == "missing tensor":
            del tensors["fc1.bias"]
        elif problem == "extra tensor":
            tensors["sneaky"] = np.zeros(1)
        else:
            header["nodes"][0]["config"]["activation"] = "evil"
        return tensors, header

    _rewrite(saved, edit)
    match = {
        "newer": "newer", "missing tensor": "lacks", "extra tensor": "sneaky",
        "bad config": "'fc1'.*cannot be rebuilt",
    }[problem]
    with pytest.raises(ValueError, match=match):
        rp.load(saved)


def test_user_metadata_round_trip(tmp_path):
    model = rp.Sequential([("fc", rp.Dense(np.eye(2)))])
    path = tmp_path / "m.safetensors"
    meta = {"classes": ["cat", "dog"], "input": {"shape": [2], "scale": 0.5}, "n": None}
    rp.save(model, path, metadata=meta)
    assert rp.io.load_metadata(path) == meta
    assert rp.load(path, backend="numpy").names == ("fc",)  # the model is unaffected
    rp.save(model, tmp_path / "plain.safetensors")
    assert rp.io.load_metadata(tmp_path / "plain.safetensors") == {}


def test_user_metadata_errors(tmp_path, no_unpickling):
    model = rp.Sequential([rp.Dense(np.eye(2))])
    with pytest.raises(TypeError, match="JSON-serialisable"):
        rp.save(model, tmp_path / "m.safetensors", metadata={"w": np.ones(2)})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        rp.save(model, tmp_path / "m.safetensors", metadata={"x": float("nan")})
    with pytest.raises(TypeError, match="must be a mapping"):
        rp.save(model, tmp_path / "m.safetensors", metadata=["a"])
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="never unpickles"):
        rp.io.load_metadata(tmp_path / "p.safetensors")
