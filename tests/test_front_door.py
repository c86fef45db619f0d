"""What a zennit or Captum user reaches for first.

- ``rp.lrp`` / ``rp.gradient`` / ``rp.gradient_x_input`` take a ``torch.nn.Module``
  directly: the result equals the one on ``rp.from_torch(module)`` (a nested
  ``nn.Sequential`` and an fx-traced ResNet, with ``MergeBatchNorm``); the conversion is
  cached (counted: once while nothing changes) and redone after in-place edits,
  ``load_state_dict``, a new ``Parameter``, a new submodule, ``.to(dtype)`` and train /
  eval switches; the cache does not keep a module alive.
- ``return_layers=True`` is a dict by the user's own layer names, in node order, for
  Sequential and Graph, with the batch norms ``MergeBatchNorm`` folded. Oracle: with Flat
  for every linear layer (a rule that ignores the weights) and Pass for batch norms, the
  canonized and the plain model give the same relevance at every name; with
  EpsilonPlusFlat the two agree from the last fused layer's output on.
  ``composite.rules(model)`` names the rules of the canonized model.
- A ``requires_grad`` torch input gets detached relevance; ``detach=False`` keeps the
  graph, and its gradient matches finite differences.
- Short errors: mixed libraries (first name per library and a count), unsupported torch
  modules, foreign models (naming ``rp.from_torch``): under 400 characters.
- ``relprop._progress.progress_bar``: ``True`` / ``False`` / ``None``, tqdm missing.
- JAX with x64 off (a fresh process): integer targets of every form raise no
  ``UserWarning`` (JAX warns when asked for int64 it cannot make).

The torch tests run in every session where torch is importable (float64 torch models,
whatever ``RELPROP_BACKEND`` is); the JAX test wherever jax is installed.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import textwrap
import weakref
from collections import OrderedDict

import numpy as np
import pytest

import relprop as rp
import relprop.interop.torch
from relprop import _progress
from relprop.canonizers import MergeBatchNorm, canonize
from relprop.composites import Composite, EpsilonPlusFlat
from relprop.rules import Epsilon, Flat, Pass

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_JAX = importlib.util.find_spec("jax") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch modules need torch")

ENTRIES = {
    "lrp": lambda m, x, **kw: rp.lrp(m, x, 1, composite=_merging(), **kw),
    "gradient": lambda m, x, **kw: rp.gradient(m, x, 1, **kw),
    "gradient_x_input": lambda m, x, **kw: rp.gradient_x_input(m, x, 1, **kw),
}


def _merging(into_next: bool = False) -> Composite:
    return EpsilonPlusFlat(canonizers=[MergeBatchNorm(into_next=into_next)])


def _flat(canonize_: bool, into_next: bool = False) -> Composite:
    """Flat for linear layers, Pass for batch norms and activations: the relevance does not
    depend on the weights, so folding batch norms changes nothing."""
    return Composite(
        layer_map=[(rp.layers.Linear, Flat()), (rp.layers.BatchNorm, Pass())],
        canonizers=[MergeBatchNorm(into_next=into_next)] if canonize_ else [],
    )


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch modules need torch")


@pytest.fixture
def tm(torch):
    import torch_models

    return torch_models


def _input(torch, *shape: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _modules(torch, tm) -> dict:
    return {
        "sequential": tm.randomize_batchnorm(tm.vgg_sequential()).double().eval(),
        "traced-resnet": tm.randomize_batchnorm(tm.resnet18()).double().eval(),
    }


def _same(a, b) -> None:
    np.testing.assert_array_equal(rp.to_numpy(a), rp.to_numpy(b))


def _close(a, b, rtol: float = 1e-12) -> None:
    b = rp.to_numpy(b)
    np.testing.assert_allclose(rp.to_numpy(a), b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.fixture
def count_conversions(monkeypatch):
    """The number of ``from_torch`` conversions the cache runs (a list of one int)."""
    calls = [0]
    convert = relprop.interop.torch.from_torch

    def counting(module, example_input=None):
        calls[0] += 1
        return convert(module, example_input)

    monkeypatch.setattr(relprop.interop.torch, "from_torch", counting)
    relprop.interop._cache.clear()
    yield calls
    relprop.interop._cache.clear()


# ---------------------------------------------------------------------------------------
# torch modules straight into rp.lrp
# ---------------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("kind", ["sequential", "traced-resnet"])
def test_torch_module_equals_its_conversion(torch, tm, kind, entry):
    module = _modules(torch, tm)[kind]
    x = _input(torch, 2, 3, 8, 8)
    explain = ENTRIES[entry]
    direct = explain(module, x)
    assert isinstance(direct, torch.Tensor) and direct.dtype == torch.float64
    _same(direct, explain(rp.from_torch(module), x))
    assert float(direct.abs().max()) > 0


@needs_torch
def test_conversion_is_cached_while_nothing_changes(torch, tm, count_conversions):
    module = _modules(torch, tm)["traced-resnet"]
    x = _input(torch, 2, 3, 8, 8)
    for explain in ENTRIES.values():
        explain(module, x)
        explain(module, x)
    _merging().rules(module)
    assert count_conversions[0] == 1
    other = _modules(torch, tm)["sequential"]
    ENTRIES["lrp"](other, x)
    ENTRIES["lrp"](module, x)
    assert count_conversions[0] == 2  # one per module


def _check_follows(module, x, count, before):
    """After a change: converted again (once), equal to a fresh conversion, not to before."""
    n = count[0]
    after = ENTRIES["lrp"](module, x)
    assert count[0] == n + 1, "the change was not noticed"
    _same(ENTRIES["lrp"](module, x), after)
    assert count[0] == n + 1, "converted again without a change"
    _same(after, ENTRIES["lrp"](rp.from_torch(module), x))
    assert not np.allclose(rp.to_numpy(after), rp.to_numpy(before))
    return after


@needs_torch
def test_cached_conversion_follows_changes_of_the_module(torch, tm, count_conversions):
    module = _modules(torch, tm)["sequential"]
    x = _input(torch, 2, 3, 8, 8)
    count = count_conversions
    before = ENTRIES["lrp"](module, x)
    conv = module.features[0]
    with torch.no_grad():  # in place: Tensor._version counts it
        conv.weight.mul_(-2.0)
    before = _check_follows(module, x, count, before)
    state = {k: v.clone() for k, v in _modules(torch, tm)["sequential"].state_dict().items()}
    state["features.1.running_mean"] += 0.5
    module.load_state_dict(state)
    before = _check_follows(module, x, count, before)
    conv.bias = torch.nn.Parameter(conv.bias.detach() + 1.0)  # a new Parameter object
    before = _check_follows(module, x, count, before)
    module.classifier[3] = torch.nn.Linear(12, 5).double().eval()  # a new submodule
    before = _check_follows(module, x, count, before)
    module.features[1].eps = 0.5  # a plain setting of a submodule
    before = _check_follows(module, x, count, before)
    module.train()
    with pytest.raises(ValueError, match=r"training mode; call module\.eval\(\)"):
        ENTRIES["lrp"](module, x)
    module.eval()
    again = ENTRIES["lrp"](module, x)
    _same(again, before)
    module.float()  # torch swaps each parameter's data: new dtype and address
    single = ENTRIES["lrp"](module, x.float())
    assert single.dtype == torch.float32
    _close(single, before, rtol=1e-3)


@needs_torch
def test_the_cache_does_not_keep_a_module_alive(torch, tm):
    module = _modules(torch, tm)["sequential"]
    rp.lrp(module, _input(torch, 1, 3, 8, 8), composite=_merging())
    ref = weakref.ref(module)
    del module
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------------------------------
# return_layers by the user's names, canonizers included
# ---------------------------------------------------------------------------------------


def _named_sequential(torch):
    nn = torch.nn
    net = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(3, 4, 3, padding=1)), ("bn", nn.BatchNorm2d(4)),
        ("relu", nn.ReLU()), ("pool", nn.MaxPool2d(2)), ("flat", nn.Flatten()),
        ("bn_in", nn.BatchNorm1d(64)), ("fc", nn.Linear(64, 6)), ("bn_fc", nn.BatchNorm1d(6)),
        ("act", nn.ReLU()), ("head", nn.Linear(6, 3)),
    ]))
    import torch_models

    return torch_models.randomize_batchnorm(net).double().eval()


@needs_torch
def test_return_layers_of_a_sequential_by_its_names_with_folded_batch_norms(torch):
    net = _named_sequential(torch)
    names = ["conv", "bn", "relu", "pool", "flat", "bn_in", "fc", "bn_fc", "act", "head"]
    x = _input(torch, 2, 3, 8, 8)
    fused = canonize(rp.from_torch(net), [MergeBatchNorm()])  # zennit's: bn_in stays
    assert dict(fused.aliases) == {"bn": ("output", "conv"), "bn_fc": ("output", "fc")}
    assert "bn" not in fused.names and "bn_in" in fused.names
    fused = canonize(rp.from_torch(net), [MergeBatchNorm(into_next=True)])
    assert dict(fused.aliases) == {"bn": ("output", "conv"), "bn_fc": ("output", "fc"),
                                   "bn_in": ("input", "fc")}
    assert "bn" not in fused.names and "bn_in" not in fused.names
    R, layers = rp.lrp(net, x, 0, composite=_flat(True, True), return_layers=True)
    _, plain = rp.lrp(net, x, 0, composite=_flat(False), return_layers=True)
    assert list(layers) == list(plain) == ["input", *names]
    assert layers["input"] is R
    for name in plain:  # Flat ignores the weights: folding changes nothing, anywhere
        _close(layers[name], plain[name])
    R, layers = rp.lrp(net, x, 0, composite=_merging(True), return_layers=True)
    _, plain = rp.lrp(net, x, 0, composite=EpsilonPlusFlat(), return_layers=True)
    assert list(layers) == ["input", *names]
    assert layers["bn_fc"] is layers["fc"]  # the batch norm's output is the fused output
    for name in ("fc", "bn_fc", "act", "head"):  # from the last fused layer on: the same
        _close(layers[name], plain[name])
    assert not np.allclose(rp.to_numpy(layers["flat"]), rp.to_numpy(plain["flat"]))
    # bn_in went into fc: its relevance is what the fused fc sends back, = flat's
    _same(layers["bn_in"], layers["flat"])
    assert tuple(layers["bn_in"].shape) == (2, 64)


def test_return_layers_of_a_graph_with_a_batch_norm_folded_forwards():
    """A batch norm before a dense layer, its input also read by a skip connection, fused
    into it (``into_next``): its relevance is the dense layer's share only; the shared
    node gets the sum."""
    rng = np.random.default_rng(0)

    def arr(*shape, positive=False):
        a = rng.normal(size=shape)
        return rp.asarray(np.abs(a) + 0.5 if positive else a, dtype="float64")

    graph = rp.Graph([
        ("fc0", rp.Dense(arr(4, 4), arr(4)), "input"),
        ("relu0", rp.ReLU(), "fc0"),
        ("bn", rp.BatchNorm1d(arr(4), arr(4, positive=True), arr(4), arr(4)), "relu0"),
        ("fc1", rp.Dense(arr(4, 4), arr(4)), "bn"),
        ("add", rp.Add(), ["fc1", "relu0"]),
        ("head", rp.Dense(arr(2, 4)), "add"),
    ])
    assert not canonize(graph, [MergeBatchNorm()]).aliases  # zennit's: nothing to fuse
    fused = canonize(graph, [MergeBatchNorm(into_next=True)])
    assert dict(fused.aliases) == {"bn": ("input", "fc1")}
    x = arr(3, 4)
    R, layers = rp.lrp(graph, x, 1, composite=_flat(True, True), return_layers=True)
    _, plain = rp.lrp(graph, x, 1, composite=_flat(False), return_layers=True)
    assert list(layers) == list(plain) == ["input", *graph.names]
    for name in plain:
        _close(layers[name], plain[name])
    assert not np.allclose(rp.to_numpy(layers["bn"]), rp.to_numpy(layers["relu0"]))


@needs_torch
def test_return_layers_of_a_traced_resnet_by_its_names(torch, tm):
    net = _modules(torch, tm)["traced-resnet"]
    model = rp.from_torch(net)
    x = _input(torch, 2, 3, 8, 8)
    R, layers = rp.lrp(net, x, 2, composite=_flat(True), return_layers=True)
    _, plain = rp.lrp(model, x, 2, composite=_flat(False), return_layers=True)
    assert list(layers) == list(plain) == ["input", *model.names]
    assert {"bn1", "layer1.0.bn2", "layer4.0.downsample.1"} <= set(layers)
    for name in plain:
        _close(layers[name], plain[name], rtol=1e-10)
    _, layers = rp.lrp(net, x, 2, composite=_merging(), return_layers=True)
    assert layers["layer2.0.downsample.1"] is layers["layer2.0.downsample.0"]


def test_composite_rules_of_a_model_are_those_after_canonizing():
    bn = rp.BatchNorm1d(np.zeros(2), np.ones(2))
    model = rp.Sequential([("fc", rp.Dense(np.eye(2))), ("bn", bn), ("relu", rp.ReLU()),
                           ("out", rp.Dense(np.ones((1, 2))))])
    composite = EpsilonPlusFlat(canonizers=[MergeBatchNorm()])
    rules = composite.rules(model)
    assert list(rules) == ["fc", "relu", "out"]
    assert isinstance(rules["fc"], Flat) and isinstance(rules["out"], Epsilon)
    plain = EpsilonPlusFlat().rules(model)
    assert list(plain) == ["fc", "bn", "relu", "out"] and isinstance(plain["bn"], Pass)
    old_form = composite.rules(model.names, model.layers)  # names and layers: as they are
    assert [type(r) for r in old_form] == [type(r) for r in plain.values()]
    with pytest.raises(TypeError, match=r"composite\.rules\(model\)"):
        composite.rules(model, model.layers)


# ---------------------------------------------------------------------------------------
# detach
# ---------------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_relevance_of_a_requires_grad_input_is_detached(torch, tm, entry):
    net = _modules(torch, tm)["sequential"]
    x = _input(torch, 2, 3, 8, 8).requires_grad_(True)
    result = ENTRIES[entry](net, x)
    assert not result.requires_grad and result.grad_fn is None
    assert x.grad is None and all(p.grad is None for p in net.parameters())
    kept = ENTRIES[entry](net, x, detach=False)
    # a ReLU network's gradient depends on x only through masks: no graph to keep there
    assert kept.requires_grad == (entry != "gradient")
    _same(kept.detach(), result)
    model = rp.from_torch(net)  # an rp model alike
    assert not ENTRIES[entry](model, x).requires_grad


@needs_torch
def test_detach_false_gives_the_gradient_of_the_relevance(torch):
    """A smooth network (tanh), Epsilon: d(sum R)/dx by autograd == finite differences;
    for gradient x input of a linear map, d(sum x * W_c)/dx = W_c exactly."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 3)).double().eval()
    x = _input(torch, 2, 4).requires_grad_(True)

    def relevance_sum(a):
        return rp.lrp(net, a, 1, rule=Epsilon(0.1), detach=False).sum()

    (grad,) = torch.autograd.grad(relevance_sum(x), x)
    step = 1e-6
    numeric = torch.zeros_like(x)
    with torch.no_grad():
        for index in np.ndindex(*x.shape):
            offset = torch.zeros_like(x)
            offset[index] = step
            numeric[index] = (relevance_sum(x + offset) - relevance_sum(x - offset)) / (2 * step)
    np.testing.assert_allclose(grad.numpy(), numeric.numpy(), rtol=1e-6, atol=1e-8)
    linear = net[0]
    (grad,) = torch.autograd.grad(rp.gradient_x_input(linear, x, 2, detach=False).sum(), x)
    _same(grad, linear.weight[2].detach().expand(2, 4))
    # double backpropagation: torch's own second derivative of the tanh network
    (first,) = torch.autograd.grad(net(x)[:, 1].sum(), x, create_graph=True)
    (expected,) = torch.autograd.grad(first.sum(), x)
    (second,) = torch.autograd.grad(rp.gradient(net, x, 1, detach=False).sum(), x)
    _close(second, expected)


