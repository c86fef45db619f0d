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
:mod:`relprop.interop._draft` then tidies what was read (moves, biases, affine chains).

jax is imported inside the functions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from relprop.interop._draft import Draft
from relprop.layers import (
    ELU,
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    Add,
    Affine,
    AvgPool1d,
    AvgPool2d,
    Concat,
    Conv1d,
    Conv2d,
    Dense,
    Flatten,
    Hardtanh,
    Layer,
    LeakyReLU,
    MaxPool1d,
    MaxPool2d,
    Permute,
    ReLU,
    Reshape,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
)
from relprop.model import INPUT, Graph, Sequential

__all__ = ["from_jax", "supported_primitives"]


@dataclass(frozen=True)
class _Const:
    """A value that does not depend on the input; ``origin`` names the parameter."""

    value: Any
    origin: str | None = None


@dataclass(frozen=True)
class _Tensor:
    """A value that depends on the input: node ``node`` of the draft holds it with axis
    ``i`` being the source's axis ``perm[i]`` (``perm[0]`` is the batch axis)."""

    node: str
    perm: tuple[int, ...]
    shape: tuple[int, ...]  # the source's shape, batch included
    dtype: Any

    @property
    def batch_axis(self) -> int:
        return self.perm[0]

    @property
    def stored(self) -> tuple[int, ...]:
        """relprop's shape of one sample."""
        return tuple(self.shape[p] for p in self.perm[1:])


_Value = _Const | _Tensor

_HANDLERS: dict[str, Callable[..., list[_Value]]] = {}


def _handles(*names: str) -> Callable[[Callable[..., list[_Value]]], Callable[..., list[_Value]]]:
    def add(method: Callable[..., list[_Value]]) -> Callable[..., list[_Value]]:
        for name in names:
            _HANDLERS[name] = method
        return method

    return add


def supported_primitives() -> tuple[str, ...]:
    """The jaxpr primitives :func:`from_jax` reads on values that depend on the input
    (on constants, every primitive is evaluated)."""
    return tuple(sorted(_HANDLERS))


_ACTIVATION_NAMES = ("relu", "relu6", "silu", "swish", "sigmoid", "softplus", "hard_tanh",
                     "leaky_relu", "elu", "tanh")
_PROBE = np.array([-1.0, -4.0, -2.5, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.5, 4.0, 7.0, -3.0])


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


class UnsupportedError(TypeError):
    """A construct the importer cannot express with relprop's layers."""


