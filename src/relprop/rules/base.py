"""What every rule is: a map from the relevance at a layer's output to its input
(:class:`Rule`), the stabiliser of denominators, and the rules that modify nothing:
:class:`Pass` (element-wise layers) and :class:`Gradient` (the layer's Jacobian)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

from array_api_compat import device

from relprop._xp import Array, is_traced, library_of
from relprop.layers import Layer, Linear, MaxPool
from relprop.layers.merge import Merge

__all__ = ["Gradient", "Pass", "Rule", "Stabilizer", "check_stabilizer", "stabilize"]

Stabilizer = float | Callable[[Array], Array]


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
    if is_traced(z) or library_of(z) == "jax":  # XLA fuses it however it is written
        return xp.where(z >= 0, z + epsilon, z - epsilon)
    positive, negative = _signed(epsilon, z, xp)
    shifted = xp.where(z >= 0, positive, negative)
    if getattr(z, "requires_grad", False):  # torch's autograd records z
        return z + shifted
    shifted += z  # z + shifted in the array where made: one new array (and the mask)
    return shifted


_SIGNED: dict[tuple[float, str, str, str], tuple[Array, Array]] = {}


def _signed(epsilon: float, z: Array, xp: ModuleType) -> tuple[Array, Array]:
    """``epsilon`` and ``-epsilon`` as 0-d arrays of ``z``'s dtype and device (kept: making
    them costs more than the addition on a small layer)."""
    key = (epsilon, str(z.dtype), str(device(z)), xp.__name__)
    pair = _SIGNED.get(key)
    if pair is None:
        value = xp.asarray(epsilon, dtype=z.dtype, device=device(z))
        pair = (value, -value)
        if len(_SIGNED) < 64:
            _SIGNED[key] = pair
    return pair


def check_stabilizer(value: Stabilizer, name: str) -> Stabilizer:
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python float or a callable; got {type(value).__name__}.")
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}.")
    return float(value)


class Rule:
    """Base class of the rules: maps output relevance to input relevance for one layer."""

    needs_params: bool = False
    """Whether the rule modifies weights (and so needs a :class:`~relprop.layers.Linear`)."""

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
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

    def absorbed(self, layer: Layer, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType,
                 *, nonnegative: bool = False) -> tuple[Array, Array] | None:
        r"""The relevance this rule keeps back at ``layer``, per sample: ``(bias,
        stabiliser)``, the shares its biases and its stabiliser absorb (what
        :func:`relprop.lrp`'s ``report`` shows), or ``None`` (the default) where the rule
        makes no such claim (the gradient; a rule of a user's that does not say).

        ``xs`` are the layer's inputs, ``out`` its output and ``R`` the relevance there. A
        rule that conserves relevance, :math:`\sum R_{in} = \sum R`, returns zeros
        (:class:`Pass`); the report's error column is what neither share explains.
        """
        return None

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


class Pass(Rule):
    """Relevance passes unchanged (element-wise layers; reshaped where the layer reshapes)."""

    def check(self, layer: Layer) -> str | None:
        if isinstance(layer, Linear):
            return (
                f"rule Pass cannot be used on the linear layer {layer!r}; use Epsilon or Gradient"
            )
        return super().check(layer)

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        return R if tuple(R.shape) == tuple(x.shape) else xp.reshape(R, x.shape)

    def absorbed(self, layer: Layer, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType,
                 *, nonnegative: bool = False) -> tuple[Array, Array] | None:
        zero = xp.zeros((out.shape[0],), dtype=out.dtype, device=device(out))
        return zero, zero  # relevance only moves


class Gradient(Rule):
    """Relevance times the layer's Jacobian, :math:`J^\top R` (max pools, reshapes, ...).

    Parameters
    ----------
    ties
        Where a max pool's window has tied maxima: ``"split"`` (default) shares the
        relevance evenly; ``"first"`` gives it to the first maximum in row-major window
        order, as torch's autograd (and so zennit) does.
    """

    def __init__(self, ties: str = "split") -> None:
        if ties not in ("split", "first"):
            raise ValueError(f"Gradient ties must be 'split' or 'first'; got {ties!r}.")
        self.ties = ties

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        if self.ties != "split" and isinstance(layer, MaxPool):
            return layer.vjp(x, R, xp, ties=self.ties)
        return layer.vjp(x, R, xp)

    def relevance_many(
        self, layer: Merge, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType
    ) -> list[Array]:
        return layer.vjp_many(xs, R, xp)

    def __repr__(self) -> str:
        return "Gradient()" if self.ties == "split" else f"Gradient(ties={self.ties!r})"
