r"""Networks for Deep Taylor Decomposition experiments, and utilities on any dense network.

:func:`MLP` builds the ReLU networks DTD experiments use (seeded, negative biases by
default); the other functions work on any :class:`~relprop.Sequential`: partial forward
passes, slicing to one explained output, exact input gradients, ReLU activation patterns
(which identify the local linear region of an input) and rejection sampling of inputs
whose explained output exceeds a threshold. Everything is batched and written against the
array API, so it runs on NumPy, PyTorch, JAX, CuPy and array-api-strict alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import device as device_of

from relprop._xp import Array, asarray, backend_name, to_numpy
from relprop.layers import Activation, Dense, LeakyReLU, ReLU
from relprop.model import Sequential

__all__ = [
    "MLP",
    "activation_pattern",
    "dense_indices",
    "forward",
    "input_gradient",
    "output_fn",
    "sample_inputs",
    "slice_output",
]


def MLP(  # noqa: N802 - the name users know from the DTD research code
    n_layers: int,
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    seed: int = 0,
    negative_bias: bool = True,
    dtype: str = "float64",
    backend: str | None = None,
    device: object = None,
) -> Sequential:
    r"""A seeded ReLU multi-layer perceptron: ``n_layers`` dense layers, ReLU between them.

    Layers are named ``"linear0", "relu0", "linear1", ..., "linear{n_layers-1}"`` (no ReLU
    after the last). With ``fan_in`` the input width of a layer,

    .. math:: W \sim \mathcal N(0, 2/\mathrm{fan\_in}), \qquad
              b = -|\beta|,\ \beta \sim \mathcal N(0, 1/(4\,\mathrm{fan\_in}))

    (``negative_bias=False``: :math:`b = \beta`). The weight scale (He initialisation)
    keeps the activations' scale through the ReLUs, so outputs of deeper nets are not
    vanishingly small. Negative biases are the initialisation DTD experiments use: a ReLU
    unit with :math:`b_j \le 0` has its z+ root inside the non-negative orthant.

    Parameters
    ----------
    n_layers
        Number of dense layers, >= 1.
    input_size, hidden_size, output_size
        Layer widths.
    seed
        Seed of the ``numpy.random.default_rng`` generator that draws all parameters (the
        global random state is never used or changed).
    negative_bias
        Draw the biases negative.
    dtype, backend, device
        Dtype name, library and device of the parameters (``backend=None``:
        ``RELPROP_BACKEND``; ``device=None``: the library's default device).

    Returns
    -------
    Sequential

    Examples
    --------
    >>> from relprop.dtd import MLP
    >>> model = MLP(3, 10, 10, 2, seed=1, backend="numpy")
    >>> model.names
    ('linear0', 'relu0', 'linear1', 'relu1', 'linear2')
    >>> bool((model["linear1"].bias <= 0).all())
    True
    """
    if n_layers < 1:
        raise ValueError(f"MLP needs n_layers >= 1; got {n_layers}.")
    for name, size in (("input_size", input_size), ("hidden_size", hidden_size),
                       ("output_size", output_size)):
        if size < 1:
            raise ValueError(f"MLP needs {name} >= 1; got {size}.")
    rng = np.random.default_rng(seed)
    widths = [input_size] + [hidden_size] * (n_layers - 1) + [output_size]
    layers: list[tuple[str, Any]] = []
    for index in range(n_layers):
        fan_in, fan_out = widths[index], widths[index + 1]
        weight = rng.normal(scale=np.sqrt(2.0 / fan_in), size=(fan_out, fan_in))
        bias = rng.normal(scale=0.5 / np.sqrt(fan_in), size=fan_out)
        if negative_bias:
            bias = -np.abs(bias)
        layers.append((
            f"linear{index}",
            Dense(asarray(weight, dtype=dtype, backend=backend, device=device),
                  asarray(bias, dtype=dtype, backend=backend, device=device)),
        ))
        if index < n_layers - 1:
            layers.append((f"relu{index}", ReLU()))
    return Sequential(layers)


def dense_indices(model: Sequential) -> list[int]:
    """Indices of the :class:`~relprop.Dense` layers in ``model.layers``.

    Examples
    --------
    >>> from relprop.dtd import MLP
    >>> dense_indices(MLP(3, 4, 4, 1, backend="numpy"))
    [0, 2, 4]
    """
    return [index for index, layer in enumerate(model.layers) if isinstance(layer, Dense)]


def _check_model(model: object) -> Sequential:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an rp.Sequential; got {type(model).__name__}.")
    return model


def forward(model: Sequential, x: Array, start: int = 0, stop: int | None = None) -> Array:
    """Apply ``model.layers[start:stop]`` to ``x`` (``x`` enters layer ``start``).

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(2, 3, 4, 1, backend="numpy")
    >>> hidden = forward(model, np.ones((5, 3)), stop=2)     # after linear0 and relu0
    >>> bool(np.allclose(forward(model, hidden, start=2), model(np.ones((5, 3)))))
    True
    """
    _check_model(model)
    xp = model.namespace(x=x)
    for layer in model.layers[start:stop]:
        x = layer.forward(x, xp)
    return x


def slice_output(model: Sequential, output: int | slice) -> Sequential:
    """The model restricted to some outputs: its last dense layer keeps only those rows.

    Parameters
    ----------
    model
        A sequential model whose last dense layer is followed only by element-wise
        activations (if anything).
    output
        One output index (the sliced model has one output) or a slice of outputs.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(2, 3, 4, 2, backend="numpy")
    >>> x = np.ones((1, 3))
    >>> bool(np.allclose(slice_output(model, 1)(x), model(x)[:, 1:2]))
    True
    """
    _check_model(model)
    indices = dense_indices(model)
    if not indices:
        raise ValueError("slice_output needs a model with a Dense layer.")
    last = indices[-1]
    for index in range(last + 1, len(model)):
        if not isinstance(model.layers[index], Activation):
            raise ValueError(
                f"slice_output needs the last Dense layer to be followed only by element-wise "
                f"activations; layer {index} is {model.layers[index]!r}."
            )
    layer = model.layers[last]
    assert isinstance(layer, Dense)
    n_out = layer.out_features
    if isinstance(output, slice):
        rows = slice(*output.indices(n_out))
        if len(range(n_out)[rows]) == 0:
            raise ValueError(f"output slice {output} selects none of the {n_out} outputs.")
        if rows.step != 1:
            raise ValueError(f"output slice {output} must have step 1.")
    else:
        index = int(output)
        if not 0 <= index < n_out:
            raise IndexError(f"output={output} is out of range for {n_out} outputs.")
        rows = slice(index, index + 1)
    sliced = Dense(layer.weight[rows, :], None if layer.bias is None else layer.bias[rows])
    layers = list(model.items())
    layers[last] = (model.names[last], sliced)
    return Sequential(layers)


def _check_output(model: Sequential, output: int, out: Array) -> int:
    if len(out.shape) != 2:
        raise ValueError(
            f"the model output has shape {tuple(out.shape)}; expected (batch, outputs)."
        )
    index = int(output)
    if not 0 <= index < out.shape[1]:
        raise IndexError(f"output={output} is out of range for {out.shape[1]} outputs.")
    return index


def output_fn(model: Sequential, output: int, start: int = 0) -> Callable[[Array], Array]:
    """The function ``x -> f_output(x)``, ``(batch, ...) -> (batch,)``, running
    ``model.layers[start:]`` on ``x``. It treats samples independently, so it can be
    differentiated with :func:`relprop.grad` on every backend.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(2, 3, 4, 2, backend="numpy")
    >>> output_fn(model, 1)(np.ones((5, 3))).shape
    (5,)
    """
    _check_model(model)

    def fn(x: Array) -> Array:
        out = forward(model, x, start)
        return out[:, _check_output(model, output, out)]

    return fn


def input_gradient(model: Sequential, x: Array, output: int, start: int = 0) -> Array:
    r"""Exact gradient :math:`\partial f_\mathrm{output} / \partial x` of each sample, with
    ``x`` entering layer ``start``: the chain of the layers' exact ``vjp``.

    Examples
    --------
    >>> import numpy as np
    >>> import relprop as rp
    >>> from relprop.dtd import MLP
    >>> model = MLP(2, 3, 4, 2, backend="numpy")
    >>> x = np.abs(np.random.default_rng(0).normal(size=(5, 3)))
    >>> bool(np.allclose(input_gradient(model, x, 1), rp.gradient(model, x, 1)))
    True
    """
    _check_model(model)
    xp = model.namespace(x=x)
    layers = model.layers[start:]
    activations = [x]
    for layer in layers:
        activations.append(layer.forward(activations[-1], xp))
    out = activations[-1]
    index = _check_output(model, output, out)
    columns = xp.arange(out.shape[1], device=device_of(out))
    cotangent = xp.broadcast_to(xp.astype(columns == index, out.dtype), out.shape)
    for position in range(len(layers) - 1, -1, -1):
        cotangent = layers[position].vjp(activations[position], cotangent, xp)
    return cotangent


def activation_pattern(model: Sequential, x: Array, start: int = 0) -> Array:
    """Which ReLU units are on: ``(batch, units)`` booleans, every (leaky) ReLU from layer
    ``start`` on, concatenated in layer order (each unit on where its input is > 0).

    Two inputs with the same pattern lie in the same local linear region of a ReLU network,
    where the network is affine with one gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(3, 3, 4, 1, backend="numpy")
    >>> activation_pattern(model, np.ones((5, 3))).shape
    (5, 8)
    """
    _check_model(model)
    xp = model.namespace(x=x)
    patterns = []
    for layer in model.layers[start:]:
        if isinstance(layer, (ReLU, LeakyReLU)):
            patterns.append(xp.reshape(x > 0, (x.shape[0], -1)))
        x = layer.forward(x, xp)
    if not patterns:
        return xp.zeros((x.shape[0], 0), dtype=xp.bool, device=device_of(x))
    return xp.concat(patterns, axis=1)


def sample_inputs(
    model: Sequential,
    n: int,
    threshold: float,
    output: int,
    *,
    non_negative: bool = True,
    seed: int = 0,
    batch_size: int = 1024,
    max_batches: int = 1000,
) -> Array:
    r"""``n`` random inputs whose ``output`` exceeds ``threshold`` (rejection sampling).

    Candidates are drawn in batches of ``batch_size`` from :math:`\mathcal N(0, 1)` per
    entry (with ``non_negative=True`` their absolute values) by
    ``numpy.random.default_rng(seed)`` and kept, in the order drawn, where
    :math:`f_\mathrm{output}(x) > \mathrm{threshold}`.

    Returns
    -------
    array
        ``(n, input_size)``, the library and dtype of the model's parameters.

    Raises
    ------
    RuntimeError
        If fewer than ``n`` inputs qualify within ``max_batches`` batches.

    Examples
    --------
    >>> from relprop.dtd import MLP
    >>> model = MLP(3, 10, 10, 2, seed=1, backend="numpy")
    >>> x = sample_inputs(model, 4, 0.1, output=0)
    >>> x.shape, bool((model(x)[:, 0] > 0.1).all()), bool((x >= 0).all())
    ((4, 10), True, True)
    """
    _check_model(model)
    indices = dense_indices(model)
    if not indices:
        raise ValueError("sample_inputs needs a model that starts with a Dense layer.")
    first = model.layers[indices[0]]
    assert isinstance(first, Dense)
    if n < 1 or batch_size < 1 or max_batches < 1:
        raise ValueError("sample_inputs needs n, batch_size and max_batches >= 1.")
    xp = model.namespace()
    backend = backend_name(xp)
    dtype = first.weight.dtype
    where = device_of(first.weight)
    fn = output_fn(model, output)
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    found = 0
    for _ in range(max_batches):
        candidates = rng.standard_normal((batch_size, first.in_features))
        if non_negative:
            candidates = np.abs(candidates)
        x = asarray(candidates, dtype=dtype, backend=backend, device=where)
        accept = np.asarray(to_numpy(fn(x) > threshold))
        kept.append(candidates[accept])
        found += int(accept.sum())
        if found >= n:
            return asarray(np.concatenate(kept)[:n], dtype=dtype, backend=backend,
                           device=where)
    raise RuntimeError(
        f"sample_inputs found only {found} of {n} inputs with output {output} > {threshold} "
        f"in {max_batches} batches of {batch_size}; lower the threshold or raise max_batches."
    )

