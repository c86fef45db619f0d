"""``rp.from_torch``: torch modules imported as relprop models (torch session only).

Oracles: the torch module's own forward (float64; the imported model must agree to
1e-12), torch's tensors themselves (``data_ptr``: the layers hold them, no copies), and
the same model moved to NumPy (relprop's NumPy code path) for LRP. Models: an MLP of every
supported activation, a VGG-style CNN (nested ``nn.Sequential``; and as a module with a
``forward``, traced), a torchvision-style ResNet-18 of BasicBlocks (``out += identity``,
``nn.ReLU(inplace=True)``, ``torch.flatten``) and its functional twin (``F.relu``,
``out = out + identity``, ``F.adaptive_avg_pool2d``, ``x.view(x.size(0), -1)``) traced
with torch.fx, 1d convolutions and pools with non-default settings, and a small
inception-style module (``torch.cat``, functional pools, ``Tensor.relu``, ``torch.add``).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close

import relprop as rp

if BACKEND != "torch":
    pytest.skip("from_torch imports torch modules: torch session only",
                allow_module_level=True)

import torch  # noqa: E402
import torch_models as tm  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

ATOL = 1e-12


def _eval64(module: nn.Module) -> nn.Module:
    return tm.randomize_batchnorm(module).double().eval()


def _input(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _assert_forward_equal(module: nn.Module, model: rp.Sequential | rp.Graph,
                          x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = module(x).numpy()
    assert_close(model(x), expected, rtol=ATOL, atol=ATOL)


def _layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


# ---------------------------------------------------------------------------------------
# nn.Sequential
# ---------------------------------------------------------------------------------------


def test_mlp_of_every_activation_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 8), nn.Tanh(), nn.Linear(8, 8),
        nn.LeakyReLU(0.2), nn.Linear(8, 7, bias=False), nn.Sigmoid(), nn.Linear(7, 5),
        nn.Softplus(beta=2.0), nn.Identity(), nn.Dropout(0.3), nn.Linear(5, 3),
    ).double().eval()
    model = rp.from_torch(net)
    assert isinstance(model, rp.Sequential)
    assert model.names == tuple(str(i) for i in range(13))
    assert _layer_types(model) == [
        "Dense", "ReLU", "Dense", "Tanh", "Dense", "LeakyReLU", "Dense", "Sigmoid", "Dense",
        "Softplus", "Identity", "Dropout", "Dense",
    ]
    assert model["5"].negative_slope == 0.2 and model["9"].beta == 2.0
    assert model["6"].bias is None
    _assert_forward_equal(net, model, 3.0 * _input(4, 6))


def test_vgg_style_sequential_round_trip_with_qualified_names():
    net = _eval64(tm.vgg_sequential())
    x = _input(3, 3, 8, 8)
    model = rp.from_torch(net, example_input=x)
    assert isinstance(model, rp.Sequential)
    assert model.names == (
        *(f"features.{i}" for i in range(9)), "avgpool", "flatten",
        *(f"classifier.{i}" for i in range(4)),
    )
    assert _layer_types(model) == [
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU",
        "Conv2d", "ReLU", "AvgPool2d", "Flatten", "Dense", "ReLU", "Dropout", "Dense",
    ]
    _assert_forward_equal(net, model, x)


def test_nested_sequentials_are_flattened_and_repeated_modules_kept():
    torch.manual_seed(1)
    shared = nn.ReLU()
    net = nn.Sequential(
        nn.Sequential(nn.Linear(4, 6), nn.Sequential(shared, nn.Linear(6, 5))),
        shared,
        nn.Sequential(),
        nn.Linear(5, 2),
    ).double().eval()
    model = rp.from_torch(net)
    assert model.names == ("0.0", "0.1.0", "0.1.1", "1", "3")
    assert _layer_types(model) == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]
    _assert_forward_equal(net, model, _input(5, 4))


def test_conv1d_pools_and_batchnorm1d_with_non_default_settings():
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv1d(2, 4, kernel_size=2, padding="same", dilation=3),  # pads (1, 2)
        nn.BatchNorm1d(4, affine=False),
        nn.ReLU(),
        nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv1d(4, 6, kernel_size=3, stride=2, padding=2, groups=2),
        nn.AvgPool1d(3, stride=1, padding=1, count_include_pad=False),
        nn.Conv1d(6, 6, kernel_size=2, padding="valid", bias=False),
        nn.AdaptiveAvgPool1d(3),
        nn.Flatten(),
        nn.BatchNorm1d(18),
        nn.Linear(18, 3),
    )
    net = _eval64(net)
    model = rp.from_torch(net)
    assert model[0].padding == ((1, 2),) and model[6].padding == 0
    assert model[4].groups == 2 and model[4].stride == (2,)
    _assert_forward_equal(net, model, _input(3, 2, 17))


def test_conv2d_same_padding_with_even_kernel_pads_like_torch():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 3, kernel_size=(2, 3), padding="same"),
        nn.AdaptiveAvgPool2d((2, None)),
        nn.Flatten(),
    ).double().eval()
    model = rp.from_torch(net)
    assert model[0].padding == ((0, 1), (1, 1))  # torch puts the odd pixel after
    _assert_forward_equal(net, model, _input(2, 2, 5, 6))


def test_a_single_supported_module_is_a_one_layer_model():
    torch.manual_seed(4)
    linear = nn.Linear(3, 2).double().eval()
    model = rp.from_torch(linear)
    assert isinstance(model, rp.Sequential) and _layer_types(model) == ["Dense"]
    _assert_forward_equal(linear, model, _input(2, 3))


# ---------------------------------------------------------------------------------------
# torch.fx
# ---------------------------------------------------------------------------------------


def test_resnet18_style_net_traced_into_a_graph():
    torch.manual_seed(5)
    net = _eval64(tm.resnet18())
    x = _input(2, 3, 8, 8)
    model = rp.from_torch(net)
    assert isinstance(model, rp.Graph)
    nodes = {node.name: node for node in model.nodes()}
    # module nodes by qualified name; the block's ReLU is called twice
    assert nodes["layer1.0.conv1"].inputs == ("maxpool",)
    assert isinstance(nodes["layer1.0.relu_1"].layer, rp.ReLU)
    adds = [node for node in model.nodes() if isinstance(node.layer, rp.Add)]
    assert len(adds) == 8
    # identity shortcut of the first block, 1x1-conv + BN shortcut of the first in layer2
    assert adds[0].inputs == ("layer1.0.bn2", "maxpool")
    assert adds[2].inputs == ("layer2.0.bn2", "layer2.0.downsample.1")
    assert nodes["layer2.0.downsample.0"].inputs == ("layer1.1.relu_1",)
    assert [n.name for n in model.nodes()][-3:] == ["avgpool", "flatten", "fc"]
    _assert_forward_equal(net, model, x)
    # an nn.Sequential of custom blocks is traced too
    stage = rp.from_torch(net.layer2)
    assert isinstance(stage, rp.Graph) and stage.names[:2] == ("0.conv1", "0.bn1")
    _assert_forward_equal(net.layer2, stage, _input(2, 4, 4, 4))


def test_functional_resnet_traced_into_a_graph():
    torch.manual_seed(6)
    net = _eval64(tm.FunctionalResNet())
    model = rp.from_torch(net)
    assert isinstance(model, rp.Graph)
    assert sum(isinstance(layer, rp.Add) for layer in model.layers) == 8
    last = model.nodes()[-3:]
    assert [type(n.layer).__name__ for n in last] == ["AdaptiveAvgPool2d", "Flatten", "Dense"]
    _assert_forward_equal(net, model, _input(2, 3, 8, 8))


def test_vgg_module_with_forward_is_traced():
    net = _eval64(tm.VGG())
    model = rp.from_torch(net)
    assert isinstance(model, rp.Graph)
    assert model.names[-6:] == ("avgpool", "flatten", "classifier.0", "classifier.1",
                                "classifier.2", "classifier.3")
    _assert_forward_equal(net, model, _input(2, 3, 8, 8))


class _Inception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(6 * 4, 3)

    def forward(self, x):
        a = self.a(x).relu()
        b = torch.relu(self.b(x))
        y = torch.cat([a, b], dim=1)
        y = F.avg_pool2d(y, kernel_size=2)
        y = torch.add(F.max_pool2d(y, 3, stride=1, padding=1), y)
        y = F.leaky_relu(y, 0.1).contiguous()
        return self.fc(torch.flatten(y, start_dim=1))


def test_concat_functional_pools_and_tensor_methods():
    torch.manual_seed(7)
    net = _Inception().double().eval()
    model = rp.from_torch(net)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Concat", "AvgPool2d", "MaxPool2d", "Add", "LeakyReLU", "Flatten"} <= kinds
    _assert_forward_equal(net, model, _input(2, 3, 4, 4))


class _ViewMinusOne(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 2 * 2 * 2))


def test_view_minus_one_needs_the_shapes_of_an_example():
    torch.manual_seed(8)
    net = _ViewMinusOne().double().eval()
    x = _input(3, 1, 4, 4)
    with pytest.raises(ValueError, match=r"'view'.*example_input"):
        rp.from_torch(net)
    model = rp.from_torch(net, example_input=x)
    assert isinstance(model["view"], rp.Flatten)
    _assert_forward_equal(net, model, x)


class _SpatialMean(nn.Module):
    def __init__(self, keepdim: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.conv1d = nn.Conv1d(2, 3, 2)
        self.fc = nn.Linear(6, 2)
        self.keepdim = keepdim

    def forward(self, x):
        y = torch.relu_(self.conv(x))
        if self.keepdim:
            y = y.mean((-2, -1), keepdim=True).flatten(1)
        else:
            y = torch.mean(y, dim=(3, 2))
        z = self.conv1d(torch.flatten(x, 2)).mean(-1)
        return self.fc(torch.cat([y, z], 1))


@pytest.mark.parametrize("keepdim", [False, True])
def test_mean_over_spatial_axes_is_global_average_pooling(keepdim):
    torch.manual_seed(11)
    net = _SpatialMean(keepdim).double().eval()
    model = rp.from_torch(net)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("AdaptiveAvgPool2d") == 1 and kinds.count("AdaptiveAvgPool1d") == 1
    assert kinds.count("Flatten") == 3
    _assert_forward_equal(net, model, _input(2, 2, 5, 5))


class _Body(nn.Module):
    """A module whose forward is ``body(self, x)`` (torch.fx traces through it)."""

    def __init__(self, body) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.body = body

    def forward(self, x):
        return self.body(self, x)


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        (lambda m, x: 1.0 / m.conv(x), TypeError, r"'truediv' .*divides a constant by a tensor"),
        (lambda m, x: m.conv(x).view(2, x.size(0), -1), ValueError,
         r"'view' .*keep the batch first"),
        (lambda m, x: torch.flatten(m.conv(x)), ValueError, r"'flatten' .*start_dim >= 1"),
        (lambda m, x: torch.cat([m.conv(x), x]), ValueError, r"'cat' .*batch axis 0"),
        (lambda m, x: m.conv(x).mean(1), ValueError, r"'mean' .*averages over dim=1"),
        (lambda m, x: F.dropout(m.conv(x), 0.1), ValueError, r"'dropout' .*training=True"),
        (lambda m, x: m.conv(x).view(-1, x.size(1)), ValueError,
         r"'size' .*axis 1 .*example_input"),
        (lambda m, x: m.conv(x)[0], TypeError, r"'getitem' .*the batch kept whole"),
        (lambda m, x: m.conv(x)[:, :1], ValueError, r"'getitem' .*example_input"),
        (lambda m, x: (m.conv(x), x), ValueError, r"returns \(.*one tensor"),
        (lambda m, x: m.conv(x) if x.sum() > 0 else x, ValueError,
         r"torch.fx cannot trace the forward"),
    ],
    ids=["constant-over-tensor", "reshape-3d", "flatten-batch", "cat-batch", "mean-channels",
         "dropout-training", "size-1", "index-batch", "slice-no-shapes", "tuple-output",
         "branch"],
)
def test_unsupported_patterns_in_a_traced_forward(body, error, match):
    with pytest.raises(error, match=match):
        rp.from_torch(_Body(body).eval())


# ---------------------------------------------------------------------------------------
# shared memory, conversion to other libraries, LRP
# ---------------------------------------------------------------------------------------


def test_layers_share_the_torch_tensors():
    net = _eval64(tm.vgg_sequential())
    model = rp.from_torch(net)
    pairs = [
        (model["features.0"].weight, net.features[0].weight),
        (model["features.0"].bias, net.features[0].bias),
        (model["features.1"].running_mean, net.features[1].running_mean),
        (model["features.1"].running_var, net.features[1].running_var),
        (model["features.1"].weight, net.features[1].weight),
        (model["features.1"].bias, net.features[1].bias),
        (model["classifier.3"].weight, net.classifier[3].weight),
        (model["classifier.3"].bias, net.classifier[3].bias),
    ]
    for ours, theirs in pairs:
        assert ours.data_ptr() == theirs.data_ptr()
        assert not ours.requires_grad
    x = _input(2, 3, 8, 8)
    with torch.no_grad():  # an in-place update of the torch module shows in the model
        net.classifier[3].bias += 1.0
        net.features[1].running_mean -= 0.5
    _assert_forward_equal(net, model, x)


def test_resnet_layers_share_the_torch_tensors():
    net = _eval64(tm.resnet18())
    model = rp.from_torch(net)
    block = net.layer2[0]
    assert model["layer2.0.conv1"].weight.data_ptr() == block.conv1.weight.data_ptr()
    assert (model["layer2.0.downsample.1"].running_var.data_ptr()
            == block.downsample[1].running_var.data_ptr())


def _assert_numpy_close(actual, expected: np.ndarray, rtol: float) -> None:
    assert rp.library_of(actual) == "numpy", type(actual)
    assert actual.dtype == np.float64 and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("make", [tm.vgg_sequential, tm.resnet18], ids=["vgg", "resnet"])
def test_imported_model_explained_on_numpy_equals_torch(make):
    torch.manual_seed(9)
    net = _eval64(make())
    x = _input(2, 3, 8, 8)
    model = rp.from_torch(net)
    composite = rp.composites.EpsilonPlusFlat()
    on_torch = rp.lrp(model, x, target=[1, 3], composite=composite)
    on_numpy = model.to("numpy")
    assert rp.library_of(on_numpy.layers[0].weight) == "numpy"
    relevance = rp.lrp(on_numpy, x.numpy(), target=[1, 3], composite=composite)
    _assert_numpy_close(relevance, on_torch.numpy(), 1e-10)
    _assert_numpy_close(on_numpy(x.numpy()), net(x).detach().numpy(), 1e-12)


class _TinyResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.shortcut = nn.Conv2d(2, 3, 1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3 * 2 * 2, 3)

    def forward(self, x):
        out = F.relu(self.bn(self.conv(x)) + self.shortcut(x))
        return self.fc(torch.flatten(self.pool(out), 1))


def test_imported_model_explained_on_jax_equals_torch():
    jax = pytest.importorskip("jax", reason="jax is optional in the torch session")
    rp._xp.enable_jax_float64()
    torch.manual_seed(10)
    net = _eval64(_TinyResidual())  # small: every op compiles once on JAX
    x = _input(2, 2, 4, 4)
    model = rp.from_torch(net)
    composite = rp.composites.EpsilonAlpha2Beta1Flat()
    expected = rp.lrp(model, x, target=0, composite=composite).numpy()
    on_jax = model.to("jax")
    relevance = rp.lrp(on_jax, jax.numpy.asarray(x.numpy()), target=0, composite=composite)
    assert rp.library_of(relevance) == "jax" and str(relevance.dtype) == "float64"
    assert relevance.shape == expected.shape
    np.testing.assert_allclose(np.asarray(relevance), expected, rtol=1e-10,
                               atol=1e-10 * np.abs(expected).max())


def test_lrp_on_imported_resnet_with_epsilon_plus_flat():
    net = _eval64(tm.resnet18())
    x = _input(3, 3, 8, 8)
    model = rp.from_torch(net, example_input=x)
    relevance = rp.lrp(model, x, composite=rp.composites.EpsilonPlusFlat())
    assert rp.library_of(relevance) == "torch" and relevance.dtype == torch.float64
    assert tuple(relevance.shape) == tuple(x.shape)
    assert bool(torch.isfinite(relevance).all()) and float(relevance.abs().sum()) > 0


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------


def test_unsupported_module_names_its_qualified_name_type_and_where_the_list_is():
    net = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Mish(), nn.Linear(4, 2))).eval()
    with pytest.raises(TypeError) as info:
        rp.from_torch(net)
    message = str(info.value)
    assert "'1.0'" in message and "torch.nn.modules.activation.Mish" in message
    assert "rp.interop.torch.SUPPORTED_MODULES" in message and "Supported layers" in message
    assert "register_torch_converter" in message
    assert "BatchNorm2d" not in message and len(message) < 400  # no list of every module
    assert "Mish" not in rp.interop.torch.SUPPORTED_MODULES
    assert "BatchNorm2d" in rp.interop.torch.SUPPORTED_MODULES


def test_unsupported_module_inside_a_traced_module():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 3), nn.LSTMCell(3, 3))

        def forward(self, x):
            return self.body(x)

    with pytest.raises(TypeError, match=r"'body\.1' of type torch\.nn\..*LSTMCell.*Supported"):
        rp.from_torch(Net().eval())


def test_unsupported_function_and_direct_parameter_use_name_the_node():
    class Exp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return torch.exp(self.fc(x))

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return torch.exp(self.scale) * x

    with pytest.raises(TypeError, match=r"node 'exp' .*torch.*exp.* not supported") as info:
        rp.from_torch(Exp().eval())
    message = str(info.value)
    assert "SUPPORTED_FUNCTIONS" in message and "Supported layers" in message
    assert "F.max_pool1d" not in message and len(message) < 400
    with pytest.raises(TypeError, match=r"node 'exp' .*not supported"):
        rp.from_torch(Scale().eval())


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (nn.MaxPool2d(2, return_indices=True), "return_indices=True"),
        (nn.AvgPool2d(2, divisor_override=3), "divisor_override=3"),
        (nn.BatchNorm2d(2, track_running_stats=False), "track_running_stats=False"),
        (nn.Flatten(0), "start_dim=0"),
    ],
    ids=["reflect", "indices", "divisor", "batch-stats", "flatten-batch"],
)
def test_unsupported_settings_of_supported_modules(module, match):
    with pytest.raises(ValueError, match=r"'0' \(torch\.nn\..*" + match.replace("(", r"\(")):
        rp.from_torch(nn.Sequential(module).eval())


def test_training_mode_is_refused():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match=r"training mode; call module\.eval\(\)"):
        rp.from_torch(net)
    net.eval()
    net[1].train()
    with pytest.raises(ValueError, match=r"submodule '1' .*BatchNorm1d.*training mode"):
        rp.from_torch(net)


def test_wrong_input_shape_gives_relprop_error_naming_the_layer():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    model = rp.from_torch(net)
    with pytest.raises(ValueError, match=r"layer 0 \('0', Dense\(4 -> 3\)\) expects input"):
        model(_input(2, 5))
    resnet = rp.from_torch(_eval64(tm.resnet18()))
    with pytest.raises(ValueError, match=r"\('conv1', Conv2d\(3 -> 4.*expects input"):
        rp.lrp(resnet, _input(1, 2, 8, 8), composite=rp.composites.EpsilonPlusFlat())


def test_in_place_op_on_a_tensor_read_later_is_refused():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU(inplace=True)
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            y = self.fc(x)
            z = self.relu(y)  # overwrites y ...
            return z + y  # ... which is read here

    with pytest.raises(ValueError, match=r"node 'relu' .*modifies 'fc' in place.*\['add'\]"):
        rp.from_torch(Net().eval())


def test_example_input_catches_a_forward_the_trace_misreads():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            out = self.fc(x)
            alias = out
            out += x  # in torch this also changes alias; torch.fx records out + x
            return alias + out

    net = Net().double().eval()
    x = _input(2, 3)
    rp.from_torch(net)  # the trace cannot see the mutation ...
    with pytest.raises(ValueError, match="differs from torch's on example_input"):
        rp.from_torch(net, example_input=x)  # ... the self-check can


def test_example_input_check_passes_and_rejects_non_modules():
    net = _eval64(tm.FunctionalResNet())
    model = rp.from_torch(net, example_input=_input(1, 3, 8, 8))
    assert isinstance(model, rp.Graph)
    with pytest.raises(TypeError, match="needs a torch.nn.Module"):
        rp.from_torch(lambda x: x)


def test_more_activations_as_modules_and_functions():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Linear(4, 6), nn.ELU(0.5), nn.Linear(6, 6), nn.SiLU(), nn.Linear(6, 6),
        nn.Hardtanh(-0.5, 1.5), nn.Linear(6, 6), nn.ReLU6(), nn.Linear(6, 6), nn.GELU(),
        nn.Linear(6, 6), nn.GELU("tanh"), nn.Linear(6, 2),
    ).double().eval()
    model = rp.from_torch(net)
    assert _layer_types(model)[1::2] == ["ELU", "SiLU", "Hardtanh", "Hardtanh", "GELU", "GELU"]
    assert (model["9"].approximate, model["11"].approximate) == ("none", "tanh")
    assert (model["7"].min_val, model["7"].max_val) == (0.0, 6.0)
    _assert_forward_equal(net, model, 3.0 * _input(5, 4))

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            x = F.elu(self.fc(x), alpha=0.3)
            x = F.hardtanh(F.silu(x), -0.2, 0.8)
            return F.gelu(F.relu6(x), approximate="tanh")

    functional = Functional().double().eval()
    traced = rp.from_torch(functional)
    assert _layer_types(traced) == ["Dense", "ELU", "SiLU", "Hardtanh", "Hardtanh", "GELU"]
    _assert_forward_equal(functional, traced, 3.0 * _input(5, 4))


def test_trailing_softmax_is_refused_with_the_fix():
    net = nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=1)).eval()
    with pytest.raises(TypeError, match=r"explains the logits.*net\[:-1\]"):
        rp.from_torch(net)



def test_arithmetic_with_constants_becomes_affine_layers():
    """Input normalisation and hand-written scalings in a forward (issue: "(x - 0.5) / 0.2 is
    refused")."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).reshape(3, 1, 1))
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.gain = nn.Parameter(torch.tensor(1.5))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = (x - self.mean) / 0.2
            x = torch.relu(self.conv(2.0 * x + 1.0))
            x = self.gain * x - 0.5
            x = 1.0 - torch.mul(x, 0.5)
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    net = Net().double().eval()
    x = _input(3, 3, 6, 6)
    model = rp.from_torch(net, example_input=x)  # checks the outputs agree with torch's
    kinds = _layer_types(model)
    assert kinds.count("Affine") == 8 and "Conv2d" in kinds  # one per operation
    _assert_forward_equal(net, model, x)
    # the composites pass relevance through them; the saved file keeps them
    composite = rp.composites.EpsilonPlusFlat()
    R = rp.lrp(model, x, composite=composite)
    assert R.shape == x.shape and bool(torch.isfinite(R).all())
    before = rp.lrp(model, x, return_layers=True, composite=composite)[1]
    assert torch.equal(before["sub"], before["truediv"])  # Pass: unchanged through x / 0.2


