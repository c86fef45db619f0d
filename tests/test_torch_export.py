"""rp.from_torch of a torch.export program: the suite's models give the module's outputs
and the module's own relevance (the fx / Sequential import) exactly, with a static and a
symbolic batch size."""

from __future__ import annotations

import pytest
from helpers import BACKEND

torch = pytest.importorskip("torch", reason="torch.export needs torch (torch session)")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch_models import IMPORT_MODELS, embedding_gradient, token_net_and_ids  # noqa: E402

import relprop as rp  # noqa: E402
from relprop.canonizers import MergeBatchNorm  # noqa: E402

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="torch.export: torch session")

COMPOSITES = {
    "EpsilonPlusFlat": lambda c: rp.composites.EpsilonPlusFlat(canonizers=c),
    "EpsilonGammaBox": lambda c: rp.composites.EpsilonGammaBox(low=-3.0, high=3.0, canonizers=c),
    "EpsilonAlpha2Beta1": lambda c: rp.composites.EpsilonAlpha2Beta1(canonizers=c),
}


def _net(name: str):
    make, shape = IMPORT_MODELS[name]
    torch.manual_seed(0)
    net = make().eval().double()
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return net, x


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "symbolic-batch"])
@pytest.mark.parametrize("name", list(IMPORT_MODELS))
def test_exported_programs_equal_the_module(name: str, dynamic: bool) -> None:
    net, x = _net(name)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(net, (x,), dynamic_shapes=shapes)
    model = rp.from_torch(program, x)  # with an example: outputs compared
    other = torch.randn(5 if dynamic else 3, *x.shape[1:], dtype=torch.float64)
    torch.testing.assert_close(model(other), net(other), rtol=1e-12, atol=1e-12)
    target = net(x).argmin(1).tolist()
    for composite in COMPOSITES.values():
        for canonizers in ([], [MergeBatchNorm()]):
            ours = rp.lrp(model, x, target=target, composite=composite(canonizers))
            theirs = rp.lrp(net, x, target=target, composite=composite(canonizers))
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_exported_layers_share_the_program_tensors_and_are_named_after_modules() -> None:
    net, x = _net("vgg")
    program = torch.export.export(net, (x,))
    model = rp.from_torch(program)
    assert "features.0" in model.names and "classifier.3" in model.names
    weight = program.state_dict["features.0.weight"]
    assert model["features.0"].weight.data_ptr() == weight.data_ptr()


def test_constant_pad_nd_reads_its_value_argument() -> None:
    class Padded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3)

        def forward(self, x):
            return self.conv(torch.ops.aten.constant_pad_nd(x, [1, 2, 0, 1], 0.0)).flatten(1)

    net = Padded().double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    model = rp.from_torch(torch.export.export(net, (x,)), x)
    assert [type(layer).__name__ for layer in model][:2] == ["ZeroPad2d", "Conv2d"]


class Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


def test_unsupported_aten_ops_are_named() -> None:
    class Cumsum(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1)

    program = torch.export.export(Cumsum(), (torch.ones(2, 3),))
    with pytest.raises(TypeError, match=r"exported program node 'cumsum' \(aten.cumsum.default\)"
                       r" is not supported"):
        rp.from_torch(program)
    assert "conv2d" in rp.interop.torch_export.supported_aten_ops()

    program = torch.export.export(nn.Sequential(Exp(), nn.Linear(3, 2)), (torch.ones(2, 3),))
    with pytest.raises(TypeError, match=r"node 'linear'.* made of 'exp' .*none of relprop's"):
        rp.from_torch(program)


def test_activations_written_out_and_gelu() -> None:
    """``x * torch.sigmoid(x)`` (two ATen ops) is read as one SiLU; aten.gelu as GELU."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.fc1(x)
            h = self.fc2(h * torch.sigmoid(h))
            return self.fc3(F.gelu(h, approximate="tanh"))

    net = Net().double().eval()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = rp.from_torch(torch.export.export(net, (x,)))
    assert [repr(layer) for layer in model][1::2] == ["SiLU()", "GELU('tanh')"]
    twin = nn.Sequential(net.fc1, nn.SiLU(), net.fc2, nn.GELU("tanh"), net.fc3).eval()
    for composite in (rp.composites.EpsilonPlusFlat(), rp.composites.EpsilonAlpha2Beta1()):
        torch.testing.assert_close(rp.lrp(model, x, composite=composite),
                                   rp.lrp(twin, x, composite=composite), rtol=1e-12, atol=1e-12)


def test_a_training_mode_program_is_refused() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double().train()
    program = torch.export.export(net, (torch.ones(5, 3, dtype=torch.float64),))
    with pytest.raises(TypeError, match="batch statistics"):
        rp.from_torch(program)


def test_embedding_program_explains_at_the_vectors() -> None:
    net, ids = token_net_and_ids(torch.float64)
    model = rp.from_torch(torch.export.export(net, (ids,)))
    assert [type(layer).__name__ for layer in model][:2] == ["Embedding", "GELU"]
    torch.testing.assert_close(rp.gradient(model, ids, target=1), embedding_gradient(net, ids, 1),
                               rtol=1e-12, atol=1e-12)
    for composite in (rp.composites.EpsilonPlus(), rp.composites.EpsilonAlpha2Beta1()):
        torch.testing.assert_close(rp.lrp(model, ids, composite=composite),
                                   rp.lrp(net, ids, composite=composite), rtol=1e-12, atol=1e-12)
