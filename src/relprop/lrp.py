"""The relevance backward pass, and the gradient baselines that share its front end."""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any, Literal, overload

from relprop._checks import check_input, target_relevance
from relprop._dask import is_dask_array, on_dask
from relprop._xp import Array, array_namespace, detached, is_traced, library_of, to_numpy
from relprop.canonizers import canonized
from relprop.composites import Composite, uniform
from relprop.conservation import ConservationReport, Recorder, warn_batch_norms
from relprop.interop._cache import ModelLike, as_model
from relprop.layers import Embedding, Identity, Layer, Linear, describe
from relprop.layers.merge import Merge
from relprop.model import INPUT, Model, Node, node_output
from relprop.rules import Rule

__all__ = ["gradient", "gradient_x_input", "lrp"]


def _checked(
    model: Model, x: Array, target: object, detach: bool
) -> tuple[ModuleType, Array, object]:
    """The namespace, and the input and target (detached unless asked otherwise), after
    checking the input."""
    xp = model.namespace(x=x)
    if detach:
        x, target = detached(x), detached(target)
    check_input(x, xp, model.named_params())
    return xp, x, target


def _targets_per_sample(target: object) -> int | None:
    """``k`` for several class indices per sample (a list of ``k``-lists, or an integer
    array of shape ``(batch, k)``), else ``None``."""
    if isinstance(target, (list, tuple)) and target and all(
        isinstance(t, (list, tuple)) for t in target
    ):
        sizes = {len(t) for t in target}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                f"target with several classes per sample needs the same number (>= 1) for "
                f"every sample; got lists of lengths {sorted(sizes)}."
            )
        return sizes.pop()
    shape = getattr(target, "shape", None)
    dtype = str(getattr(target, "dtype", ""))
    if shape is not None and len(shape) == 2 and "int" in dtype:
        return int(shape[1])
    return None


def _each_target(explain: Callable[[Array, object], Any], x: Array, target: Any) -> Any:
    """``explain(x, target)``, or for ``k`` targets per sample one batched pass over each
    sample repeated ``k`` times, its arrays reshaped to ``(batch, k, ...)``."""
    k = _targets_per_sample(target)
    if k is None:
        return explain(x, target)
    xp = array_namespace(x=x)
    batch = int(x.shape[0])
    rows = len(target) if isinstance(target, (list, tuple)) else int(target.shape[0])
    if rows != batch:
        raise ValueError(f"target has {rows} lists of classes for a batch of {batch}.")
    rest = tuple(x.shape[1:])
    repeated = xp.reshape(xp.broadcast_to(xp.expand_dims(x, axis=1), (batch, k, *rest)),
                          (batch * k, *rest))
    if isinstance(target, (list, tuple)):
        flat: Any = [int(c) for row in target for c in row]
    elif library_of(target) == library_of(x):
        flat = xp.reshape(target, (-1,))
    else:  # a NumPy array of classes: its ints, as for one class per sample
        flat = [int(c) for c in to_numpy(target).reshape(-1)]

    def unfold(a: Any) -> Any:
        if isinstance(a, dict):
            return {name: unfold(value) for name, value in a.items()}
        if isinstance(a, ConservationReport):
            return a.reshaped((batch, k))
        return xp.reshape(a, (batch, k, *a.shape[1:]))

    result = explain(repeated, flat)
    if isinstance(result, tuple):
        return tuple(unfold(part) for part in result)
    return unfold(result)


def _at_embeddings(model: Model, x: Array) -> tuple[Model, Array]:
    """A model whose input an :class:`~relprop.Embedding` reads is explained at the
    embedding vectors: the model with that layer made an identity, and the vectors of
    the indices ``x``. Other models and ``x`` come back as they are."""
    nodes = model.nodes()
    embeddings = [node for node in nodes if isinstance(node.layer, Embedding)]
    if not embeddings:
        return model, x
    readers = [node for node in nodes if INPUT in node.inputs]
    first = embeddings[0]
    if len(embeddings) > 1 or readers != [first]:
        where = ", ".join(repr(node.name) for node in embeddings)
        raise TypeError(
            f"the model has embeddings at {where}; relprop explains a model with one "
            "rp.Embedding that is the only layer reading the input (relevance is then that "
            "of the embedding vectors). Explain the rest of the model at the vectors instead: "
            "rp.lrp(model_after_the_embedding, vectors, ...)."
        )
    xp = model.namespace(x=x)
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(
            f"x has dtype {x.dtype}, but the model starts with {first.layer!r} ({first.name!r}), "
            "which reads integer token indices; pass the indices (the relevance comes back "
            "for the embedding vectors)."
        )
    count = first.layer.num_embeddings  # type: ignore[attr-defined]
    if not is_traced(x) and x.shape[0] and not bool(xp.all((x >= 0) & (x < count))):
        raise IndexError(f"x has token indices outside [0, {count}) of {first.layer!r}.")
    vectors = first.layer.forward(x, xp)
    rest = model.rebuild([Identity() if layer is first.layer else layer for layer in model.layers])
    return rest, vectors