class _Reader:
    """Reads a jaxpr into a :class:`~relprop.interop._draft.Draft`."""

    def __init__(self, draft: Draft, caller: str) -> None:
        self.draft = draft
        self.caller = caller
        self.eqn: Any = None

    # -- reading ---------------------------------------------------------------------

    def run(self, jaxpr: Any, consts: Sequence[_Value], args: Sequence[_Value]) -> list[_Value]:
        from jax.extend.core import Literal

        env: dict[Any, _Value] = {}

        def read(var: Any) -> _Value:
            return _Const(var.val) if isinstance(var, Literal) else env[var]

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

    def apply(self, eqn: Any, inputs: list[_Value]) -> list[_Value]:
        if all(isinstance(v, _Const) for v in inputs):
            return self.evaluate(eqn, inputs)  # type: ignore[arg-type]
        handler = _HANDLERS.get(eqn.primitive.name)
        if handler is None:
            raise self.unsupported(eqn, "")
        outer, self.eqn = self.eqn, eqn
        try:
            return handler(self, eqn, *inputs)
        finally:
            self.eqn = outer

    def evaluate(self, eqn: Any, inputs: list[_Const]) -> list[_Value]:
        params = eqn.primitive.get_bind_params(eqn.params)
        if isinstance(params, tuple):  # older jax: (subfuns, params)
            subfuns, params = params
            result = eqn.primitive.bind(*subfuns, *[c.value for c in inputs], **params)
        else:
            result = eqn.primitive.bind(*[c.value for c in inputs], **params)
        results = result if eqn.primitive.multiple_results else [result]
        origin = next((c.origin for c in inputs if c.origin is not None), None)
        return [_Const(r, origin) for r in results]

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
        if name in ("integer_pow", "erf"):
            hint += " relprop has no GELU layer yet; use relu, silu, elu, tanh or sigmoid."
        return UnsupportedError(
            f"{self.caller}: primitive {name!r}{self.where(eqn)} {what}.{hint} Supported on "
            "the input's values: rp.interop.jax.supported_primitives() "
            f"({', '.join(supported_primitives())}); "
            "write the model from those, or build that part as relprop layers by hand."
        )

    def fail(self, problem: str) -> UnsupportedError:
        return self.unsupported(self.eqn, problem)

    # -- building blocks -------------------------------------------------------------

    def emit(
        self, base: str, layer: Layer, inputs: Sequence[_Tensor], perm: Sequence[int],
        shape: Sequence[int], dtype: Any, *, bias: bool = False,
    ) -> _Tensor:
        perm, shape = tuple(int(p) for p in perm), tuple(int(s) for s in shape)
        stored = tuple(shape[p] for p in perm[1:])
        name = self.draft.add(base, layer, [t.node for t in inputs], stored, bias=bias)
        return _Tensor(name, perm, shape, dtype)

    def relayout(self, t: _Tensor, perm: Sequence[int]) -> _Tensor:
        """``t`` held with axis ``i`` being the source's ``perm[i]`` (batch first)."""
        perm = tuple(perm)
        if perm == t.perm:
            return t
        if perm[0] != t.batch_axis:
            raise self.fail("would move the batch axis")
        dims = tuple(t.perm.index(axis) for axis in perm)
        return self.emit("permute", Permute(dims), [t], perm, t.shape, t.dtype)

    def natural(self, t: _Tensor) -> _Tensor:
        """``t`` held in the source's own axis order (the batch must be its axis 0)."""
        if t.batch_axis != 0:
            raise self.fail(
                f"needs the batch first, but it is axis {t.batch_axis} of shape {t.shape}"
            )
        return self.relayout(t, range(len(t.shape)))

    def drop_axes(self, t: _Tensor, axes: Sequence[int]) -> _Tensor:
        """``t`` without its size-1 source axes ``axes``."""
        axes = sorted(set(int(a) for a in axes))
        if not axes:
            return t
        if t.batch_axis in axes:
            raise self.fail("drops the batch axis")
        perm = tuple(p - sum(a < p for a in axes) for p in t.perm if p not in axes)
        shape = tuple(s for i, s in enumerate(t.shape) if i not in axes)
        out = _Tensor("", perm, shape, t.dtype)
        return self.emit("reshape", Reshape(out.stored), [t], perm, shape, t.dtype)

    def insert_axes(self, t: _Tensor, positions: Sequence[int]) -> _Tensor:
        """``t`` with size-1 source axes at ``positions`` of the result."""
        positions = sorted(set(int(p) for p in positions))
        if not positions:
            return t
        kept = [i for i in range(len(t.shape) + len(positions)) if i not in positions]
        perm = tuple(kept[p] for p in t.perm) + tuple(positions)
        shape = [1] * (len(t.shape) + len(positions))
        for old, new in enumerate(kept):
            shape[new] = t.shape[old]
        out = _Tensor("", perm, tuple(shape), t.dtype)
        return self.emit("reshape", Reshape(out.stored), [t], perm, shape, t.dtype)

    def constant(self, c: _Const, t: _Tensor, out_shape: tuple[int, ...]) -> Any:
        """The constant of ``t op c`` as one sample's constant in ``t``'s relprop layout."""
        import jax.numpy as jnp

        if tuple(out_shape) != t.shape:
            raise self.fail(
                f"broadcasts the input's values of shape {t.shape} to {tuple(out_shape)}"
            )
        value = jnp.asarray(c.value, dtype=t.dtype)
        if value.ndim == 0 or bool(jnp.all(value == jnp.ravel(value)[0])):
            return jnp.ravel(value)[0] if value.size else value
        value = jnp.reshape(value, (1,) * (len(t.shape) - value.ndim) + value.shape)
        value = jnp.permute_dims(value, t.perm)
        if value.shape[0] != 1:
            if not bool(jnp.all(value == value[:1])):
                raise self.fail("uses a constant that differs between the samples of the batch")
            value = value[:1]
        return value[0]

    def named(self, c: _Const, kind: str) -> str:
        return c.origin or kind

    # -- arithmetic ------------------------------------------------------------------

    def affine(
        self, t: _Tensor, c: _Const | None, *, scale: Any = None, shift: Any = None,
        bias: bool = False,
    ) -> _Tensor:
        layer = Affine(scale, shift)
        base = "affine" if c is None else self.named(c, "affine")
        return self.emit(base, layer, [t], t.perm, t.shape, t.dtype, bias=bias)

    @_handles("add", "add_any")
    def _add(self, eqn: Any, a: _Value, b: _Value) -> list[_Value]:
        out = tuple(eqn.outvars[0].aval.shape)
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            if a.shape != b.shape:
                raise self.fail(f"adds values of shapes {a.shape} and {b.shape} (broadcasting)")
            b = self.relayout(b, a.perm)
            return [self.emit("add", Add(), [a, b], a.perm, a.shape, a.dtype)]
        t, c = (a, b) if isinstance(a, _Tensor) else (b, a)
        assert isinstance(t, _Tensor) and isinstance(c, _Const)
        return [self.affine(t, c, shift=self.constant(c, t, out), bias=True)]

    @_handles("sub")
    def _sub(self, eqn: Any, a: _Value, b: _Value) -> list[_Value]:
        import jax.numpy as jnp

        out = tuple(eqn.outvars[0].aval.shape)
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            negated = self.affine(b, None, scale=jnp.asarray(-1.0, dtype=b.dtype))
            return self._add(eqn, a, negated)
        if isinstance(a, _Tensor):
            assert isinstance(b, _Const)
            return [self.affine(a, b, shift=-self.constant(b, a, out))]
        assert isinstance(b, _Tensor) and isinstance(a, _Const)
        minus = jnp.asarray(-1.0, dtype=b.dtype)
        return [self.affine(b, a, scale=minus, shift=self.constant(a, b, out))]

    @_handles("mul")
    def _mul(self, eqn: Any, a: _Value, b: _Value) -> list[_Value]:
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            raise self.fail("multiplies two values that depend on the input")
        t, c = (a, b) if isinstance(a, _Tensor) else (b, a)
        assert isinstance(t, _Tensor) and isinstance(c, _Const)
        out = tuple(eqn.outvars[0].aval.shape)
        return [self.affine(t, c, scale=self.constant(c, t, out))]

    @_handles("div")
    def _div(self, eqn: Any, a: _Value, b: _Value) -> list[_Value]:
        if not isinstance(b, _Const):
            raise self.fail("divides by a value that depends on the input")
        assert isinstance(a, _Tensor)
        out = tuple(eqn.outvars[0].aval.shape)
        return [self.affine(a, b, scale=1 / self.constant(b, a, out))]

    @_handles("neg")
    def _neg(self, eqn: Any, t: _Tensor) -> list[_Value]:
        import jax.numpy as jnp

        return [self.affine(t, None, scale=jnp.asarray(-1.0, dtype=t.dtype))]

    @_handles("max")
    def _max(self, eqn: Any, a: _Value, b: _Value) -> list[_Value]:
        t, c = (a, b) if isinstance(a, _Tensor) else (b, a)
        if not isinstance(c, _Const) or not bool(np.all(np.asarray(c.value) == 0)):
            raise self.fail("takes a maximum other than max(x, 0) (ReLU)")
        assert isinstance(t, _Tensor)
        return [self.emit("relu", ReLU(), [t], t.perm, t.shape, t.dtype)]

    def _unary(self, layer: Layer, base: str) -> Callable[..., list[_Value]]:
        def apply(eqn: Any, t: _Tensor) -> list[_Value]:
            return [self.emit(base, layer, [t], t.perm, t.shape, t.dtype)]

        return apply

    @_handles("logistic")
    def _logistic(self, eqn: Any, t: _Tensor) -> list[_Value]:
        return self._unary(Sigmoid(), "sigmoid")(eqn, t)

    @_handles("tanh")
    def _tanh(self, eqn: Any, t: _Tensor) -> list[_Value]:
        return self._unary(Tanh(), "tanh")(eqn, t)

    @_handles("copy", "copy_p", "optimization_barrier")
    def _same(self, eqn: Any, *values: _Value) -> list[_Value]:
        return list(values)

    @_handles("convert_element_type")
    def _convert(self, eqn: Any, t: _Tensor) -> list[_Value]:
        if eqn.params["new_dtype"] != t.dtype:
            raise self.fail(
                f"casts the input's values from {t.dtype} to {eqn.params['new_dtype']}; "
                "give the example input the dtype the model computes in"
            )
        return [t]

    # -- calls -----------------------------------------------------------------------

    @_handles("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
              "custom_vjp_call_jaxpr", "remat", "checkpoint", "custom_lin")
    def _call(self, eqn: Any, *inputs: _Value) -> list[_Value]:
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
            found = self.recognise(name, sub, inputs)
            if found is not None:
                return found
        if "softmax" in name:
            raise self.fail(f"computes a {name}")
        return self.run(jaxpr, [_Const(c) for c in consts], inputs)

    def recognise(self, name: str, sub: Any, inputs: Sequence[_Value]) -> list[_Value] | None:
        """``jax.nn.<name>`` as a relprop activation, if it computes just that."""
        import jax.numpy as jnp
        from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

        tensors = [v for v in inputs if isinstance(v, _Tensor)]
        if len(tensors) != 1:
            return None
        t = tensors[0]
        probe = jnp.asarray(np.resize(_PROBE, math.prod(t.shape)).reshape(t.shape), t.dtype)
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
        return [self.emit(name, layer, [t], t.perm, t.shape, t.dtype)]

    # -- linear layers ---------------------------------------------------------------

    @_handles("dot_general")
    def _dot_general(self, eqn: Any, a: _Value, b: _Value) -> list[_Value]:
        import jax.numpy as jnp

        (contract_a, contract_b), (batch_a, batch_b) = eqn.params["dimension_numbers"]
        if batch_a or batch_b:
            raise self.fail("has batch dimensions (a batched matrix product)")
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            raise self.fail("multiplies two values that depend on the input (attention?)")
        x_first = isinstance(a, _Tensor)
        x, w = (a, b) if x_first else (b, a)
        x_contract, w_contract = (contract_a, contract_b) if x_first else (contract_b, contract_a)
        assert isinstance(x, _Tensor) and isinstance(w, _Const)
        if len(x_contract) != 1 or x.batch_axis in x_contract:
            raise self.fail(
                f"contracts axes {tuple(x_contract)} of the input's values of shape {x.shape}; "
                "only one feature axis is supported"
            )
        weight = jnp.asarray(w.value)
        w_free = [i for i in range(weight.ndim) if i not in w_contract]
        if len(w_free) != 1:
            raise self.fail(f"multiplies by a constant of shape {weight.shape} (needs a matrix)")
        weight = jnp.permute_dims(weight, (w_free[0], int(w_contract[0])))
        feature = int(x_contract[0])
        x_free = [i for i in range(len(x.shape)) if i != feature]
        others = [i for i in x_free if i != x.batch_axis]
        x = self.relayout(x, (x.batch_axis, *others, feature))
        # the source's output axes: x's free axes and w's free axis, in operand order
        position = {axis: i + (0 if x_first else 1) for i, axis in enumerate(x_free)}
        out_feature = len(x_free) if x_first else 0
        perm = (position[x.batch_axis], *(position[i] for i in others), out_feature)
        out = eqn.outvars[0].aval
        return [self.emit(self.named(w, "dense"), Dense(weight), [x], perm, out.shape, x.dtype)]

    @_handles("conv_general_dilated")
    def _conv(self, eqn: Any, x: _Value, w: _Value) -> list[_Value]:
        import jax.numpy as jnp

        p = eqn.params
        if not isinstance(x, _Tensor) or not isinstance(w, _Const):
            raise self.fail("convolves with a kernel that depends on the input")
        if any(d != 1 for d in p["lhs_dilation"]):
            raise self.fail("is a transposed convolution (lhs_dilation > 1), not supported yet")
        if p["batch_group_count"] != 1:
            raise self.fail("has batch_group_count > 1")
        dn = p["dimension_numbers"]
        lhs, rhs, out_spec = (tuple(int(i) for i in s) for s in (dn.lhs_spec, dn.rhs_spec,
                                                                  dn.out_spec))
        spatial = len(lhs) - 2
        if spatial not in (1, 2):
            raise self.fail(f"is a {spatial}d convolution; 1d and 2d are supported")
        if lhs[0] != x.batch_axis:
            raise self.fail("convolves along the batch axis")
        pads = tuple((int(lo), int(hi)) for lo, hi in p["padding"])
        if any(side < 0 for pair in pads for side in pair):
            raise self.fail(f"has negative padding {pads} (cropping)")
        padding: Any = (
            tuple(lo for lo, _ in pads) if all(lo == hi for lo, hi in pads) else pads
        )
        cls = Conv1d if spatial == 1 else Conv2d
        layer = cls(
            jnp.permute_dims(jnp.asarray(w.value), rhs),
            None,
            stride=tuple(int(s) for s in p["window_strides"]),
            padding=padding,
            dilation=tuple(int(d) for d in p["rhs_dilation"]),
            groups=int(p["feature_group_count"]),
        )
        x = self.relayout(x, lhs)
        out = eqn.outvars[0].aval
        return [self.emit(self.named(w, "conv"), layer, [x], out_spec, out.shape, x.dtype)]

    # -- pools -----------------------------------------------------------------------

    def window(
        self, t: _Tensor, sizes: Sequence[int], strides: Sequence[int],
        pads: Sequence[tuple[int, int]],
    ) -> tuple[_Tensor, list[int], list[int], list[int]]:
        """Prepare ``t`` for a pool: drop the size-1 axes the window does not touch and
        put one untouched axis (the channels) right after the batch.

        Returns the prepared value, the pooled source axes (in relprop's order), the
        source axes kept and those dropped (to be put back into the pool's output).
        """
        trivial = [
            i for i, (k, s, pad) in enumerate(zip(sizes, strides, pads, strict=True))
            if k == 1 and s == 1 and tuple(pad) == (0, 0)
        ]
        if t.batch_axis not in trivial:
            raise self.fail("pools over the batch axis")
        dropped = [i for i in trivial if t.shape[i] == 1 and i != t.batch_axis]
        untouched = [i for i in trivial if i != t.batch_axis and i not in dropped]
        if not untouched and dropped:
            untouched, dropped = dropped[-1:], dropped[:-1]
        if not untouched:
            raise self.fail("pools over every axis but the batch; keep a channel axis")
        kept = [i for i in range(len(t.shape)) if i not in dropped]
        renumber = {axis: i for i, axis in enumerate(kept)}
        t = self.drop_axes(t, dropped)
        untouched = [renumber[i] for i in untouched]
        channel = t.perm[1] if t.perm[1] in untouched else untouched[-1]
        pooled = [a for a in t.perm[1:] if a != channel]
        if len(pooled) not in (1, 2):
            raise self.fail(f"pools over {len(pooled)} axes; 1d and 2d pools are supported")
        t = self.relayout(t, (t.batch_axis, channel, *pooled))
        return t, [kept[a] for a in pooled], kept, dropped

    @_handles("reduce_window_max", "reduce_window_sum")
    def _reduce_window(self, eqn: Any, t: _Tensor) -> list[_Value]:
        p = eqn.params
        if any(d != 1 for d in p["base_dilation"]):
            raise self.fail("has base_dilation > 1")
        sizes, strides = list(p["window_dimensions"]), list(p["window_strides"])
        pads = [(int(lo), int(hi)) for lo, hi in p["padding"]]
        dilation = list(p["window_dilation"])
        if all(k == 1 for k in sizes) and all(s == 1 for s in strides) and not any(
            any(pair) for pair in pads
        ):
            return [t]
        prepared, axes, kept, dropped = self.window(t, sizes, strides, pads)
        kernel = tuple(int(sizes[a]) for a in axes)
        settings: dict[str, Any] = {
            "stride": tuple(int(strides[a]) for a in axes),
            "padding": tuple(pads[a] for a in axes),
        }
        maximum = eqn.primitive.name == "reduce_window_max"
        if maximum:
            cls: Any = MaxPool1d if len(axes) == 1 else MaxPool2d
            layer = cls(kernel, dilation=tuple(int(dilation[a]) for a in axes), **settings)
        else:
            if any(dilation[a] != 1 for a in axes):
                raise self.fail("sums over dilated windows")
            cls = AvgPool1d if len(axes) == 1 else AvgPool2d
            layer = cls(kernel, count_include_pad=True, **settings)
        out_shape = [int(s) for s in eqn.outvars[0].aval.shape]
        shape = [out_shape[k] for k in kept]
        pooled = self.emit("max_pool" if maximum else "avg_pool", layer, [prepared],
                           prepared.perm, shape, t.dtype)
        if not maximum:  # a sum pool: the average times the window size
            pooled = self.affine(pooled, None, scale=_scalar(math.prod(kernel), t.dtype))
        return [self.insert_axes(pooled, dropped)]

    @_handles("reduce_sum", "reduce_max")
    def _reduce(self, eqn: Any, t: _Tensor) -> list[_Value]:
        axes = sorted(int(a) for a in eqn.params["axes"])
        if t.batch_axis in axes:
            raise self.fail(
                "reduces over the batch axis (batch statistics: is the model in training "
                "mode? use running averages, e.g. use_running_average=True / model.eval())"
            )
        rest = [i for i in range(len(t.shape)) if i not in axes and i != t.batch_axis]
        if len(rest) != 1 or len(axes) not in (1, 2):
            raise self.fail(
                f"reduces axes {tuple(axes)} of shape {t.shape}; only global pooling (every "
                "axis but the batch and one channel axis, 1 or 2 of them) is supported"
            )
        channel = rest[0]
        ordered = [a for a in t.perm[1:] if a != channel]
        t = self.relayout(t, (t.batch_axis, channel, *ordered))
        pooled_shape = [1 if i in axes else s for i, s in enumerate(t.shape)]
        if eqn.primitive.name == "reduce_max":
            cls: Any = MaxPool1d if len(axes) == 1 else MaxPool2d
            layer: Layer = cls(tuple(t.shape[a] for a in ordered))
        else:
            layer = (AdaptiveAvgPool1d if len(axes) == 1 else AdaptiveAvgPool2d)(1)
        base = "max_pool" if eqn.primitive.name == "reduce_max" else "mean"
        pooled = self.emit(base, layer, [t], t.perm, pooled_shape, t.dtype)
        out_shape = tuple(int(s) for s in eqn.outvars[0].aval.shape)
        perm = (0, 1) if t.batch_axis < channel else (1, 0)
        flat = self.emit("flatten", Flatten(1), [pooled], perm, out_shape, t.dtype)
        if eqn.primitive.name == "reduce_max":
            return [flat]
        count = math.prod(t.shape[a] for a in axes)
        return [self.affine(flat, None, scale=_scalar(count, t.dtype))]

    # -- moves -----------------------------------------------------------------------

    @_handles("transpose")
    def _transpose(self, eqn: Any, t: _Tensor) -> list[_Value]:
        order = tuple(int(a) for a in eqn.params["permutation"])
        perm = tuple(order.index(p) for p in t.perm)
        return [_Tensor(t.node, perm, tuple(t.shape[a] for a in order), t.dtype)]

    @_handles("squeeze")
    def _squeeze(self, eqn: Any, t: _Tensor) -> list[_Value]:
        axes = [int(a) % len(t.shape) for a in eqn.params["dimensions"]]
        return [self.drop_axes(t, axes)]

    @_handles("broadcast_in_dim")
    def _broadcast(self, eqn: Any, t: _Tensor) -> list[_Value]:
        shape = tuple(int(s) for s in eqn.params["shape"])
        kept = [int(d) for d in eqn.params["broadcast_dimensions"]]
        if any(shape[d] != t.shape[i] for i, d in enumerate(kept)) or any(
            shape[i] != 1 for i in range(len(shape)) if i not in kept
        ) or kept != sorted(kept):
            raise self.fail(f"broadcasts the input's values of shape {t.shape} to {shape}")
        return [self.insert_axes(t, [i for i in range(len(shape)) if i not in kept])]

    @_handles("reshape")
    def _reshape(self, eqn: Any, t: _Tensor) -> list[_Value]:
        new = tuple(int(s) for s in eqn.outvars[0].aval.shape)
        if eqn.params.get("dimensions") is not None:
            raise self.fail("reshapes with a dimensions= order")
        only_ones = _only_ones_change(t, new)
        if only_ones is not None:
            dropped, inserted = only_ones
            return [self.insert_axes(self.drop_axes(t, dropped), inserted)]
        t = self.natural(t)
        if new[0] != t.shape[0]:
            raise self.fail(
                f"reshapes {t.shape} to {new}, which mixes the samples of the batch"
            )
        layer = Flatten(1) if len(new) == 2 else Reshape(new[1:])
        return [self.emit("flatten" if len(new) == 2 else "reshape", layer, [t],
                          range(len(new)), new, t.dtype)]

    @_handles("concatenate")
    def _concatenate(self, eqn: Any, *values: _Value) -> list[_Value]:
        if not all(isinstance(v, _Tensor) for v in values):
            raise self.fail("concatenates the input's values with constants")
        tensors = [v for v in values if isinstance(v, _Tensor)]
        first = tensors[0]
        axis = int(eqn.params["dimension"])
        if axis == first.batch_axis:
            raise self.fail("concatenates along the batch axis")
        tensors = [first] + [self.relayout(t, first.perm) for t in tensors[1:]]
        out = tuple(int(s) for s in eqn.outvars[0].aval.shape)
        layer = Concat(first.perm.index(axis))
        return [self.emit("concat", layer, tensors, first.perm, out, first.dtype)]


