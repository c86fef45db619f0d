"""``from_jax``: a relprop model from any JAX function, read from its jaxpr.

``jax.make_jaxpr`` records the primitives a function applies to its input; each maps to
a relprop layer (``dot_general`` to :class:`~relprop.Dense`, ``conv_general_dilated`` to
:class:`~relprop.Conv2d`, ``reduce_window_max`` to :class:`~relprop.MaxPool2d`,
arithmetic with constants to :class:`~relprop.Affine`, ...). Whatever only involves
constants (the parameters, ``rsqrt(var + eps)`` of a batch norm) is evaluated while
reading. Sub-jaxprs (``jit``, ``custom_jvp_call``) are read inline, except those of the
activations relprop has as layers (``jax.nn.relu``, ``silu``, ``elu``, ``leaky_relu``,
...), recognised by name and checked on sample values.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from relprop.interop._draft import Draft
from relprop.interop._reading import (
    PROBE,
    Const,
    Handlers,
    LayoutReader,
    Tensor,
    UnsupportedError,
    Value,
)
from relprop.layers import (
    ELU,
    Embedding,
    Hardtanh,
    Layer,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
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


class _Reader(LayoutReader):
    """Reads a jaxpr into a :class:`~relprop.interop._draft.Draft`."""

    def __init__(self, draft: Draft, caller: str) -> None:
        import jax.numpy as jnp

        super().__init__(draft, caller, jnp)
        self.eqn: Any = None

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

    def apply(self, eqn: Any, inputs: list[Value]) -> list[Value]:
        if all(isinstance(v, Const) for v in inputs):
            return self.evaluate(eqn, inputs)  # type: ignore[arg-type]
        name = eqn.primitive.name
        handler = _HANDLERS.get(name)
        outer, self.eqn = self.eqn, eqn
        try:
            if any(_is_index(v) for v in inputs) and not getattr(handler, "is_call", False):
                return [self.index_step(eqn, inputs)]
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
        return [self.add(a, b, _out(eqn))]

    @_handles("sub")
    def _sub(self, eqn: Any, a: Value, b: Value) -> list[Value]:
        return [self.sub(a, b, _out(eqn))]

    @_handles("mul")
    def _mul(self, eqn: Any, a: Value, b: Value) -> list[Value]:
        return [self.mul(a, b, _out(eqn))]

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

    @_handles("copy", "copy_p", "optimization_barrier")
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
        if "softmax" in name:
            raise self.fail(f"computes a {name}")
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
        (contract_a, contract_b), (batch_a, batch_b) = eqn.params["dimension_numbers"]
        if batch_a or batch_b:
            raise self.fail("has batch dimensions (a batched matrix product)")
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            raise self.fail("multiplies two values that depend on the input (attention?)")
        x_first = isinstance(a, Tensor)
        x, w = (a, b) if x_first else (b, a)
        x_contract, w_contract = (contract_a, contract_b) if x_first else (contract_b, contract_a)
        assert isinstance(x, Tensor) and isinstance(w, Const)
        if len(x_contract) != 1:
            raise self.fail(
                f"contracts axes {tuple(x_contract)} of the input's values of shape {x.shape}; "
                "only one feature axis is supported"
            )
        weight = self.xp.asarray(w.value)
        w_free = [i for i in range(weight.ndim) if i not in w_contract]
        if len(w_free) != 1:
            raise self.fail(f"multiplies by a constant of shape {weight.shape} (needs a matrix)")
        weight = self.xp.permute_dims(weight, (w_free[0], int(w_contract[0])))
        return [self.dense(x, w, int(x_contract[0]), weight, x_first, _out(eqn))]

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
    def _reduce(self, eqn: Any, t: Tensor) -> list[Value]:
        kind = "max" if eqn.primitive.name == "reduce_max" else "sum"
        return [self.global_pool(t, eqn.params["axes"], kind, _out(eqn))]

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

    Read: ``dot_general`` (dense layers), ``conv_general_dilated`` (1d / 2d / 3d, any
    dimension numbers, groups, dilation, padding), ``x + b`` right after one (its bias),
    ``+ - * /`` with constants (:class:`~relprop.Affine`; a batch norm in inference mode
    is one, which :class:`~relprop.canonizers.MergeBatchNorm` fuses), ``x + y``,
    ``max(x, 0)`` and ``jax.nn`` activations, ``reduce_window`` max / sum (pools),
    global ``sum`` / ``mean`` / ``max`` over the spatial axes, reshapes, transposes,
    ``broadcast_in_dim`` that adds axes, ``concatenate``, and ``jit`` / ``custom_jvp``
    sub-functions.

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
