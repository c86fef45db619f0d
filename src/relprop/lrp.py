"""The relevance backward pass, and the gradient baselines that share its front end."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Literal, overload

from relprop._checks import check_input, target_relevance
from relprop._xp import Array
from relprop.canonizers import canonize
from relprop.composites import Composite, uniform
from relprop.layers import describe
from relprop.layers.merge import Merge
from relprop.model import INPUT, Model, Node, Sequential
from relprop.rules import Rule

__all__ = ["gradient", "gradient_x_input", "lrp"]


def _check_model(model: object) -> None:
    if not isinstance(model, Model):
        raise TypeError(
            f"model must be an rp.Sequential or rp.Graph; got {type(model).__name__}. Build one "
            "from relprop layers (torch modules: see rp.Dense(module.weight, module.bias))."
        )


def _prepare(model: Model, x: Array) -> tuple[ModuleType, dict[str, Array]]:
    _check_model(model)
    xp = model.namespace(x=x)
    check_input(x, xp, model.named_params())
    return xp, model.run(x, xp)


def _accumulate(received: dict[str, Array], name: str, value: Array) -> None:
    """A node read by several consumers receives the sum of what they send back."""
    received[name] = received[name] + value if name in received else value


def _backward(
    nodes: tuple[Node, ...],
    values: dict[str, Array],
    start: Array,
    step: Callable[[int, Node, list[Array], Array], list[Array]],
    xp: ModuleType,
) -> dict[str, Array]:
    """Walk the nodes backwards from ``start`` at the output; return what each node got."""
    received = {nodes[-1].name: start}
    reached: dict[str, Array] = {}
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        if node.name not in received:  # the output does not depend on this node
            continue
        reached[node.name] = received.pop(node.name)
        inputs = [values[name] for name in node.inputs]
        for name, part in zip(
            node.inputs, step(index, node, inputs, reached[node.name]), strict=True
        ):
            _accumulate(received, name, part)
    reached[INPUT] = received.get(INPUT, xp.zeros_like(values[INPUT]))
    return reached


def _rules(model: Model, composite: Composite | None, rule: Rule | None) -> list[Rule]:
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
    model: Model,
    x: Array,
    target: object = ...,
    *,
    composite: Composite | None = ...,
    rule: Rule | None = ...,
    return_layers: Literal[False] = ...,
) -> Array: ...
@overload
def lrp(
    model: Model,
    x: Array,
    target: object = ...,
    *,
    composite: Composite | None = ...,
    rule: Rule | None = ...,
    return_layers: Literal[True],
) -> tuple[Array, list[Array] | dict[str, Array]]: ...
def lrp(
    model: Model,
    x: Array,
    target: object = None,
    *,
    composite: Composite | None = None,
    rule: Rule | None = None,
    return_layers: bool = False,
) -> Array | tuple[Array, list[Array] | dict[str, Array]]:
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
        Also return the relevance at every layer: for a Sequential a list (below), for a
        Graph a dict from node name to the relevance at that node's output, with
        ``"input"`` for the input relevance. Where several consumers read a node, its
        relevance is the sum of what they send back.

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
    if isinstance(composite, Composite) and composite.canonizers:
        model = canonize(model, composite.canonizers)
    rules = _rules(model, composite, rule)
    xp, values = _prepare(model, x)
    nodes = model.nodes()
    nonnegative = model.output_nonnegative()

    def step(index: int, node: Node, inputs: list[Array], relevance: Array) -> list[Array]:
        out = values[node.name]
        if isinstance(node.layer, Merge):
            return rules[index].relevance_many(node.layer, inputs, out, relevance, xp)
        flag = nonnegative[node.inputs[0]]
        return [rules[index].relevance(node.layer, inputs[0], out, relevance, xp, nonnegative=flag)]

    start = target_relevance(values[nodes[-1].name], target, xp)
    reached = _backward(nodes, values, start, step, xp)
    if not return_layers:
        return reached[INPUT]
    if isinstance(model, Sequential):
        zero = {name: xp.zeros_like(values[name]) for name in model.names}
        return reached[INPUT], [reached[INPUT]] + [reached.get(n, zero[n]) for n in model.names]
    return reached[INPUT], reached


def gradient(model: Model, x: Array, target: object = None) -> Array:
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
    xp, values = _prepare(model, x)
    nodes = model.nodes()

    def step(index: int, node: Node, inputs: list[Array], cotangent: Array) -> list[Array]:
        if isinstance(node.layer, Merge):
            return node.layer.vjp_many(inputs, cotangent, xp)
        return [node.layer.vjp(inputs[0], cotangent, xp)]

    start = target_relevance(values[nodes[-1].name], target, xp, scale=False)
    return _backward(nodes, values, start, step, xp)[INPUT]


def gradient_x_input(model: Model, x: Array, target: object = None) -> Array:
    r"""Gradient times input, :math:`x \odot \partial f_c / \partial x`.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[3.0, -1.0]]))])
    >>> rp.gradient_x_input(model, np.array([[2.0, 1.0]]), target=0).tolist()
    [[6.0, -1.0]]
    """
    return x * gradient(model, x, target)