def _send(received: dict[str, Array], names: tuple[str, ...], parts: list[Array]) -> None:
    """A node read by several consumers receives the sum of what they send back."""
    for name, part in zip(names, parts, strict=True):
        received[name] = received[name] + part if name in received else part


def _backward(
    nodes: tuple[Node, ...],
    values: dict[str, Array],
    start: Array,
    step: Callable[[int, Node, list[Array], Array], list[Array]],
    xp: ModuleType,
    keep_sent: Collection[str] = (),
    keep: bool = False,
) -> tuple[dict[str, Array], dict[str, Array]]:
    """Walk the nodes backwards from ``start`` at the output; return what each node got,
    and what each node of ``keep_sent`` sent back to its (first) input.

    Unless ``keep`` (``return_layers`` reads them afterwards), memory is freed as the walk
    goes, as autograd frees its saved tensors: each node's forward output leaves
    ``values`` after the node's own step (its consumers, later in the forward order, have
    had their steps), a node's received relevance is dropped once it has been sent on,
    and only the input's relevance comes back.
    """
    received = {nodes[-1].name: start}
    del start
    reached: dict[str, Array] = {}
    sent: dict[str, Array] = {}
    if not keep:  # nodes after the one explained (``start=``) are never read
        walked = {node.name for node in nodes}
        for name in [name for name in values if name != INPUT and name not in walked]:
            del values[name]
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        relevance = received.pop(node.name, None)
        if relevance is not None:  # else the output does not depend on this node
            if keep:
                reached[node.name] = relevance
            parts = step(index, node, [values.get(name) for name in node.inputs], relevance)
            del relevance
            if node.name in keep_sent:
                sent[node.name] = parts[0]
            _send(received, node.inputs, parts)
            del parts
        if not keep:
            values.pop(node.name, None)
    reached[INPUT] = received[INPUT] if INPUT in received else xp.zeros_like(values[INPUT])
    return reached, sent


def _layer_order(given: Model, used: Model) -> list[str]:
    """The names ``return_layers`` reports, in forward order: the given model's own order
    when the canonized model (with its aliases) covers exactly its names, else the
    canonized nodes with each folded layer beside the one it went into."""
    before: dict[str, list[str]] = {}
    after: dict[str, list[str]] = {}
    for name, (kind, target) in used.aliases.items():
        (before if kind == "input" else after).setdefault(target, []).append(name)
    order = [INPUT]
    for name in used.names:
        order += [*before.get(name, []), name, *after.get(name, [])]
    if given is not used and set(order) == {INPUT, *given.names}:
        return [INPUT, *given.names]
    return order


def _per_layer(
    given: Model,
    used: Model,
    reached: dict[str, Array],
    sent: dict[str, Array],
    values: dict[str, Array],
    xp: ModuleType,
) -> dict[str, Array]:
    """Relevance by layer name (``return_layers``), folded layers included."""
    nodes = {node.name: node for node in used.nodes()}
    layers = {INPUT: reached[INPUT]}
    for name in used.names:
        layers[name] = reached[name] if name in reached else xp.zeros_like(values[name])
    for name, (kind, target) in used.aliases.items():
        if target not in nodes:  # a later rewrite removed it without saying where
            continue
        if kind == "output":
            layers[name] = layers[target]
        else:
            fed = values[nodes[target].inputs[0]]
            layers[name] = sent[target] if target in sent else xp.zeros_like(fed)
    return {name: layers[name] for name in _layer_order(given, used) if name in layers}