def test_constant_arithmetic_that_would_broadcast_is_refused():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("c", torch.ones(2, 3))
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) + self.c

    with pytest.raises(ValueError, match="does not broadcast to the input's shape"):
        rp.from_torch(Net().eval(), example_input=torch.randn(1, 3))


def test_module_tensor_used_other_than_in_arithmetic_is_named():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.w = nn.Parameter(torch.ones(3, 3))

        def forward(self, x):
            return F.relu(self.w) + self.fc(x)

    with pytest.raises(TypeError, match=r"uses the module's tensor 'w' other than in arithmetic"):
        rp.from_torch(Net().eval())


def test_embedding_module_explains_at_the_vectors():
    """nn.Embedding becomes rp.Embedding on the module's own weight; the gradient at the
    vectors is torch autograd's there, and LRP's relevance has the vectors' shape."""
    net, ids = tm.token_net_and_ids(torch.float64)
    model = rp.from_torch(net)
    assert _layer_types(model)[:2] == ["Embedding", "GELU"]
    assert model["embed"].weight.data_ptr() == net.embed.weight.data_ptr()
    torch.testing.assert_close(rp.gradient(net, ids, target=2), tm.embedding_gradient(net, ids, 2),
                               rtol=1e-12, atol=1e-12)
    relevance = rp.lrp(net, ids, target=2, composite=rp.composites.EpsilonPlus())
    assert relevance.shape == (3, tm.TokenNet.tokens, 4) and relevance.dtype == torch.float64
    with pytest.raises(ValueError, match=r"'embed' .*max_norm=1.0"):
        rp.from_torch(nn.Sequential(tm.OrderedDict(embed=nn.Embedding(5, 2, max_norm=1.0))).eval())
