"""``from_jax``: a relprop model from any JAX function, read from its jaxpr.

``jax.make_jaxpr`` records the primitives a function applies to its input; each maps to
a relprop layer (``dot_general`` to :class:`~relprop.Dense`, ``conv_general_dilated`` to
:class:`~relprop.Conv2d`, ``reduce_window_max`` to :class:`~relprop.MaxPool2d`,
arithmetic with constants to :class:`~relprop.Affine`, ...). Whatever only involves
constants (the parameters, ``rsqrt(var + eps)`` of a batch norm) is evaluated while
reading. Sub-jaxprs (``jit``, ``custom_jvp_call``) are read inline, except those of the
activations relprop has as layers (``jax.nn.relu``, ``silu``, ``elu``, ``leaky_relu``,
...), recognised by name and checked on sample values.

**Transformers.** ``dot_general`` of two values of the input (attention's ``q k^T`` and
``A v``) becomes :class:`~relprop.MatMul`; a reduction over one axis (``reduce_sum``,
``reduce_max``, whose axis the jaxpr drops: :class:`_Reduced`) and the element-wise steps
on it are read as a row statistic, so that LayerNorm, RMSNorm and the softmax written out
of primitives (flax's, ``jax.nn.softmax``) become :class:`~relprop.LayerNorm`,
:class:`~relprop.RMSNorm` and :class:`~relprop.Softmax` (compared on random rows); masks
by ``select_n`` with a constant condition become :class:`~relprop.Affine`.

**Layouts.** relprop's convolutions and pools are channels-first. Each value read keeps a
permutation from the source's axes to relprop's, so a channels-last (NHWC) network gets
one :class:`~relprop.Permute` at its first convolution and one where it flattens, and
none between; the batch axis may sit anywhere in the source (``vmap`` puts it last at
times). The imported model reads inputs and returns relevance in the source's layout.
:mod:`relprop.interop._reading` holds what this shares with the ONNX importer (the
layouts, the layers each step becomes); :mod:`relprop.interop._draft` then tidies what was
read (moves, biases, affine chains).

jax is imported inside the functions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from relprop.interop._draft import Draft
from relprop.interop._reading import (
    PROBE,
    Const,
    Handlers,
    LayoutReader,
    Pointwise,
    Rowwise,
    Scaled,
    Tensor,
    UnsupportedError,
    Value,
)
from relprop.layers import (
    ELU,
    Activation,
    Embedding,
    Hardtanh,
    Layer,
    LeakyReLU,
    MatMul,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from relprop.model import INPUT, Graph, Sequential

__all__ = ["from_jax", "supported_primitives"]

_HANDLERS = Handlers()
_handles = _HANDLERS.register


def supported_primitives() -> tuple[str, ...]:
    """The jaxpr primitives :func:`from_jax` reads on values that depend on the input
    (on constants, every primitive is evaluated), the element-wise ones included, which
    may also be steps of an activation written out."""
    return tuple(sorted({*_HANDLERS.names(), *_ELEMENTWISE}))


_ELEMENTWISE = frozenset({
    "mul", "add", "add_any", "sub", "div", "neg", "integer_pow", "square", "pow", "erf",
    "erfc", "tanh", "logistic", "exp", "exp2", "expm1", "log", "log1p", "sqrt", "rsqrt",
    "cbrt", "abs", "max", "min",
})
"""Primitives that may be steps of an activation written out (:class:`Pointwise`)."""


@dataclass(frozen=True)
class _Indices:
    """A function of the input's integer token indices (``root``), computed with the
    source's own steps (``jnp.take`` wraps negative indices with ``lt``, ``add`` and
    ``select_n``), waiting for the ``gather`` that makes it an embedding."""

    root: Tensor
    fn: Callable[[Any], Any]


@dataclass(frozen=True)
class _Reduced:
    """A sum or maximum over one non-batch axis, ``axis``, that the jaxpr drops
    (``reduce_sum[axes=(2,)]``; ``kept``: a ``broadcast_in_dim`` or ``reshape`` has put it
    back, of size 1), and the element-wise steps on it since. ``rows`` reads it as a row
    statistic with the axis kept (:class:`~relprop.interop._reading.Rowwise`): a step of a
    LayerNorm, RMSNorm or softmax written out, where it meets the rows again. Where it is
    used otherwise (a sum or mean over the tokens, as a value), ``pooled`` reads it as
    what it was before: a global pool and the steps after it."""

    rows: Rowwise
    axis: int
    pooled: Callable[[], Value]
    kept: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        if self.kept:
            return self.rows.shape
        return tuple(n for i, n in enumerate(self.rows.shape) if i != self.axis)

    @property
    def dtype(self) -> Any:
        return self.rows.dtype


def _once(fn: Callable[[], Value]) -> Callable[[], Value]:
    """``fn``, run at its first call only (the layers it emits are emitted once)."""
    done: list[Value] = []

    def run() -> Value:
        if not done:
            done.append(fn())
        return done[0]

    return run


def _is_index(value: Any) -> bool:
    if isinstance(value, _Indices):
        return True
    return isinstance(value, Tensor) and np.issubdtype(np.dtype(value.dtype), np.integer)


def _index_root(value: Any) -> Tensor:
    return value.root if isinstance(value, _Indices) else value


def _index_at(value: Any, ids: Any) -> Any:
    return value.fn(ids) if isinstance(value, _Indices) else ids


def _calls(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark the handler that reads a sub-jaxpr (what it gets passes on unread)."""
    method.is_call = True  # type: ignore[attr-defined]
    return method