def _rules(model: Model, composite: Composite | None, rule: Rule | None) -> list[Rule]:
    if composite is not None and rule is not None:
        raise TypeError("pass either composite= or rule=, not both.")
    if rule is not None:
        if not isinstance(rule, Rule):
            raise TypeError(f"rule must be a relprop rule (rp.rules.Epsilon(), ...); got {rule!r}.")
        composite = uniform(rule)
    if composite is None:
        raise TypeError(
            "say how to explain: composite=rp.composites.EpsilonPlusFlat() (for example) or "
            "rule=rp.rules.Epsilon()."
        )
    if not isinstance(composite, Composite):
        raise TypeError(f"composite must be a relprop Composite; got {composite!r}.")
    rules = composite.rules(model.names, model.layers)
    for index, (layer, chosen) in enumerate(zip(model.layers, rules, strict=True)):
        problem = chosen.check(layer)
        if problem is not None:
            raise TypeError(f"{describe(layer, index, model.names[index])}: {problem}.")
    return rules


@overload
def lrp(
    model: ModelLike,
    x: Array,
    target: object = ...,
    *,
    composite: Composite | None = ...,
    rule: Rule | None = ...,
    return_layers: Literal[False] = ...,
    detach: bool = ...,
    start: str | None = ...,
    report: Literal[False] = ...,
) -> Array: ...
@overload
def lrp(
    model: ModelLike,
    x: Array,
    target: object = ...,
    *,
    composite: Composite | None = ...,
    rule: Rule | None = ...,
    return_layers: Literal[True],
    detach: bool = ...,
    start: str | None = ...,
    report: Literal[False] = ...,
) -> tuple[Array, dict[str, Array]]: ...
@overload
def lrp(
    model: ModelLike,
    x: Array,
    target: object = ...,
    *,
    composite: Composite | None = ...,
    rule: Rule | None = ...,
    return_layers: bool = ...,
    detach: bool = ...,
    start: str | None = ...,
    report: Literal[True],
) -> tuple[Any, ...]: ...
def lrp(
    model: ModelLike,
    x: Array,
    target: object = None,
    *,
    composite: Composite | None = None,
    rule: Rule | None = None,
    return_layers: bool = False,
    detach: bool = True,
    start: str | None = None,
    report: bool = False,
) -> Any:
    r"""Layer-wise Relevance Propagation of one output per sample back to the input.

    The output relevance is the explained logit itself, :math:`R^{(L)}_c = f_c(x)` (zero
    for the other outputs), so conserving rules give input relevance summing to
    :math:`f_c(x)`. Each layer then maps relevance at its output to its input with its
    rule, :math:`R^{(l)} = \mathrm{rule}_l(x^{(l)}, R^{(l+1)})`.

    Parameters
    ----------
    model
        The network: an ``rp.Sequential`` or ``rp.Graph``, or a ``torch.nn.Module`` in
        eval mode, converted with :func:`~relprop.from_torch` on first use and cached
        until the module's parameters, buffers, submodules or mode change.
    x
        Input batch, ``(batch, ...)``, of the model parameters' library and dtype.
    target
        ``None``: each sample's arg-max output; an int; one int per sample (a sequence
        or an integer array, of the input's library or NumPy); a floating array of
        the output's shape used as the initial relevance (a one-hot array gives zennit's
        convention); several ints per sample (a list of equal-length lists, or an
        integer array ``(batch, k)``), explained in one batched pass, the result gaining
        an axis: ``(batch, k, ...)``; or a function of the output: one value per sample
        is the explained quantity :math:`f` (``lambda out: out[:, 3] - out[:, 5]``) and
        the initial relevance :math:`out \odot \partial f / \partial out` (the
        derivative from the autodiff adapter: finite differences on NumPy), an array of
        the output's shape is the initial relevance itself (a mask over a segmentation
        map, zennit's ``attr_output`` as a function).
    composite
        Which rule for which layer (:mod:`relprop.composites`); its canonizers rewrite
        the model first (``composite.rules(model)`` shows the rules then used).
    rule
        Instead of a composite: one rule for every linear layer (activations pass).
    return_layers
        Also return the relevance at every layer's output, by the layer names of the
        given model (after canonizers too: a batch norm ``MergeBatchNorm`` folded gets
        the relevance of the layer it went into, as if it passed relevance through, see
        :attr:`relprop.model.Model.aliases`). Where several consumers read a node, its
        relevance is the sum of what they send back; a node the output does not depend
        on gets zeros.
    detach
        ``True`` (default): the result carries no autograd history, even for a torch
        input with ``requires_grad`` (the input is detached first, so no graph is built).
        ``False``: a ``requires_grad`` torch input keeps its graph, so the relevance can
        be differentiated with respect to the input (e.g. to penalise or attack an
        explanation). Parameters never get gradients: relprop's layers hold them detached.
        JAX differentiates through ``lrp`` either way.
    start
        The name of a node to explain from instead of the output (an intermediate layer
        of a Graph or Sequential, in the model ``rp.lrp`` explains: after canonizers; a
        batch norm they folded stands for the layer it went into). ``target`` then picks
        from that node's output: an int is a channel (axis 1) at every position, e.g. a
        concept of a convolution (as zennit-crp's conditions do); arrays and functions
        as for the output.
    report
        Also return a :class:`~relprop.conservation.ConservationReport` (last in the
        returned tuple): per layer, the relevance received and sent back, the shares its
        biases and stabiliser absorbed, and the conservation error, per sample; it warns
        when a batch norm was left unmerged. ``print(report)`` shows the table. Not under
        ``jax.jit`` (the numbers go to the host).

    Returns
    -------
    array or (array, dict)
        Input relevance, the shape, dtype, library and device of ``x`` (for a model that
        starts with an :class:`~relprop.Embedding`, whose ``x`` are token indices: the
        relevance of the embedding vectors, ``(*x.shape, dim)``); with
        ``return_layers`` also ``{"input": R_0, name_1: R_1, ..., name_L: R_L}`` in the
        order of the model's nodes: ``R_0`` is the input relevance (the same array), and
        ``R_L``, at the output, the initial relevance; with ``report`` the report last.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, -1.0], [2.0, 1.0]])), rp.ReLU(),
    ...                        rp.Dense(np.array([[1.0, 1.0]]))])
    >>> R = rp.lrp(model, np.array([[1.0, 2.0]]), target=0, rule=rp.rules.Epsilon(0.0))
    >>> R.tolist(), float(model(np.array([[1.0, 2.0]]))[0, 0])
    ([[2.0, 2.0]], 4.0)
    >>> _, layers = rp.lrp(model, np.array([[1.0, 2.0]]), target=0, rule=rp.rules.Epsilon(0.0),
    ...                    return_layers=True)
    >>> {name: r.tolist() for name, r in layers.items()}
    {'input': [[2.0, 2.0]], '0': [[0.0, 4.0]], '1': [[0.0, 4.0]], '2': [[4.0]]}
    """
    if is_dask_array(x):  # one rp.lrp per chunk, lazily (relprop._dask)
        return on_dask(lrp, locals())
    return _each_target(
        lambda a, t: _lrp(model, a, t, composite, rule, return_layers, detach, start, report),
        x, target,
    )