# ---------------------------------------------------------------------------------------
# short errors
# ---------------------------------------------------------------------------------------


@needs_torch
def test_mixed_library_error_names_the_first_of_each_and_counts_the_rest(torch, tm):
    net = _modules(torch, tm)["sequential"]
    n_params = len(canonize(rp.from_torch(net), [MergeBatchNorm()]).named_params())
    with pytest.raises(TypeError) as info:
        rp.lrp(net, np.zeros((1, 3, 8, 8)), composite=_merging())
    message = str(info.value)
    assert len(message) < 400, message
    assert "x from numpy" in message and "features.0.weight from torch" in message
    assert f"(and {n_params - 1} more of torch)" in message
    assert "torch.asarray" in message and "model.to('numpy')" in message
    assert "classifier" not in message


@needs_torch
def test_unsupported_torch_module_error_is_short(torch):
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Mish()).eval()
    with pytest.raises(TypeError) as info:
        rp.lrp(net, torch.zeros(1, 3), rule=Epsilon())
    message = str(info.value)
    assert len(message) < 400, message
    assert "'1'" in message and "Mish" in message and "not supported" in message
    assert "rp.interop.torch.SUPPORTED_MODULES" in message and "Supported layers" in message
    assert "MaxPool" not in message


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_foreign_model_error_names_from_torch(entry):
    class KerasLike:
        pass

    with pytest.raises(TypeError) as info:
        ENTRIES[entry](KerasLike(), np.zeros((1, 3)))
    message = str(info.value)
    assert len(message) < 400
    assert "rp.from_torch" in message and "KerasLike" in message
    assert "not supported yet" in message and "Supported layers" in message


