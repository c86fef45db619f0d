r"""Train-free Deep Taylor Decomposition with closed-form roots, in two root conventions.

A dense layer's neuron :math:`j` has input :math:`x`, weights :math:`w_j`, pre-activation
:math:`z_j = w_j \cdot x + b_j`, activation :math:`a_j` and relevance :math:`R_j` (from the
layer above; the upper layers are frozen at the real input: "train-free"). Its root point
lies along the rule's direction :math:`v^{(j)}` (:func:`~relprop.dtd.root_point`),
:math:`r^{(j)} = x - t_j v^{(j)}`; the conventions differ in what vanishes there
(``root_of``):

- ``"relevance"`` (default; Sixt & Landgraf 2022, the seed notebooks' ``TrainFreeFn``):
  the relevance is modelled as :math:`R_j(a) = R_j + w_j \cdot (a - x)`, frozen at the real
  activation and changing like the pre-activation. Its root removes the relevance,
  :math:`t_j = R_j / (v^{(j)} \cdot w_j)`, and

  .. math:: R_i = \sum_j w_{ji}\, (x_i - r^{(j)}_i)

- ``"preactivation"`` (Montavon et al. 2017): the relevance is the activation times a
  frozen coefficient, :math:`R_j(a) = c_j \max(0, z_j(a))`, :math:`c_j = R_j / a_j`
  (0 where :math:`a_j = 0`); the root is that of the pre-activation,
  :math:`t_j = z_j / (v^{(j)} \cdot w_j)`, and

  .. math:: R_i = \sum_j c_j\, w_{ji}\, (x_i - r^{(j)}_i)

For an active neuron the two give the same messages, :math:`R_j w_{ji} v_i / (v \cdot
w_j)`, so the input relevance agrees for every rule but ``"0"`` (whose root is the
origin, :math:`r = 0`, in both) as long as no relevance reaches an inactive neuron: under
``"x"``, ``"z+"`` and ``"gamma"`` it never does (their directions vanish where the input
does); under ``"w2"`` or ``"zB"`` the preactivation convention cannot pass on an inactive
neuron's relevance (:math:`c_j = 0`), the relevance convention can.

Per neuron, the part of :math:`R_j` not passed down is *unresolved*: relevance
convention :math:`R_j - w_j \cdot (x - r^{(j)})`, zero for every rule but ``"0"`` (where it
is :math:`R_j - w_j \cdot x`; a neuron with :math:`R_j = 0` passes nothing) and degenerate
neurons; preactivation convention
:math:`c_j z_j(r^{(j)})`, zero but for ``"0"`` (:math:`c_j b_j`), and all of :math:`R_j` for
a degenerate or inactive neuron.

Pick ``"relevance"`` to reproduce the paper's analysis (the roots the seed notebooks ask
about: is the output zero there, do they share the input's gradient?); pick
``"preactivation"`` for Montavon et al.'s original derivation, where each root is a point
of the neuron's own kink.

With the z+ rule on non-negative inputs, :math:`x - r^{(j)} = x \odot 1[w_j \ge 0]\,
t_j`, so :math:`R_i = \sum_j x_i w_{ji}^+ R_j / \sum_{i'} x_{i'} w_{ji'}^+`: LRP-z+
(alpha1beta0) with the bias left out of the denominator. Likewise ``"x"`` is LRP-0
without the bias, ``"0"`` is LRP-0 with it (gradient times input), and ``"zB"`` is
LRP-z^B without the bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

from relprop._checks import check_input, target_relevance
from relprop._dask import is_dask_array, on_dask
from relprop._xp import Array, is_traced
from relprop.dtd._common import check_dense_network
from relprop.dtd.roots import RULES, RootPoints, root_point
from relprop.layers import Dense, Dropout, Identity, ReLU
from relprop.model import Sequential

__all__ = ["ROOT_CONVENTIONS", "ConsistencyError", "TrainFreeResult", "train_free"]

ROOT_CONVENTIONS: tuple[str, ...] = ("relevance", "preactivation")
"""What vanishes at a train-free root: the neuron's relevance (the paper's convention) or its
pre-activation (Montavon et al. 2017)."""


class ConsistencyError(AssertionError):
    """Raised by ``train_free(..., check=True)`` when a decomposition is inconsistent.

    An :class:`AssertionError`, so that experiment loops that skip samples failing
    assertion-based checks keep working.
    """


@dataclass
class TrainFreeResult:
    """Result of :func:`train_free`; every list has one entry per dense layer, input first.

    Attributes
    ----------
    relevance
        Input relevance, the shape of the model input.
    layers
        Relevance at each dense layer's input ``(batch, in)``; ``layers[0] is relevance``.
    output
        The explained output's relevance ``(batch, outputs)`` (its value at the target).
    inputs
        Each dense layer's input :math:`a` (the point the roots are taken for).
    roots
        Root points ``(batch, out, in)``: row ``j`` is neuron ``j``'s root.
    degenerate
        ``(batch, out)`` booleans: neurons whose direction has :math:`v \\cdot w_j = 0`.
    coefficients
        ``(batch, out)``: the frozen relevance coefficients :math:`c_j = R_j / a_j`
        (``root_of="preactivation"``), or :math:`R_j` itself, the relevance each root
        removes (``root_of="relevance"``).
    unresolved
        ``(batch, out)``: relevance of each neuron not passed to the layer's input.
    root_points
        The full :class:`~relprop.dtd.RootPoints` of each layer (steps, directions).
    rules
        The rule used at each dense layer.
    root_of
        The root convention, ``"relevance"`` or ``"preactivation"``.
    checked
        Whether the consistency checks ran (``check=True``) and passed.
    """

    relevance: Array
    layers: list[Array]
    output: Array
    inputs: list[Array]
    roots: list[Array]
    degenerate: list[Array]
    coefficients: list[Array]
    unresolved: list[Array]
    root_points: list[RootPoints]
    rules: tuple[str, ...]
    root_of: str = "relevance"
    checked: bool = field(default=False)


def _rules_per_layer(rule: str | Sequence[str], n_dense: int) -> tuple[str, ...]:
    rules = (rule,) * n_dense if isinstance(rule, str) else tuple(rule)
    if len(rules) != n_dense:
        raise ValueError(
            f"rule must be one rule name or one per dense layer ({n_dense}); got {len(rules)}."
        )
    for name in rules:
        if name not in RULES:
            raise ValueError(f"unknown root-point rule {name!r}; use one of {', '.join(RULES)}.")
    return rules


TRAIN_FREE_LAYERS: tuple[type, ...] = (ReLU, Identity, Dropout)
r"""The element-wise layers train-free DTD allows between its dense layers: the
pre-activation convention's relevance model :math:`c_j \max(0, z_j)` is a ReLU's (so
LeakyReLU, which full-backward DTD allows, is not among them)."""


def train_free(
    model: Sequential,
    x: Array,
    target: object = 0,
    rule: str | Sequence[str] = "z+",
    *,
    gamma: float = 1.0,
    low: float | Array | None = None,
    high: float | Array | None = None,
    eps: float = 1e-12,
    check: bool = False,
    root_of: str = "relevance",
) -> TrainFreeResult:
    r"""Train-free DTD of one output of a ReLU network, every sample and neuron at once.

    :math:`R_i = \sum_j w_{ji} (x_i - r^{(j)}_i)` with the roots of the relevance
    (``root_of="relevance"``), or :math:`R_i = \sum_j c_j w_{ji} (x_i - r^{(j)}_i)` with
    those of the pre-activation (``"preactivation"``), at every dense layer, top to
    bottom (module docstring), starting from the explained output's value.

    Parameters
    ----------
    model
        An :class:`~relprop.Sequential` of :class:`~relprop.Dense` and
        :class:`~relprop.ReLU` layers (and :class:`~relprop.Identity`,
        :class:`~relprop.Dropout`), starting with a dense layer; or a torch module of
        them (converted as ``rp.lrp`` converts it).
    x
        Input batch ``(batch, in_features)``.
    target
        The explained output: an int, one int per sample, or a floating array of the
        output's shape used as the initial relevance (as in :func:`relprop.lrp`).
    rule
        Root-point rule of every dense layer, or one per dense layer (input layer first),
        e.g. ``["zB", "z+", "z+"]``.
    gamma, low, high, eps
        Passed to :func:`~relprop.dtd.root_point` (``low``/``high`` for the ``"zB"``
        layers). The default ``gamma=1.0`` is DTD's; the LRP rule
        :class:`relprop.rules.Gamma` defaults to ``gamma=0.25`` (zennit's). With the same
        value and non-negative inputs, ``rule="gamma"`` equals
        ``rp.rules.Gamma(gamma, zero_params="bias")``.
    check
        Verify, for every layer and sample: the input relevance plus the unresolved
        relevance equals the output relevance; every relevant neuron's root removes what
        its convention says (:math:`R_j(r^{(j)}) = 0`, or :math:`c_j z_j(r^{(j)}) = 0`; not
        for rule ``"0"``); and, except for rule ``"0"``, no relevance is unresolved.
        Raises :class:`ConsistencyError` otherwise.
    root_of
        ``"relevance"`` (default: the paper's and the seed notebooks' roots) or
        ``"preactivation"`` (Montavon et al. 2017), see the module docstring.

    Returns
    -------
    TrainFreeResult

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2,
    ...                    seed=1, backend="numpy")
    >>> x = rp.dtd.sample_inputs(model, 4, threshold=0.1, output=0)
    >>> res = rp.dtd.train_free(model, x, target=0, rule="z+", check=True)
    >>> res.relevance.shape, [r.shape for r in res.roots]
    ((4, 10), [(4, 10, 10), (4, 10, 10), (4, 2, 10)])
    >>> bool(np.allclose(res.relevance.sum(axis=1), model(x)[:, 0]))   # conserved
    True
    >>> old = rp.dtd.train_free(model, x, target=0, rule="z+", root_of="preactivation")
    >>> bool(np.allclose(old.relevance, res.relevance))   # the same relevance, other roots
    True
    """
    if is_dask_array(x):  # one train_free per chunk, lazily (relprop._dask)
        return on_dask(train_free, locals())
    model = check_dense_network(model, "train_free", between=TRAIN_FREE_LAYERS, x=x)
    if root_of not in ROOT_CONVENTIONS:
        raise ValueError(
            f"root_of must be one of {', '.join(map(repr, ROOT_CONVENTIONS))}; got {root_of!r}."
        )
    xp = model.namespace(x=x)
    check_input(x, xp, model.named_params())
    activations = model.forward_record(x, xp)
    dense = [index for index, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    rules = _rules_per_layer(rule, len(dense))
    output = target_relevance(activations[-1], target, xp)

    relevance = output
    per_layer: list[Array] = []
    roots: list[Array] = []
    degenerate: list[Array] = []
    coefficients: list[Array] = []
    unresolved: list[Array] = []
    root_points: list[RootPoints] = []
    for position in range(len(dense) - 1, -1, -1):
        index = dense[position]
        layer = model.layers[index]
        assert isinstance(layer, Dense)
        a_in = activations[index]
        # the neuron's activation: the ReLU's output if one follows (before the next dense
        # layer), else the pre-activation (the element-wise layers between pass it on)
        a_out = activations[dense[position + 1] if position + 1 < len(dense) else -1]
        if root_of == "relevance":  # R_j(a) = R_j + w_j . (a - x): slope w_j, root removes R_j
            c = relevance
            points = root_point(a_in, layer, rule=rules[position], relevance=relevance,
                                gamma=gamma, low=low, high=high, eps=eps)
            # a neuron without relevance passes nothing (its root is x, but "0"'s is 0)
            carries = xp.astype(relevance != 0, a_in.dtype)
            slope = xp.expand_dims(carries, axis=-1) * xp.expand_dims(layer.weight, axis=0)
        else:  # R_j(a) = c_j max(0, z_j(a)): slope c_j w_j on the active side
            active = a_out != 0
            safe = xp.where(active, a_out, xp.ones_like(a_out))
            c = xp.where(active, relevance / safe, xp.zeros_like(relevance))
            points = root_point(a_in, layer, rule=rules[position], gamma=gamma, low=low,
                                high=high, eps=eps)
            slope = xp.expand_dims(c, axis=-1) * xp.expand_dims(layer.weight, axis=0)
        # the gradient at the root times (x - r^(j)), per neuron
        messages = slope * (xp.expand_dims(a_in, axis=1) - points.root)
        unresolved.append(relevance - xp.sum(messages, axis=-1))
        relevance = xp.sum(messages, axis=1)
        per_layer.append(relevance)
        roots.append(points.root)
        degenerate.append(points.degenerate)
        coefficients.append(c)
        root_points.append(points)

    result = TrainFreeResult(
        relevance=relevance,
        layers=per_layer[::-1],
        output=output,
        inputs=[activations[index] for index in dense],
        roots=roots[::-1],
        degenerate=degenerate[::-1],
        coefficients=coefficients[::-1],
        unresolved=unresolved[::-1],
        root_points=root_points[::-1],
        rules=rules,
        root_of=root_of,
    )
    if check and not is_traced(relevance):
        _check(model, dense, result, xp)
        result.checked = True
    return result


def _check(model: Sequential, dense: list[int], result: TrainFreeResult,
           xp: ModuleType) -> None:
    """The consistency checks of ``check=True``, on the device: only the worst relative
    errors (and a count) reach the host, for the message."""
    tol = 1e-8 if "64" in str(result.relevance.dtype) else 1e-4
    upper = [*result.layers[1:], result.output]

    def relative(values: Array, scale: Array) -> Array:
        return values / xp.where(scale > 0, scale, xp.ones_like(scale))

    problems = []
    for position, index in enumerate(dense):
        layer = model.layers[index]
        assert isinstance(layer, Dense)
        name = model.names[index]
        r_out = upper[position]
        lost = result.unresolved[position]
        scale = xp.sum(xp.abs(r_out), axis=1)
        gap = relative(xp.abs(xp.sum(result.layers[position], axis=1) + xp.sum(lost, axis=1)
                              - xp.sum(r_out, axis=1)), scale)
        worst = float(xp.max(gap))
        if worst > tol:
            problems.append(f"{name}: input + unresolved relevance differs from the output "
                            f"relevance by up to {worst:.3g} (relative)")
        if result.rules[position] == "0":
            continue
        weight = xp.expand_dims(layer.weight, axis=0)
        roots = result.roots[position]
        c = result.coefficients[position]
        if result.root_of == "relevance":  # R_j(r) = R_j + w_j . (r - x)
            x_in = xp.expand_dims(result.inputs[position], axis=1)
            at_root = c + xp.sum((roots - x_in) * weight, axis=-1)
            what = "R_j(root)"
        else:
            z_root = xp.sum(roots * weight, axis=-1)
            if layer.bias is not None:
                z_root = z_root + layer.bias
            at_root = c * z_root
            what = "c_j z_j(root)"
        relevant = (c != 0) & ~result.degenerate[position]
        residual = relative(xp.sum(xp.where(relevant, xp.abs(at_root),
                                            xp.zeros_like(at_root)), axis=1), scale)
        worst = float(xp.max(residual))
        if worst > tol:
            problems.append(f"{name}: {what} is not 0 (up to {worst:.3g} "
                            "relative): a root is no root")
        missing = relative(xp.sum(xp.abs(lost), axis=1), scale)
        worst = float(xp.max(missing))
        if worst > tol:
            count = int(xp.count_nonzero(missing > tol))
            problems.append(
                f"{name}: {worst:.3g} (relative) of the relevance is unresolved in "
                f"{count} sample(s): degenerate neurons or inactive "
                f"neurons with relevance (rule {result.rules[position]!r})"
            )
    if problems:
        raise ConsistencyError("train-free DTD is inconsistent: " + "; ".join(problems))
