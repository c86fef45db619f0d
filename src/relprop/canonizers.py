"""Canonizers: rewrite a model into an equivalent one that LRP explains better.

A canonizer is a pure function of the model: it returns a new model and never touches the
one it is given (nor the arrays it shares with a torch module). Because it is pure,
:func:`relprop.lrp` canonizes each model once (:func:`canonized`) and reuses the result
while the model's parameters provably have not changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType

from relprop._derived import cached
from relprop._xp import Array
from relprop.layers import (
    Affine,
    BatchNorm,
    Convolution,
    Layer,
    Linear,
)
from relprop.model import INPUT, Alias, Graph, Model, Node, Sequential, with_aliases
from relprop.ops._args import normalize_pads

__all__ = ["Canonizer", "MergeBatchNorm", "canonize", "canonized"]

CANONIZED_PER_MODEL = 2
"""Canonized versions :func:`canonized` keeps per model (one per set of canonizers)."""


class Canonizer:
    """Base class: ``apply(model)`` returns an equivalent, rewritten model."""

    cacheable: bool = True
    """Whether ``apply`` depends on nothing but the model's structure, layer settings and
    parameter values, so that :func:`canonized` may reuse its result while the
    parameters are unchanged. Set it to ``False`` in a canonizer that reads anything
    else; equal canonizers (``==``) share cached results, so give a canonizer with
    settings an ``__eq__`` and ``__hash__`` (as :class:`MergeBatchNorm` has), or one
    instance is cached apart from every other."""

    def apply(self, model: Model) -> Model:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def canonize(model: Model, canonizers: Sequence[Canonizer]) -> Model:
    """``model`` rewritten by each canonizer in turn.

    The result's :attr:`~relprop.model.Model.aliases` say where each layer folded away
    went, by its name in ``model`` (``MergeBatchNorm`` records its batch norms there).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> bn = rp.BatchNorm1d(np.zeros(2), np.full(2, 4.0 - 1e-5))
    >>> model = rp.Sequential([rp.Dense(np.eye(2)), bn])
    >>> fused = canonize(model, [MergeBatchNorm()])
    >>> fused, fused(np.ones((1, 2))).round(6).tolist()
    (Sequential(
      (0): Dense(2 -> 2)
    ), [[0.5, 0.5]])
    >>> dict(fused.aliases)  # the batch norm's output is now the fused layer's output
    {'1': ('output', '0')}
    """
    for canonizer in canonizers:
        if not isinstance(canonizer, Canonizer):
            raise TypeError(f"canonizers must be relprop Canonizers; got {canonizer!r}.")
        model = canonizer.apply(model)
    return model


def _parameters(model: Model) -> list[Array | None]:
    return [value for layer in model.layers for value in layer.params().values()]


def canonized(model: Model, canonizers: Sequence[Canonizer]) -> Model:
    """:func:`canonize`, kept per model and reused while its parameters are unchanged.

    What :func:`relprop.lrp` calls: the canonized model is cached by the rule engine's
    cache of derived values (:func:`relprop._derived.cached`), weakly keyed on
    ``model`` and valid while the version token of every parameter of ``model`` is the
    same (torch tensors' in-place write counter, JAX arrays' identity), so the fused
    layers, and the modified weights the rules keep for them, are made once. A model of
    NumPy, CuPy or array-api-strict arrays (no write counter) or of traced JAX values is
    canonized on every call; so is any list of canonizers with one whose ``cacheable``
    is ``False`` or that cannot be hashed. At most :data:`CANONIZED_PER_MODEL` sets of
    canonizers are kept per model; :func:`relprop.rules.clear_cache` forgets them.
    Layer settings (a batch norm's ``eps``) are taken as fixed: a relprop layer is not
    changed after it is built (a torch module's changes make a new model,
    :func:`relprop.lrp`).

    Parameters
    ----------
    model
        The model to canonize (never modified).
    canonizers
        Applied in turn, as by :func:`canonize`.

    Returns
    -------
    Model
        ``canonize(model, canonizers)``, the same object as long as it is kept.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> bn = rp.BatchNorm1d(np.zeros(2), np.full(2, 4.0 - 1e-5))
    >>> model = rp.Sequential([rp.Dense(np.eye(2)), bn])
    >>> canonized(model, [MergeBatchNorm()]).names  # NumPy: canonized anew on every call
    ('0',)
    """
    key = ("canonized", tuple(canonizers))
    try:
        hash(key)
    except TypeError:
        return canonize(model, canonizers)
    if not all(getattr(c, "cacheable", False) for c in canonizers):
        return canonize(model, canonizers)
    value: Model = cached(model, key, _parameters(model), lambda: canonize(model, canonizers),
                          lambda m: m.named_params().values(), limit=CANONIZED_PER_MODEL)
    return value


def _per_channel(a: Array, ndim: int, axis: int, xp: ModuleType) -> Array:
    shape = [1] * ndim
    shape[axis] = int(a.shape[0])
    return xp.reshape(a, tuple(shape))


def _scale_shift(
    layer: Layer, linear: Linear, channels: int, xp: ModuleType
) -> tuple[Array, Array] | None:
    """``(a, c)`` with ``layer(y) = a y + c`` per channel, for a batch norm or a per-channel
    :class:`Affine` next to ``linear``; ``None`` for anything else."""
    if isinstance(layer, BatchNorm):
        return layer.scale_shift(xp)
    if isinstance(layer, Affine):
        found = layer.per_channel(channels, linear.channel_axis, xp)
        if found is not None and found[0].dtype == linear.weight.dtype:
            return found
    return None


def _merge_after(linear: Linear, scale: Array, shift: Array, xp: ModuleType) -> Linear:
    r"""``bn(linear(x))`` as one layer: :math:`W' = a W` (per output), :math:`b' = a b + c`."""
    weight = linear.weight * _per_channel(scale, len(linear.weight.shape), 0, xp)
    bias = shift if linear.bias is None else scale * linear.bias + shift
    return linear.with_params(weight, bias)


def _merge_before(scale: Array, shift: Array, linear: Linear, xp: ModuleType) -> Linear | None:
    r"""``linear(bn(x))`` as one layer: :math:`W' = W a` (per input), :math:`b' = b + W c`.

    Only where this is exact: dense layers, and convolutions with one group and no
    padding (zero padding of ``bn(x)`` is not ``bn`` of zero padding).
    """
    if isinstance(linear, Convolution):
        config = linear.config()
        padding = config["padding"]
        spatial = len(linear.weight.shape) - 2
        unpadded = padding == "valid" or (
            padding != "same"
            and all(side == 0 for pair in normalize_pads(padding, spatial) for side in pair)
        )
        if config["groups"] != 1 or not unpadded:
            return None
    ndim = len(linear.weight.shape)
    weight = linear.weight * _per_channel(scale, ndim, 1, xp)
    spatial_axes = tuple(range(1, ndim))
    moved = xp.sum(linear.weight * _per_channel(shift, ndim, 1, xp), axis=spatial_axes)
    bias = moved if linear.bias is None else linear.bias + moved
    return linear.with_params(weight, bias)


class MergeBatchNorm(Canonizer):
    r"""Fuse inference-time batch norms into the linear layer before them, as zennit does.

    Every batch norm right after a dense or conv layer (which feeds nothing else) is fused
    into that layer, as zennit's ``SequentialMergeBatchNorm`` does:

    .. math:: \mathrm{bn}(Wx + b) = (aW)x + (ab + c)

    with :math:`\mathrm{bn}(y) = a y + c` per channel (:math:`a = \gamma /
    \sqrt{\sigma^2 + \epsilon}`, :math:`c = \beta - a \mu`) and :math:`aW` scaling
    each output channel's weights. The fused layer keeps the linear layer's name and the
    batch norm disappears. A per-channel :class:`~relprop.layers.Affine` right after a
    dense or conv layer (a batch norm written out as arithmetic, as imported from JAX) is
    fused the same way. Any other batch norm (after an activation, a pool, a sum, or at
    the input) stays a layer of its own, which composites give the Pass rule, as in
    zennit; an ``Affine`` before a layer (input normalisation) always stays.

    Parameters
    ----------
    into_next
        Also fuse each batch norm left over into the layer right after it, where that is
        exact: a dense layer, or a convolution with one group and no padding (zero
        padding of :math:`\mathrm{bn}(x)` is not :math:`\mathrm{bn}` of zero padding):

        .. math:: W(ax + c) + b = (Wa)x + (Wc + b)

        (:math:`Wa` scales each input channel's weights, :math:`Wc` sums the weights
        times the shift over input channels and taps). The forward is the same, but the
        fused layer's rule then sees the batch norm's *input* instead of its output, so
        relevance differs from zennit's (by 3% to over 500% of the largest entry, median
        60%, on the random networks of relprop's tests): choose it deliberately.
        Default ``False``.

    Notes
    -----
    The returned model's :attr:`~relprop.model.Model.aliases` name every folded batch
    norm: ``{bn: ("output", linear)}`` for one fused into the layer before it (its output
    is now that layer's output), ``{bn: ("input", linear)}`` for one fused into the layer
    after it (``into_next``: its relevance is what that layer sends back to its input).
    So ``rp.lrp(..., return_layers=True)`` reports them under their own names, as if the
    batch norm passed relevance through (zennit's merged batch norm is such an identity).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> bn = rp.BatchNorm1d(np.zeros(2), np.full(2, 4.0 - 1e-5), bias=np.ones(2))
    >>> model = rp.Sequential([("bn", bn), ("fc", rp.Dense(np.eye(2)))])
    >>> MergeBatchNorm().apply(model).names  # no linear layer before it: it stays
    ('bn', 'fc')
    >>> fused = MergeBatchNorm(into_next=True).apply(model)
    >>> fused, dict(fused.aliases), fused(np.ones((1, 2))).tolist()
    (Sequential(
      (fc): Dense(2 -> 2)
    ), {'bn': ('input', 'fc')}, [[1.5, 1.5]])
    """

    def __init__(self, *, into_next: bool = False) -> None:
        if not isinstance(into_next, bool):
            raise TypeError(
                f"MergeBatchNorm(into_next=...) takes True or False; got {into_next!r}."
            )
        self.into_next = into_next

    def apply(self, model: Model) -> Model:
        # after-merges first, as zennit does, so a BN -> conv -> BN chain fuses the
        # second batch norm into the conv and (into_next) the first one if still exact
        merged = self._merge(model, after=True)
        return self._merge(merged, after=False) if self.into_next else merged

    def __repr__(self) -> str:
        return "MergeBatchNorm(into_next=True)" if self.into_next else "MergeBatchNorm()"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MergeBatchNorm):
            return NotImplemented
        return type(self) is type(other) and self.into_next == other.into_next

    def __hash__(self) -> int:
        return hash((type(self), self.into_next))

    def _merge(self, model: Model, *, after: bool) -> Model:
        xp = model.namespace()
        nodes = list(model.nodes())
        consumers: dict[str, list[str]] = {}
        for node in nodes:
            for name in node.inputs:
                consumers.setdefault(name, []).append(node.name)
        by_name = {node.name: node for node in nodes}
        replaced: dict[str, Layer] = {}
        removed: dict[str, str] = {}  # batch norm node -> the node that now stands for it
        folded: dict[str, Alias] = {}  # batch norm node -> where its relevance is
        for node in nodes:
            if not isinstance(node.layer, (BatchNorm, Affine)) or len(node.inputs) != 1:
                continue
            source = node.inputs[0]
            if after:
                producer = by_name.get(source)
                if (
                    producer is not None
                    and isinstance(producer.layer, Linear)
                    and producer.layer.mergeable
                    and consumers.get(source) == [node.name]
                    and source not in replaced
                ):
                    found = _scale_shift(node.layer, producer.layer, producer.layer.out_size, xp)
                    if found is None:
                        continue
                    replaced[source] = _merge_after(producer.layer, *found, xp)
                    removed[node.name] = source
                    folded[node.name] = ("output", source)
                continue
            readers = consumers.get(node.name, [])
            if isinstance(node.layer, Affine):
                continue  # input normalisation before the first layer stays itself
            reader_layer = by_name[readers[0]].layer if len(readers) == 1 else None
            if isinstance(reader_layer, Linear) and reader_layer.mergeable:
                reader = by_name[readers[0]]
                linear: Linear = reader_layer
                bn: BatchNorm = node.layer
                merged = _merge_before(*bn.scale_shift(xp), linear, xp)
                if merged is not None and reader.name not in replaced:
                    replaced[reader.name] = merged
                    removed[node.name] = source
                    folded[node.name] = ("input", reader.name)
        if not removed:
            return model
        rebuilt = _rebuild(model, nodes, replaced, removed)
        return with_aliases(rebuilt, _compose(model.aliases, folded))


def _compose(before: Mapping[str, Alias], now: Mapping[str, Alias]) -> dict[str, Alias]:
    """Aliases of an earlier rewrite followed through a later one.

    A folded layer passes relevance through, so an alias pointing at a layer folded now
    takes that layer's alias, whichever side it pointed at.
    """
    composed = {name: now.get(target, (kind, target)) for name, (kind, target) in before.items()}
    composed.update(now)
    return composed


def _rebuild(
    model: Model, nodes: list[Node], replaced: dict[str, Layer], removed: dict[str, str]
) -> Model:
    def resolve(name: str) -> str:
        while name in removed:
            name = removed[name]
        return name

    kept = [n for n in nodes if n.name not in removed]
    if isinstance(model, Sequential):
        return Sequential([(n.name, replaced.get(n.name, n.layer)) for n in kept])
    if nodes[-1].name in removed and resolve(nodes[-1].name) != kept[-1].name:
        raise ValueError("MergeBatchNorm would change the graph's output node.")
    return Graph(
        [
            (
                n.name,
                replaced.get(n.name, n.layer),
                [resolve(i) if i != INPUT else INPUT for i in n.inputs],
            )
            for n in kept
        ]
    )