def test_foreign_model_check_does_not_import_torch():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import relprop as rp
        try:
            rp.lrp(object(), np.zeros((1, 2)), rule=rp.rules.Epsilon())
        except TypeError as error:
            assert "rp.from_torch" in str(error)
        else:
            raise SystemExit("no TypeError for a foreign model")
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "RELPROP_BACKEND": "numpy"}, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ---------------------------------------------------------------------------------------
# progress bars
# ---------------------------------------------------------------------------------------


def test_progress_false_and_none_off_a_terminal_are_silent(monkeypatch, capsys):
    monkeypatch.setattr(_progress, "_on_terminal", lambda: False)
    for progress in (False, None):
        with _progress.progress_bar(progress, total=3, desc="rows") as bar:
            assert isinstance(bar, _progress.SilentProgress)
            bar.update(1)
            bar.set_postfix(loss=1.0)
            bar.set_description("more")
        bar.close()
    assert capsys.readouterr().err == ""


def test_progress_true_and_none_on_a_terminal_show_tqdm(monkeypatch):
    tqdm = pytest.importorskip("tqdm", reason="the progress bar needs tqdm")
    monkeypatch.setattr(_progress, "_on_terminal", lambda: True)
    for progress in (True, None):
        with _progress.progress_bar(progress, total=2, desc="rows") as bar:
            assert isinstance(bar, tqdm.tqdm)
            bar.update(2)
            assert bar.n == 2 and bar.total == 2 and bar.desc.startswith("rows")