def _start_index(model: Model, start: str | None) -> int:
    """The position of the node an explanation starts at (the output by default)."""
    names = [node.name for node in model.nodes()]
    if start is None:
        return len(names) - 1
    kind, target = model.aliases.get(start, ("", start))
    if kind == "output":
        start = target
    if start not in names:
        shown = ", ".join(repr(name) for name in names[:12])
        more = ", ..." if len(names) > 12 else ""
        raise KeyError(
            f"start={start!r} names no node of the model explained ({shown}{more}); "
            "use a layer name (after canonizers: composite.rules(model) lists them)."
        )
    return names.index(start)


def _lrp(
    model: ModelLike, x: Array, target: object, composite: Composite | None, rule: Rule | None,
    return_layers: bool, detach: bool, start: str | None = None, report: bool = False,
) -> Any:
    given = as_model(model, x)
    used = given
    if isinstance(composite, Composite) and composite.canonizers:
        used = canonized(given, composite.canonizers)
    used, x = _at_embeddings(used, x)
    rules = _rules(used, composite, rule)
    xp, x, target = _checked(used, x, target, detach)
    values = used.run(x, xp)
    nodes = used.nodes()[:_start_index(used, start) + 1]
    nonnegative = used.output_nonnegative()

    recorder = Recorder(xp) if report else None

    def step(index: int, node: Node, inputs: list[Array], relevance: Array) -> list[Array]:
        out, chosen = values[node.name], rules[index]
        flag = nonnegative[node.inputs[0]]
        if isinstance(node.layer, Merge):
            parts = chosen.relevance_many(node.layer, inputs, out, relevance, xp)
        else:
            parts = [chosen.relevance(node.layer, inputs[0], out, relevance, xp, nonnegative=flag)]
        if recorder is not None:
            recorder.record(node, chosen, inputs, out, relevance, parts, flag)
        return parts

    initial = target_relevance(values[nodes[-1].name], target, xp)
    keep = {t for kind, t in used.aliases.values() if kind == "input"} if return_layers else ()
    reached, sent = _backward(nodes, values, initial, step, xp, keep, keep=return_layers)
    result: list[Any] = [reached[INPUT]]
    if return_layers:
        result.append(_per_layer(given, used, reached, sent, values, xp))
    if recorder is not None:
        canonizers = composite.canonizers if isinstance(composite, Composite) else ()
        notes = warn_batch_norms(used, canonizers)
        result.append(recorder.report(used, initial, reached[INPUT], notes))
    return result[0] if len(result) == 1 else tuple(result)


