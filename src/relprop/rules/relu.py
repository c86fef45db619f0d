r"""Rules that change how relevance (a gradient) passes a ReLU: the backward passes of
DeconvNet, Guided Backpropagation and the beta-smooth surrogate gradient, in zennit's
definitions. Each applies to :class:`~relprop.ReLU` layers only.

=================  ==========================================================
ReLUDeconvNet      :math:`R_{in} = \max(R, 0)` (the forward mask ignored)
ReLUGuidedBackprop :math:`R_{in} = \max(R, 0)\,[x > 0]`
ReLUBetaSmooth     :math:`R_{in} = \sigma(\beta x)\, R` (softplus's derivative)
=================  ==========================================================
"""

from __future__ import annotations

from types import ModuleType

from relprop._xp import Array
from relprop.layers import Layer, ReLU, Sigmoid
from relprop.rules.base import Rule

__all__ = ["ReLUBetaSmooth", "ReLUDeconvNet", "ReLUGuidedBackprop"]


class _ReLURule(Rule):
    def check(self, layer: Layer) -> str | None:
        if not isinstance(layer, ReLU):
            return (f"rule {self!r} changes the backward pass of a ReLU and applies to "
                    f"rp.ReLU layers only, not {layer!r}")
        return super().check(layer)


class ReLUDeconvNet(_ReLURule):
    """DeconvNet's ReLU (Zeiler & Fergus 2014): the positive part of the relevance passes,
    whatever the forward pass did: :math:`R_{in} = \\max(R, 0)`.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> from relprop.layers import ReLU
    >>> ReLUDeconvNet().relevance(ReLU(), xp.asarray([[-1.0, 2.0]]), None,
    ...                           xp.asarray([[3.0, -4.0]]), xp).tolist()
    [[3.0, 0.0]]
    """

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        return xp.clip(R, min=0.0)


class ReLUGuidedBackprop(_ReLURule):
    """Guided Backpropagation's ReLU (Springenberg et al. 2015): the ReLU's gradient, and
    only its positive part, :math:`R_{in} = \\max(R, 0)\\,[x > 0]`.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> from relprop.layers import ReLU
    >>> ReLUGuidedBackprop().relevance(ReLU(), xp.asarray([[-1.0, 2.0, 1.0]]), None,
    ...                                xp.asarray([[3.0, 4.0, -5.0]]), xp).tolist()
    [[0.0, 4.0, 0.0]]
    """

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        return xp.where((x > 0) & (R > 0), R, xp.zeros_like(R))


class ReLUBetaSmooth(_ReLURule):
    r"""The ReLU's gradient replaced by softplus's, :math:`R_{in} = \sigma(\beta x)\, R`
    (Dombrowski et al. 2019): a smooth surrogate for second-order gradients.

    Parameters
    ----------
    beta_smooth
        :math:`\beta`; larger is closer to the ReLU's step (zennit's default 10).

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> from relprop.layers import ReLU
    >>> ReLUBetaSmooth(10.0).relevance(ReLU(), xp.asarray([[0.0]]), None,
    ...                                xp.asarray([[2.0]]), xp).tolist()
    [[1.0]]
    """

    def __init__(self, beta_smooth: float = 10.0) -> None:
        if beta_smooth <= 0:
            raise ValueError(f"ReLUBetaSmooth needs beta_smooth > 0; got {beta_smooth}.")
        self.beta_smooth = float(beta_smooth)

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        return Sigmoid().forward(self.beta_smooth * x, xp) * R
