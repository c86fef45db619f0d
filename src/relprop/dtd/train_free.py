r"""Train-free Deep Taylor Decomposition with closed-form roots.

The relevance of neuron :math:`j` of a dense layer is modelled as its activation times a
coefficient frozen at the real input (the upper layers are not re-evaluated: "train-free"),

.. math:: R_j(a) = c_j\, \max(0, z_j(a)), \qquad z_j(a) = w_j \cdot a + b_j, \qquad
          c_j = R_j / a_j

(:math:`c_j = 0` where :math:`a_j = 0`; the explained output is linear, :math:`R(a) = z(a)`,
unless a ReLU follows it). Its first-order Taylor expansion at the neuron's root point
:math:`r^{(j)}` (:func:`~relprop.dtd.root_point`, :math:`z_j(r^{(j)}) = 0`), with the gradient
of the active side :math:`\nabla R_j = c_j w_j` (the root is approached from the input,
where the unit is on), gives the relevance of the layer's inputs

.. math:: R_i = \sum_j \frac{\partial R_j}{\partial a_i}\Big|_{r^{(j)}} (a_i - r^{(j)}_i)
              = \sum_j c_j\, w_{ji}\, (a_i - r^{(j)}_i),

applied layer by layer from the explained output down to the input (ReLUs pass relevance
unchanged). Per neuron, the part of :math:`R_j` this does not pass down is *unresolved*:
:math:`R_j - \sum_i c_j w_{ji} (a_i - r^{(j)}_i) = c_j z_j(r^{(j)})` for an active,
non-degenerate neuron: 0 for every rule with a root of :math:`z_j` (all but ``"0"``, where it
is :math:`c_j b_j`), and all of :math:`R_j` for a degenerate or inactive neuron.

With the z+ rule on non-negative inputs, :math:`a - r^{(j)} = a \odot 1[w_j \ge 0]\,
z_j / (\sum_i a_i w_{ji}^+)`, so :math:`R_i = \sum_j a_i w_{ji}^+ R_j / \sum_{i'} a_{i'}
w_{ji'}^+`: LRP-z+ (alpha1beta0) with the bias left out of the denominator. Likewise
``"x"`` is LRP-0 without the bias, ``"0"`` is LRP-0 with it (gradient times input), and
``"zB"`` is LRP-z^B without the bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from relprop._checks import check_input, target_relevance
from relprop._xp import Array, is_traced, to_numpy
from relprop.dtd.network import dense_indices
from relprop.dtd.roots import RULES, RootPoints, root_point
from relprop.layers import Dense, ReLU
from relprop.model import Sequential

__all__ = ["ConsistencyError", "TrainFreeResult", "train_free"]


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
        The frozen relevance coefficients :math:`c_j = R_j / a_j` ``(batch, out)``.
    unresolved
        ``(batch, out)``: relevance of each neuron not passed to the layer's input.
    root_points
        The full :class:`~relprop.dtd.RootPoints` of each layer (steps, directions).
    rules
        The rule used at each dense layer.
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
) -> TrainFreeResult:
    r"""Train-free DTD of one output of a ReLU network, every sample and neuron at once.

    :math:`R_i = \sum_j c_j w_{ji} (a_i - r^{(j)}_i)` at every dense layer, top to bottom
    (module docstring), starting from the explained output's value.

    Parameters
    ----------
    model
        An :class:`~relprop.Sequential` of :class:`~relprop.Dense` and
        :class:`~relprop.ReLU` layers, starting with a dense layer.
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
        layers).
    check
        Verify, for every layer and sample: the input relevance plus the unresolved
        relevance equals the output relevance; every relevant neuron's root has
        :math:`c_j z_j(r^{(j)}) = 0` (not for rule ``"0"``); and, except for rule ``"0"``,
        no relevance is unresolved. Raises :class:`ConsistencyError` otherwise.

    Returns
    -------
    TrainFreeResult

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.dtd.MLP(3, 10, 10, 2, seed=1, backend="numpy")
    >>> x = rp.dtd.sample_inputs(model, 4, threshold=0.1, output=0)
    >>> res = rp.dtd.train_free(model, x, target=0, rule="z+", check=True)
    >>> res.relevance.shape, [r.shape for r in res.roots]
    ((4, 10), [(4, 10, 10), (4, 10, 10), (4, 2, 10)])
    >>> bool(np.allclose(res.relevance.sum(axis=1), model(x)[:, 0]))   # conserved
    True
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an rp.Sequential; got {type(model).__name__}.")
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, (Dense, ReLU)):
            raise TypeError(
                f"train_free explains networks of Dense and ReLU layers; layer {index} "
                f"({model.names[index]!r}) is {layer!r}."
            )
    if not isinstance(model.layers[0], Dense):
        raise TypeError("train_free needs a model whose first layer is Dense.")
    xp = model.namespace(x=x)
    check_input(x, xp, model.named_params())
    activations = model.forward_record(x, xp)
    dense = dense_indices(model)
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
        # the neuron's activation: the ReLU's output if one follows, else the pre-activation
        has_relu = index + 1 < len(model) and isinstance(model.layers[index + 1], ReLU)
        a_out = activations[index + 2] if has_relu else activations[index + 1]
        active = a_out != 0
        safe = xp.where(active, a_out, xp.ones_like(a_out))
        c = xp.where(active, relevance / safe, xp.zeros_like(relevance))
        points = root_point(a_in, layer, rule=rules[position], gamma=gamma, low=low, high=high,
                            eps=eps)
        # gradient at the root (c_j w_j, the active side) times (a - r^(j)), per neuron
        messages = (
            xp.expand_dims(c, axis=-1)
            * xp.expand_dims(layer.weight, axis=0)
            * (xp.expand_dims(a_in, axis=1) - points.root)
        )
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
    )
    if check and not is_traced(relevance):
        _check(model, dense, result, xp)
        result.checked = True
    return result


