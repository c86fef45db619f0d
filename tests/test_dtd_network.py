"""relprop.dtd.network: the DTD MLP builder and network utilities, on the backend under test.

References are plain NumPy float64 computed here from the parameters (forward passes,
ReLU masks, gradients as products of weight matrices and masks, sample by sample).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, dtype_name, on_backend

import relprop as rp
from relprop.dtd import (
    MLP,
    activation_pattern,
    dense_indices,
    forward,
    input_gradient,
    output_fn,
    sample_inputs,
    slice_output,
)


def params_np(model: rp.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(rp.to_numpy(layer.weight).astype(np.float64),
             rp.to_numpy(layer.bias).astype(np.float64))
            for layer in model.layers if isinstance(layer, rp.Dense)]


def forward_np(params, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Output and the pre-activations of every hidden layer."""
    pre = []
    for index, (weight, bias) in enumerate(params):
        z = x @ weight.T + bias
        if index < len(params) - 1:
            pre.append(z)
            x = np.maximum(z, 0.0)
        else:
            x = z
    return x, pre


def gradient_np(params, x: np.ndarray, output: int) -> np.ndarray:
    """Per sample: e_output^T W_L D_{L-1} W_{L-1} ... D_1 W_1, D the ReLU masks."""
    _, pre = forward_np(params, x)
    grads = []
    for n in range(x.shape[0]):
        jac = params[0][0]
        for layer in range(1, len(params)):
            jac = params[layer][0] @ np.diag((pre[layer - 1][n] > 0).astype(float)) @ jac
        grads.append(jac[output])
    return np.stack(grads)


def inputs(n: int = 8, seed: int = 0, nonneg: bool = True) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 10))
    return np.abs(x) if nonneg else x


# --- MLP -------------------------------------------------------------------------------


def test_mlp_structure_and_initialisation() -> None:
    model = MLP(3, 10, 10, 2, seed=5, backend=BACKEND)
    assert model.names == ("linear0", "relu0", "linear1", "relu1", "linear2")
    assert [type(layer) for layer in model.layers] == [rp.Dense, rp.ReLU, rp.Dense, rp.ReLU,
                                                        rp.Dense]
    assert dense_indices(model) == [0, 2, 4]
    shapes = [(10, 10), (10, 10), (2, 10)]
    for (weight, bias), layer, shape in zip(params_np(model), model.layers[::2], shapes,
                                            strict=True):
        assert rp.library_of(layer.weight) == BACKEND and dtype_name(layer.weight) == "float64"
        assert weight.shape == shape and bias.shape == (shape[0],)
        assert np.all(bias <= 0)  # negative-bias initialisation
        assert 0.25 < weight.std() < 0.65  # N(0, 2/fan_in): std ~ 0.45
    signed = params_np(MLP(3, 10, 10, 2, seed=5, negative_bias=False, backend=BACKEND))
    assert any(np.any(b > 0) for _, b in signed) and any(np.any(b < 0) for _, b in signed)


