r"""LRP rules, written once against the array API standard.

Every rule maps the relevance ``R`` at a layer's output to relevance at its input. For a
linear layer (``z = W x + b``: dense now, convolutions alike) each rule is a few modified
forward passes and their transposes ``W^T(v)`` (zennit's conventions, DESIGN.md §5):

=========  ===============================================================================
Epsilon    x * W^T(R / s(Wx + b))
ZPlus      z = W+ x+ + W- x- + b+;  x+ * W+^T(R/s(z)) + x- * W-^T(R/s(z))
AlphaBeta  alpha * [ZPlus part] - beta * [the same with W+ and W- swapped and b-]
Gamma      W + gamma W+ and W + gamma W-; positive and negative outputs normalised apart
ZBox       z = (Wx + b) - (W+ l + b+) - (W- h + b-);  x W^T(R/s) - l W+^T(R/s) - h W-^T(R/s)
WSquare    (W^2)^T(R / s(W^2 1 + b^2))
Flat       1^T(R / s(1^T 1))
Norm       Epsilon for parameter-free linear maps (sums, average pools)
Pass       R unchanged (element-wise activations)
Gradient   J^T R (what an unhooked layer does in zennit: max pools, reshapes)
=========  ===============================================================================

with :math:`a^+ = \max(a, 0)`, :math:`a^- = \min(a, 0)` and the stabiliser
:math:`s(z) = z + \epsilon\,\mathrm{sgn}(z)`, :math:`\mathrm{sgn}(0) = +1`.
Terms that are identically zero because the layer's input is non-negative (it follows a
ReLU) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

from relprop._checks import bound_like
from relprop._xp import Array, is_traced
from relprop.layers import Layer, Linear
from relprop.layers.merge import Merge

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "Gradient",
    "Norm",
    "Pass",
    "Rule",
    "WSquare",
    "ZBox",
    "ZPlus",
    "stabilize",
]

Stabilizer = float | Callable[[Array], Array]
_PARAM_NAMES = frozenset({"weight", "bias"})


def stabilize(z: Array, epsilon: Stabilizer, xp: ModuleType) -> Array:
    r"""Safe denominator :math:`z + \epsilon\,\mathrm{sgn}(z)` with :math:`\mathrm{sgn}(0) = +1`.

    ``epsilon`` may also be a callable returning the stabilised denominator itself.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> stabilize(xp.asarray([-2.0, 0.0, 3.0]), 0.5, xp).tolist()
    [-2.5, 0.5, 3.5]
    """
    if callable(epsilon):
        return epsilon(z)
    one = xp.ones_like(z)
    return z + epsilon * xp.where(z >= 0, one, -one)


def _check_stabilizer(value: Stabilizer, name: str) -> Stabilizer:
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python float or a callable; got {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}.")
    return float(value)


def _zero_set(zero_params: str | Iterable[str] | None) -> frozenset[str]:
    if zero_params is None:
        return frozenset()
    names = frozenset([zero_params] if isinstance(zero_params, str) else zero_params)
    unknown = names - _PARAM_NAMES
    if unknown:
        raise ValueError(
            f"zero_params names unknown parameters {sorted(unknown)}; use 'bias' and/or 'weight'."
        )
    return names


def _pos(a: Array | None, xp: ModuleType) -> Array | None:
    return None if a is None else xp.clip(a, min=0.0)


def _neg(a: Array | None, xp: ModuleType) -> Array | None:
    return None if a is None else xp.clip(a, max=0.0)


class Rule:
    """Base class of the rules: maps output relevance to input relevance for one layer."""

    needs_params: bool = False
    """Whether the rule modifies weights (and so needs a :class:`~relprop.layers.Linear`)."""

    def relevance(
        self,
        layer: Layer,
        x: Array,
        out: Array,
        R: Array,
        xp: ModuleType,
        *,
        nonnegative: bool = False,
    ) -> Array:
        """Relevance at the input ``x`` of ``layer``.

        Parameters
        ----------
        layer
            The layer.
        x, out
            The layer's input and output in the forward pass.
        R
            Relevance at the output, shape of ``out``.
        xp
            The arrays' namespace.
        nonnegative
            ``x >= 0`` by construction (the previous layer is a ReLU): rules skip the
            terms of the negative part.
        """
        raise NotImplementedError

    def relevance_many(
        self, layer: Merge, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType
    ) -> list[Array]:
        """Relevance at each input of a layer with several inputs (sums, concatenation)."""
        raise TypeError(self.check(layer))

    def check(self, layer: Layer) -> str | None:
        """Why this rule cannot be used on ``layer``, or ``None``."""
        if isinstance(layer, Merge) and type(self).relevance_many is Rule.relevance_many:
            return (
                f"rule {self!r} cannot split relevance between the inputs of {layer!r}; use "
                "Norm (proportional to each input's contribution) or Gradient"
            )
        if self.needs_params and not isinstance(layer, Linear):
            return (
                f"rule {self!r} modifies weights and needs a linear layer with parameters "
                "(Dense, Conv); use Pass for element-wise layers and Epsilon or Norm for "
                "parameter-free ones"
            )
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class _ParamRule(Rule):
    """A rule with a stabiliser and optional zeroed parameters."""

    needs_params = True

    def __init__(self, stabilizer: Stabilizer, zero_params: str | Iterable[str] | None) -> None:
        self.stabilizer = _check_stabilizer(stabilizer, "stabilizer")
        self.zero_params = tuple(sorted(_zero_set(zero_params)))

    def relevance(
        self,
        layer: Layer,
        x: Array,
        out: Array,
        R: Array,
        xp: ModuleType,
        *,
        nonnegative: bool = False,
    ) -> Array:
        if not isinstance(layer, Linear):
            raise TypeError(self.check(layer))
        return self._linear_relevance(layer, x, out, R, xp, nonnegative)

    def _linear_relevance(
        self, layer: Linear, x: Array, out: Array, R: Array, xp: ModuleType, nonnegative: bool
    ) -> Array:
        raise NotImplementedError

    def _weight_bias(self, layer: Linear, xp: ModuleType) -> tuple[Array, Array | None]:
        weight = layer.weight
        if "weight" in self.zero_params:
            weight = layer.cached("zero-weight", lambda: xp.zeros_like(layer.weight))
        bias = None if "bias" in self.zero_params else layer.bias
        return weight, bias

    def _signed(
        self, layer: Linear, xp: ModuleType
    ) -> tuple[Array, Array | None, Array, Array | None]:
        """``(W+, b+, W-, b-)``, derived once per layer."""
        weight, bias = self._weight_bias(layer, xp)
        return layer.cached(
            ("signed", self.zero_params),
            lambda: (_pos(weight, xp), _pos(bias, xp), _neg(weight, xp), _neg(bias, xp)),
        )

    def _split(
        self,
        layer: Linear,
        x_pos: Array,
        x_neg: Array | None,
        w_pos_input: Array,
        w_neg_input: Array,
        bias: Array | None,
        R: Array,
        xp: ModuleType,
    ) -> Array:
        """:math:`x^+ A^\\top(R/s(z)) + x^- B^\\top(R/s(z))`, :math:`z = A x^+ + B x^- + b`."""
        z = layer.linear(x_pos, w_pos_input, bias, xp)
        if x_neg is not None:
            z = z + layer.linear(x_neg, w_neg_input, None, xp)
        s = R / stabilize(z, self.stabilizer, xp)
        result = x_pos * layer.transpose(s, w_pos_input, xp, x_pos.shape)
        if x_neg is not None:
            result = result + x_neg * layer.transpose(s, w_neg_input, xp, x_pos.shape)
        return result


def _input_parts(x: Array, xp: ModuleType, nonnegative: bool) -> tuple[Array, Array | None]:
    if nonnegative:
        return x, None
    return xp.clip(x, min=0.0), xp.clip(x, max=0.0)


class Epsilon(_ParamRule):
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
        super().__init__(epsilon, zero_params)

    def relevance(
        self,
        layer: Layer,
        x: Array,
        out: Array,
        R: Array,
        xp: ModuleType,
        *,
        nonnegative: bool = False,
    ) -> Array:
        if isinstance(layer, Linear) and self.zero_params:
            weight, bias = self._weight_bias(layer, xp)
            s = R / stabilize(layer.linear(x, weight, bias, xp), self.stabilizer, xp)
            return x * layer.transpose(s, weight, xp, x.shape)
        s = R / stabilize(out, self.stabilizer, xp)
        return x * layer.vjp(x, s, xp)

    def relevance_many(
        self, layer: Merge, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType
    ) -> list[Array]:
        s = R / stabilize(out, self.stabilizer, xp)
        return [x * g for x, g in zip(xs, layer.vjp_many(xs, s, xp), strict=True)]

    def __repr__(self) -> str:
        zero = f", zero_params={self.zero_params}" if self.zero_params else ""
        return f"{type(self).__name__}({self.stabilizer!r}{zero})"


class Norm(Epsilon):
    r"""Epsilon for parameter-free linear layers: :math:`x \odot J^\top(R / s(f(x)))`."""

    def __init__(self, stabilizer: Stabilizer = 1e-6) -> None:
        super().__init__(stabilizer)


class ZPlus(_ParamRule):
    r"""LRP-z+ (alpha=1, beta=0), for inputs of either sign.

    :math:`z = W^+x^+ + W^-x^- + b^+`,
    :math:`R_{in} = x^+ \odot W^{+\top}(R/s(z)) + x^- \odot W^{-\top}(R/s(z))`.
    """

    def __init__(
        self, stabilizer: Stabilizer = 1e-6, zero_params: str | Iterable[str] | None = None
    ):
        super().__init__(stabilizer, zero_params)

    def _linear_relevance(
        self, layer: Linear, x: Array, out: Array, R: Array, xp: ModuleType, nonnegative: bool
    ) -> Array:
        w_pos, b_pos, w_neg, _ = self._signed(layer, xp)
        x_pos, x_neg = _input_parts(x, xp, nonnegative)
        return self._split(layer, x_pos, x_neg, w_pos, w_neg, b_pos, R, xp)


class AlphaBeta(_ParamRule):
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
        super().__init__(stabilizer, zero_params)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def _linear_relevance(
        self, layer: Linear, x: Array, out: Array, R: Array, xp: ModuleType, nonnegative: bool
    ) -> Array:
        w_pos, b_pos, w_neg, b_neg = self._signed(layer, xp)
        x_pos, x_neg = _input_parts(x, xp, nonnegative)
        result = self.alpha * self._split(layer, x_pos, x_neg, w_pos, w_neg, b_pos, R, xp)
        if self.beta != 0.0:
            result = result - self.beta * self._split(
                layer, x_pos, x_neg, w_neg, w_pos, b_neg, R, xp
            )
        return result


class Gamma(_ParamRule):
    r"""Generalised LRP-gamma: positive contributions amplified by ``gamma``.

    With :math:`W_\uparrow = W + \gamma W^+`, :math:`W_\downarrow = W + \gamma W^-` (biases
    alike), :math:`z_p = W_\uparrow x^+ + W_\downarrow x^- + b_\uparrow`,
    :math:`z_n = W_\downarrow x^+ + W_\uparrow x^- + b_\downarrow` and the output
    :math:`z = Wx + b` choosing which applies:

    :math:`R_p = R\,[z > 0] / s(z_p)`, :math:`R_n = R\,[z < 0] / s(z_n)`,
    :math:`R_{in} = x^+ (W_\uparrow^\top R_p + W_\downarrow^\top R_n)
    + x^- (W_\downarrow^\top R_p + W_\uparrow^\top R_n)`.
    """

    def __init__(
        self,
        gamma: float = 0.25,
        stabilizer: Stabilizer = 1e-6,
        zero_params: str | Iterable[str] | None = None,
    ) -> None:
        if gamma < 0:
            raise ValueError(f"Gamma needs gamma >= 0; got {gamma}.")
        super().__init__(stabilizer, zero_params)
        self.gamma = float(gamma)

    def _up_down(
        self, layer: Linear, xp: ModuleType
    ) -> tuple[Array, Array | None, Array, Array | None]:
        weight, bias = self._weight_bias(layer, xp)
        w_pos, b_pos, w_neg, b_neg = self._signed(layer, xp)
        g = self.gamma

        def shifted(a: Array | None, part: Array) -> Array | None:
            return None if a is None else a + g * part

        return layer.cached(
            ("gamma", g, self.zero_params),
            lambda: (
                shifted(weight, w_pos),
                shifted(bias, b_pos),
                shifted(weight, w_neg),
                shifted(bias, b_neg),
            ),
        )

    def _linear_relevance(
        self, layer: Linear, x: Array, out: Array, R: Array, xp: ModuleType, nonnegative: bool
    ) -> Array:
        w_up, b_up, w_down, b_down = self._up_down(layer, xp)
        x_pos, x_neg = _input_parts(x, xp, nonnegative)
        zero = xp.zeros_like(R)
        z_p = layer.linear(x_pos, w_up, b_up, xp)
        z_n = layer.linear(x_pos, w_down, b_down, xp)
        if x_neg is not None:
            z_p = z_p + layer.linear(x_neg, w_down, None, xp)
            z_n = z_n + layer.linear(x_neg, w_up, None, xp)
        r_p = xp.where(out > 0, R, zero) / stabilize(z_p, self.stabilizer, xp)
        r_n = xp.where(out < 0, R, zero) / stabilize(z_n, self.stabilizer, xp)
        result = x_pos * (
            layer.transpose(r_p, w_up, xp, x.shape) + layer.transpose(r_n, w_down, xp, x.shape)
        )
        if x_neg is not None:
            result = result + x_neg * (
                layer.transpose(r_p, w_down, xp, x.shape) + layer.transpose(r_n, w_up, xp, x.shape)
            )
        return result


class ZBox(_ParamRule):
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
        both_scalar = isinstance(low, (int, float)) and isinstance(high, (int, float))
        if both_scalar and low > high:
            raise ValueError(f"ZBox needs low <= high; got low={low}, high={high}.")
        super().__init__(stabilizer, zero_params)
        self.low = low
        self.high = high

    def _linear_relevance(
        self, layer: Linear, x: Array, out: Array, R: Array, xp: ModuleType, nonnegative: bool
    ) -> Array:
        low = bound_like(self.low, x, xp, "ZBox low", "the input of the layer it explains")
        high = bound_like(self.high, x, xp, "ZBox high", "the input of the layer it explains")
        inverted = xp.any(low > high)
        if not is_traced(inverted) and bool(inverted):
            raise ValueError("ZBox needs low <= high everywhere; some low bound exceeds its high.")
        weight, bias = self._weight_bias(layer, xp)
        w_pos, b_pos, w_neg, b_neg = self._signed(layer, xp)
        z_x = layer.linear(x, weight, bias, xp) if self.zero_params else out
        z = z_x - layer.linear(low, w_pos, b_pos, xp) - layer.linear(high, w_neg, b_neg, xp)
        s = R / stabilize(z, self.stabilizer, xp)
        return (
            x * layer.transpose(s, weight, xp, x.shape)
            - low * layer.transpose(s, w_pos, xp, x.shape)
            - high * layer.transpose(s, w_neg, xp, x.shape)
        )


class WSquare(_ParamRule):
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
        super().__init__(stabilizer, zero_params)

    def _linear_relevance(
        self, layer: Linear, x: Array, out: Array, R: Array, xp: ModuleType, nonnegative: bool
    ) -> Array:
        weight, bias = self._weight_bias(layer, xp)
        w_sq, b_sq = layer.cached(
            ("square", self.zero_params),
            lambda: (weight**2, None if bias is None else bias**2),
        )
        z = layer.linear(xp.ones_like(x), w_sq, b_sq, xp)
        return layer.transpose(R / stabilize(z, self.stabilizer, xp), w_sq, xp, x.shape)


class Flat(_ParamRule):
    r"""LRP-flat: relevance spread evenly over the receptive field, :math:`1^\top(R / s(1^\top 1))`.

    All weights are taken as 1 and the bias as 0 (zennit's convention).
    """

    def __init__(
        self, stabilizer: Stabilizer = 1e-6, zero_params: str | Iterable[str] | None = None
    ):
        super().__init__(stabilizer, zero_params)

    def _linear_relevance(
        self, layer: Linear, x: Array, out: Array, R: Array, xp: ModuleType, nonnegative: bool
    ) -> Array:
        ones = layer.cached("ones", lambda: xp.ones_like(layer.weight))
        z = layer.linear(xp.ones_like(x), ones, None, xp)
        return layer.transpose(R / stabilize(z, self.stabilizer, xp), ones, xp, x.shape)


class Pass(Rule):
    """Relevance passes unchanged (element-wise layers; reshaped where the layer reshapes)."""

    def check(self, layer: Layer) -> str | None:
        if isinstance(layer, Linear):
            return (
                f"rule Pass cannot be used on the linear layer {layer!r}; use Epsilon or Gradient"
            )
        return super().check(layer)

    def relevance(
        self,
        layer: Layer,
        x: Array,
        out: Array,
        R: Array,
        xp: ModuleType,
        *,
        nonnegative: bool = False,
    ) -> Array:
        return R if tuple(R.shape) == tuple(x.shape) else xp.reshape(R, x.shape)


class Gradient(Rule):
    """Relevance times the layer's Jacobian, :math:`J^\\top R` (max pools, reshapes, ...)."""

    def relevance(
        self,
        layer: Layer,
        x: Array,
        out: Array,
        R: Array,
        xp: ModuleType,
        *,
        nonnegative: bool = False,
    ) -> Array:
        return layer.vjp(x, R, xp)

    def relevance_many(
        self, layer: Merge, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType
    ) -> list[Array]:
        return layer.vjp_many(xs, R, xp)
