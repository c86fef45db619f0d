r"""The rules of transformers: AttnLRP (Achtibat et al. 2024) and CP-LRP (Ali et al. 2022).

- :class:`Softmax`: AttnLRP's softmax rule (Prop. 3.1),
  :math:`R_{in} = x \odot (R - s \sum R)`, the softmax's own Taylor expansion with its bias
  term (it does not conserve relevance).
- :class:`Uniform`: products of activations (attention's :math:`QK^\top` and :math:`AV`,
  gated MLPs), each factor's LRP-:math:`\epsilon` share halved (AttnLRP's uniform rule).
- :class:`Detach`: products with some factors held constant (CP-LRP: the attention
  weights, the gate), the rest explained by LRP-:math:`\epsilon`.
- :class:`FrozenNorm`: LayerNorm and RMSNorm with their normalising scale held constant
  (AttnLRP's identity rule on the normalisation, Prop. 3.4).

The formulas are those LXT 2.1 computes ("AttnLRP as LXT 2.1 computes it" in the docs).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from relprop._xp import Array
from relprop.layers import Layer
from relprop.layers.merge import MatMul, Merge, Multiply
from relprop.layers.normalization import LayerNorm, RMSNorm
from relprop.layers.normalization import Softmax as SoftmaxLayer
from relprop.rules.base import Rule, Stabilizer, check_stabilizer, stabilize

__all__ = ["Detach", "FrozenNorm", "Softmax", "Uniform"]

_PRODUCTS = (Multiply, MatMul)


class Softmax(Rule):
    r"""AttnLRP's softmax rule: :math:`R_{in} = x \odot (R - s \odot \textstyle\sum R)`,
    with :math:`s` the softmax output and the sum along its axis (Achtibat et al. 2024,
    Prop. 3.1; LXT's).

    It is :math:`x \odot J^\top(R / s)` written without the division, so entries the
    softmax sends to 0 (masked ones) get 0; an infinite input (a ``-inf`` mask) gets 0 too.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> x = np.log(np.array([[1.0, 3.0]]))
    >>> rule, layer = Softmax(), rp.Softmax()
    >>> rule.relevance(layer, x, layer(x), np.array([[0.0, 1.0]]), np).round(4).tolist()
    [[-0.0, 0.2747]]
    """

    def check(self, layer: Layer) -> str | None:
        if not isinstance(layer, SoftmaxLayer):
            return f"rule {self!r} is for rp.Softmax layers"
        return None

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        axis = layer.axis  # type: ignore[attr-defined]
        finite = xp.where(xp.isfinite(x), x, xp.zeros_like(x))
        return finite * (R - out * xp.sum(R, axis=axis, keepdims=True))

    def __repr__(self) -> str:
        return "Softmax()"


def _epsilon_shares(layer: Merge, xs: Sequence[Array], out: Array, R: Array,
                    stabilizer: Stabilizer, xp: ModuleType) -> list[Array]:
    r""":math:`x_k \odot J_k^\top(R / s(y))` for every input: LRP-:math:`\epsilon` of a
    product, which gives each factor all of :math:`R`."""
    scaled = R / stabilize(out, stabilizer, xp)
    return [x * g for x, g in zip(xs, layer.vjp_many(xs, scaled, xp), strict=True)]


class Uniform(Rule):
    r"""AttnLRP's uniform rule for products of activations: each of the :math:`n`
    factors gets :math:`1/n` of its LRP-:math:`\epsilon` share,
    :math:`R_k = \frac{1}{n}\, x_k \odot J_k^\top\big(R / s(y)\big)`.

    For :math:`y = a \odot b` that is :math:`R_a = R_b = R/2`; for :math:`O = AV`,
    :math:`R_A = \tfrac12 A \odot ((R / s(O)) V^\top)` and
    :math:`R_V = \tfrac12 V \odot (A^\top (R / s(O)))`.

    Parameters
    ----------
    epsilon
        Stabiliser of :math:`y` (AttnLRP and LXT: 0; the default keeps exact zeros finite).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> a, b = np.array([[2.0, 3.0]]), np.array([[4.0, 5.0]])
    >>> y = rp.Multiply().forward_many([a, b], np)
    >>> [r.tolist() for r in Uniform(0.0).relevance_many(rp.Multiply(), [a, b], y, y, np)]
    [[[4.0, 7.5]], [[4.0, 7.5]]]
    """

    def __init__(self, epsilon: Stabilizer = 1e-12) -> None:
        self.epsilon = check_stabilizer(epsilon, "epsilon")

    def check(self, layer: Layer) -> str | None:
        if not isinstance(layer, _PRODUCTS):
            return (f"rule {self!r} splits relevance between the factors of a product "
                    "(rp.Multiply, rp.MatMul); use Norm for sums")
        return None

    def relevance_many(self, layer: Merge, xs: Sequence[Array], out: Array, R: Array,
                       xp: ModuleType) -> list[Array]:
        shares = _epsilon_shares(layer, xs, out, R, self.epsilon, xp)
        return [share / len(xs) for share in shares]

    def __repr__(self) -> str:
        return f"Uniform({self.epsilon!r})"


class Detach(Rule):
    r"""CP-LRP's products: the factors ``inputs`` (positions among the layer's inputs) are
    held constant and get no relevance; the others share the LRP-:math:`\epsilon`
    relevance of the product linear in them (uniformly if there are several).

    ``Detach(0)`` on attention's :math:`O = AV` treats the attention weights :math:`A` as
    constants, :math:`R_V = V \odot (A^\top (R / s(O)))`, :math:`R_A = 0` (Ali et al. 2022);
    on a gated MLP's ``act(gate) * up`` it gives ``up`` all the relevance.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> a, b = np.array([[2.0, 3.0]]), np.array([[4.0, 5.0]])
    >>> y = rp.Multiply().forward_many([a, b], np)
    >>> [r.tolist() for r in Detach(0, epsilon=0.0).relevance_many(rp.Multiply(), [a, b], y, y,
    ...                                                           np)]
    [[[0.0, 0.0]], [[8.0, 15.0]]]
    """

    def __init__(self, *inputs: int, epsilon: Stabilizer = 1e-12) -> None:
        if not inputs or any(isinstance(i, bool) or not isinstance(i, int) or i < 0
                             for i in inputs):
            raise ValueError(f"Detach takes the positions of the constant inputs (ints >= 0); "
                             f"got {inputs!r}.")
        self.inputs = tuple(sorted(set(inputs)))
        self.epsilon = check_stabilizer(epsilon, "epsilon")

    def check(self, layer: Layer) -> str | None:
        if not isinstance(layer, _PRODUCTS):
            return (f"rule {self!r} holds factors of a product constant (rp.Multiply, "
                    "rp.MatMul)")
        return None

    def relevance_many(self, layer: Merge, xs: Sequence[Array], out: Array, R: Array,
                       xp: ModuleType) -> list[Array]:
        free = [k for k in range(len(xs)) if k not in self.inputs]
        if not free:
            raise ValueError(f"{self!r} holds every input of {layer!r} constant; keep one free.")
        shares = _epsilon_shares(layer, xs, out, R, self.epsilon, xp)
        return [shares[k] / len(free) if k in free else xp.zeros_like(xs[k])
                for k in range(len(xs))]

    def __repr__(self) -> str:
        return f"Detach({', '.join(map(str, self.inputs))}, epsilon={self.epsilon!r})"


class FrozenNorm(Rule):
    r"""LayerNorm and RMSNorm with the normalising scale held constant (AttnLRP's identity
    rule on the normalisation, Prop. 3.4), the map left is explained by LRP-:math:`\epsilon`.

    LayerNorm, :math:`y = (x - \mu)\,\sigma^{-1} w + b` with :math:`\sigma` frozen:
    :math:`R_{in} = x \odot (u - \mathrm{mean}(u))`, :math:`u = w \odot R / (\sigma\, s(y))`
    (the centring explained by LRP-0, the bias absorbing its share). RMSNorm, element-wise
    once frozen: :math:`R_{in} = R`.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> layer, x = rp.LayerNorm(2, eps=0.0), np.array([[1.0, 3.0]])
    >>> FrozenNorm(0.0).relevance(layer, x, layer(x), np.array([[0.0, 1.0]]), np).tolist()
    [[-0.5, 1.5]]
    """

    def __init__(self, epsilon: Stabilizer = 1e-12) -> None:
        self.epsilon = check_stabilizer(epsilon, "epsilon")

    def check(self, layer: Layer) -> str | None:
        if not isinstance(layer, (LayerNorm, RMSNorm)):
            return f"rule {self!r} is for rp.LayerNorm and rp.RMSNorm"
        return None

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        if isinstance(layer, RMSNorm):
            return R
        assert isinstance(layer, LayerNorm)
        _, inverse = layer.normalise(x, xp)
        u = R / stabilize(out, self.epsilon, xp) * inverse
        if layer.weight is not None:
            u = u * layer.weight
        return x * (u - xp.mean(u, axis=layer.axes, keepdims=True))

    def __repr__(self) -> str:
        return f"FrozenNorm({self.epsilon!r})"