def test_mlp_seeded_without_global_state() -> None:
    state = np.random.get_state()[1].copy()  # noqa: NPY002 - the global state must not move
    a = params_np(MLP(3, 10, 10, 2, seed=7, backend=BACKEND))
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    b = params_np(MLP(3, 10, 10, 2, seed=7, backend=BACKEND))
    c = params_np(MLP(3, 10, 10, 2, seed=8, backend=BACKEND))
    for (wa, ba), (wb, bb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(ba, bb)
    assert not np.allclose(a[0][0], c[0][0])


def test_mlp_same_parameters_on_every_backend_and_float32() -> None:
    reference = MLP(4, 10, 10, 2, seed=2, backend="numpy")
    model = MLP(4, 10, 10, 2, seed=2, backend=BACKEND)
    for ref, layer in zip(reference.layers[::2], model.layers[::2], strict=True):
        assert_close(layer.weight, ref.weight)
        assert_close(layer.bias, ref.bias)
    model32 = MLP(4, 10, 10, 2, seed=2, dtype="float32", backend=BACKEND)
    assert_close(model32.layers[0].weight, rp.to_numpy(reference.layers[0].weight),
                 dtype="float32", rtol=1e-6)
    assert len(MLP(1, 10, 10, 2, backend=BACKEND)) == 1


def test_mlp_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_layers"):
        MLP(0, 10, 10, 2)
    with pytest.raises(ValueError, match="hidden_size"):
        MLP(2, 10, 0, 2)


# --- forward, slicing, output functions ----------------------------------------------------


def test_forward_partial_and_whole() -> None:
    model = MLP(3, 10, 10, 2, seed=1, backend=BACKEND)
    params = params_np(model)
    x_np = inputs(nonneg=False)
    out_np, pre = forward_np(params, x_np)
    x = on_backend(x_np)
    assert_close(forward(model, x), out_np)
    hidden = forward(model, x, 0, 2)
    assert_close(hidden, np.maximum(pre[0], 0.0))
    assert_close(forward(model, x, stop=3), pre[1])
    assert_close(forward(model, hidden, start=2), out_np)


def test_slice_output_int_and_slice() -> None:
    model = MLP(3, 10, 10, 2, seed=1, backend=BACKEND)
    x_np = inputs()
    out_np, _ = forward_np(params_np(model), x_np)
    x = on_backend(x_np)
    one = slice_output(model, 1)
    assert one.names == model.names
    assert_close(one(x), out_np[:, 1:2])
    assert_close(slice_output(model, slice(0, 1))(x), out_np[:, :1])
    assert_close(slice_output(model, slice(None))(x), out_np)
    assert_close(model(x), out_np)  # the original is untouched
    with pytest.raises(IndexError):
        slice_output(model, 2)
    with pytest.raises(ValueError, match="none"):
        slice_output(model, slice(2, 5))
    with pytest.raises(ValueError, match="activations"):
        slice_output(rp.Sequential([model.layers[0], rp.Flatten()]), 0)


def test_output_fn() -> None:
    model = MLP(3, 10, 10, 2, seed=1, backend=BACKEND)
    params = params_np(model)
    x_np = inputs()
    out_np, pre = forward_np(params, x_np)
    x = on_backend(x_np)
    assert_close(output_fn(model, 1)(x), out_np[:, 1])
    hidden = on_backend(np.maximum(pre[0], 0.0))
    assert_close(output_fn(model, 0, start=2)(hidden), out_np[:, 0])
    with pytest.raises(IndexError):
        output_fn(model, 3)(x)


def test_input_gradient_against_weight_products_and_autodiff() -> None:
    model = MLP(3, 10, 10, 2, seed=3, backend=BACKEND)
    params = params_np(model)
    x_np = inputs(seed=4, nonneg=False)
    x = on_backend(x_np)
    for output in (0, 1):
        expected = gradient_np(params, x_np, output)
        assert_close(input_gradient(model, x, output), expected)
        # the autodiff adapter (autograd, jax.vjp, finite differences) agrees
        assert_close(rp.grad(output_fn(model, output), x), expected, rtol=1e-6, atol=1e-8)
    # from the hidden layer: gradient of f w.r.t. the input of linear1
    _, pre = forward_np(params, x_np)
    hidden = np.maximum(pre[0], 0.0)
    mask = (pre[1] > 0).astype(float)
    expected_hidden = (params[2][0][0][None, :] * mask) @ params[1][0]
    assert_close(input_gradient(model, on_backend(hidden), 0, start=2), expected_hidden)


def test_activation_pattern() -> None:
    model = MLP(3, 10, 10, 2, seed=3, backend=BACKEND)
    params = params_np(model)
    x_np = inputs(seed=5, nonneg=False)
    _, pre = forward_np(params, x_np)
    pattern = activation_pattern(model, on_backend(x_np))
    assert rp.library_of(pattern) == BACKEND and dtype_name(pattern) == "bool"
    np.testing.assert_array_equal(rp.to_numpy(pattern), np.concatenate(pre, axis=1) > 0)
    hidden = on_backend(np.maximum(pre[0], 0.0))
    np.testing.assert_array_equal(rp.to_numpy(activation_pattern(model, hidden, start=2)),
                                  pre[1] > 0)
    empty = activation_pattern(model, on_backend(pre[1]), start=4)  # linear2: no ReLU
    assert tuple(empty.shape) == (8, 0)


# --- sampling ------------------------------------------------------------------------------


def test_sample_inputs_threshold_sign_and_seed() -> None:
    model = MLP(3, 10, 10, 2, seed=1, backend=BACKEND)
    params = params_np(model)
    state = np.random.get_state()[1].copy()  # noqa: NPY002 - the global state must not move
    x = sample_inputs(model, 40, 0.1, output=0, seed=3, batch_size=64)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    assert rp.library_of(x) == BACKEND and dtype_name(x) == "float64"
    assert tuple(x.shape) == (40, 10)
    x_np = rp.to_numpy(x)
    assert np.all(x_np >= 0)
    assert np.all(forward_np(params, x_np)[0][:, 0] > 0.1)
    # the same seed gives the same inputs, on every backend
    again = sample_inputs(MLP(3, 10, 10, 2, seed=1, backend="numpy"), 40, 0.1, output=0,
                          seed=3, batch_size=64)
    assert_close(x, rp.to_numpy(again), rtol=0.0)
    other = rp.to_numpy(sample_inputs(model, 40, 0.1, output=0, seed=4, batch_size=64))
    assert not np.allclose(other, x_np)
    signed = rp.to_numpy(sample_inputs(model, 40, 0.1, output=1, nonnegative=False, seed=3,
                                             batch_size=64))
    assert np.any(signed < 0)
    assert np.all(forward_np(params, signed)[0][:, 1] > 0.1)


def test_sample_inputs_float32_and_failure() -> None:
    model = MLP(3, 10, 10, 2, seed=1, dtype="float32", backend=BACKEND)
    x = sample_inputs(model, 5, 0.0, output=0, batch_size=64)
    assert rp.library_of(x) == BACKEND and dtype_name(x) == "float32"
    with pytest.raises(RuntimeError, match="found only"):
        sample_inputs(model, 5, 1e6, output=0, batch_size=64, max_batches=3)


# --- on the core: slicing, rp.gradient, one spelling -----------------------------------------


def test_forward_and_input_gradient_are_the_cores_slicing_and_gradient() -> None:
    model = MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2, seed=3,
                backend=BACKEND)
    x = on_backend(inputs(seed=6, nonneg=False))
    for start, stop in ((0, 2), (0, None), (2, 4)):
        a = forward(model, x, stop=start) if start else x
        assert_close(forward(model, a, start, stop), rp.to_numpy(model[start:stop](a)))
    assert forward(model, x, 2, 2) is x  # no layers
    hidden = model[:2](x)
    for output in (0, 1):
        assert_close(input_gradient(model, hidden, output, start=2),
                     rp.to_numpy(rp.gradient(model[2:], hidden, output)))
    assert_close(output_fn(model, 1, start=2)(hidden), rp.to_numpy(model(x))[:, 1])


def test_nonnegative_is_spelled_once_and_the_old_spelling_still_works() -> None:
    model = MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2, seed=1,
                backend=BACKEND)
    signed = rp.to_numpy(sample_inputs(model, 5, 0.1, output=1, nonnegative=False, seed=3,
                                       batch_size=64))
    with pytest.warns(DeprecationWarning, match="nonnegative="):
        old = sample_inputs(model, 5, 0.1, output=1, non_negative=False, seed=3,
                            batch_size=64)
    assert_close(old, signed, rtol=0.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'positive'"):
        sample_inputs(model, 5, 0.1, output=1, positive=True)