def test_progress_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import tqdm.auto fails
    monkeypatch.setattr(_progress, "_on_terminal", lambda: True)
    with pytest.raises(ImportError, match=r"pip install 'relprop\[progress\]'"):
        _progress.progress_bar(True, total=2, desc="rows")
    assert isinstance(_progress.progress_bar(None, total=2), _progress.SilentProgress)
    assert isinstance(_progress.progress_bar(False, total=2), _progress.SilentProgress)
    with pytest.raises(TypeError, match="progress must be True"):
        _progress.progress_bar("yes", total=2)  # type: ignore[arg-type]


def test_dtd_takes_progress_not_show_progress(monkeypatch):
    model = rp.dtd.MLP(3, 4, 6, 1, seed=0, backend="numpy")
    x = np.abs(np.random.default_rng(0).normal(size=(2, 4)))
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"relprop\[progress\]"):
        rp.dtd.local_linear.sample_interpolation(model, x, n_rays=2, progress=True)
    quiet = rp.dtd.local_linear.sample_interpolation(model, x, n_rays=2)
    assert quiet.points.shape == (2, 2, 4)
    with pytest.raises(TypeError, match="show_progress"):
        rp.dtd.local_linear.sample_interpolation(model, x, show_progress=True)  # type: ignore


# ---------------------------------------------------------------------------------------
# JAX without x64
# ---------------------------------------------------------------------------------------