def _shape_only(layer: Layer) -> bool:
    """Whether the layer's vjp reads only the shape of its input (a linear layer's is the
    transpose of its weights)."""
    return isinstance(layer, Linear) and type(layer).vjp is Linear.vjp


def _run_for_vjp(model: Model, x: Array, xp: ModuleType
                 ) -> tuple[dict[str, Array], dict[str, tuple[int, ...]]]:
    """``model.run(x, xp)`` (the same checks and outputs) for the gradient: an output that
    only linear layers read is dropped after its last reader in the forward pass (their
    vjp needs its shape alone), as autograd saves no input of a layer whose input it
    differentiates only; every output's shape is kept."""
    nodes = model.nodes()
    last: dict[str, int] = {}
    needed = {INPUT, nodes[-1].name}
    for index, node in enumerate(nodes):
        for name in node.inputs:
            last[name] = index
            if not _shape_only(node.layer):
                needed.add(name)
    values = {INPUT: x}
    shapes = {INPUT: tuple(x.shape)}
    for index, node in enumerate(nodes):
        out = node_output(index, node, values, xp)
        values[node.name], shapes[node.name] = out, tuple(out.shape)
        del out
        for name in node.inputs:
            if last[name] == index and name not in needed:
                values.pop(name, None)
    return values, shapes


def _gradient(
    model: ModelLike, x: Array, target: object, detach: bool
) -> tuple[Array, Array]:
    """The input (detached as asked) and the input gradient."""
    checked, x = _at_embeddings(as_model(model, x), x)
    xp, x, target = _checked(checked, x, target, detach)
    values, shapes = _run_for_vjp(checked, x, xp)
    nodes = checked.nodes()

    def step(index: int, node: Node, inputs: list[Array], cotangent: Array) -> list[Array]:
        layer = node.layer
        if isinstance(layer, Merge):
            return layer.vjp_many(inputs, cotangent, xp)
        if _shape_only(layer):
            assert isinstance(layer, Linear)
            return [layer.transpose(cotangent, layer.weight, xp, shapes[node.inputs[0]])]
        return [layer.vjp(inputs[0], cotangent, xp)]

    start = target_relevance(values[nodes[-1].name], target, xp, scale=False)
    return x, _backward(nodes, values, start, step, xp)[0][INPUT]


def gradient(model: ModelLike, x: Array, target: object = None, *, detach: bool = True) -> Array:
    r"""Input gradient of the target output, :math:`\partial f_c / \partial x`.

    ``model``, ``target`` and ``detach`` are read as in :func:`lrp`, except that an index
    target selects the output with weight 1 (and an array target is the cotangent). Each
    layer applies its exact ``vjp``; user functions (:class:`~relprop.Lambda`) use the
    autodiff adapter. With ``detach=False`` the gradient of a ``requires_grad`` torch
    input can be differentiated again (double backpropagation).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[3.0, -1.0]]))])
    >>> rp.gradient(model, np.array([[1.0, 1.0]]), target=0).tolist()
    [[3.0, -1.0]]
    """
    if is_dask_array(x):  # one rp.gradient per chunk, lazily (relprop._dask)
        return on_dask(gradient, locals())
    return _each_target(lambda a, t: _gradient(model, a, t, detach)[1], x, target)


def gradient_x_input(
    model: ModelLike, x: Array, target: object = None, *, detach: bool = True
) -> Array:
    r"""Gradient times input, :math:`x \odot \partial f_c / \partial x` (arguments as for
    :func:`gradient`).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[3.0, -1.0]]))])
    >>> rp.gradient_x_input(model, np.array([[2.0, 1.0]]), target=0).tolist()
    [[6.0, -1.0]]
    """
    if is_dask_array(x):  # one rp.gradient_x_input per chunk, lazily (relprop._dask)
        return on_dask(gradient_x_input, locals())

    def explain(a: Array, t: object) -> Array:
        inputs, grad = _gradient(model, a, t, detach)
        return inputs * grad

    return _each_target(explain, x, target)
