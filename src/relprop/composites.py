"""Composites: which rule explains which layer.

A composite is a plain mapping from layer *types* to rules, with an optional special rule
for the first layer of some type, and overrides by layer name or index. The named
composites reproduce zennit's composites of the same name layer for layer:

=========================== ============== ============== ============== ==================
composite                   Dense          Convolution    first layer    always
=========================== ============== ============== ============== ==================
EpsilonPlus                 Epsilon        ZPlus          --             activations Pass
EpsilonPlusFlat             Epsilon        ZPlus          Flat (linear)  activations Pass
EpsilonAlpha2Beta1          Epsilon        AlphaBeta(2,1) --             activations Pass
EpsilonAlpha2Beta1Flat      Epsilon        AlphaBeta(2,1) Flat (linear)  activations Pass
EpsilonGammaBox(low, high)  Epsilon        Gamma(0.25)    ZBox (conv)    activations Pass
=========================== ============== ============== ============== ==================

The gradient family (zennit's explicit composites): ``GuidedBackprop``, ``DeconvNet`` and
``BetaSmooth`` change only the ReLUs' backward pass (everything else is the gradient);
``ExcitationBackprop`` is ZPlus on linear layers and Norm on sums and average pools, the
gradient elsewhere.

Layers no entry matches (reshapes, dropout, max pooling, user functions) get the
:class:`~relprop.rules.Gradient` rule, which is what an unhooked module does in zennit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, overload

from relprop._xp import Array
from relprop.canonizers import Canonizer, canonize
from relprop.interop._cache import as_model
from relprop.layers import (
    Activation,
    Add,
    Affine,
    AvgPool,
    BatchNorm,
    Convolution,
    Dense,
    Lambda,
    Layer,
    LayerNorm,
    Linear,
    MatMul,
    MaxPool,
    Multiply,
    ReLU,
    RMSNorm,
)
from relprop.layers import Softmax as SoftmaxLayer
from relprop.model import Model
from relprop.rules import (
    AlphaBeta,
    Detach,
    Epsilon,
    Flat,
    FrozenNorm,
    Gamma,
    Gradient,
    Norm,
    Pass,
    ReLUBetaSmooth,
    ReLUDeconvNet,
    ReLUGuidedBackprop,
    Rule,
    Softmax,
    Stabilizer,
    Uniform,
    ZBox,
    ZPlus,
)

__all__ = [
    "AttnLRP",
    "BetaSmooth",
    "CPLRP",
    "Composite",
    "DeconvNet",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "ExcitationBackprop",
    "GuidedBackprop",
    "LayerMap",
    "Mixed",
    "uniform",
]

LayerTypes = type | tuple[type, ...]
LayerMap = Mapping[LayerTypes, Rule] | Sequence[tuple[LayerTypes, Rule]]
"""Layer types to rules: a dict ``{rp.Dense: Epsilon()}`` or ``[(types, rule), ...]``."""


def _pairs(layer_map: LayerMap | None) -> list[tuple[tuple[type, ...], Rule]]:
    if layer_map is None:
        return []
    items = layer_map.items() if isinstance(layer_map, Mapping) else layer_map
    pairs = []
    for types, rule in items:
        types = types if isinstance(types, tuple) else (types,)
        for kind in types:
            if not (isinstance(kind, type) and issubclass(kind, Layer)):
                raise TypeError(
                    f"layer maps take relprop layer types (rp.Dense, rp.layers.Activation, ...) "
                    f"as keys; got {kind!r}."
                )
        if not isinstance(rule, Rule):
            raise TypeError(f"layer maps take relprop rules as values; got {rule!r} for {types}.")
        pairs.append((types, rule))
    return pairs


def _is_activation(layer: Layer) -> bool:
    return isinstance(layer, Activation) or (isinstance(layer, Lambda) and layer.elementwise)


class Composite:
    """Rules for a model's layers: by name, by first occurrence of a type, by type.

    Precedence: ``name_map`` (a layer name or index) > ``first_map`` (the first layer,
    in forward order, matching one of its types; a name override of that layer uses it
    up, as in zennit) > ``layer_map`` (first matching entry) >
    activations :class:`~relprop.rules.Pass` > everything else
    :class:`~relprop.rules.Gradient`.

    Parameters
    ----------
    layer_map
        Layer types to rules, e.g. ``{rp.Dense: Epsilon(0.25)}``.
    first_map
        Like ``layer_map``, applied only to the first layer that matches it.
    name_map
        Layer name (``"fc1"``, ``"0"``) or index (``0``, ``-1``) to rule.
    canonizers
        Rewrites applied to the model before rules are chosen, e.g.
        ``[rp.canonizers.MergeBatchNorm()]`` (names and indices then refer to the
        rewritten model). The user's model is never modified.

    Examples
    --------
    >>> import relprop as rp
    >>> composite = Composite(layer_map={rp.Dense: rp.rules.Epsilon(0.1)},
    ...                       first_map={rp.Dense: rp.rules.Flat()})
    """

    def __init__(
        self,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        self.canonizers = tuple(canonizers)
        for canonizer in self.canonizers:
            if not isinstance(canonizer, Canonizer):
                raise TypeError(f"canonizers must be relprop Canonizers; got {canonizer!r}.")
        self.layer_map = _pairs(layer_map)
        self.first_map = _pairs(first_map)
        self.name_map = dict(name_map or {})
        for key, rule in self.name_map.items():
            if not isinstance(rule, Rule):
                raise TypeError(
                    f"name_map takes relprop rules as values; got {rule!r} for {key!r}."
                )

    @overload
    def rules(self, model: Any, layers: None = None) -> dict[str, Rule]: ...
    @overload
    def rules(self, model: Sequence[str], layers: Sequence[Layer]) -> list[Rule]: ...
    def rules(
        self, model: Any, layers: Sequence[Layer] | None = None
    ) -> dict[str, Rule] | list[Rule]:
        """The rule each layer gets: of a model after this composite's canonizers, or of
        parallel names and layers as they are.

        Parameters
        ----------
        model
            An ``rp.Sequential`` / ``rp.Graph`` (or a ``torch.nn.Module``, converted as
            ``rp.lrp`` converts it); or, with ``layers``, the layer names.
        layers
            Only with names: the layers, one per name (no canonizers are applied).

        Returns
        -------
        dict or list
            For a model: layer name to rule, for the model ``rp.lrp`` explains (canonized:
            batch norms ``MergeBatchNorm`` folded are absent, and their linear layers are
            the fused ones; ``rp.canonizers.canonize(model, composite.canonizers).aliases``
            says where each went). For names and layers: one rule per layer, in order.

        Examples
        --------
        >>> import numpy as np, relprop as rp
        >>> bn = rp.BatchNorm1d(np.zeros(2), np.ones(2))
        >>> model = rp.Sequential([("fc", rp.Dense(np.eye(2))), ("bn", bn), ("relu", rp.ReLU())])
        >>> rp.composites.EpsilonPlus(canonizers=[rp.canonizers.MergeBatchNorm()]).rules(model)
        {'fc': Epsilon(1e-06), 'relu': Pass()}
        """
        if layers is None:
            used = canonize(as_model(model), self.canonizers)
            return dict(zip(used.names, self.rules(used.names, used.layers), strict=True))
        if isinstance(model, Model):
            raise TypeError(
                "composite.rules takes a model alone, composite.rules(model), or names and "
                "layers, composite.rules(names, layers); got a model and layers."
            )
        return [Pass() if rule is None and _is_activation(layer) else rule or Gradient()
                for rule, layer in zip(self.matched(model, layers), layers, strict=True)]

    def matched(self, names: Sequence[str], layers: Sequence[Layer]) -> list[Rule | None]:
        """The rule the composite's own maps give each layer (``None``: none matches, so
        the defaults apply: Pass for activations, Gradient otherwise)."""
        by_index = self._name_overrides(names)
        first = next(
            (i for i, layer in enumerate(layers) if _match(self.first_map, layer) is not None),
            None,
        )
        chosen: list[Rule | None] = []
        for index, layer in enumerate(layers):
            rule = by_index.get(index)
            if rule is None and index == first:
                rule = _match(self.first_map, layer)
            if rule is None:
                rule = _match(self.layer_map, layer)
            chosen.append(rule)
        return chosen

    def _name_overrides(self, names: Sequence[str]) -> dict[int, Rule]:
        overrides = {}
        for key, rule in self.name_map.items():
            if isinstance(key, int) and not isinstance(key, bool):
                if not -len(names) <= key < len(names):
                    raise IndexError(
                        f"name_map index {key} is out of range for a model of {len(names)} layers."
                    )
                overrides[key % len(names)] = rule
            elif key in names:
                overrides[names.index(key)] = rule
            else:
                raise KeyError(
                    f"name_map names layer {key!r}, which the model lacks; its names are "
                    f"{list(names)}."
                )
        return overrides

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer_map={self.layer_map}, first_map={self.first_map})"


def _match(pairs: Iterable[tuple[tuple[type, ...], Rule]], layer: Layer) -> Rule | None:
    return next((rule for types, rule in pairs if isinstance(layer, types)), None)


def layer_map_base(stabilizer: Stabilizer = 1e-6) -> list[tuple[tuple[type, ...], Rule]]:
    """The entries every named composite ends with (zennit's ``layer_map_base``):
    activations Pass, sums and average pools Norm, batch norms Pass; so do element-wise
    affine maps with constants (:class:`~relprop.layers.Affine`)."""
    return [
        ((Activation,), Pass()),
        ((Add,), Norm(stabilizer)),
        ((AvgPool,), Norm(stabilizer)),
        ((BatchNorm,), Pass()),
        ((Affine,), Pass()),
    ]


def uniform(rule: Rule, canonizers: Sequence[Canonizer] = ()) -> Composite:
    """One rule for every linear layer (dense, conv), and :func:`layer_map_base` for the rest.

    This is what ``rp.lrp(..., rule=rule)`` uses (without canonizers).
    """
    return Composite(layer_map=[((Linear,), rule), *layer_map_base()], canonizers=canonizers)


class _Named(Composite):
    """A named composite: the user's maps first, then :func:`layer_map_base`, then the
    composite's own rules for convolutions and dense layers."""

    def __init__(
        self,
        own_layer_map: LayerMap,
        own_first_map: LayerMap | None,
        stabilizer: Stabilizer,
        layer_map: LayerMap | None,
        first_map: LayerMap | None,
        name_map: Mapping[str | int, Rule] | None,
        canonizers: Sequence[Canonizer],
    ) -> None:
        super().__init__(name_map=name_map, canonizers=canonizers)
        self.layer_map = _pairs(layer_map) + layer_map_base(stabilizer) + _pairs(own_layer_map)
        self.first_map = _pairs(first_map) + _pairs(own_first_map)


_OPTIONS_DOC = """
    Parameters
    ----------
    epsilon
        Epsilon of the dense layers' rule.
    stabilizer
        Stabiliser of every other rule.
    layer_map, first_map, name_map, canonizers
        As for :class:`Composite`; the user's ``layer_map`` and ``first_map`` entries
        come before the composite's own.
    zero_params
        ``"bias"`` to explain every linear layer without its bias.
"""


class EpsilonPlus(_Named):
    __doc__ = "Epsilon for dense layers, ZPlus for convolutions (zennit's ``EpsilonPlus``).\n"
    __doc__ += _OPTIONS_DOC

    def __init__(
        self,
        epsilon: Stabilizer = 1e-6,
        stabilizer: Stabilizer = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        zero_params: str | Iterable[str] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        own = [
            (Convolution, ZPlus(stabilizer, zero_params=zero_params)),
            (Dense, Epsilon(epsilon, zero_params=zero_params)),
        ]
        super().__init__(own, None, stabilizer, layer_map, first_map, name_map, canonizers)


class EpsilonAlpha2Beta1(_Named):
    __doc__ = "Epsilon for dense layers, AlphaBeta(2, 1) for convolutions.\n" + _OPTIONS_DOC

    def __init__(
        self,
        epsilon: Stabilizer = 1e-6,
        stabilizer: Stabilizer = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        zero_params: str | Iterable[str] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        own = [
            (Convolution, AlphaBeta(2.0, 1.0, stabilizer, zero_params=zero_params)),
            (Dense, Epsilon(epsilon, zero_params=zero_params)),
        ]
        super().__init__(own, None, stabilizer, layer_map, first_map, name_map, canonizers)


class EpsilonPlusFlat(_Named):
    __doc__ = "EpsilonPlus with Flat for the first linear layer (dense or conv).\n" + _OPTIONS_DOC

    def __init__(
        self,
        epsilon: Stabilizer = 1e-6,
        stabilizer: Stabilizer = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        zero_params: str | Iterable[str] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        own = [
            (Convolution, ZPlus(stabilizer, zero_params=zero_params)),
            (Dense, Epsilon(epsilon, zero_params=zero_params)),
        ]
        first = [(Linear, Flat(stabilizer, zero_params=zero_params))]
        super().__init__(own, first, stabilizer, layer_map, first_map, name_map, canonizers)


class EpsilonAlpha2Beta1Flat(_Named):
    __doc__ = "EpsilonAlpha2Beta1 with Flat for the first linear layer.\n" + _OPTIONS_DOC

    def __init__(
        self,
        epsilon: Stabilizer = 1e-6,
        stabilizer: Stabilizer = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        zero_params: str | Iterable[str] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        own = [
            (Convolution, AlphaBeta(2.0, 1.0, stabilizer, zero_params=zero_params)),
            (Dense, Epsilon(epsilon, zero_params=zero_params)),
        ]
        first = [(Linear, Flat(stabilizer, zero_params=zero_params))]
        super().__init__(own, first, stabilizer, layer_map, first_map, name_map, canonizers)


class EpsilonGammaBox(_Named):
    """Epsilon for dense layers, Gamma for convolutions, ZBox for the first convolution.

    ``low`` and ``high`` bound the input (pixels); they are required. As in zennit, the
    ZBox rule applies only to a first *convolution*: a dense-only network gets none.
    ``gamma`` is the convolutions' Gamma; the other options are as for
    :class:`EpsilonPlus`.
    """

    def __init__(
        self,
        low: float | Array | None = None,
        high: float | Array | None = None,
        epsilon: Stabilizer = 1e-6,
        gamma: float = 0.25,
        stabilizer: Stabilizer = 1e-6,
        layer_map: LayerMap | None = None,
        first_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        zero_params: str | Iterable[str] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        box = ZBox(low, high, stabilizer, zero_params=zero_params)
        own = [
            (Convolution, Gamma(gamma, stabilizer, zero_params=zero_params)),
            (Dense, Epsilon(epsilon, zero_params=zero_params)),
        ]
        first = [(Convolution, box)]
        super().__init__(own, first, stabilizer, layer_map, first_map, name_map, canonizers)


class _GradientFamily(Composite):
    """Composites of the gradient family: the user's layer map, the composite's own
    entries, and every other activation Gradient (zennit hooks nothing else, so linear
    layers, pools and the rest backpropagate their plain gradient). Max pools route a
    tie to its first maximum, as torch's gradient does: these composites pass relevance
    into units a ReLU switched off, whose zeros tie in the pools."""

    def __init__(
        self,
        own_layer_map: LayerMap,
        layer_map: LayerMap | None,
        name_map: Mapping[str | int, Rule] | None,
        canonizers: Sequence[Canonizer],
    ) -> None:
        super().__init__(name_map=name_map, canonizers=canonizers)
        self.layer_map = (_pairs(layer_map) + _pairs(own_layer_map)
                          + [((Activation,), Gradient()), ((MaxPool,), Gradient(ties="first"))])


class DeconvNet(_GradientFamily):
    """DeconvNet (Zeiler & Fergus 2014; zennit's ``DeconvNet``): the gradient with every
    ReLU's backward pass :class:`~relprop.rules.ReLUDeconvNet`.

    Parameters
    ----------
    layer_map, name_map, canonizers
        As for :class:`Composite`; the user's ``layer_map`` entries come first.
    """

    def __init__(
        self,
        layer_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        super().__init__([(ReLU, ReLUDeconvNet())], layer_map, name_map, canonizers)


class GuidedBackprop(_GradientFamily):
    """Guided Backpropagation (Springenberg et al. 2015; zennit's ``GuidedBackprop``): the
    gradient with every ReLU's backward pass :class:`~relprop.rules.ReLUGuidedBackprop`.

    Parameters
    ----------
    layer_map, name_map, canonizers
        As for :class:`DeconvNet`.
    """

    def __init__(
        self,
        layer_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        super().__init__([(ReLU, ReLUGuidedBackprop())], layer_map, name_map, canonizers)


class BetaSmooth(_GradientFamily):
    """The gradient with every ReLU's derivative replaced by softplus's,
    :math:`\\sigma(\\beta x)` (Dombrowski et al. 2019; zennit's ``BetaSmooth``).

    Parameters
    ----------
    beta_smooth
        :math:`\\beta` of :class:`~relprop.rules.ReLUBetaSmooth` (default 10).
    layer_map, name_map, canonizers
        As for :class:`DeconvNet`.
    """

    def __init__(
        self,
        beta_smooth: float = 10.0,
        layer_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        super().__init__([(ReLU, ReLUBetaSmooth(beta_smooth))], layer_map, name_map, canonizers)


class ExcitationBackprop(_GradientFamily):
    """Excitation Backprop (Zhang et al. 2016; zennit's ``ExcitationBackprop``): ZPlus on
    every linear layer, Norm on sums and average pools, the plain gradient elsewhere
    (activations included).

    Parameters
    ----------
    stabilizer
        Stabiliser of ZPlus and Norm.
    layer_map, name_map, canonizers
        As for :class:`DeconvNet`.
    zero_params
        ``"bias"`` to explain the linear layers without their biases.
    """

    def __init__(
        self,
        stabilizer: Stabilizer = 1e-6,
        layer_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        zero_params: str | Iterable[str] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        own = [
            (Add, Norm(stabilizer)),
            (AvgPool, Norm(stabilizer)),
            (Linear, ZPlus(stabilizer, zero_params=zero_params)),
        ]
        super().__init__(own, layer_map, name_map, canonizers)


class _Transformer(Composite):
    """A transformer composite: the user's maps first, then LRP-epsilon for linear layers,
    sums and element-wise affine maps, the normalisations' scale frozen, activations Pass,
    and the composite's rules for the softmax and the products."""

    def __init__(
        self,
        epsilon: Stabilizer = 1e-12,
        layer_map: LayerMap | None = None,
        name_map: Mapping[str | int, Rule] | None = None,
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        own: list[tuple[tuple[type, ...], Rule]] = [
            ((Linear,), Epsilon(epsilon)),
            ((Add, Affine, AvgPool), Norm(epsilon)),
            ((LayerNorm, RMSNorm), FrozenNorm(epsilon)),
            ((Activation, BatchNorm), Pass()),
            ((SoftmaxLayer,), Softmax()),
            ((Multiply, MatMul), self.products(epsilon)),
        ]
        super().__init__(layer_map=_pairs(layer_map) + own, name_map=name_map,
                         canonizers=canonizers)

    @staticmethod
    def products(epsilon: Stabilizer) -> Rule:
        """The rule of the products of attention and gated MLPs."""
        raise NotImplementedError


_TRANSFORMER_DOC = """
    Parameters
    ----------
    epsilon
        Stabiliser of every rule that divides (AttnLRP and LXT use 0; the default only
        keeps exact zeros finite).
    layer_map, name_map, canonizers
        As for :class:`Composite`; the user's ``layer_map`` entries come first.
"""


class AttnLRP(_Transformer):
    __doc__ = (
        "AttnLRP (Achtibat et al. 2024), as LXT 2.1 computes it: LRP-epsilon for dense "
        "layers, sums\nand constant scales or masks; the softmax rule (Softmax); the uniform "
        "rule for the products\nof attention and gated MLPs (Uniform: half to each factor); "
        "LayerNorm and RMSNorm with their\nscale frozen (FrozenNorm); activations Pass.\n"
        + _TRANSFORMER_DOC
    )

    @staticmethod
    def products(epsilon: Stabilizer) -> Rule:
        return Uniform(epsilon)


class CPLRP(_Transformer):
    __doc__ = (
        "CP-LRP (Ali et al. 2022), as LXT 2.1 computes it: AttnLRP's rules, but the first "
        "factor of\nevery product held constant (Detach(0)): attention weights in A V, the "
        "gate in act(gate) * up,\nso attention passes relevance only to the values.\n"
        + _TRANSFORMER_DOC
    )

    @staticmethod
    def products(epsilon: Stabilizer) -> Rule:
        return Detach(0, epsilon=epsilon)


class Mixed(Composite):
    """Several composites at once, the first one whose maps match a layer deciding its
    rule (zennit's ``MixedComposite``); the canonizers of all of them apply, in order.

    Parameters
    ----------
    composites
        The composites, highest precedence first.

    Examples
    --------
    >>> import relprop as rp
    >>> mixed = Mixed([rp.composites.Composite(name_map={"fc2": rp.rules.Epsilon(0.5)}),
    ...                rp.composites.EpsilonPlus()])
    """

    def __init__(self, composites: Sequence[Composite]) -> None:
        composites = tuple(composites)
        for composite in composites:
            if not isinstance(composite, Composite):
                raise TypeError(f"Mixed takes relprop composites; got {composite!r}.")
        super().__init__(canonizers=[c for composite in composites for c in composite.canonizers])
        self.composites = composites

    def matched(self, names: Sequence[str], layers: Sequence[Layer]) -> list[Rule | None]:
        each = [composite.matched(names, layers) for composite in self.composites]
        return [next((rule for rule in rules if rule is not None), None)
                for rules in zip(*each, strict=True)] if each else [None] * len(layers)

    def __repr__(self) -> str:
        return f"Mixed({list(self.composites)!r})"
