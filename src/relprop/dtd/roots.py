r"""Closed-form root points of the neurons of a dense layer (Deep Taylor Decomposition).

For neuron :math:`j` of a dense layer with input :math:`x`, weights :math:`w_j` and
pre-activation :math:`z_j = w_j \cdot x + b_j`, the root point searched along a direction
:math:`v` is

.. math:: r^{(j)} = x - t_j v^{(j)}, \qquad t_j = \frac{z_j}{v^{(j)} \cdot w_j}

(:math:`t_j = R_j / (v^{(j)} \cdot w_j)` when a relevance :math:`R_j` is given). Then
:math:`z_j(r^{(j)}) = z_j - t_j\, v^{(j)} \cdot w_j = 0` exactly: the bias is part of
:math:`z_j`, so the root absorbs it. The rules choose the direction:

- ``"w2"``: :math:`v = w_j`;
- ``"x"``: :math:`v = x`;
- ``"z+"``: :math:`v = x \odot 1[w_j \ge 0]`;
- ``"gamma"``: :math:`v = x \odot (1 + \gamma\, 1[w_j \ge 0])`;
- ``"zB"``: :math:`v = x - l \odot 1[w_j > 0] - h \odot 1[w_j < 0]` (input bounds
  :math:`l \le x \le h`);
- ``"0"``: the root is the origin, :math:`r = 0` (reported as :math:`t = 1`, :math:`v = x`).

Every rule but ``"0"`` guarantees :math:`z_j(r^{(j)}) = 0` for every non-degenerate
neuron when no relevance is given (with a relevance, :math:`z_j(r) = z_j - R_j`); ``"0"``
only where :math:`b_j = 0`, as :math:`z_j(0) = b_j`. A direction with
:math:`|v \cdot w_j| \le \epsilon` (e.g. a neuron without non-negative weights under z+,
or an input that is zero where the weights are positive) is *degenerate*: the formula
would divide by zero, so the neuron moves no relevance (:math:`t_j = 0`, the root is
:math:`x` itself) and is flagged in :attr:`RootPoints.degenerate`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from types import ModuleType

from relprop._bounds import input_bounds
from relprop._checks import check_input
from relprop._placement import placement
from relprop._xp import Array, array_namespace
from relprop.layers import Dense

__all__ = ["RULES", "RootPoints", "root_point"]

RULES: tuple[str, ...] = ("0", "x", "z+", "w2", "gamma", "zB")
"""The root-point rules :func:`root_point` knows."""


@dataclass
class RootPoints:
    """Root points of one neuron or of every neuron of a dense layer, for a batch.

    Attributes
    ----------
    root
        :math:`r = x - t v`: ``(batch, out, in)`` for all neurons, ``(batch, in)`` for one.
    t
        Step sizes :math:`t`: ``(batch, out)`` or ``(batch,)``.
    direction
        Search directions :math:`v`, the shape of ``root``.
    degenerate
        Booleans, the shape of ``t``: :math:`|v \\cdot w_j| \\le \\epsilon`, so ``t = 0``
        and ``root = x``.
    rule
        The rule's name.
    """

    root: Array
    t: Array
    direction: Array
    degenerate: Array
    rule: str


def root_point(
    x: Array,
    layer: Dense,
    j: int | None = None,
    *,
    rule: str = "z+",
    relevance: Array | None = None,
    gamma: float = 1.0,
    low: float | Array | None = None,
    high: float | Array | None = None,
    eps: float = 1e-12,
) -> RootPoints:
    r"""Closed-form DTD root points of neuron ``j`` (or of every neuron) of a dense layer.

    :math:`r^{(j)} = x - t_j v^{(j)}` with :math:`t_j = z_j / (v^{(j)} \cdot w_j)` and the
    rule's direction :math:`v^{(j)}` (module docstring); every neuron and every sample at
    once, without loops.

    Parameters
    ----------
    x
        Layer input, ``(batch, in_features)``.
    layer
        The dense layer.
    j
        One neuron (output index), or ``None`` for every neuron.
    rule
        ``"0"``, ``"x"``, ``"z+"``, ``"w2"``, ``"gamma"`` or ``"zB"``.
    relevance
        Optional relevance to remove instead of :math:`z_j`: ``(batch, out_features)``
        (for one neuron also ``(batch,)``). Ignored by rule ``"0"``.
    gamma
        The gamma rule's weight of the positive part, >= 0. The default ``1.0`` is DTD's
        (positive weights count twice); the LRP rule :class:`relprop.rules.Gamma`
        defaults to ``gamma=0.25`` (zennit's). Pass the same value to both to compare
        them: on non-negative inputs train-free DTD with ``rule="gamma", gamma=g`` is
        ``rp.rules.Gamma(g, zero_params="bias")``.
    low, high
        The z^B rule's input bounds: floats or arrays broadcastable to ``x``, checked
        as the LRP rule :class:`relprop.rules.ZBox` checks its bounds (one function:
        ``low <= high`` everywhere, the library of ``x``).
    eps
        Directions with :math:`|v \cdot w_j| \le` ``eps`` are degenerate.

    Returns
    -------
    RootPoints
        ``root`` ``(batch, out, in)`` (``j=None``) or ``(batch, in)``; ``t`` and the
        ``degenerate`` mask ``(batch, out)`` or ``(batch,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from relprop import Dense
    >>> layer = Dense(np.array([[1.0, -1.0], [2.0, 1.0]]), np.array([-0.5, 0.0]))
    >>> x = np.array([[2.0, 1.0]])
    >>> r = root_point(x, layer, rule="z+")            # z = [0.5, 5.0]
    >>> r.root.tolist()
    [[[1.5, 1.0], [0.0, 0.0]]]
    >>> layer(r.root[:, 0, :])[0, 0].item()            # z_0 vanishes at its root
    0.0
    >>> root_point(x, layer, j=1, rule="w2").root.tolist()
    [[0.0, 0.0]]
    """
    if not isinstance(layer, Dense):
        raise TypeError(f"root_point needs an rp.Dense layer; got {layer!r}.")
    if rule not in RULES:
        raise ValueError(f"unknown root-point rule {rule!r}; use one of {', '.join(RULES)}.")
    xp = array_namespace(x=x, weight=layer.weight, bias=layer.bias, relevance=relevance)
    params = {"weight": layer.weight} if layer.bias is None else {
        "weight": layer.weight, "bias": layer.bias}
    check_input(x, xp, params)  # rp.lrp's input check
    if len(x.shape) != 2 or x.shape[1] != layer.in_features:
        raise ValueError(
            f"x must have shape (batch, {layer.in_features}) for {layer!r}; got {tuple(x.shape)}."
        )
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma < 0:
        raise ValueError(f"gamma must be a float >= 0; got {gamma!r}.")
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps}.")
    weight, bias = layer.weight, layer.bias
    n_out = layer.out_features
    if j is not None:
        j = operator.index(j)
        if not 0 <= j < n_out:
            raise IndexError(f"neuron j={j} is out of range for {n_out} outputs.")
        weight = weight[j : j + 1, :]
        bias = None if bias is None else bias[j : j + 1]
    batch, n_in = x.shape
    shape = (batch, weight.shape[0], n_in)
    z = layer.linear(x, weight, bias, xp)  # (batch, out)
    if relevance is not None:
        relevance = _relevance(relevance, j, (batch, n_out), x.dtype, xp)

    x_e = xp.expand_dims(x, axis=1)  # (batch, 1, in)
    w_e = xp.expand_dims(weight, axis=0)  # (1, out, in)
    zero = xp.zeros(shape, dtype=x.dtype, **placement(x, xp))
    if rule == "w2":
        v = w_e + zero
    elif rule in ("x", "0"):
        v = x_e + zero
    elif rule == "z+":
        v = x_e * xp.astype(w_e >= 0, x.dtype)
    elif rule == "gamma":
        v = x_e * (1.0 + float(gamma) * xp.astype(w_e >= 0, x.dtype))
    else:  # zB
        lo, hi = input_bounds(low, high, x, xp, who='rule "zB"')
        v = (
            x_e
            - xp.expand_dims(lo, axis=1) * xp.astype(w_e > 0, x.dtype)
            - xp.expand_dims(hi, axis=1) * xp.astype(w_e < 0, x.dtype)
        )

    if rule == "0":
        t = xp.ones_like(z)
        degenerate = xp.zeros(z.shape, dtype=xp.bool, **placement(x, xp))
        root = zero
    else:
        denominator = xp.sum(v * w_e, axis=-1)  # v . w_j, (batch, out)
        degenerate = xp.abs(denominator) <= eps
        safe = xp.where(degenerate, xp.ones_like(denominator), denominator)
        numerator = z if relevance is None else relevance
        t = xp.where(degenerate, xp.zeros_like(numerator), numerator / safe)
        root = x_e - xp.expand_dims(t, axis=-1) * v
    if j is not None:
        return RootPoints(root[:, 0, :], t[:, 0], v[:, 0, :], degenerate[:, 0], rule)
    return RootPoints(root, t, v, degenerate, rule)


def _relevance(
    relevance: Array, j: int | None, shape: tuple[int, int], dtype: object, xp: ModuleType
) -> Array:
    if relevance.dtype != dtype:
        raise TypeError(f"relevance has dtype {relevance.dtype}; x has {dtype}.")
    got = tuple(relevance.shape)
    if j is not None and got == (shape[0],):
        return xp.reshape(relevance, (shape[0], 1))
    if got != shape:
        one = f" or ({shape[0]},)" if j is not None else ""
        raise ValueError(f"relevance must have shape {shape}{one}; got {got}.")
    return relevance if j is None else relevance[:, j : j + 1]
