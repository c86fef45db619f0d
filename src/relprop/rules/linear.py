r"""The LRP rules of linear layers, each its terms for the engine
(:mod:`relprop.rules.terms`), in zennit's conventions (DESIGN.md §5). A term is written
(input, weight, bias):

- Epsilon: one term, :math:`(x, W, b)`: :math:`x \odot W^\top(R / s(Wx + b))`;
- ZPlus: :math:`(x^+, W^+, b^+)` and :math:`(x^-, W^-)`;
- AlphaBeta: alpha times the ZPlus group, minus beta times :math:`(x^+, W^-, b^-)`,
  :math:`(x^-, W^+)`;
- Gamma: :math:`(x^+, W + \gamma W^+, b + \gamma b^+)`, :math:`(x^-, W + \gamma W^-)`
  where the output is positive, the two weights swapped where it is negative;
- ZBox: :math:`(x, W, b)`, minus :math:`(l, W^+, b^+)` and :math:`(h, W^-, b^-)`;
- WSquare: :math:`(1, W^2, b^2)` (the input is ignored); Flat: :math:`(1, 1)` (every
  weight one, no bias);

with :math:`a^+ = \max(a, 0)`, :math:`a^- = \min(a, 0)` and the stabiliser
:math:`s(z) = z + \epsilon\,\mathrm{sgn}(z)`, :math:`\mathrm{sgn}(0) = +1`. A term of the
negative input part is dropped when the layer's input is non-negative (it follows a ReLU).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import ModuleType

from relprop._bounds import check_bound_order
from relprop._xp import Array
from relprop.layers import Layer, Linear
from relprop.layers.merge import Merge
from relprop.rules.base import Stabilizer, stabilize
from relprop.rules.modifiers import (
    Bound,
    Identity,
    Negative,
    NegativeOutput,
    Ones,
    PlusGamma,
    Positive,
    PositiveOutput,
    Square,
)
from relprop.rules.terms import Group, Term, TermRule, per_sample

__all__ = ["AlphaBeta", "Epsilon", "Flat", "Gamma", "Norm", "WSquare", "ZBox", "ZPlus"]


def _z_plus_terms(first: Positive | Negative, second: Positive | Negative) -> tuple[Term, ...]:
    """:math:`W^{first} x^+ + W^{second} x^- + b^{first}` (z+ and alpha-beta's halves)."""
    return (Term(Positive(), first, first), Term(Negative(), second, None))


class Epsilon(TermRule):
    r"""LRP-epsilon: :math:`R_{in} = x \odot W^\top\big(R / s(Wx + b)\big)`.

    ``epsilon=0`` is LRP-0. On parameter-free layers it is the Norm rule.

    Parameters
    ----------
    epsilon
        Added to the denominator with the sign of each entry (``+`` for 0), or a callable
        returning the stabilised denominator.
    zero_params
        ``"bias"`` to explain the layer without its bias.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> from relprop.layers import Dense
    >>> layer = Dense(xp.asarray([[1.0, 3.0]]))
    >>> x = xp.asarray([[1.0, 1.0]]); out = layer(x)
    >>> Epsilon(0.0).relevance(layer, x, out, out, xp).tolist()
    [[1.0, 3.0]]
    """

    needs_params = False

    def __init__(self, epsilon: Stabilizer = 1e-6, zero_params: str | Iterable[str] | None = None):
        super().__init__(stabilizer=epsilon, zero_params=zero_params)

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(),)),)

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        if isinstance(layer, Linear):
            return super().relevance(layer, x, out, R, xp, nonnegative=nonnegative)
        s = R / stabilize(out, self.stabilizer, xp)  # a parameter-free map: its Jacobian
        return x * layer.vjp(x, s, xp)

    def relevance_many(
        self, layer: Merge, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType
    ) -> list[Array]:
        s = R / stabilize(out, self.stabilizer, xp)
        return [x * g for x, g in zip(xs, layer.vjp_many(xs, s, xp), strict=True)]

    def absorbed(self, layer: Layer, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType,
                 *, nonnegative: bool = False) -> tuple[Array, Array] | None:
        if isinstance(layer, Linear):
            return super().absorbed(layer, xs, out, R, xp, nonnegative=nonnegative)
        # a parameter-free linear map: the inputs' relevance sums to sum R out / s(out)
        denominator = stabilize(out, self.stabilizer, xp)
        stabilizer = per_sample(R * (denominator - out) / denominator, xp)
        return xp.zeros_like(stabilizer), stabilizer

    def __repr__(self) -> str:
        zero = f", zero_params={self.zero_params}" if self.zero_params else ""
        return f"{type(self).__name__}({self.stabilizer!r}{zero})"


