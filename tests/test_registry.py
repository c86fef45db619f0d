"""The layer registry is the one list of layers: the public namespace, the file format, the
docs' table and the torch importer's converters all agree with it; users can register
torch converters of their own, used by module conversion and by fx tracing alike."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import relprop as rp
from relprop import layers
from relprop.io import LAYER_TYPES
from relprop.layers.registry import layer_kinds, register

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_layer_class_is_registered_or_a_base() -> None:
    exported = {
        name: obj for name, obj in vars(layers).items()
        if isinstance(obj, type) and issubclass(obj, layers.Layer)
    }
    kinds = layer_kinds()
    assert set(kinds) <= set(exported)
    for name, cls in exported.items():
        if name in kinds:
            assert kinds[name].cls is cls
        else:  # an abstract base: some registered layer derives from it
            assert any(issubclass(k.cls, cls) for k in kinds.values()), name


def test_namespace_and_file_format_come_from_the_registry() -> None:
    kinds = layer_kinds()
    for name, kind in kinds.items():
        assert getattr(rp, name) is kind.cls and name in rp.__all__
        assert name in layers.__all__
    assert dict(LAYER_TYPES) == {n: k.cls for n, k in kinds.items() if k.savable}
    assert "Lambda" in kinds and "Lambda" not in LAYER_TYPES


def test_docs_table_lists_every_layer_kind() -> None:
    text = (DOCS / "guide" / "supported_layers.md").read_text()
    section = text.split("## relprop layers", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `rp.")]
    documented = set(re.findall(r"`rp\.(\w+)", " ".join(first_cells)))
    assert documented == set(layer_kinds())


def test_a_second_class_under_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'Dense' is registered already"):
        register(type("Dense", (layers.Layer,), {}))
    assert layer_kinds()["Dense"].cls is rp.Dense
    assert register(rp.Dense) is rp.Dense  # registering the same class again is harmless


# ---------------------------------------------------------------------------- torch


@pytest.fixture
def torch_interop():
    pytest.importorskip("torch", reason="user converters are a torch importer feature")
    from relprop.interop import torch as interop

    modules, functions = dict(interop._USER_MODULES), dict(interop._USER_FUNCTIONS)
    yield interop
    from relprop.interop._cache import clear

    clear()  # no conversion made with a test's converter outlives the test
    interop._USER_MODULES.clear()
    interop._USER_MODULES.update(modules)
    interop._USER_FUNCTIONS.clear()
    interop._USER_FUNCTIONS.update(functions)


def double_it(x):
    """A plain Python function the traced forward calls (kept as one node)."""
    return 2.0 * x


def test_user_module_converter_in_sequential_and_fx(torch_interop) -> None:
    import torch
    from torch import nn

    class Shift(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))

        def forward(self, x):
            return x + torch.sin(self.b)  # sin of a module tensor: unsupported unless registered

    class Net(nn.Module):  # not a Sequential: traced with torch.fx
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3).double()
            self.shift = Shift()
            self.out = nn.Linear(3, 2).double()

        def forward(self, x):
            return self.out(torch.relu(self.shift(self.fc(x))))

    calls = []

    def convert(module):
        calls.append(module)
        return rp.Dense(torch.eye(3, dtype=torch.float64), torch.sin(module.b.detach()))

    torch.manual_seed(0)
    net = Net().eval()
    seq = nn.Sequential(net.fc, net.shift, nn.ReLU(), net.out).eval()
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="'sin' .*not supported"):
        rp.from_torch(seq)
    torch_interop.register_torch_converter(Shift, convert)
    assert any(name.endswith("Shift") for name in torch_interop.supported_modules())
    for module in (seq, net):
        model = rp.from_torch(module, example_input=x)  # checks the outputs agree
        assert type(model).__name__ == ("Sequential" if module is seq else "Graph")
        composite = rp.composites.EpsilonPlusFlat()
        torch.testing.assert_close(rp.lrp(model, x, composite=composite),
                                   rp.lrp(seq if module is seq else net, x, composite=composite))
    assert len(calls) >= 2 and all(c is net.shift for c in calls)


def test_user_function_converter_in_fx(torch_interop) -> None:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2).double()

        def forward(self, x):
            return self.fc(double_it(x))

    net = Net().eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    seen = []

    def convert(*args, **kwargs):
        seen.append((args, kwargs))
        return rp.Lambda(lambda a: 2.0 * a, elementwise=True)

    torch_interop.register_torch_converter(double_it, convert)
    model = rp.from_torch(net, example_input=x)
    assert seen == [((), {})]
    assert "double_it" in model.names[0]
    np.testing.assert_allclose(model(x).numpy(), net(x).detach().numpy(), rtol=1e-12)


def test_converter_errors(torch_interop) -> None:
    from torch import nn

    class Odd(nn.Module):
        def forward(self, x):
            return x

    torch_interop.register_torch_converter(Odd, lambda m: "not a layer")
    with pytest.raises(TypeError, match="returned str, not a relprop layer"):
        rp.from_torch(nn.Sequential(Odd()).eval())
    with pytest.raises(TypeError, match="source must be a torch.nn.Module subclass"):
        torch_interop.register_torch_converter(int, lambda m: rp.Identity())
    with pytest.raises(TypeError, match="converter must be callable"):
        torch_interop.register_torch_converter(Odd, None)


def test_registering_forgets_cached_conversions(torch_interop) -> None:
    import torch
    from torch import nn

    from relprop.interop._cache import converted_torch_model

    net = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)).double().eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    before = rp.lrp(net, x, rule=rp.rules.Epsilon(0.0))
    assert isinstance(converted_torch_model(net, x).layers[1], rp.Tanh)
    torch_interop.register_torch_converter(
        nn.Tanh, lambda m: rp.Lambda(torch.tanh, name="tanh", elementwise=True)
    )
    assert isinstance(converted_torch_model(net, x).layers[1], rp.Lambda)  # converted anew
    torch.testing.assert_close(rp.lrp(net, x, rule=rp.rules.Epsilon(0.0)), before)


def test_register_in_a_fresh_process() -> None:
    pytest.importorskip("torch", reason="user converters are a torch importer feature")
    import subprocess
    import sys

    code = (
        "import torch, relprop as rp\n"
        "rp.interop.torch.register_torch_converter(torch.nn.GELU, lambda m: rp.Tanh())\n"
        "print(type(rp.from_torch(torch.nn.Sequential(torch.nn.GELU()).eval()).layers[0]).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "Tanh", result.stderr


def test_lrp_on_a_module_traces_with_the_input_shape() -> None:
    torch = pytest.importorskip("torch", reason="torch modules")
    from torch import nn

    class Net(nn.Module):  # x.view(-1, n) needs the shapes: from_torch gets x as example
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3).double()
            self.fc = nn.Linear(2 * 4 * 4, 3).double()

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).view(-1, 32))

    net = Net().eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    composite = rp.composites.EpsilonPlusFlat()
    torch.testing.assert_close(rp.lrp(net, x, composite=composite),
                               rp.lrp(rp.from_torch(net, x), x, composite=composite))


@pytest.mark.parametrize(
    ("heading", "names"),
    [
        ("## JAX functions, flax and equinox", "relprop.interop.jax:supported_primitives"),
        ("## ONNX files", "relprop.interop.onnx:supported_ops"),
        ("## Keras 3", "relprop.interop.keras:supported_keras_layers"),
        ("## torch.export programs", "relprop.interop.torch_export:supported_aten_ops"),
    ],
)
def test_docs_tables_list_what_each_importer_reads(heading: str, names: str) -> None:
    """Every primitive / operator / layer an importer has a handler for is on its docs
    table (the handler tables are the importers' one list; no framework is imported)."""
    import importlib

    module, function = names.split(":")
    supported = getattr(importlib.import_module(module), function)()
    text = (DOCS / "guide" / "supported_layers.md").read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    shown = set(re.findall(r"`([A-Za-z_0-9]+)", table))
    missing = sorted(name for name in supported if name not in shown)
    assert not missing, f"{heading}: not on the docs table: {missing}"