_JAX_SCRIPT = """
import jax
import jax.numpy as jnp
import numpy as np
import relprop as rp

assert not jax.config.jax_enable_x64
rng = np.random.default_rng(0)


def f32(*shape, positive=False):
    a = rng.normal(size=shape).astype(np.float32)
    return jnp.asarray(np.abs(a) + 0.5 if positive else a)


mlp = rp.Sequential([rp.Dense(f32(5, 4), f32(5)), rp.ReLU(), rp.Dense(f32(3, 5))])
cnn = rp.Sequential([
    rp.Conv2d(f32(4, 1, 3, 3), f32(4), padding=1),
    rp.BatchNorm2d(f32(4), f32(4, positive=True)), rp.ReLU(), rp.MaxPool2d(2),
    rp.AvgPool2d(2), rp.Flatten(), rp.Dense(f32(3, 16)),
])
composites = [
    rp.composites.EpsilonPlusFlat(canonizers=[rp.canonizers.MergeBatchNorm()]),
    rp.composites.EpsilonGammaBox(-3.0, 3.0),
]
targets = [None, 1, np.int64(2), [0, 2], (1, 1), np.array([0, 2]), np.array([2, 1], np.int32),
           np.array(1), jnp.asarray([0, 2]), jnp.asarray(1)]
for model, x in ((mlp, f32(2, 4)), (cnn, f32(2, 1, 8, 8))):
    for target in targets:
        for composite in composites:
            R = rp.lrp(model, x, target, composite=composite)
            R, layers = rp.lrp(model, x, target, composite=composite, return_layers=True)
            assert R.dtype == jnp.float32, R.dtype
        assert rp.gradient(model, x, target).dtype == jnp.float32
        assert rp.gradient_x_input(model, x, target).dtype == jnp.float32
    jitted = jax.jit(lambda a, t: rp.lrp(model, a, t, composite=composites[0]))
    jitted(x, jnp.asarray([0, 2]))
print("ok")
"""


@pytest.mark.skipif(not HAS_JAX, reason="the JAX check needs jax")
def test_jax_without_x64_raises_no_int64_warning():
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env.update(JAX_PLATFORMS="cpu", RELPROP_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", _JAX_SCRIPT],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
