"""Behaviour pinned after review: cache invalidation, first-layer maps with name overrides,
target forms, ZBox array bounds, dtypes of arrays made from Python data."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import device
from helpers import BACKEND, assert_close, dense_model, on_backend, random_weights

import relprop as rp
from relprop.rules import Epsilon, Flat, ZBox, ZPlus


@pytest.fixture
def net():
    rng = np.random.default_rng(7)
    params = random_weights(rng, [6, 8, 7, 4])
    return params, dense_model(params), on_backend(rng.normal(size=(3, 6)))


def test_first_map_is_used_up_by_a_name_override(net):
    """zennit evaluates every sub-composite, so an overridden first layer still counts as
    the first layer: Flat must not move on to fc2."""
    _, model, _ = net
    composite = rp.composites.EpsilonPlusFlat(name_map={0: ZPlus()})
    rules = composite.rules(model.names, model.layers)
    assert isinstance(rules[0], ZPlus)
    assert isinstance(rules[2], Epsilon) and not isinstance(rules[2], Flat)


def test_numpy_integer_scalar_target_is_an_int(net):
    _, model, x = net
    expected = rp.lrp(model, x, target=2, rule=Epsilon())
    got = rp.lrp(model, x, target=np.int64(2), rule=Epsilon())
    assert_close(got, rp.to_numpy(expected), rtol=0)


def test_zero_dim_integer_array_target_applies_to_every_sample(net, xp):
    _, model, x = net
    expected = rp.lrp(model, x, target=1, rule=Epsilon())
    target = xp.asarray(1, dtype=xp.int64, device=device(x))
    assert_close(rp.lrp(model, x, target=target, rule=Epsilon()), rp.to_numpy(expected), rtol=0)


def test_bools_in_a_target_list_are_refused(net):
    _, model, x = net
    with pytest.raises(TypeError, match="bools"):
        rp.lrp(model, x, target=[True, False, True], rule=Epsilon())


def test_zbox_array_bounds_must_be_ordered(net):
    _, model, x = net
    low = on_backend(np.array([-1.0, 2.0, -1.0, -1.0, -1.0, -1.0]))
    high = on_backend(np.ones(6))
    composite = rp.composites.Composite(first_map={rp.Dense: ZBox(low, high)})
    with pytest.raises(ValueError, match="low <= high"):
        rp.lrp(model, x, target=0, composite=composite)


def test_python_floats_become_float64_on_every_backend():
    a = rp.asarray([[1.0, 2.5]], backend=BACKEND)
    assert_close(a, np.array([[1.0, 2.5]]), dtype="float64", rtol=0)


def test_rule_layer_mismatch_is_reported_before_the_forward_pass(net):
    """A bad composite fails even with an input the forward pass would reject."""
    _, model, _ = net
    wrong_width = on_backend(np.ones((2, 5)))
    composite = rp.composites.Composite(name_map={1: ZPlus()})
    with pytest.raises(TypeError, match="layer 1"):
        rp.lrp(model, wrong_width, target=0, composite=composite)


@pytest.mark.skipif(BACKEND != "torch", reason="in-place writes are tracked by torch tensors")
def test_cached_weights_follow_in_place_updates_of_torch_parameters():
    import torch

    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3).double()
    model = rp.Sequential([rp.Dense(linear.weight, linear.bias)])
    x = torch.randn(2, 4, dtype=torch.float64)
    before = rp.lrp(model, x, target=0, rule=ZPlus())
    with torch.no_grad():
        linear.weight.mul_(-1.0)  # an optimizer step writes in place like this
    after = rp.lrp(model, x, target=0, rule=ZPlus())
    fresh = rp.Sequential([rp.Dense(linear.weight.detach().clone(), linear.bias.detach().clone())])
    assert_close(after, rp.to_numpy(rp.lrp(fresh, x, target=0, rule=ZPlus())), rtol=1e-12)
    assert not np.allclose(rp.to_numpy(before), rp.to_numpy(after))


@pytest.mark.skipif(BACKEND not in ("numpy", "cupy"), reason="writable arrays without versions")
def test_numpy_weights_written_in_place_are_not_served_stale():
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(3, 4))
    model = rp.Sequential([rp.Dense(weight)])
    x = rng.normal(size=(2, 4))
    rp.lrp(model, x, target=0, rule=ZPlus())
    weight *= -1.0
    fresh = rp.Sequential([rp.Dense(weight.copy())])
    assert_close(
        rp.lrp(model, x, target=0, rule=ZPlus()),
        rp.to_numpy(rp.lrp(fresh, x, target=0, rule=ZPlus())),
        rtol=0,
    )


def test_import_relprop_loads_no_optional_array_library():
    """``import relprop`` (and the demo's NumPy path) must work with NumPy alone."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, relprop, relprop.demo, relprop.cli, relprop.inputs; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'jax', 'cupy', 'array_api_strict', 'matplotlib', 'PIL', 'tqdm', 'pandas'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "RELPROP_BACKEND": "numpy"},
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_relprop_device_places_arrays_made_from_nothing(monkeypatch) -> None:
    """RELPROP_DEVICE: the device of rp.asarray (and so of the suite's arrays in the
    tests(array_api_strict-device1) session); unset, the library's default."""
    import os

    from relprop._xp import default_device

    session = os.environ.get("RELPROP_DEVICE")
    if session:  # this session runs on that device: the helpers' arrays are there
        assert session in str(on_backend(np.ones(2)).device)
    pytest.importorskip("array_api_strict")
    import array_api_strict as xps

    monkeypatch.setenv("RELPROP_BACKEND", "array_api_strict")
    monkeypatch.setenv("RELPROP_DEVICE", "device1")
    assert default_device() == xps.Device("device1")
    assert rp.asarray([1.0, 2.0]).device == xps.Device("device1")
    assert default_device("numpy") is None  # another library than RELPROP_BACKEND's
    assert isinstance(rp.asarray([1.0], backend="numpy"), np.ndarray)
    monkeypatch.setenv("RELPROP_BACKEND", "numpy")
    with pytest.raises(ValueError, match="RELPROP_DEVICE='device1' is supported with"):
        rp.asarray([1.0])
    monkeypatch.delenv("RELPROP_DEVICE")
    assert default_device() is None