def _check(model: Sequential, dense: list[int], result: TrainFreeResult, xp: object) -> None:
    import numpy as np

    tol = 1e-8 if "64" in str(result.relevance.dtype) else 1e-4
    upper = [*result.layers[1:], result.output]
    problems = []
    for position, index in enumerate(dense):
        layer = model.layers[index]
        assert isinstance(layer, Dense)
        name = model.names[index]
        r_out = to_numpy(upper[position])
        r_in = to_numpy(result.layers[position])
        lost = to_numpy(result.unresolved[position])
        scale = np.maximum(np.abs(r_out).sum(axis=1), 1e-300)
        gap = np.abs(r_in.sum(axis=1) + lost.sum(axis=1) - r_out.sum(axis=1)) / scale
        if np.any(gap > tol):
            problems.append(f"{name}: input + unresolved relevance differs from the output "
                            f"relevance by up to {gap.max():.3g} (relative)")
        if result.rules[position] == "0":
            continue
        weight = to_numpy(layer.weight)
        bias = 0.0 if layer.bias is None else to_numpy(layer.bias)
        z_root = np.sum(to_numpy(result.roots[position]) * weight[None], axis=-1) + bias
        c = to_numpy(result.coefficients[position])
        relevant = (c != 0) & ~to_numpy(result.degenerate[position])
        residual = np.where(relevant, np.abs(c * z_root), 0.0).sum(axis=1) / scale
        if np.any(residual > tol):
            problems.append(f"{name}: c_j z_j(root) is not 0 (up to {residual.max():.3g} "
                            "relative): a root is no root")
        missing = np.abs(lost).sum(axis=1) / scale
        if np.any(missing > tol):
            problems.append(
                f"{name}: {missing.max():.3g} (relative) of the relevance is unresolved in "
                f"{int(np.sum(missing > tol))} sample(s): degenerate neurons or inactive "
                f"neurons with relevance (rule {result.rules[position]!r})"
            )
    if problems:
        raise ConsistencyError("train-free DTD is inconsistent: " + "; ".join(problems))
