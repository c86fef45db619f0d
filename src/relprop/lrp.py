"""The relevance backward pass, and the gradient baselines that share its front end."""

from __future__ import annotations

from types import ModuleType
from typing import Literal, overload

from relprop._checks import check_input, target_relevance
from relprop._xp import Array
from relprop.composites import Composite, uniform
from relprop.layers import describe
from relprop.model import Sequential
from relprop.rules import Rule

__all__ = ["gradient", "gradient_x_input", "lrp"]


def _check_model(model: object) -> None:
    if not isinstance(model, Sequential):
        raise TypeError(
            f"model must be an rp.Sequential; got {type(model).__name__}. Build one from "
            "relprop layers (torch modules: see rp.Dense(module.weight, module.bias))."
        )


def _prepare(model: Sequential, x: Array) -> tuple[ModuleType, list[Array]]:
    _check_model(model)
    xp = model.namespace(x=x)
    check_input(x, xp, model.named_params())
    return xp, model.forward_record(x, xp)


def _rules(model: Sequential, composite: Composite | None, rule: Rule | None) -> list[Rule]:
    if composite is not None and rule is not None:
        raise TypeError("pass either composite= or rule=, not both.")
    if rule is not None:
        if not isinstance(rule, Rule):
            raise TypeError(f"rule must be a relprop rule (rp.rules.Epsilon(), ...); got {rule!r}.")
        composite = uniform(rule)
    if composite is None:
        raise TypeError(
            "say how to explain: composite=rp.composites.EpsilonPlusFlat() (for example) or "
            "rule=rp.rules.Epsilon()."
        )
    if not isinstance(composite, Composite):
        raise TypeError(f"composite must be a relprop Composite; got {composite!r}.")
    rules = composite.rules(model.names, model.layers)
    for index, (layer, chosen) in enumerate(zip(model.layers, rules, strict=True)):
        problem = chosen.check(layer)
        if problem is not None:
            raise TypeError(f"{describe(layer, index, model.names[index])}: {problem}.")
    return rules


@overload
def lrp(
    model: Sequential,
    x: Array,
    target: object = ...,
    *,
    composite: Composite | None = ...,
    rule: Rule | None = ...,
    return_layers: Literal[False] = ...,
) -> Array: ...
@overload
def lrp(
    model: Sequential,
    x: Array,
    target: object = ...,
    *,
    composite: Composite | None = ...,
    rule: Rule | None = ...,
    return_layers: Literal[True],
) -> tuple[Array, list[Array]]: ...
def lrp(
    model: Sequential,
    x: Array,
    target: object = None,
    *,
    composite: Composite | None = None,
    rule: Rule | None = None,
    return_layers: bool = False,
) -> Array | tuple[Array, list[Array]]:
    r"""Layer-wise Relevance Propagation of one output per sample back to the input.

    The output relevance is the explained logit itself, :math:`R^{(L)}_c = f_c(x)` (zero
    for the other outputs), so conserving rules give input relevance summing to
    :math:`f_c(x)`. Each layer then maps relevance at its output to its input with its
    rule, :math:`R^{(l)} = \mathrm{rule}_l(x^{(l)}, R^{(l+1)})`.

    Parameters
    ----------
    model
        The network.
    x
        Input batch, ``(batch, ...)``, of the model parameters' library and dtype.
    target
        ``None``: each sample's arg-max output; an int; one int per sample (a sequence
        or an integer array); or a floating array of the output's shape used as the
        initial relevance (a one-hot array gives zennit's convention).
    composite
        Which rule for which layer (:mod:`relprop.composites`).
    rule
        Instead of a composite: one rule for every linear layer (activations pass).
    return_layers
        Also return the relevance at every layer's input and at the output.

    Returns
    -------
    array or (array, list of arrays)
        Input relevance, the shape, dtype, library and device of ``x``; with
        ``return_layers`` also ``[R_0, ..., R_L]`` with ``R_0`` the input relevance and
        ``R_L`` the output relevance.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, -1.0], [2.0, 1.0]])), rp.ReLU(),
    ...                        rp.Dense(np.array([[1.0, 1.0]]))])
    >>> R = rp.lrp(model, np.array([[1.0, 2.0]]), target=0, rule=rp.rules.Epsilon(0.0))
    >>> R.tolist(), float(model(np.array([[1.0, 2.0]]))[0, 0])
    ([[2.0, 2.0]], 4.0)
    """
    _check_model(model)
    rules = _rules(model, composite, rule)
    xp, activations = _prepare(model, x)
    relevance = target_relevance(activations[-1], target, xp)
    nonnegative = model.input_nonnegative()
    per_layer = [relevance]
    for index in range(len(model) - 1, -1, -1):
        relevance = rules[index].relevance(
            model.layers[index],
            activations[index],
            activations[index + 1],
            relevance,
            xp,
            nonnegative=nonnegative[index],
        )
        per_layer.append(relevance)
    if return_layers:
        return relevance, per_layer[::-1]
    return relevance


def gradient(model: Sequential, x: Array, target: object = None) -> Array:
    r"""Input gradient of the target output, :math:`\partial f_c / \partial x`.

    ``target`` is read as in :func:`lrp`, except that an index target selects the output
    with weight 1 (and an array target is the cotangent). Each layer applies its exact
    ``vjp``; user functions (:class:`~relprop.Lambda`) use the autodiff adapter.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[3.0, -1.0]]))])
    >>> rp.gradient(model, np.array([[1.0, 1.0]]), target=0).tolist()
    [[3.0, -1.0]]
    """
    xp, activations = _prepare(model, x)
    cotangent = target_relevance(activations[-1], target, xp, scale=False)
    for index in range(len(model) - 1, -1, -1):
        cotangent = model.layers[index].vjp(activations[index], cotangent, xp)
    return cotangent


def gradient_x_input(model: Sequential, x: Array, target: object = None) -> Array:
    r"""Gradient times input, :math:`x \odot \partial f_c / \partial x`.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[3.0, -1.0]]))])
    >>> rp.gradient_x_input(model, np.array([[2.0, 1.0]]), target=0).tolist()
    [[6.0, -1.0]]
    """
    return x * gradient(model, x, target)
