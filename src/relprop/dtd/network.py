r"""Networks for Deep Taylor Decomposition experiments, and utilities on any dense network.

:func:`MLP` builds the ReLU networks DTD experiments use (seeded, negative biases by
default); the other functions work on any chain of layers (an :class:`~relprop.Sequential`,
or a torch module, converted as ``rp.lrp`` converts it): slicing to one explained output,
ReLU activation patterns (which identify the local linear region of an input) and
rejection sampling of inputs whose explained output exceeds a threshold. Partial forward
passes and input gradients are the core's: ``model[start:stop](x)`` and
:func:`relprop.gradient` (``rp.gradient(model[start:], x, output)``); :func:`forward`,
:func:`output_fn` and :func:`input_gradient` are thin wrappers over them, in the
notation of the DTD research code. Everything is batched and written against the array
API, so it runs on NumPy, PyTorch, JAX, CuPy and array-api-strict alike.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from relprop._placement import from_host, placement
from relprop._xp import Array, asarray
from relprop.dtd._common import as_chain, renamed_keyword
from relprop.layers import Activation, Dense, LeakyReLU, ReLU
from relprop.lrp import gradient
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
    >>> model = MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2, seed=1,
    ...             backend="numpy")
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


def dense_indices(model: object) -> list[int]:
    """Indices of the :class:`~relprop.Dense` layers in ``model.layers``.

    Examples
    --------
    >>> from relprop.dtd import MLP
    >>> dense_indices(MLP(n_layers=3, input_size=4, hidden_size=4, output_size=1,
    ...                   backend="numpy"))
    [0, 2, 4]
    """
    chain = as_chain(model)
    return [index for index, layer in enumerate(chain.layers) if isinstance(layer, Dense)]


def _part(chain: Sequential, start: int, stop: int | None = None) -> Sequential | None:
    """``chain[start:stop]`` (the core's slicing), or ``None`` for no layers."""
    if not range(len(chain))[start:stop]:
        return None
    return chain[start:stop]


def forward(model: object, x: Array, start: int = 0, stop: int | None = None) -> Array:
    """``model[start:stop](x)``: the layers ``start`` to ``stop`` applied to ``x`` (``x``
    enters layer ``start``; no layers: ``x`` itself). A thin wrapper over the core's model
    slicing.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=2, input_size=3, hidden_size=4, output_size=1, backend="numpy")
    >>> hidden = forward(model, np.ones((5, 3)), stop=2)     # after linear0 and relu0
    >>> bool(np.allclose(forward(model, hidden, start=2), model(np.ones((5, 3)))))
    True
    >>> bool(np.allclose(hidden, model[:2](np.ones((5, 3)))))   # the same
    True
    """
    chain = as_chain(model, x if start == 0 else None)
    part = _part(chain, start, stop)
    if part is None:
        chain.namespace(x=x)
        return x
    return part(x)


def slice_output(model: object, output: int | slice) -> Sequential:
    """The model restricted to some outputs: its last dense layer keeps only those rows.

    Parameters
    ----------
    model
        A chain of layers whose last dense layer is followed only by element-wise
        activations (if anything).
    output
        One output index (the sliced model has one output) or a slice of outputs.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=2, input_size=3, hidden_size=4, output_size=2, backend="numpy")
    >>> x = np.ones((1, 3))
    >>> bool(np.allclose(slice_output(model, 1)(x), model(x)[:, 1:2]))
    True
    """
    chain = as_chain(model)
    indices = dense_indices(chain)
    if not indices:
        raise ValueError("slice_output needs a model with a Dense layer.")
    last = indices[-1]
    for index in range(last + 1, len(chain)):
        if not isinstance(chain.layers[index], Activation):
            raise ValueError(
                f"slice_output needs the last Dense layer to be followed only by element-wise "
                f"activations; layer {index} is {chain.layers[index]!r}."
            )
    layer = chain.layers[last]
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
    layers = list(chain.items())
    layers[last] = (chain.names[last], sliced)
    return Sequential(layers)


def _check_output(output: int, out: Array) -> int:
    if len(out.shape) != 2:
        raise ValueError(
            f"the model output has shape {tuple(out.shape)}; expected (batch, outputs)."
        )
    index = int(output)
    if not 0 <= index < out.shape[1]:
        raise IndexError(f"output={output} is out of range for {out.shape[1]} outputs.")
    return index


def output_fn(model: object, output: int, start: int = 0) -> Callable[[Array], Array]:
    """The function ``x -> f_output(x)``, ``(batch, ...) -> (batch,)``, running
    ``model[start:]`` on ``x``. It treats samples independently, so it can be
    differentiated with :func:`relprop.grad` on every backend.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=2, input_size=3, hidden_size=4, output_size=2, backend="numpy")
    >>> output_fn(model, 1)(np.ones((5, 3))).shape
    (5,)
    """
    chain = as_chain(model)
    part = _part(chain, start)

    def fn(x: Array) -> Array:
        out = x if part is None else part(x)
        return out[:, _check_output(output, out)]

    return fn


def input_gradient(model: object, x: Array, output: int, start: int = 0) -> Array:
    r"""Exact gradient :math:`\partial f_\mathrm{output} / \partial x` of each sample, with
    ``x`` entering layer ``start``: ``rp.gradient(model[start:], x, output)``, the chain of
    the layers' exact ``vjp`` (a thin wrapper over the core).

    Examples
    --------
    >>> import numpy as np
    >>> import relprop as rp
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=2, input_size=3, hidden_size=4, output_size=2, backend="numpy")
    >>> x = np.abs(np.random.default_rng(0).normal(size=(5, 3)))
    >>> bool(np.allclose(input_gradient(model, x, 1), rp.gradient(model, x, 1)))
    True
    """
    chain = as_chain(model, x if start == 0 else None)
    part = _part(chain, start)
    if part is None:
        raise ValueError(f"input_gradient needs layers from start={start} on; the model has "
                         f"{len(chain)}.")
    return gradient(part, x, output)


def pattern_fn(chain: Sequential, start: int = 0) -> Callable[[Array, ModuleType], Array]:
    """``pattern(x, xp)``: :func:`activation_pattern` of ``chain`` from layer ``start`` on,
    with the slicing done once (for the region tests that call it at every step)."""
    layers = chain.layers[start:]
    relus = [i for i, layer in enumerate(layers) if isinstance(layer, (ReLU, LeakyReLU))]
    part = chain[start:start + relus[-1] + 1] if relus else None

    def pattern(x: Array, xp: ModuleType) -> Array:
        if part is None:
            return xp.zeros((x.shape[0], 0), dtype=xp.bool, **placement(x, xp))
        values = part.forward_record(x, xp)  # the input of every layer
        return xp.concat([xp.reshape(values[i] > 0, (x.shape[0], -1)) for i in relus], axis=1)

    return pattern


def activation_pattern(model: object, x: Array, start: int = 0) -> Array:
    """Which ReLU units are on: ``(batch, units)`` booleans, every (leaky) ReLU from layer
    ``start`` on, concatenated in layer order (each unit on where its input is > 0).

    Two inputs with the same pattern lie in the same local linear region of a ReLU network,
    where the network is affine with one gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=3, input_size=3, hidden_size=4, output_size=1, backend="numpy")
    >>> activation_pattern(model, np.ones((5, 3))).shape
    (5, 8)
    """
    chain = as_chain(model, x if start == 0 else None)
    xp = chain.namespace(x=x)
    return pattern_fn(chain, start)(x, xp)


def sample_inputs(
    model: object,
    n: int,
    threshold: float,
    output: int,
    *,
    nonnegative: bool = True,
    seed: int = 0,
    batch_size: int = 1024,
    max_batches: int = 1000,
    **deprecated: Any,
) -> Array:
    r"""``n`` random inputs whose ``output`` exceeds ``threshold`` (rejection sampling).

    Candidates are drawn in batches of ``batch_size`` from :math:`\mathcal N(0, 1)` per
    entry (with ``nonnegative=True`` their absolute values) by
    ``numpy.random.default_rng(seed)``, moved to the parameters' device (one transfer
    per batch), and kept there, in the order drawn, where
    :math:`f_\mathrm{output}(x) > \mathrm{threshold}`. (``non_negative=`` is a deprecated
    spelling of ``nonnegative=``.)

    Returns
    -------
    array
        ``(n, input_size)``, the library, dtype and device of the model's parameters.

    Raises
    ------
    RuntimeError
        If fewer than ``n`` inputs qualify within ``max_batches`` batches.

    Examples
    --------
    >>> from relprop.dtd import MLP
    >>> model = MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2, seed=1,
    ...             backend="numpy")
    >>> x = sample_inputs(model, 4, 0.1, output=0)
    >>> x.shape, bool((model(x)[:, 0] > 0.1).all()), bool((x >= 0).all())
    ((4, 10), True, True)
    """
    nonnegative = renamed_keyword(deprecated, "non_negative", "nonnegative", nonnegative,
                                  "sample_inputs")
    chain = as_chain(model)
    indices = dense_indices(chain)
    if not indices:
        raise ValueError("sample_inputs needs a model that starts with a Dense layer.")
    first = chain.layers[indices[0]]
    assert isinstance(first, Dense)
    if n < 1 or batch_size < 1 or max_batches < 1:
        raise ValueError("sample_inputs needs n, batch_size and max_batches >= 1.")
    xp = chain.namespace()
    fn = output_fn(chain, output)
    rng = np.random.default_rng(seed)
    kept: list[Array] = []
    found = 0
    for _ in range(max_batches):
        candidates = rng.standard_normal((batch_size, first.in_features))
        if nonnegative:
            candidates = np.abs(candidates)
        x = from_host(candidates, first.weight, xp)
        accept = fn(x) > threshold
        count = int(xp.count_nonzero(accept))
        if count:
            kept.append(x[accept])
        found += count
        if found >= n:
            return xp.concat(kept, axis=0)[:n, ...]
    raise RuntimeError(
        f"sample_inputs found only {found} of {n} inputs with output {output} > {threshold} "
        f"in {max_batches} batches of {batch_size}; lower the threshold or raise max_batches."
    )
