"""rp.from_onnx: the suite's torch models exported with both of torch's exporters give
onnxruntime's outputs and the torch-imported twin's relevance; hand-written graphs cover
what torch does not export (channels-last transposes, auto_pad, Clip, ...).

Runs in the torch session, which installs onnx, onnxruntime and onnxscript (the nox
session fails if one does not import); elsewhere these tests skip.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
from helpers import BACKEND

torch = pytest.importorskip("torch", reason="exporting needs torch (torch session)")
onnx = pytest.importorskip("onnx", reason="onnx is installed in the torch session")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is installed in the torch session")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (torch session)")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch_models import IMPORT_MODELS, token_net_and_ids  # noqa: E402

import relprop as rp  # noqa: E402
from relprop.canonizers import MergeBatchNorm  # noqa: E402

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="the ONNX importer: torch session")

TOL = 1e-10
COMPOSITES = {
    "EpsilonPlusFlat": lambda c: rp.composites.EpsilonPlusFlat(canonizers=c),
    "EpsilonGammaBox": lambda c: rp.composites.EpsilonGammaBox(low=-3.0, high=3.0, canonizers=c),
    "EpsilonAlpha2Beta1": lambda c: rp.composites.EpsilonAlpha2Beta1(canonizers=c),
}


MODELS = IMPORT_MODELS
HAS_BATCHNORM = {"vgg", "resnet", "volume"}
# onnx 1.23's reference evaluator fails on grouped ConvTranspose: the import's own check
# warns that it was skipped (the forward is compared with onnxruntime and torch below)
UNCHECKED = {"upsampler"}


def _read(name: str, data: bytes, backend: str):
    if name not in UNCHECKED:
        return rp.from_onnx(data, backend=backend)
    with pytest.warns(UserWarning, match="reference evaluator cannot run this model"):
        return rp.from_onnx(data, backend=backend)


def _export(net: nn.Module, x: torch.Tensor, dynamo: bool, **options) -> bytes:
    buffer = io.BytesIO()
    if dynamo:
        options["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        options.setdefault("dynamic_axes", {"x": {0: "batch"}})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buffer, input_names=["x"], dynamo=dynamo, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module", params=list(MODELS), ids=list(MODELS))
def model_name(request):
    return request.param


@pytest.fixture(scope="module", params=[False, True], ids=["torchscript", "dynamo"])
def dynamo(request):
    return request.param


def _net(name: str, dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
    make, shape = MODELS[name]
    torch.manual_seed(0)
    net = make().eval().to(dtype)
    x = torch.randn(3, *shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    return net, x


def test_forward_equals_onnxruntime(model_name, dynamo) -> None:
    net, x = _net(model_name, torch.float32)  # onnxruntime's CPU kernels are float32
    data = _export(net, x, dynamo)
    model = _read(model_name, data, "numpy")
    session = ort.InferenceSession(data)
    x2 = np.random.default_rng(2).normal(size=(5, *x.shape[1:])).astype(np.float32)
    want = session.run(None, {session.get_inputs()[0].name: x2})[0]
    np.testing.assert_allclose(model(x2), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_relevance_equals_the_torch_twin(model_name, dynamo, composite) -> None:
    net, x = _net(model_name, torch.float64)
    model = _read(model_name, _export(net, x, dynamo), "torch")
    if model_name == "padded" and dynamo:
        # the dynamo exporter folds the ZeroPad2d into the convolution's padding: the same
        # function, but the Flat and ZBox rules of the first layer see the padded pixels as
        # inputs in the torch module and not in the export; the z-rules agree
        assert not any(isinstance(layer, rp.ZeroPad2d) for layer in model)
        if composite != "EpsilonAlpha2Beta1":
            return
    # both exporters fold batch norms into the convolutions: compare with them merged
    merges = [True] if model_name in HAS_BATCHNORM else [True, False]
    target = net(x).argmin(1).tolist()
    for merge in merges:
        make = COMPOSITES[composite]
        canonizers = [MergeBatchNorm()] if merge else []
        ours = rp.lrp(model, x, target=target, composite=make(canonizers))
        theirs = rp.lrp(net, x, target=target, composite=make(canonizers))
        torch.testing.assert_close(ours, theirs, rtol=TOL, atol=TOL)


def test_batch_normalization_nodes_stay_batch_norms() -> None:
    net, x = _net("vgg", torch.float64)
    data = _export(net, x, False, do_constant_folding=False,
                   training=torch.onnx.TrainingMode.PRESERVE)
    assert "BatchNormalization" in {n.op_type for n in onnx.load_from_string(data).graph.node}
    model = rp.from_onnx(data, backend="torch")
    assert sum(isinstance(layer, rp.BatchNorm2d) for layer in model) == 2
    for composite in COMPOSITES.values():
        torch.testing.assert_close(rp.lrp(model, x, composite=composite([])),
                                   rp.lrp(net, x, composite=composite([])), rtol=TOL, atol=TOL)


def test_trailing_softmax_is_left_out_with_a_warning(dynamo) -> None:
    net, x = _net("mlp", torch.float64)
    with_softmax = nn.Sequential(net, nn.Softmax(dim=1)).eval()
    with pytest.warns(UserWarning, match="explains the logits"):
        model = rp.from_onnx(_export(with_softmax, x, dynamo), backend="torch")
    torch.testing.assert_close(model(x), net(x), rtol=1e-12, atol=1e-12)


def test_paths_bytes_and_protos_and_the_default_backend(tmp_path, monkeypatch) -> None:
    net, x = _net("mlp", torch.float64)
    data = _export(net, x, False)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(data)
    monkeypatch.setenv("RELPROP_BACKEND", "numpy")
    models = [rp.from_onnx(path), rp.from_onnx(str(path)), rp.from_onnx(data),
              rp.from_onnx(onnx.load_from_string(data))]
    assert all(rp.library_of(m.layers[0].weight) == "numpy" for m in models)
    assert len({repr(m) for m in models}) == 1
    rp.save(models[0], tmp_path / "mlp.safetensors")
    loaded = rp.load(tmp_path / "mlp.safetensors", backend="numpy")
    np.testing.assert_array_equal(loaded(x.numpy()), models[0](x.numpy()))


# ---------------------------------------------------------------------------------------
# hand-written graphs: what torch's exporters do not write
# ---------------------------------------------------------------------------------------


def _model(nodes, inputs, output, initializers, opset: int = 17):
    graph = helper.make_graph(nodes, "g", inputs, [output], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _info(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.DOUBLE, shape)


def _init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float64), name)


def _reference(proto, x) -> np.ndarray:
    return ReferenceEvaluator(proto).run(None, {"x": x})[0]


def test_channels_last_graph_with_transposes_same_padding_clip_and_reductions() -> None:
    """What tf2onnx writes for a Keras CNN: NHWC input, Transposes around a Conv with
    auto_pad=SAME_UPPER, Clip(0, 6), a ReduceMean without keepdims, MatMul + Add."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2],
                         kernel_shape=[4, 4]),
        helper.make_node("Add", ["c", "b"], ["cb"]),
        helper.make_node("Clip", ["cb", "lo", "hi"], ["r"]),
        helper.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 3, 1]),
        helper.make_node("ReduceMean", ["rt", "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "fc"], ["z"]),
        helper.make_node("Add", ["z", "fb"], ["y"]),
    ]
    inits = [_init("w", rng.normal(size=(5, 2, 4, 4))), _init("b", rng.normal(size=(5, 1, 1))),
             _init("lo", 0.0), _init("hi", 6.0),
             numpy_helper.from_array(np.asarray([1, 2], dtype=np.int64), "axes"),
             _init("fc", rng.normal(size=(5, 3))), _init("fb", rng.normal(size=3))]
    proto = _model(nodes, [_info("x", ["n", 7, 7, 2])], _info("y", ["n", 3]), inits, opset=18)
    model = rp.from_onnx(proto, backend="numpy")
    assert [type(layer).__name__ for layer in model] == [
        "Permute", "Conv2d", "Hardtanh", "AdaptiveAvgPool2d", "Flatten", "Dense"]
    assert model[1].bias is not None and model[-1].bias is not None
    x = rng.normal(size=(4, 7, 7, 2))
    np.testing.assert_allclose(model(x), _reference(proto, x), rtol=1e-12, atol=1e-12)
    relevance = rp.lrp(model, x, composite=rp.composites.EpsilonPlusFlat())
    assert relevance.shape == x.shape


@pytest.mark.parametrize("opset", [9, 10])
def test_old_upsample_and_resize_use_asymmetric_floor_coordinates(opset: int) -> None:
    """Upsample (opset 9) and Resize-10 have no coordinate attributes: nearest neighbours
    of asymmetric coordinates, rounded down (torch's 'nearest')."""
    op = "Upsample" if opset == 9 else "Resize"
    scales = numpy_helper.from_array(np.asarray([1.0, 1.0, 2.0, 3.0], dtype=np.float32), "s")
    node = helper.make_node(op, ["x", "s"], ["y"], mode="nearest")
    proto = _model([node], [_info("x", ["n", 2, 3, 2])], _info("y", ["n", 2, 6, 6]), [scales],
                   opset=opset)
    model = rp.from_onnx(proto, backend="numpy")
    assert [type(layer).__name__ for layer in model] == ["Upsample"]
    x = np.random.default_rng(5).normal(size=(2, 2, 3, 2))
    np.testing.assert_array_equal(model(x), x.repeat(2, axis=2).repeat(3, axis=3))


def test_gemm_settings_squeeze_unsqueeze_and_reshape_with_shape_arithmetic() -> None:
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax1"], ["u"]),  # (n, 1, 6)
        helper.make_node("Squeeze", ["u", "ax1"], ["s"]),    # (n, 6)
        helper.make_node("Gemm", ["s", "w", "c"], ["g"], alpha=0.5, beta=2.0, transB=0),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("Shape", ["r"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["n1", "dims"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y"]),   # (n, 2, 2)
    ]
    ints = {"ax1": [1], "ax0": [0], "zero": 0, "dims": [2, 2]}
    inits = [_init("w", rng.normal(size=(6, 4))), _init("c", rng.normal(size=4))] + [
        numpy_helper.from_array(np.asarray(v, dtype=np.int64), k) for k, v in ints.items()]
    proto = _model(nodes, [_info("x", ["n", 6])], _info("y", ["n", 2, 2]), inits)
    model = rp.from_onnx(proto, backend="numpy")
    assert [type(layer).__name__ for layer in model] == ["Dense", "ReLU", "Reshape"]
    x = rng.normal(size=(3, 6))
    np.testing.assert_allclose(model(x), _reference(proto, x), rtol=1e-12, atol=1e-12)


def test_unsupported_nodes_name_the_node_its_op_and_the_supported_ops() -> None:
    class Exp(nn.Module):
        def forward(self, x):
            return torch.exp(x)

    net = nn.Sequential(nn.Linear(3, 2), Exp(), nn.Linear(2, 2)).eval().double()
    data = _export(net, torch.ones(2, 3, dtype=torch.float64), False)
    with pytest.raises(TypeError, match=r"node '.*' \(op_type Gemm\) reads an element-wise "
                       r"function .* made of 'Exp' .*supported_ops\(\)"):
        rp.from_onnx(data)
    at_the_end = _export(nn.Sequential(nn.Linear(3, 2), Exp()).eval().double(),
                         torch.ones(2, 3, dtype=torch.float64), False)
    with pytest.raises(TypeError, match=r"from_onnx: the model's output reads .* 'Exp'"):
        rp.from_onnx(at_the_end)
    cumsum = _model([helper.make_node("CumSum", ["x", "axis"], ["y"])], [_info("x", ["n", 3])],
                    _info("y", ["n", 3]), [numpy_helper.from_array(np.array(1), "axis")])
    with pytest.raises(TypeError, match=r"node '.*' \(op_type CumSum\) is not supported"):
        rp.from_onnx(cumsum)
    layer_norm = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)).eval().double()
    data = _export(layer_norm, torch.ones(2, 3, dtype=torch.float64), False)
    with pytest.raises(TypeError, match=r"op_type (LayerNormalization|ReduceMean|Sub|Pow)"):
        rp.from_onnx(data)


def test_bad_arguments_name_the_fix(tmp_path) -> None:
    with pytest.raises(TypeError, match="a path, the file's bytes or an onnx.ModelProto"):
        rp.from_onnx(12)
    two = _model([helper.make_node("Add", ["x", "y"], ["z"])],
                 [_info("x", ["n", 2]), _info("y", ["n", 2])], _info("z", ["n", 2]), [])
    with pytest.raises(ValueError, match="relprop explains models of one input"):
        rp.from_onnx(two)
    open_shape = _model([helper.make_node("Relu", ["x"], ["y"])], [_info("x", ["n", "k"])],
                        _info("y", ["n", "k"]), [])
    with pytest.raises(ValueError, match="input_shape="):
        rp.from_onnx(open_shape)
    model = rp.from_onnx(open_shape, input_shape=(1, 4), backend="numpy")
    assert model(np.ones((2, 4))).shape == (2, 4)


def test_supported_ops_are_the_handlers() -> None:
    names = rp.interop.onnx.supported_ops()
    assert {"Gemm", "Conv", "MaxPool", "BatchNormalization", "Softplus"} <= set(names)
    assert list(names) == sorted(names)


@pytest.mark.parametrize("opset", [17, 20], ids=["opset17-written-out", "opset20-Gelu"])
def test_gelu_and_silu_written_out_or_as_ops(opset: int) -> None:
    """Below opset 20 the exporter writes GELU as Div, Erf, Add, Mul, Mul (tanh GELU as
    Pow/Mul/Tanh...), and SiLU as Sigmoid and Mul at every opset: each is read as the one
    layer computing it; opset 20's ``Gelu`` op is read directly."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 5), nn.GELU("tanh"),
                        nn.Linear(5, 4), nn.SiLU(), nn.Linear(4, 3)).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    data = _export(net, x, False, opset_version=opset)
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert ("Erf" in ops) == (opset < 20) and ("Gelu" in ops) == (opset >= 20)
    model = rp.from_onnx(data, backend="torch")
    assert [repr(layer) for layer in model][1::2] == ["GELU()", "GELU('tanh')", "SiLU()"]
    for make in COMPOSITES.values():
        torch.testing.assert_close(rp.lrp(model, x, composite=make([])),
                                   rp.lrp(net, x, composite=make([])), rtol=TOL, atol=TOL)


def test_an_unknown_written_out_function_is_named() -> None:
    class Mish(nn.Module):
        def forward(self, x):
            return x * torch.tanh(F.softplus(x))

    net = nn.Sequential(nn.Linear(3, 4), Mish(), nn.Linear(4, 2)).double().eval()
    data = _export(net, torch.ones(2, 3, dtype=torch.float64), False, opset_version=17)
    with pytest.raises(TypeError, match=r"made of 'Mul' .*none of relprop's activations"):
        rp.from_onnx(data)


def test_embedding_is_a_gather_of_the_table(dynamo) -> None:
    """An nn.Embedding exports as Gather(table, indices): read as rp.Embedding, with the
    relevance of the torch twin at the vectors (float32: the exporters' checks)."""
    net, ids = token_net_and_ids()
    model = rp.from_onnx(_export(net, ids, dynamo), backend="torch")
    assert [type(layer).__name__ for layer in model][:2] == ["Embedding", "GELU"]
    for make in COMPOSITES.values():
        torch.testing.assert_close(rp.lrp(model, ids, composite=make([])),
                                   rp.lrp(net, ids, composite=make([])), rtol=1e-5, atol=1e-6)