def _keeps_pointwise(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a handler that passes written-out functions on unread (calls, copies)."""
    method.keeps_pointwise = True  # type: ignore[attr-defined]
    return method


_ACTIVATION_NAMES = ("relu", "relu6", "silu", "swish", "sigmoid", "softplus", "hard_tanh",
                     "leaky_relu", "elu", "tanh")


def _activation(name: str, f_minus_one: float) -> Layer | None:
    """The relprop layer of ``jax.nn.<name>`` (parameters read off ``f(-1)``)."""
    if name == "leaky_relu":
        return LeakyReLU(-f_minus_one)
    if name == "elu":
        return ELU(f_minus_one / math.expm1(-1.0))
    makers: dict[str, Callable[[], Layer]] = {
        "relu": ReLU, "relu6": lambda: Hardtanh(0.0, 6.0), "silu": SiLU, "swish": SiLU,
        "sigmoid": Sigmoid, "softplus": Softplus, "hard_tanh": Hardtanh, "tanh": Tanh,
    }
    make = makers.get(name)
    return None if make is None else make()


def _out(eqn: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in eqn.outvars[0].aval.shape)


def _own_roots(inputs: list[Any]) -> list[Any]:
    """``inputs`` with the tensors that a row statistic among them is of as themselves,
    not as the function of a tensor before them they may also be (``x / sqrt(d)`` before
    a softmax: the softmax is of the scaled scores)."""
    roots = {(v.rows.root if isinstance(v, (_Reduced, Scaled)) else v.root).node
             for v in inputs if isinstance(v, (_Reduced, Scaled, Rowwise))}
    return [replace(v, formula=None) if isinstance(v, Tensor) and v.node in roots else v
            for v in inputs]


def _unchanged(name: str, inputs: Sequence[Any], out: tuple[int, ...]) -> Any:
    """The input that ``x + 0``, ``x - 0``, ``x * 1`` or ``x / 1`` leaves as it is (else
    ``None``), where the constant does not broadcast it."""
    if len(inputs) != 2:
        return None
    neutral = {"add": 0, "add_any": 0, "sub": 0, "mul": 1, "div": 1}.get(name)
    sides = [(0, 1), (1, 0)] if name in ("add", "add_any", "mul") else [(0, 1)]
    for keep, const in sides:
        v, c = inputs[keep], inputs[const]
        if (neutral is not None and isinstance(c, Const) and not isinstance(v, Const)
                and tuple(v.shape) == out and bool(np.all(np.asarray(c.value) == neutral))):
            return v
    return None


def _uniform(inputs: Sequence[Any], out: tuple[int, ...]) -> list[Any]:
    """``inputs`` with each constant whose entries are all equal as one number, where the
    other inputs alone have the output's shape (``x - zeros((..., 1))`` of RMSNorm)."""
    others = [tuple(v.shape) for v in inputs if not isinstance(v, Const)]
    if not others or tuple(np.broadcast_shapes(*others)) != out:
        return list(inputs)
    found = []
    for v in inputs:
        if isinstance(v, Const) and np.size(v.value) > 1:
            flat = np.asarray(v.value).reshape(-1)
            if bool(np.all(flat == flat[0])):
                v = Const(np.asarray(v.value).reshape(-1)[:1].reshape(()), v.origin)
        found.append(v)
    return found


class _Reader(LayoutReader):
    """Reads a jaxpr into a :class:`~relprop.interop._draft.Draft`."""

    def __init__(self, draft: Draft, caller: str) -> None:
        import jax.numpy as jnp

        super().__init__(draft, caller, jnp)
        self.eqn: Any = None
        # a dense layer's output split into several axes (DenseGeneral's (heads, dim)):
        # the split's node -> (the dense layer's output, the split), for its bias
        self.split_dense: dict[str, tuple[Tensor, Tensor]] = {}
        # written-out functions made layers, by id (read once however often they are used)
        self.settled: dict[int, tuple[Any, Any]] = {}

    # -- reading ---------------------------------------------------------------------

    def run(self, jaxpr: Any, consts: Sequence[Value], args: Sequence[Value]) -> list[Value]:
        from jax.extend.core import Literal

        env: dict[Any, Value] = {}

        def read(var: Any) -> Value:
            return Const(var.val) if isinstance(var, Literal) else env[var]

        for var, value in zip(jaxpr.constvars, consts, strict=True):
            env[var] = value
        for var, value in zip(jaxpr.invars, args, strict=True):
            env[var] = value
        for eqn in jaxpr.eqns:
            inputs = [read(v) for v in eqn.invars]
            outputs = self.apply(eqn, inputs)
            for var, value in zip(eqn.outvars, outputs, strict=True):
                env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def apply(self, eqn: Any, inputs: list[Any]) -> list[Any]:
        if all(isinstance(v, Const) for v in inputs):
            return self.evaluate(eqn, inputs)
        name = eqn.primitive.name
        handler = _HANDLERS.get(name)
        outer, self.eqn = self.eqn, eqn
        try:
            if any(_is_index(v) for v in inputs) and not getattr(handler, "is_call", False):
                return [self.index_step(eqn, inputs)]
            if not getattr(handler, "is_call", False):
                # a written-out function made a layer already is that layer's output
                inputs = [self.settled[id(v)][1] if id(v) in self.settled else v
                          for v in inputs]
                if name in _ELEMENTWISE and any(
                    isinstance(v, (Tensor, Pointwise, Rowwise, Scaled)) for v in inputs
                ):  # a statistic meets the rows: it is one of a normalisation or softmax
                    inputs = [v.rows if isinstance(v, _Reduced) and v.kept else v
                              for v in inputs]
                inputs = _own_roots(inputs)
                rows = self.rows_step(eqn, inputs)
                if rows is not None:
                    return [rows]
                if not getattr(handler, "keeps_pointwise", False):
                    inputs = _own_roots([self.settle(v) if isinstance(v, (_Reduced, Scaled))
                                         else v for v in inputs])
            if name in _ELEMENTWISE:
                lazy = self.pointwise(
                    inputs, _out(eqn),
                    lambda args: self.evaluate(eqn, [Const(a) for a in args])[0].value,  # type: ignore[union-attr]
                    unhandled=handler is None, product=name in ("mul", "div"), step=name,
                )
                if lazy is not None:
                    return [lazy]
            if handler is None:
                raise self.unsupported(eqn, "")
            if not getattr(handler, "keeps_pointwise", False):
                inputs = self.settle_all(inputs)
            return handler(self, eqn, *inputs)
        finally:
            self.eqn = outer

    def index_step(self, eqn: Any, inputs: list[Any]) -> Any:
        """A step on the input's integer token indices: read lazily (as :class:`_Indices`,
        a function of the indices) up to the ``gather`` that looks them up in a table,
        which becomes an :class:`~relprop.Embedding` if it picks exactly the table's rows
        (``jnp.take(table, ids, axis=0)``, ``nnx.Embed``, ``eqx.nn.Embedding``)."""
        name = eqn.primitive.name
        if name != "gather":
            root = next(_index_root(v) for v in inputs if _is_index(v))

            def fn(ids: Any) -> Any:
                args = [Const(v.value) if isinstance(v, Const) else Const(_index_at(v, ids))
                        for v in inputs]
                return self.evaluate(eqn, args)[0].value  # type: ignore[union-attr]

            return _Indices(root, fn)
        table, indices = inputs[0], inputs[1]
        if not isinstance(table, Const) or np.ndim(table.value) != 2 or not _is_index(indices):
            raise self.fail("gathers other than rows of a constant table picked by the "
                            "input's token indices (an embedding)")
        root = _index_root(indices)
        rows, dim = (int(n) for n in np.shape(table.value))
        probe = np.random.default_rng(0).integers(0, rows, size=root.shape)
        ids = self.xp.asarray(probe, dtype=root.dtype)
        got = self.evaluate(eqn, [table, Const(_index_at(indices, ids))])[0].value  # type: ignore[union-attr]
        want = np.take(np.asarray(table.value), probe, axis=0)
        got_np = np.asarray(got)
        if got_np.size != want.size or not np.array_equal(got_np.reshape(want.shape), want):
            raise self.fail("gathers from its table other than one row per token index "
                            "(what an embedding does)")
        weight = self.xp.asarray(table.value)
        t = self.natural(root)
        out = self.emit(self.named(table, "embedding"), Embedding(weight), [t],
                        tuple(range(len(root.shape) + 1)), (*root.shape, dim), weight.dtype)
        return out if out.shape == _out(eqn) else self.reshape(out, _out(eqn))

    def evaluate(self, eqn: Any, inputs: list[Const]) -> list[Value]:
        params = eqn.primitive.get_bind_params(eqn.params)
        if isinstance(params, tuple):  # older jax: (subfuns, params)
            subfuns, params = params
            result = eqn.primitive.bind(*subfuns, *[c.value for c in inputs], **params)
        else:
            result = eqn.primitive.bind(*[c.value for c in inputs], **params)
        results = result if eqn.primitive.multiple_results else [result]
        origin = next((c.origin for c in inputs if c.origin is not None), None)
        return [Const(r, origin) for r in results]

    # -- normalisations and softmax written out --------------------------------------

    def rows_step(self, eqn: Any, inputs: list[Any]) -> Any:
        """A step read as part of a written-out LayerNorm, RMSNorm or softmax (a
        :class:`_Reduced` statistic, a :class:`~relprop.interop._reading.Rowwise` or
        :class:`~relprop.interop._reading.Scaled` value), or ``None``."""
        name = eqn.primitive.name
        reduced = [v for v in inputs if isinstance(v, _Reduced)]
        if name == "broadcast_in_dim":
            return self._broadcast_rows(eqn, inputs[0])
        if name == "reshape" and isinstance(inputs[0], _Reduced):  # nnx's keepdims
            r = inputs[0]
            return self._keep(eqn, r) if not r.kept and _out(eqn) == r.rows.shape else None
        if name not in _ELEMENTWISE:
            return None

        def evaluate(arrays: list[Any]) -> Any:
            return self.evaluate(eqn, [Const(a) for a in arrays])[0].value  # type: ignore[union-attr]

        if reduced:
            found = self._reduced_step(eqn, inputs, reduced[0].axis, evaluate)
            if found is not None or not all(r.kept for r in reduced):
                return found
            # a kept statistic times a constant of the rows (nnx's rsqrt(var + eps) * scale)
            inputs = [v.rows if isinstance(v, _Reduced) else v for v in inputs]
        if any(isinstance(v, (Rowwise, Scaled)) for v in inputs):
            same = _unchanged(name, inputs, _out(eqn))
            if same is not None:  # nnx's RMSNorm: x - 0, the mean it does not take
                return same
            return self.scaled_step(inputs, _out(eqn), evaluate, step=name)
        return None

    def _reduced_step(self, eqn: Any, inputs: list[Any], axis: int,
                      evaluate: Callable[[list[Any]], Any]) -> _Reduced | None:
        """An element-wise step on statistics that drop ``axis`` (and numbers): the same
        step on the statistics with the axis kept."""
        xp = self.xp
        out = _out(eqn)
        reduced = [v for v in inputs if isinstance(v, _Reduced)]
        dims = reduced[0].kept
        kept = out if dims else (*out[:axis], 1, *out[axis:])
        args: list[Any] = []
        for v in _uniform(inputs, out):
            if isinstance(v, _Reduced) and v.axis == axis and v.kept == dims:
                args.append(v.rows)
            elif isinstance(v, Const) and math.prod(np.shape(v.value)) == 1:
                args.append(Const(xp.reshape(xp.asarray(v.value), ()), v.origin))
            else:
                return None  # a tensor of the reduced shape: read as a pool instead

        def keep(arrays: list[Any]) -> Any:
            dropped = [xp.squeeze(a, axis=axis) if a.ndim == len(kept) else a for a in arrays]
            return xp.expand_dims(evaluate(dropped), axis=axis)

        rows = self.rowwise(args, kept, evaluate if dims else keep, step=eqn.primitive.name)
        if rows is None:
            return None
        before = list(inputs)

        def pooled() -> Value:
            return self.apply(eqn, [v.pooled() if isinstance(v, _Reduced) else v
                                    for v in before])[0]

        return _Reduced(rows, axis, _once(pooled), dims)

    def _keep(self, eqn: Any, r: _Reduced) -> _Reduced:
        """``r`` with its axis put back (``broadcast_in_dim``, ``reshape``)."""
        return _Reduced(r.rows, r.axis, _once(lambda: self.apply(eqn, [r.pooled()])[0]), True)

    def _broadcast_rows(self, eqn: Any, v: Any) -> Rowwise | _Reduced | None:
        """``broadcast_in_dim`` of a row statistic: back to the axis kept (size 1), or to
        the rows' full shape."""
        shape = tuple(int(n) for n in eqn.params["shape"])
        dims = [int(d) for d in eqn.params["broadcast_dimensions"]]
        if isinstance(v, _Reduced):
            if v.kept:
                if shape == v.shape or dims != list(range(len(shape))):
                    return None
            elif dims != [i for i in range(len(shape)) if i != v.axis]:
                return None
            elif shape == v.rows.shape:
                return self._keep(eqn, v)
            if shape != v.rows.root.shape:
                return None
            v = v.rows
        elif not (isinstance(v, Rowwise) and v.statistic and dims == list(range(len(shape)))):
            return None
        elif shape == v.shape:
            return v
        if shape != v.root.shape:
            return None
        xp, stat = self.xp, v

        def spread(probe: Any) -> Any:
            return xp.broadcast_to(stat.fn(probe), tuple(probe.shape))

        return Rowwise(v.root, spread, v.axis, False, (*v.steps, "broadcast_in_dim"))

    def settle(self, v: Any) -> Any:
        """:meth:`LayoutReader.settle`, and a :class:`_Reduced` statistic as the pool
        (and steps) it computes, where it is one; each value made layers once (a
        LayerNorm read by the query, key and value projections is one layer)."""
        if not isinstance(v, (_Reduced, Pointwise, Rowwise, Scaled)):
            return v
        if id(v) in self.settled:
            return self.settled[id(v)][1]
        if isinstance(v, _Reduced):
            try:
                pooled = v.pooled()
            except UnsupportedError:
                if len(v.rows.steps) > 1:  # steps on it: the statistic's own error
                    self.settle_rows(v.rows)
                raise
            out = self.settle(pooled)
        else:
            out = super().settle(v)
        self.settled[id(v)] = (v, out)
        return out

    def output(self, out: Any) -> None:
        """:meth:`LayoutReader.output`, refusing a softmax there: LRP explains logits."""
        out = self.settle(out)
        if isinstance(out, Tensor) and isinstance(self.layer_of(out), Softmax):
            raise UnsupportedError(
                f"{self.caller}: the function's output is a softmax (probabilities). If "
                "this is a softmax at the end, explain the logits instead: pass a function "
                "that returns them (LRP explains the scores before the softmax)."
            )
        super().output(out)

    def layer_of(self, t: Tensor) -> Layer | None:
        """The layer that computes ``t`` (``None``: the input)."""
        return next((n.layer for n in reversed(self.draft.nodes) if n.name == t.node), None)

    # -- errors ----------------------------------------------------------------------

    def where(self, eqn: Any) -> str:
        try:
            from jax._src import source_info_util

            return f" at {source_info_util.summarize(eqn.source_info)}"
        except Exception:  # pragma: no cover - private helper moved
            return ""

    def unsupported(self, eqn: Any, problem: str) -> UnsupportedError:
        name = eqn.primitive.name
        what = problem or "is not supported on values that depend on the input"
        hint = ""
        if name in ("exp", "reduce_max", "log", "logistic") or "softmax" in problem:
            hint = (
                " If this is a softmax at the end, explain the logits instead: pass a "
                "function that returns them (LRP explains the scores before the softmax)."
            )
        return UnsupportedError(
            f"{self.caller}: primitive {name!r}{self.where(eqn)} {what}.{hint} Supported on "
            "the input's values: rp.interop.jax.supported_primitives() "
            f"({', '.join(supported_primitives())}); "
            "write the model from those, or build that part as relprop layers by hand."
        )

    def fail(self, problem: str) -> UnsupportedError:
        if self.eqn is None:  # reading the outputs
            return UnsupportedError(f"{self.caller}: the function's output {problem}.")
        return self.unsupported(self.eqn, problem)

    # -- arithmetic and activations ---------------------------------------------------

    @_handles("add", "add_any")
    def _add(self, eqn: Any, a: Value, b: Value) -> list[Value]:
        t, c = (a, b) if isinstance(a, Tensor) else (b, a)
        if isinstance(t, Tensor) and isinstance(c, Const) and t.node in self.split_dense:
            flat, split = self.split_dense[t.node]
            if split == t and _out(eqn) == t.shape:  # the bias of a DenseGeneral
                xp = self.xp
                shift = xp.broadcast_to(self.constant(c, t, t.shape), t.stored)
                shift = xp.reshape(shift, flat.stored)
                return [self.reshape(self.add(flat, Const(shift, c.origin), flat.shape),
                                     t.shape)]
        return [self.add(a, b, _out(eqn))]

    @_handles("sub")
    def _sub(self, eqn: Any, a: Value, b: Value) -> list[Value]:
        return [self.sub(a, b, _out(eqn))]

    @_handles("mul")
    def _mul(self, eqn: Any, a: Value, b: Value) -> list[Value]:
        if isinstance(a, Tensor) and isinstance(b, Tensor) and self.gates(b) and not self.gates(a):
            a, b = b, a  # CP-LRP holds the first factor constant: the gate
        return [self.mul(a, b, _out(eqn))]

    def gates(self, t: Tensor) -> bool:
        """Whether ``t`` is an activation's or a softmax's output: in a product, the
        factor that CP-LRP holds constant (the gate of a gated MLP, attention's weights)."""
        return isinstance(self.layer_of(t), (Activation, Softmax))

    @_handles("div")
    def _div(self, eqn: Any, a: Value, b: Value) -> list[Value]:
        return [self.div(a, b, _out(eqn))]

    @_handles("neg")
    def _neg(self, eqn: Any, t: Tensor) -> list[Value]:
        return [self.neg(t)]

    @_handles("max")
    def _max(self, eqn: Any, a: Value, b: Value) -> list[Value]:
        return [self.maximum(a, b, _out(eqn))]

    @_handles("logistic")
    def _logistic(self, eqn: Any, t: Tensor) -> list[Value]:
        return [self.same_place(Sigmoid(), "sigmoid", t)]

    @_handles("tanh")
    def _tanh(self, eqn: Any, t: Tensor) -> list[Value]:
        return [self.same_place(Tanh(), "tanh", t)]

    @_handles("copy", "copy_p", "optimization_barrier", "stop_gradient")
    @_keeps_pointwise
    def _same(self, eqn: Any, *values: Value) -> list[Value]:
        return list(values)

    @_handles("convert_element_type")
    @_keeps_pointwise
    def _convert(self, eqn: Any, t: Tensor) -> list[Value]:
        if eqn.params["new_dtype"] != t.dtype:
            raise self.fail(
                f"casts the input's values from {t.dtype} to {eqn.params['new_dtype']}; "
                "give the example input the dtype the model computes in"
            )
        return [t]

    # -- calls -----------------------------------------------------------------------

    @_handles("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
              "custom_vjp_call_jaxpr", "remat", "checkpoint", "custom_lin")
    @_keeps_pointwise
    @_calls
    def _call(self, eqn: Any, *inputs: Value) -> list[Value]:
        from jax.extend.core import ClosedJaxpr

        sub = next(
            (eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params),
            None,
        )
        if sub is None:
            raise self.fail("has no sub-jaxpr relprop knows how to read")
        jaxpr, consts = (sub.jaxpr, sub.consts) if isinstance(sub, ClosedJaxpr) else (sub, [])
        name = str(eqn.params.get("name", ""))
        if name in _ACTIVATION_NAMES:
            inputs = tuple(self.settle_all(inputs))
            found = self.recognise(name, sub, inputs)
            if found is not None:
                return found
        return self.run(jaxpr, [Const(c) for c in consts], inputs)

    def recognise(self, name: str, sub: Any, inputs: Sequence[Value]) -> list[Value] | None:
        """``jax.nn.<name>`` as a relprop activation, if it computes just that."""
        import jax.numpy as jnp
        from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

        tensors = [v for v in inputs if isinstance(v, Tensor)]
        if len(tensors) != 1:
            return None
        t = tensors[0]
        probe = jnp.asarray(np.resize(PROBE, math.prod(t.shape)).reshape(t.shape), t.dtype)
        closed = sub if isinstance(sub, ClosedJaxpr) else ClosedJaxpr(sub, [])
        args = [probe if v is t else v.value for v in inputs]  # type: ignore[union-attr]
        (expected,) = jaxpr_as_fun(closed)(*args)
        expected = np.asarray(expected)
        layer = _activation(name, float(expected.reshape(-1)[0]))
        if layer is None:
            return None
        got = np.asarray(layer(np.asarray(probe)))
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-5, atol=1e-6):
            return None
        return [self.same_place(layer, name, t)]

    # -- linear layers ---------------------------------------------------------------

    @_handles("dot_general")
    def _dot_general(self, eqn: Any, a: Value, b: Value) -> list[Value]:
        (contract_a, contract_b), (batch_a, batch_b) = (
            tuple(tuple(int(d) for d in dims) for dims in pair)
            for pair in eqn.params["dimension_numbers"]
        )
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return [self._product(a, b, contract_a, contract_b, batch_a, batch_b, _out(eqn))]
        if batch_a or batch_b:
            raise self.fail("has batch dimensions with a constant (a batched matrix product "
                            "with a weight)")
        x_first = isinstance(a, Tensor)
        x, w = (a, b) if x_first else (b, a)
        x_contract, w_contract = (contract_a, contract_b) if x_first else (contract_b, contract_a)
        assert isinstance(x, Tensor) and isinstance(w, Const)
        if x.batch_axis in x_contract:
            raise self.fail("contracts the batch axis")
        xp = self.xp
        weight = xp.asarray(w.value)
        w_free = [i for i in range(weight.ndim) if i not in w_contract]
        x_free = [i for i in range(len(x.shape)) if i not in x_contract]
        free_sizes = [x.shape[i] for i in x_free]
        out_sizes = [int(weight.shape[i]) for i in w_free]
        matrix = xp.reshape(xp.permute_dims(weight, (*w_free, *w_contract)),
                            (math.prod(out_sizes), -1))
        if len(x_contract) == 1 and len(w_free) == 1:
            return [self.dense(x, w, x_contract[0], matrix, x_first, _out(eqn))]
        # DenseGeneral: the contracted axes as one, the weight's free axes as one
        view = self.transpose(x, (*x_free, *x_contract))
        if len(x_contract) != 1:
            contracted = math.prod(x.shape[i] for i in x_contract)
            view = self.reshape(view, (*free_sizes, contracted))
        flat = self.dense(view, w, len(x_free), matrix, True,
                          (*free_sizes, math.prod(out_sizes)))
        out = self.reshape(flat, (*free_sizes, *out_sizes))
        if flat.perm == tuple(range(len(flat.shape))) and out.perm == tuple(
            range(len(out.shape))
        ):
            self.split_dense[out.node] = (flat, out)
        if not x_first:  # the weight's axes first
            n, m = len(free_sizes), len(out_sizes)
            out = self.transpose(out, (*range(n, n + m), *range(n)))
        return [out]

    def _product(
        self, a: Tensor, b: Tensor, contract_a: tuple[int, ...], contract_b: tuple[int, ...],
        batch_a: tuple[int, ...], batch_b: tuple[int, ...], out_shape: tuple[int, ...],
    ) -> Tensor:
        """``dot_general`` of two values that depend on the input (attention's
        :math:`Q K^T` and :math:`A V`): a :class:`~relprop.MatMul` per sample, its operands
        laid out as (batch dimensions, rows, contracted) and (batch dimensions, contracted,
        columns). The factor that is a softmax's or an activation's output comes first
        (CP-LRP holds it constant)."""
        if (a.batch_axis not in batch_a or b.batch_axis not in batch_b
                or batch_a.index(a.batch_axis) != batch_b.index(b.batch_axis)):
            raise self.fail(
                "multiplies two values that depend on the input other than sample by sample "
                "(the batch axis is not a batch dimension of the product on both sides)"
            )
        first = batch_a.index(a.batch_axis)
        order = [first, *(i for i in range(len(batch_a)) if i != first)]
        batch_a, batch_b = tuple(batch_a[i] for i in order), tuple(batch_b[i] for i in order)
        free_a = tuple(i for i in range(len(a.shape)) if i not in (*batch_a, *contract_a))
        free_b = tuple(i for i in range(len(b.shape)) if i not in (*batch_b, *contract_b))
        swap = self.gates(b) and not self.gates(a)
        if swap:  # b^T-major: (batch, free_b, contract) @ (batch, contract, free_a)
            left = self._matrix(b, batch_b, free_b, contract_b)
            right = self._matrix(a, batch_a, contract_a, free_a)
            frees = [("b", i) for i in free_b] + [("a", i) for i in free_a]
        else:
            left = self._matrix(a, batch_a, free_a, contract_a)
            right = self._matrix(b, batch_b, contract_b, free_b)
            frees = [("a", i) for i in free_a] + [("b", i) for i in free_b]
        left, right = self.natural(left), self.natural(right)
        shape = (*left.shape[:-1], right.shape[-1])
        out = self.emit("matmul", MatMul(), [left, right], range(len(shape)), shape, a.dtype)
        sizes = {("a", i): a.shape[i] for i in free_a} | {("b", i): b.shape[i] for i in free_b}
        batch_sizes = [a.shape[i] for i in batch_a]
        out = self.reshape(out, (*batch_sizes, *(sizes[f] for f in frees)))
        # dot_general's order: its batch dimensions as given, then a's free axes, b's
        computed = [("batch", i) for i in order] + frees
        wanted = ([("batch", i) for i in range(len(order))] + [("a", i) for i in free_a]
                  + [("b", i) for i in free_b])
        out = self.transpose(out, [computed.index(item) for item in wanted])
        if out.shape != out_shape:  # pragma: no cover - a bug in the bookkeeping above
            raise self.fail(f"is read with shape {out.shape}, not {out_shape}")
        return out

    def _matrix(self, t: Tensor, batch: Sequence[int], rows: Sequence[int],
                columns: Sequence[int]) -> Tensor:
        """``t`` with its axes ``batch`` first (the sample first among them), then
        ``rows`` and ``columns``, each group of those as one axis."""
        view = self.transpose(t, (*batch, *rows, *columns))
        if len(rows) == 1 and len(columns) == 1:
            return view
        sizes = [t.shape[i] for i in batch]
        return self.reshape(view, (*sizes, math.prod(t.shape[i] for i in rows),
                                   math.prod(t.shape[i] for i in columns)))

    @_handles("gather")
    def _gather(self, eqn: Any, table: Value, indices: Value) -> list[Value]:
        return [self.index_step(eqn, [table, indices])]

    @_handles("conv_general_dilated")
    def _conv(self, eqn: Any, x: Value, w: Value) -> list[Value]:
        p = eqn.params
        if not isinstance(x, Tensor) or not isinstance(w, Const):
            raise self.fail("convolves with a kernel that depends on the input")
        if p["batch_group_count"] != 1:
            raise self.fail("has batch_group_count > 1")
        dn = p["dimension_numbers"]
        lhs, rhs, out_spec = (tuple(int(i) for i in s) for s in (dn.lhs_spec, dn.rhs_spec,
                                                                  dn.out_spec))
        weight = self.xp.permute_dims(self.xp.asarray(w.value), rhs)
        if any(d != 1 for d in p["lhs_dilation"]):
            return [self._transposed(eqn, x, w, weight, lhs, out_spec)]
        return [self.conv(x, w, weight, lhs, out_spec, stride=p["window_strides"],
                          pads=p["padding"], dilation=p["rhs_dilation"],
                          groups=p["feature_group_count"], out_shape=_out(eqn))]

    def _transposed(self, eqn: Any, x: Tensor, w: Const, weight: Any, lhs: tuple[int, ...],
                    out_spec: tuple[int, ...]) -> Tensor:
        r"""A convolution of the input dilated by ``s`` (what ``lax.conv_transpose`` and
        ``eqx.nn.ConvTranspose`` record) as a transposed convolution: per group
        :math:`W^T = \mathrm{flip}(W)` with its channel axes swapped, padding
        :math:`d (k - 1) - p` per side (where that is negative after, by less than the
        stride, the output padding)."""
        p = eqn.params
        if any(s != 1 for s in p["window_strides"]):
            raise self.fail("is a convolution of a dilated input with strides (no transposed "
                            "convolution computes that)")
        groups = int(p["feature_group_count"])
        spatial = tuple(range(2, weight.ndim))
        flipped = self.xp.flip(weight, axis=spatial)
        out_ch, in_per_group, kernel = flipped.shape[0], flipped.shape[1], flipped.shape[2:]
        grouped = self.xp.reshape(flipped, (groups, out_ch // groups, in_per_group, *kernel))
        swapped = self.xp.permute_dims(grouped, (0, 2, 1, *(a + 1 for a in spatial)))
        transposed = self.xp.reshape(swapped, (groups * in_per_group, out_ch // groups, *kernel))
        dilation = [int(d) for d in p["rhs_dilation"]]
        strides = [int(s) for s in p["lhs_dilation"]]
        pads, extra = [], []
        for (lo, hi), d, k in zip(p["padding"], dilation, kernel, strict=True):
            before, after = d * (k - 1) - int(lo), d * (k - 1) - int(hi)
            extra.append(max(0, -after))
            pads.append((before, max(after, 0)))
        if any(lo < 0 for lo, _ in pads) or any(e >= s for e, s in zip(extra, strides,
                                                                       strict=True)):
            raise self.fail(f"is a transposed convolution padded by {list(p['padding'])}, more "
                            "than its kernel spans (no transposed convolution computes that)")
        return self.conv(x, w, transposed, lhs, out_spec, stride=strides, pads=pads,
                         dilation=dilation, groups=groups, out_shape=_out(eqn),
                         output_padding=extra)

    # -- pools and reductions --------------------------------------------------------

    @_handles("reduce_window_max", "reduce_window_sum")
    def _reduce_window(self, eqn: Any, t: Tensor) -> list[Value]:
        p = eqn.params
        if any(d != 1 for d in p["base_dilation"]):
            raise self.fail("has base_dilation > 1")
        maximum = eqn.primitive.name == "reduce_window_max"
        pads = [(int(lo), int(hi)) for lo, hi in p["padding"]]
        return [self.pool(t, maximum, p["window_dimensions"], p["window_strides"], pads,
                          p["window_dilation"], _out(eqn), summed=not maximum)]

    @_handles("reduce_sum", "reduce_max")
    @_keeps_pointwise
    def _reduce(self, eqn: Any, v: Any) -> list[Any]:
        """A global pool; over one axis of a tensor (or of a function of it), a
        :class:`_Reduced` statistic, which becomes that pool where it is not part of a
        written-out normalisation or softmax."""
        import jax.numpy as jnp

        name = eqn.primitive.name
        kind = "max" if name == "reduce_max" else "sum"
        axes = [int(a) for a in eqn.params["axes"]]
        if isinstance(v, (_Reduced, Scaled)):
            v = self.settle(v)
        if isinstance(v, Tensor):  # the rows are this tensor's, not a function's it was made of
            v = replace(v, formula=None)
        if len(axes) == 1 and isinstance(v, (Tensor, Pointwise, Rowwise)):
            axis = axes[0]
            reduce = jnp.max if kind == "max" else jnp.sum
            rows = self.row_statistic(v, axes, True,
                                      lambda a: reduce(a, axis=axis, keepdims=True), name)
            if rows is not None:
                source = v

                def pooled() -> Value:
                    outer, self.eqn = self.eqn, eqn
                    try:
                        return self.global_pool(self.settle(source), axes, kind, _out(eqn))
                    finally:
                        self.eqn = outer

                return [_Reduced(rows, axis, _once(pooled))]
        return [self.global_pool(self.settle(v), axes, kind, _out(eqn))]

    # -- moves -----------------------------------------------------------------------

    @_handles("pad")
    def _pad(self, eqn: Any, t: Value, value: Value) -> list[Value]:
        if not isinstance(t, Tensor) or not isinstance(value, Const):
            raise self.fail("pads a constant with the input's values")
        if not bool(np.all(np.asarray(value.value) == 0)):
            raise self.fail("pads with a value other than 0")
        config = [(int(lo), int(hi), int(inner)) for lo, hi, inner in eqn.params["padding_config"]]
        if any(inner for _, _, inner in config):
            raise self.fail("pads between the elements (interior padding)")
        return [self.zero_pad(t, [(lo, hi) for lo, hi, _ in config], _out(eqn))]

    @_handles("transpose")
    def _transpose(self, eqn: Any, t: Tensor) -> list[Value]:
        return [self.transpose(t, eqn.params["permutation"])]

    @_handles("squeeze")
    def _squeeze(self, eqn: Any, t: Tensor) -> list[Value]:
        return [self.drop_axes(t, [int(a) % len(t.shape) for a in eqn.params["dimensions"]])]

    @_handles("broadcast_in_dim")
    def _broadcast(self, eqn: Any, t: Tensor) -> list[Value]:
        shape = tuple(int(s) for s in eqn.params["shape"])
        kept = [int(d) for d in eqn.params["broadcast_dimensions"]]
        if any(shape[d] != t.shape[i] for i, d in enumerate(kept)) or any(
            shape[i] != 1 for i in range(len(shape)) if i not in kept
        ) or kept != sorted(kept):
            raise self.fail(f"broadcasts the input's values of shape {t.shape} to {shape}")
        return [self.insert_axes(t, [i for i in range(len(shape)) if i not in kept])]

    @_handles("select_n")
    def _select_n(self, eqn: Any, which: Value, *cases: Value) -> list[Value]:
        """``select_n`` (``jnp.where``) by a constant condition, choosing between one value
        that depends on the input and constants (an attention mask): an element-wise
        affine map, the values kept where chosen and the constant elsewhere."""
        if not isinstance(which, Const):
            raise self.fail("selects by a condition that depends on the input")
        tensors = [i for i, c in enumerate(cases) if isinstance(c, Tensor)]
        if len(tensors) != 1 or not all(isinstance(c, (Tensor, Const)) for c in cases):
            raise self.fail("selects between two values that depend on the input")
        index = tensors[0]
        t = cases[index]
        assert isinstance(t, Tensor)
        xp, out = self.xp, _out(eqn)
        keep = xp.broadcast_to(xp.asarray(which.value).astype(xp.int32) == index, out)
        zeros = Const(xp.zeros(out, dtype=t.dtype))
        others = [zeros if i == index else c for i, c in enumerate(cases)]
        filled = self.evaluate(eqn, [which, *others])[0]  # type: ignore[list-item]
        fill = xp.where(keep, xp.zeros((), dtype=t.dtype), filled.value)  # type: ignore[union-attr]
        return [self.affine(t, None, scale=self.constant(Const(keep.astype(t.dtype)), t, out),
                            shift=self.constant(Const(fill), t, out))]

    @_handles("slice")
    def _slice(self, eqn: Any, t: Tensor) -> list[Value]:
        p = eqn.params
        strides = p["strides"] or (1,) * len(t.shape)
        for axis, (start, stop, step) in enumerate(zip(p["start_indices"], p["limit_indices"],
                                                       strides, strict=True)):
            t = self.slice_axis(t, axis, int(start), int(stop), int(step))
        return [t]

    @_handles("split")
    def _split(self, eqn: Any, t: Tensor) -> list[Value]:
        axis = int(eqn.params["axis"]) % len(t.shape)
        parts: list[Value] = []
        start = 0
        for size in eqn.params["sizes"]:
            parts.append(self.slice_axis(t, axis, start, start + int(size), 1))
            start += int(size)
        return parts

    @_handles("reshape")
    def _reshape(self, eqn: Any, t: Tensor) -> list[Value]:
        if eqn.params.get("dimensions") is not None:
            raise self.fail("reshapes with a dimensions= order")
        return [self.reshape(t, _out(eqn))]

    @_handles("concatenate")
    def _concatenate(self, eqn: Any, *values: Value) -> list[Value]:
        return [self.concat(values, int(eqn.params["dimension"]), _out(eqn))]


def _tolerance(dtype: Any) -> float:
    return 1e-9 if np.dtype(dtype) == np.float64 else 1e-4


def _check_forward(model: Sequential | Graph, fn: Callable, x: Any, caller: str) -> None:
    want = np.asarray(fn(x))
    got = np.asarray(model(x))
    scale = max(float(np.max(np.abs(want))), 1.0) if want.size else 1.0
    tol = _tolerance(want.dtype)
    if got.shape != want.shape or not np.allclose(got, want, rtol=tol, atol=tol * scale):
        diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        raise ValueError(
            f"{caller}: the imported model's output (shape {got.shape}) differs from the "
            f"function's (shape {want.shape}; largest difference {diff:.3g}); please report "
            "this with the model, it is a bug in the importer."
        )


def read_jaxpr(
    closed: Any, args: Sequence[Any], input_index: int, names: Sequence[str | None], caller: str
) -> Draft:
    """Read ``closed`` (a ``ClosedJaxpr`` of ``f(*args)``) whose argument ``input_index``
    is the batch; the other arguments are constants named ``names``."""
    import jax.numpy as jnp

    x = args[input_index]
    draft = Draft(tuple(int(s) for s in x.shape[1:]))
    reader = _Reader(draft, caller)
    values: list[Value] = []
    for i, (arg, name) in enumerate(zip(args, names, strict=True)):
        if i == input_index:
            axes = tuple(range(x.ndim))
            values.append(Tensor(INPUT, axes, tuple(x.shape), jnp.asarray(x).dtype))
        else:
            values.append(Const(arg, name))
    outputs = reader.run(closed.jaxpr, [Const(c) for c in closed.consts], values)
    if len(outputs) != 1:
        raise ValueError(
            f"{caller}: the function returns {len(outputs)} arrays; relprop explains one "
            "output: return the logits only."
        )
    reader.eqn = None
    reader.output(outputs[0])
    return draft


def from_jax(
    fn: Callable[[Any], Any], example_input: Any, *, check: bool = True
) -> Sequential | Graph:
    """A relprop model computing what the JAX function ``fn`` computes, read from its jaxpr.

    ``fn`` maps a batch to the model's outputs (the logits), closing over its
    parameters, as ``lambda x: model.apply(variables, x)`` or a flax / equinox module
    (see :func:`relprop.from_flax`, :func:`relprop.from_equinox`). The parameters become
    the relprop layers' arrays (JAX arrays, in the dtype the trace computes in).

    Read: ``dot_general`` (dense layers, flax's ``DenseGeneral`` with a dense layer and a
    reshape; of two values of the input, attention's products, :class:`~relprop.MatMul`),
    ``conv_general_dilated`` (1d / 2d / 3d, any dimension numbers, groups, dilation,
    padding), ``x + b`` right after one (its bias), ``+ - * /`` with constants
    (:class:`~relprop.Affine`; a batch norm in inference mode is one, which
    :class:`~relprop.canonizers.MergeBatchNorm` fuses), ``x + y``, ``x * y`` of one shape
    (:class:`~relprop.Multiply`, a gated MLP), ``max(x, 0)`` and ``jax.nn`` activations
    (also written out), LayerNorm, RMSNorm and softmax written out of reductions over one
    axis (flax's, ``jax.nn.softmax``), ``jnp.where`` with a constant mask,
    ``reduce_window`` max / sum (pools), global ``sum`` / ``mean`` / ``max`` over the
    spatial axes, reshapes, transposes, slices and splits (:class:`~relprop.Slice`),
    ``broadcast_in_dim`` that adds axes, ``concatenate``, ``stop_gradient``, and ``jit`` /
    ``custom_jvp`` sub-functions. The list: :func:`supported_primitives`.

    The model takes inputs in ``fn``'s layout (channels-last for flax) and returns
    relevance in it.

    Parameters
    ----------
    fn
        A function of one batched array.
    example_input
        A batch (any size) fixing the shapes and the dtype (float64 needs
        ``jax_enable_x64``).
    check
        Run both on ``example_input`` and raise ``ValueError`` when the outputs differ
        (relative tolerance 1e-9 in float64, 1e-4 otherwise).

    Returns
    -------
    Sequential or Graph

    Raises
    ------
    TypeError
        Naming the primitive, where in the source it was recorded, and what is supported
        (:func:`supported_primitives`).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import relprop as rp
    >>> w = jnp.ones((3, 2))
    >>> model = rp.from_jax(lambda x: jax.nn.relu(x @ w + 1.0), jnp.ones((4, 3)))
    >>> model
    Sequential(
      (dense): Dense(3 -> 2)
      (relu): ReLU()
    )
    """
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(example_input)
    _check_batched(x, "from_jax")
    closed = jax.make_jaxpr(fn)(x)
    draft = read_jaxpr(closed, [x], 0, [None], "from_jax")
    model = draft.model()
    if check:
        _check_forward(model, fn, x, "from_jax")
    return model


def _check_batched(x: Any, caller: str) -> None:
    if x.ndim < 2:
        raise ValueError(
            f"{caller}: example_input of shape {tuple(x.shape)} needs a batch axis first "
            "and at least one feature axis: (batch, features...)."
        )


def from_jax_with_params(
    fn: Callable[[Any, Any], Any], params: Any, example_input: Any, *, caller: str,
    check: bool = True, strip: Callable[[tuple[str, ...]], tuple[str, ...]] = lambda p: p,
) -> Sequential | Graph:
    """:func:`from_jax` of ``fn(params, x)``, naming each layer after the parameter path
    its arrays come from (``strip`` shortens paths, e.g. dropping a flax collection)."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(example_input)
    _check_batched(x, caller)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [_layer_name(strip(_path_keys(path))) for path, _ in leaves]
    flat = [leaf for _, leaf in leaves]

    def flat_fn(*args: Any) -> Any:
        return fn(jax.tree_util.tree_unflatten(treedef, list(args[:-1])), args[-1])

    closed = jax.make_jaxpr(flat_fn)(*flat, x)
    draft = read_jaxpr(closed, [*flat, x], len(flat), [*names, None], caller)
    model = draft.model()
    if check:
        _check_forward(model, lambda a: flat_fn(*flat, a), x, caller)
    return model


def _path_keys(path: Sequence[Any]) -> tuple[str, ...]:
    keys = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                keys.append(str(getattr(key, attr)))
                break
        else:
            keys.append(str(key))
    return tuple(keys)


def _layer_name(keys: tuple[str, ...]) -> str | None:
    """``("conv", "kernel")`` -> ``"conv"``: the parameter's path without its own name."""
    head = keys[:-1]
    return ".".join(head) if head else None