def _scalar(value: float, dtype: Any) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(value, dtype=dtype)


def _only_ones_change(t: _Tensor, new: tuple[int, ...]) -> tuple[list[int], list[int]] | None:
    """For a reshape that only drops and inserts size-1 axes (the batch kept as itself):
    the dropped source axes and the inserted result axes; else ``None``."""
    old_real = [i for i, s in enumerate(t.shape) if s != 1 or i == t.batch_axis]
    new_real = [i for i, s in enumerate(new) if s != 1]
    if t.shape[t.batch_axis] == 1:
        return None  # a batch of one: which 1 is the batch is ambiguous
    if [t.shape[i] for i in old_real] != [new[i] for i in new_real]:
        return None
    dropped = [i for i in range(len(t.shape)) if i not in old_real]
    inserted = [i for i in range(len(new)) if i not in new_real]
    return dropped, inserted


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
    values: list[_Value] = []
    for i, (arg, name) in enumerate(zip(args, names, strict=True)):
        if i == input_index:
            axes = tuple(range(x.ndim))
            values.append(_Tensor(INPUT, axes, tuple(x.shape), jnp.asarray(x).dtype))
        else:
            values.append(_Const(arg, name))
    outputs = reader.run(closed.jaxpr, [_Const(c) for c in closed.consts], values)
    if len(outputs) != 1:
        raise ValueError(
            f"{caller}: the function returns {len(outputs)} arrays; relprop explains one "
            "output: return the logits only."
        )
    (out,) = outputs
    if not isinstance(out, _Tensor):
        raise ValueError(f"{caller}: the function's output does not depend on its input.")
    reader.eqn = None
    if out.batch_axis != 0:
        raise ValueError(
            f"{caller}: the function's output has the batch on axis {out.batch_axis} "
            f"(shape {out.shape}); return it batch first."
        )
    final = reader.relayout(out, range(len(out.shape))) if out.perm != tuple(
        range(len(out.shape))) else out
    draft.output = final.node
    return draft


def from_jax(
    fn: Callable[[Any], Any], example_input: Any, *, check: bool = True
) -> Sequential | Graph:
    """A relprop model computing what the JAX function ``fn`` computes, read from its jaxpr.

    ``fn`` maps a batch to the model's outputs (the logits), closing over its
    parameters, as ``lambda x: model.apply(variables, x)`` or a flax / equinox module
    (see :func:`relprop.from_flax`, :func:`relprop.from_equinox`). The parameters become
    the relprop layers' arrays (JAX arrays, in the dtype the trace computes in).

    Read: ``dot_general`` (dense layers), ``conv_general_dilated`` (1d / 2d, any
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
