r"""LRP rules, written once against the array API standard.

Every rule maps the relevance ``R`` at a layer's output to relevance at its input. The
rules of linear layers (dense, convolutions) are data: terms of modified forward passes
in groups, which one engine (:mod:`relprop.rules.terms`) turns into the forward passes
and their transposes ``W^T(v)``. A user's rule is written the same way
(:class:`TermRule`, :class:`Term`, :class:`Group` and :mod:`relprop.rules.modifiers`):

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

and, for ReLUs only, the backward passes of DeconvNet, Guided Backpropagation and the
beta-smooth surrogate gradient (:mod:`relprop.rules.relu`); for transformers
(:mod:`relprop.rules.transformer`), AttnLRP's Softmax, Uniform (products) and FrozenNorm
(LayerNorm, RMSNorm) rules and CP-LRP's Detach.

with :math:`a^+ = \max(a, 0)`, :math:`a^- = \min(a, 0)` and the stabiliser
:math:`s(z) = z + \epsilon\,\mathrm{sgn}(z)`, :math:`\mathrm{sgn}(0) = +1`.
Terms that are identically zero because the layer's input is non-negative (it follows a
ReLU) are skipped. The modified parameters (and :func:`relprop.lrp`'s canonized models)
are kept between calls while the parameters provably have not changed;
:func:`clear_cache` releases them.
"""

from relprop.rules import modifiers
from relprop.rules.base import Gradient, Pass, Rule, Stabilizer, stabilize
from relprop.rules.linear import AlphaBeta, Epsilon, Flat, Gamma, Norm, WSquare, ZBox, ZPlus
from relprop.rules.relu import ReLUBetaSmooth, ReLUDeconvNet, ReLUGuidedBackprop
from relprop.rules.terms import Group, Term, TermRule, clear_cache
from relprop.rules.transformer import Detach, FrozenNorm, Softmax, Uniform

__all__ = [
    "AlphaBeta",
    "Detach",
    "Epsilon",
    "Flat",
    "FrozenNorm",
    "Gamma",
    "Gradient",
    "Group",
    "Norm",
    "Pass",
    "ReLUBetaSmooth",
    "ReLUDeconvNet",
    "ReLUGuidedBackprop",
    "Rule",
    "Softmax",
    "Stabilizer",
    "Term",
    "TermRule",
    "Uniform",
    "WSquare",
    "ZBox",
    "ZPlus",
    "clear_cache",
    "modifiers",
    "stabilize",
]