class Norm(Epsilon):
    r"""Epsilon for parameter-free linear layers: :math:`x \odot J^\top(R / s(f(x)))`."""

    def __init__(self, stabilizer: Stabilizer = 1e-6) -> None:
        super().__init__(stabilizer)


class ZPlus(TermRule):
    r"""LRP-z+ (alpha=1, beta=0), for inputs of either sign.

    :math:`z = W^+x^+ + W^-x^- + b^+`,
    :math:`R_{in} = x^+ \odot W^{+\top}(R/s(z)) + x^- \odot W^{-\top}(R/s(z))`.
    """

    def __init__(
        self, stabilizer: Stabilizer = 1e-6, zero_params: str | Iterable[str] | None = None
    ):
        super().__init__(stabilizer=stabilizer, zero_params=zero_params)

    def groups(self) -> tuple[Group, ...]:
        return (Group(_z_plus_terms(Positive(), Negative())),)


class AlphaBeta(TermRule):
    r"""LRP-alpha-beta: positive and negative contributions weighted by alpha and beta.

    :math:`R_{in} = \alpha\,[x^+ W^{+\top}(R/s(z_\alpha)) + x^- W^{-\top}(R/s(z_\alpha))]
    - \beta\,[x^+ W^{-\top}(R/s(z_\beta)) + x^- W^{+\top}(R/s(z_\beta))]` with
    :math:`z_\alpha = W^+x^+ + W^-x^- + b^+`, :math:`z_\beta = W^-x^+ + W^+x^- + b^-`.

    Raises
    ------
    ValueError
        Unless ``alpha - beta == 1`` and both are >= 0 (relevance would not be conserved).
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 1.0,
        stabilizer: Stabilizer = 1e-6,
        zero_params: str | Iterable[str] | None = None,
    ) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(
                f"AlphaBeta needs alpha >= 0 and beta >= 0; got alpha={alpha}, beta={beta}."
            )
        if abs((alpha - beta) - 1.0) > 1e-12:
            raise ValueError(
                f"AlphaBeta needs alpha - beta == 1 to conserve relevance; got alpha={alpha}, "
                f"beta={beta}."
            )
        super().__init__(stabilizer=stabilizer, zero_params=zero_params)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def groups(self) -> tuple[Group, ...]:
        positive = Group(_z_plus_terms(Positive(), Negative()), self.alpha)
        if self.beta == 0.0:
            return (positive,)
        return (positive, Group(_z_plus_terms(Negative(), Positive()), -self.beta))


class Gamma(TermRule):
    r"""Generalised LRP-gamma: positive contributions amplified by ``gamma``.

    With :math:`W_\uparrow = W + \gamma W^+`, :math:`W_\downarrow = W + \gamma W^-` (biases
    alike), :math:`z_p = W_\uparrow x^+ + W_\downarrow x^- + b_\uparrow`,
    :math:`z_n = W_\downarrow x^+ + W_\uparrow x^- + b_\downarrow` and the output
    :math:`z = Wx + b` choosing which applies:

    :math:`R_p = R\,[z > 0] / s(z_p)`, :math:`R_n = R\,[z < 0] / s(z_n)`,
    :math:`R_{in} = x^+ (W_\uparrow^\top R_p + W_\downarrow^\top R_n)
    + x^- (W_\downarrow^\top R_p + W_\uparrow^\top R_n)`.

    The default ``gamma=0.25`` is zennit's; DTD's gamma root rule
    (:func:`relprop.dtd.root_point`, :func:`relprop.dtd.train_free`) defaults to
    ``gamma=1.0``. With the same ``gamma`` and non-negative inputs,
    ``Gamma(gamma, zero_params="bias")`` equals train-free DTD with ``rule="gamma"``.
    """

    def __init__(
        self,
        gamma: float = 0.25,
        stabilizer: Stabilizer = 1e-6,
        zero_params: str | Iterable[str] | None = None,
    ) -> None:
        if gamma < 0:
            raise ValueError(f"Gamma needs gamma >= 0; got {gamma}.")
        super().__init__(stabilizer=stabilizer, zero_params=zero_params)
        self.gamma = float(gamma)

    def groups(self) -> tuple[Group, ...]:
        up, down = PlusGamma(self.gamma, Positive()), PlusGamma(self.gamma, Negative())
        return (
            Group((Term(Positive(), up, up), Term(Negative(), down, None)),
                  output=PositiveOutput()),
            Group((Term(Positive(), down, down), Term(Negative(), up, None)),
                  output=NegativeOutput()),
        )


class ZBox(TermRule):
    r"""LRP-z^B for inputs bounded by ``low <= x <= high`` (pixels).

    :math:`z = (Wx + b) - (W^+ l + b^+) - (W^- h + b^-)`,
    :math:`R_{in} = x \odot W^\top(R/s(z)) - l \odot W^{+\top}(R/s(z)) - h \odot W^{-\top}(R/s(z))`.

    Parameters
    ----------
    low, high
        Lowest and highest possible input values: floats, or arrays broadcastable to the
        input (e.g. ``(1, 3, 1, 1)`` per channel) of the input's library.
    """

    def __init__(
        self,
        low: float | Array | None = None,
        high: float | Array | None = None,
        stabilizer: Stabilizer = 1e-6,
        zero_params: str | Iterable[str] | None = None,
    ) -> None:
        if low is None or high is None:
            raise TypeError(
                "ZBox needs the input bounds: ZBox(low=..., high=...), e.g. ZBox(0.0, 1.0) for "
                "pixels in [0, 1] or per-channel arrays for normalised images."
            )
        check_bound_order(low, high, "ZBox")
        super().__init__(stabilizer=stabilizer, zero_params=zero_params)
        self.low = low
        self.high = high

    def groups(self) -> tuple[Group, ...]:
        low, high = Bound(self.low, self.high, "low"), Bound(self.low, self.high, "high")
        return (Group((
            Term(Identity(), Identity(), Identity()),
            Term(low, Positive(), Positive(), sign=-1.0),
            Term(high, Negative(), Negative(), sign=-1.0),
        )),)


class WSquare(TermRule):
    r"""LRP-w²: :math:`R_{in} = (W^2)^\top\big(R / s(W^2 1 + b^2)\big)`; ignores the input.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> from relprop.layers import Dense
    >>> layer = Dense(xp.asarray([[1.0, -3.0]]))
    >>> WSquare(0.0).relevance(layer, xp.ones((1, 2)), None, xp.asarray([[10.0]]), xp).tolist()
    [[1.0, 9.0]]
    """

    def __init__(
        self, stabilizer: Stabilizer = 1e-6, zero_params: str | Iterable[str] | None = None
    ):
        super().__init__(stabilizer=stabilizer, zero_params=zero_params)

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(Ones(), Square(), Square()),)),)


class Flat(TermRule):
    r"""LRP-flat: relevance spread evenly over the receptive field, :math:`1^\top(R / s(1^\top 1))`.

    All weights are taken as 1 and the bias as 0 (zennit's convention).
    """

    def __init__(
        self, stabilizer: Stabilizer = 1e-6, zero_params: str | Iterable[str] | None = None
    ):
        super().__init__(stabilizer=stabilizer, zero_params=zero_params)

    def groups(self) -> tuple[Group, ...]:
        return (Group((Term(Ones(), Ones(), None),)),)
