"""What the importers of graphs of primitives (jaxpr, ONNX) share: values that are
constants or tensors held in a tracked layout, and the relprop layers each kind of step
becomes.

A :class:`Tensor` is held by a node of the :class:`~relprop.interop._draft.Draft` with
its axis ``i`` being the source's axis ``perm[i]``; ``perm[0]`` is the batch axis. So a
channels-last source is read into relprop's channels-first layers with a
:class:`~relprop.Permute` only where the order matters (a convolution, a pool, a general
reshape), and the batch may sit on any axis of the source (``vmap`` moves it). The
source-specific readers (:mod:`relprop.interop.jax`, :mod:`relprop.interop.onnx`) turn
their primitives' settings into calls of :class:`LayoutReader`'s methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np

from relprop._xp import to_numpy
from relprop.interop._draft import Draft
from relprop.layers import (
    ELU,
    GELU,
    Activation,
    Add,
    Affine,
    AvgPool,
    Concat,
    Dense,
    Flatten,
    Layer,
    LayerNorm,
    LeakyReLU,
    MaxPool,
    Multiply,
    Permute,
    ReLU,
    Reshape,
    RMSNorm,
    Slice,
    Softmax,
)
from relprop.layers.conv import _ConvNd, _ConvTransposeNd
from relprop.layers.pool import _AdaptiveAvgPool
from relprop.layers.registry import by_spatial, layer_kinds
from relprop.layers.shape import _ZeroPadNd
from relprop.ops._args import SPATIAL_DIMS

__all__ = [
    "PROBE", "SYMBOLIC_BATCH", "Const", "Handlers", "LayoutReader", "Pointwise", "Rowwise",
    "Scaled", "Tensor", "UnsupportedError", "Value", "same_pads",
]

SYMBOLIC_BATCH = 7919
"""The batch size read where a source leaves it symbolic (ONNX's ``"batch"``, torch.export's
``Dim``): a prime that no reshape target of a real model holds by chance."""


def same_pads(
    sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
    dilation: Sequence[int], *, odd_after: bool = True,
) -> list[tuple[int, int]]:
    """``padding="same"`` (TensorFlow, ONNX's ``SAME_UPPER``; ``odd_after=False``:
    ``SAME_LOWER``): the output has ``ceil(size / stride)`` entries per axis."""
    pairs = []
    for size, k, s, d in zip(sizes, kernel, strides, dilation, strict=True):
        total = max(0, (math.ceil(int(size) / s) - 1) * s + (k - 1) * d + 1 - int(size))
        small, large = total // 2, total - total // 2
        pairs.append((small, large) if odd_after else (large, small))
    return pairs


@dataclass(frozen=True)
class Const:
    """A value that does not depend on the input; ``origin`` names the parameter."""

    value: Any
    origin: str | None = None


@dataclass(frozen=True)
class Tensor:
    """A value that depends on the input: node ``node`` of the draft holds it with axis
    ``i`` being the source's axis ``perm[i]`` (``perm[0]`` is the batch axis).

    ``formula``: where the tensor is an element-wise function of another one (an
    activation, a scalar affine map of it), that function, so that later element-wise
    steps on both can be read as one (:class:`Pointwise`)."""

    node: str
    perm: tuple[int, ...]
    shape: tuple[int, ...]  # the source's shape, batch included
    dtype: Any
    formula: Pointwise | None = field(default=None, compare=False, repr=False)

    @property
    def batch_axis(self) -> int:
        return self.perm[0]

    @property
    def stored(self) -> tuple[int, ...]:
        """relprop's shape of one sample."""
        return tuple(self.shape[p] for p in self.perm[1:])


@dataclass(frozen=True)
class Pointwise:
    """An element-wise function of one tensor, ``fn(root)``, that is not a layer yet: the
    source wrote an activation out of primitives (GELU as ``x * 0.5 * (1 + erf(x / sqrt
    2))``, SiLU as ``x * sigmoid(x)``). ``fn`` computes it on arrays of any shape with the
    source's own operations. Where a step needs a tensor it becomes the relprop activation
    that computes the same function (:meth:`LayoutReader.settle`)."""

    root: Tensor
    fn: Callable[[Any], Any]
    steps: tuple[str, ...] = ()  # the source's steps it is made of, for errors

    @property
    def shape(self) -> tuple[int, ...]:
        return self.root.shape

    @property
    def dtype(self) -> Any:
        return self.root.dtype


@dataclass(frozen=True)
class Rowwise:
    """A function of one tensor that mixes the entries of each row along one source axis,
    ``axis``, and nothing else: a normalisation or a softmax written out of primitives
    (``x * rsqrt(mean(x ** 2, -1) + eps)``, ``exp(x - max x) / sum(exp(x - max x))``).
    ``statistic``: a row's statistic, of size 1 along ``axis`` (a mean, a variance);
    else the root's shape. Where a step needs a tensor, it becomes the relprop layer
    that computes the same function (:meth:`LayoutReader.settle`): RMSNorm, LayerNorm or
    Softmax."""

    root: Tensor
    fn: Callable[[Any], Any]
    axis: int
    statistic: bool
    steps: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        if not self.statistic:
            return self.root.shape
        return tuple(1 if i == self.axis else s for i, s in enumerate(self.root.shape))

    @property
    def dtype(self) -> Any:
        return self.root.dtype


@dataclass(frozen=True)
class Scaled:
    """A written-out normalisation or softmax, ``rows``, times a constant and plus one:
    ``rows * scale + shift`` (``None``: 1 and 0), the constants in the source's layout,
    broadcasting to its shape. Read where the source multiplies a row statistic by a
    constant that is not one number before it meets the rows (flax's LayerNorm writes
    ``(x - mean) * (rsqrt(var + eps) * scale) + bias``); settled as the normalisation with
    that weight and bias where they vary along the rows only (:meth:`LayoutReader.settle`),
    else the layer and an :class:`~relprop.Affine` after it. ``origin`` names the
    constants' parameter."""

    rows: Rowwise
    scale: Any = None
    shift: Any = None
    origin: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        shapes = [self.rows.shape, *(tuple(np.shape(c)) for c in (self.scale, self.shift)
                                     if c is not None)]
        return tuple(int(n) for n in np.broadcast_shapes(*shapes))

    @property
    def dtype(self) -> Any:
        return self.rows.dtype


Value = Const | Tensor | Pointwise | Rowwise

Lazy = (Pointwise, Rowwise)
"""The values that are functions of a tensor not yet made layers."""

PROBE = np.array([-1.0, -4.0, -2.5, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.5, 4.0, 7.0, -3.0])
"""Where element-wise functions are compared: both signs, the kinks at 0, the tails."""


def _activation_candidates(f_minus_one: float) -> list[Layer]:
    """relprop's activations a written-out function may be: every registered one that
    needs no settings, the tanh GELU, and those whose setting ``f(-1)`` tells."""
    found: list[Layer] = [GELU("tanh"), LeakyReLU(-f_minus_one)]
    if f_minus_one < 0:
        found.append(ELU(f_minus_one / math.expm1(-1.0)))
    for kind in layer_kinds().values():
        if issubclass(kind.cls, Activation) and kind.savable:
            try:
                found.append(kind.cls())
            except TypeError:
                continue
    return found


def _row_candidates(x: np.ndarray, y: np.ndarray, size: int) -> list[Layer]:
    """The layers a written-out function ``y`` of rows ``x`` (the last axis) may be: the
    softmax, and RMSNorm and LayerNorm with the ``eps`` that ``y`` implies (rounded to
    six digits where that still fits)."""
    found: list[Layer] = [Softmax()]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_square = np.mean(x * x, axis=-1)
        centred = x - np.mean(x, axis=-1, keepdims=True)
        variance = np.mean(centred * centred, axis=-1)
        implied = {
            RMSNorm: np.mean(x * x / (y * y), axis=-1) - mean_square,
            LayerNorm: np.mean(centred * centred / (y * y), axis=-1) - variance,
        }
    for cls, eps in implied.items():
        value = float(np.median(eps))
        if np.isfinite(value) and value >= -1e-12:
            value = max(value, 0.0)
            found += [cls(size, eps=float(f"{value:.6g}")), cls(size, eps=value)]
    return found


class Handlers:
    """An importer's one table: the source's step names (primitives, operators, layer
    classes) to the reader methods that translate them. ``@table.register("add", ...)``
    adds a method; :meth:`names` is the importer's list of what it reads.
    """

    def __init__(self) -> None:
        self._methods: dict[str, Callable[..., Any]] = {}

    def register(self, *names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(method: Callable[..., Any]) -> Callable[..., Any]:
            for name in names:
                self._methods[name] = method
            return method

        return add

    def get(self, name: str) -> Callable[..., Any] | None:
        return self._methods.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._methods))


class UnsupportedError(TypeError):
    """A construct the importer cannot express with relprop's layers."""


class LayoutReader:
    """Emits relprop layers for the steps of a source graph into ``draft``.

    ``xp`` is the namespace of the source's constants (``jax.numpy``, NumPy);
    subclasses implement :meth:`fail`, the error naming the step being read.
    """

    def __init__(self, draft: Draft, caller: str, xp: ModuleType) -> None:
        self.draft = draft
        self.caller = caller
        self.xp = xp

    def fail(self, problem: str) -> UnsupportedError:
        raise NotImplementedError

    # -- building blocks -------------------------------------------------------------

    def emit(
        self, base: str, layer: Layer, inputs: Sequence[Tensor], perm: Sequence[int],
        shape: Sequence[int], dtype: Any, *, bias: bool = False,
    ) -> Tensor:
        perm, shape = tuple(int(p) for p in perm), tuple(int(s) for s in shape)
        stored = tuple(shape[p] for p in perm[1:])
        name = self.draft.add(base, layer, [t.node for t in inputs], stored, bias=bias)
        return Tensor(name, perm, shape, dtype)

    def relayout(self, t: Tensor, perm: Sequence[int]) -> Tensor:
        """``t`` held with axis ``i`` being the source's ``perm[i]`` (batch first)."""
        perm = tuple(perm)
        if perm == t.perm:
            return t
        if perm[0] != t.batch_axis:
            raise self.fail("would move the batch axis")
        dims = tuple(t.perm.index(axis) for axis in perm)
        return self.emit("permute", Permute(dims), [t], perm, t.shape, t.dtype)

    def natural(self, t: Tensor) -> Tensor:
        """``t`` held in the source's own axis order (the batch must be its axis 0)."""
        if t.batch_axis != 0:
            raise self.fail(
                f"needs the batch first, but it is axis {t.batch_axis} of shape {t.shape}"
            )
        return self.relayout(t, range(len(t.shape)))

    def drop_axes(self, t: Tensor, axes: Sequence[int]) -> Tensor:
        """``t`` without its size-1 source axes ``axes``."""
        axes = sorted(set(int(a) for a in axes))
        if not axes:
            return t
        if t.batch_axis in axes:
            raise self.fail("drops the batch axis")
        perm = tuple(p - sum(a < p for a in axes) for p in t.perm if p not in axes)
        shape = tuple(s for i, s in enumerate(t.shape) if i not in axes)
        out = Tensor("", perm, shape, t.dtype)
        return self.emit("reshape", Reshape(out.stored), [t], perm, shape, t.dtype)

    def insert_axes(self, t: Tensor, positions: Sequence[int]) -> Tensor:
        """``t`` with size-1 source axes at ``positions`` of the result."""
        positions = sorted(set(int(p) for p in positions))
        if not positions:
            return t
        kept = [i for i in range(len(t.shape) + len(positions)) if i not in positions]
        perm = tuple(kept[p] for p in t.perm) + tuple(positions)
        shape = [1] * (len(t.shape) + len(positions))
        for old, new in enumerate(kept):
            shape[new] = t.shape[old]
        out = Tensor("", perm, tuple(shape), t.dtype)
        return self.emit("reshape", Reshape(out.stored), [t], perm, shape, t.dtype)

    def scalar(self, value: float, dtype: Any) -> Any:
        return self.xp.asarray(value, dtype=dtype)

    def constant(self, c: Const, t: Tensor, out_shape: Sequence[int]) -> Any:
        """The constant of ``t op c`` as one sample's constant in ``t``'s relprop layout
        (a 0-d array when all its values are equal)."""
        xp = self.xp
        if tuple(int(s) for s in out_shape) != t.shape:
            raise self.fail(
                f"broadcasts the input's values of shape {t.shape} to {tuple(out_shape)}"
            )
        value = xp.asarray(c.value, dtype=t.dtype)
        flat = xp.reshape(value, (-1,))
        if value.ndim == 0 or (flat.shape[0] and bool(xp.all(value == flat[0]))):
            return flat[0] if flat.shape[0] else value
        value = xp.reshape(value, (1,) * (len(t.shape) - value.ndim) + tuple(value.shape))
        value = xp.permute_dims(value, t.perm)
        if value.shape[0] != 1:
            if not bool(xp.all(value == value[:1])):
                raise self.fail("uses a constant that differs between the samples of the batch")
            value = value[:1]
        return value[0]

    def named(self, c: Const, kind: str) -> str:
        return c.origin or kind

    def same_place(self, layer: Layer, base: str, t: Tensor) -> Tensor:
        """An element-wise layer applied to ``t`` (same layout, same shape)."""
        return self.with_formula(self.emit(base, layer, [t], t.perm, t.shape, t.dtype), layer, t)

    def with_formula(self, out: Tensor, layer: Layer, t: Tensor) -> Tensor:
        """``out = layer(t)``, remembering it as a function of ``t``'s root where the layer
        is one element-wise function (an activation, an affine map by scalars)."""
        scalar_params = all(v is None or math.prod(v.shape) == 1
                            for v in layer.params().values())
        if not (isinstance(layer, (Activation, Affine)) and scalar_params):
            return out
        return replace(out, formula=Pointwise(self.root_of(t), lambda p: layer(self.at(t, p))))

    # -- element-wise functions written out -----------------------------------------

    def root_of(self, v: Tensor | Pointwise | Rowwise) -> Tensor:
        """The tensor ``v`` is a function of (``v`` itself if none)."""
        if isinstance(v, Lazy):
            return v.root
        return v if v.formula is None else v.formula.root

    def at(self, v: Tensor | Pointwise | Rowwise, probe: Any) -> Any:
        """``v``'s function of its root, evaluated where the root is ``probe``."""
        if isinstance(v, Lazy):
            return v.fn(probe)
        return probe if v.formula is None else v.formula.fn(probe)

    def pointwise(
        self, inputs: Sequence[Value | None], out_shape: Sequence[int],
        evaluate: Callable[[list[Any]], Any], *, unhandled: bool, product: bool,
        step: str = "",
    ) -> Pointwise | Rowwise | None:
        """An element-wise step read as part of a written-out function, when it is one:
        it reads a :class:`Pointwise`, has no handler of its own (``unhandled``: ``erf``),
        or multiplies two functions of one tensor (``product``). Its values must all be
        functions of one root tensor (and scalar constants), and the output the root's
        shape. ``evaluate`` runs the step on arrays, in the inputs' order."""
        if any(isinstance(v, Rowwise) for v in inputs):
            return self.rowwise(inputs, out_shape, evaluate, step=step)
        dependent = [v for v in inputs if isinstance(v, (Tensor, Pointwise))]
        lazy = any(isinstance(v, Pointwise) for v in dependent)
        if not dependent or not (lazy or unhandled or (product and len(dependent) > 1)):
            return None
        roots = {self.root_of(v).node for v in dependent}
        root = self.root_of(dependent[0])
        scalars = all(not isinstance(v, Const) or math.prod(np.shape(v.value)) == 1
                      for v in inputs)
        if len(roots) != 1 or tuple(int(n) for n in out_shape) != root.shape or not scalars:
            return None
        xp = self.xp

        def fn(probe: Any) -> Any:
            args = [xp.reshape(xp.asarray(v.value, dtype=root.dtype), ()) if isinstance(v, Const)
                    else None if v is None else self.at(v, probe) for v in inputs]
            return evaluate(args)

        steps = [name for v in dependent if isinstance(v, Pointwise) for name in v.steps]
        return Pointwise(root, fn, tuple(dict.fromkeys([*steps, step])))

    # -- normalisations and softmax written out --------------------------------------

    def row_statistic(
        self, v: Value, axes: Sequence[int], keepdims: bool,
        evaluate: Callable[[Any], Any], step: str = "",
    ) -> Rowwise | None:
        """A reduction (``mean``, ``max``, ``sum``) over one non-batch axis of a tensor,
        keeping it, read as a row statistic (of a normalisation or softmax written
        out); ``None`` where it is not one. ``evaluate`` reduces an array."""
        if not isinstance(v, (Tensor, Pointwise, Rowwise)) or not keepdims or len(axes) != 1:
            return None
        root = self.root_of(v)
        axis = int(axes[0]) % len(root.shape)
        if axis == root.batch_axis or (isinstance(v, Rowwise) and v.axis != axis):
            return None
        steps = (*(v.steps if isinstance(v, Lazy) else ()), step)
        return Rowwise(root, lambda probe: evaluate(self.at(v, probe)), axis, True, steps)

    def rowwise(
        self, inputs: Sequence[Value | None], out_shape: Sequence[int],
        evaluate: Callable[[list[Any]], Any], *, step: str = "",
    ) -> Rowwise | None:
        """An element-wise step on row statistics and functions of one tensor, read as
        part of a written-out normalisation or softmax; ``None`` where it is not one
        (two tensors, a constant that is not a number)."""
        dependent = [v for v in inputs if isinstance(v, (Tensor, Pointwise, Rowwise))]
        rows = [v for v in dependent if isinstance(v, Rowwise)]
        roots = {self.root_of(v).node for v in dependent}
        scalars = all(not isinstance(v, Const) or math.prod(np.shape(v.value)) == 1
                      for v in inputs)
        if not rows or len(roots) != 1 or len({r.axis for r in rows}) != 1 or not scalars:
            return None
        root, axis = rows[0].root, rows[0].axis
        out = tuple(int(n) for n in out_shape)
        statistic = all(isinstance(v, Rowwise) and v.statistic for v in dependent)
        if out != Rowwise(root, evaluate, axis, statistic).shape:
            return None
        xp = self.xp

        def fn(probe: Any) -> Any:
            args = [xp.reshape(xp.asarray(v.value, dtype=root.dtype), ()) if isinstance(v, Const)
                    else None if v is None else self.at(v, probe) for v in inputs]
            return evaluate(args)

        steps = [name for v in dependent if isinstance(v, Lazy) for name in v.steps]
        return Rowwise(root, fn, axis, statistic, tuple(dict.fromkeys([*steps, step])))

    def settle_rows(self, v: Rowwise) -> Tensor:
        """A :class:`Rowwise` as the relprop layer computing the same function on random
        rows: Softmax, RMSNorm or LayerNorm (their ``eps`` solved from the rows)."""
        steps = ", ".join(repr(name) for name in v.steps if name)
        if v.statistic:
            raise self.fail(
                f"uses a statistic of the input's rows ({steps}) other than to normalise "
                "them; relprop reads written-out RMSNorm, LayerNorm and softmax"
            )
        root = v.root
        probe_shape = tuple(2 if i == root.batch_axis else s for i, s in enumerate(root.shape))
        rows = np.random.default_rng(0).normal(size=probe_shape)
        probe = self.xp.asarray(rows, dtype=root.dtype)
        expected = np.moveaxis(to_numpy(v.fn(probe)).astype(np.float64), v.axis, -1)
        x = np.moveaxis(rows, v.axis, -1)
        tolerance = 1e-9 if np.dtype(str(root.dtype).rsplit(".", 1)[-1]) == np.float64 else 1e-5
        size = x.shape[-1]
        for layer in _row_candidates(x, expected, size):
            got = to_numpy(layer(self.xp.asarray(x, dtype=root.dtype))).astype(np.float64)
            if np.allclose(got, expected, rtol=tolerance, atol=tolerance):
                perm = tuple(p for p in root.perm if p != v.axis) + (v.axis,)
                t = self.relayout(root, perm)
                return self.emit(type(layer).__name__.lower(), layer, [t], t.perm, t.shape,
                                 t.dtype)
        raise self.fail(
            f"reads a function of the rows of the input's values, made of {steps}, that "
            "is none of RMSNorm, LayerNorm (over one axis) and softmax; build that part "
            "with rp.Lambda by hand"
        )

    def scaled_step(
        self, inputs: Sequence[Any], out_shape: Sequence[int],
        evaluate: Callable[[list[Any]], Any], *, step: str,
    ) -> Scaled | None:
        """A step ``mul``, ``div``, ``add`` or ``sub`` (``step``) on a written-out
        normalisation or softmax and a constant that is not one number, or on a
        :class:`Scaled` value, read as :class:`Scaled`; ``None`` where it is not one (the
        reader then settles the :class:`Scaled` values and reads the step as usual).
        ``evaluate`` runs the step on arrays, in the inputs' order."""
        if len(inputs) != 2 or step not in ("mul", "div", "add", "add_any", "sub"):
            return None
        xp = self.xp
        consts = [v for v in inputs if isinstance(v, Const)]
        lazy = [v for v in inputs if isinstance(v, (Rowwise, Scaled))]
        if not any(isinstance(v, Scaled) for v in inputs) and not (
            lazy and consts and math.prod(np.shape(consts[0].value)) != 1
        ):
            return None
        if len(consts) == 1 and len(lazy) == 1:
            v, c = lazy[0], consts[0]
            scaled = v if isinstance(v, Scaled) else Scaled(v)
            value = xp.asarray(c.value, dtype=v.dtype)
            scale, shift = scaled.scale, scaled.shift
            first = inputs[0] is v
            if step == "mul" or (step == "div" and first):
                factor = value if step == "mul" else 1 / value
                scale = factor if scale is None else scale * factor
                shift = None if shift is None else shift * factor
            elif step in ("add", "add_any") or (step == "sub" and first):
                term = value if step != "sub" else -value
                if scaled.rows.statistic and scale is None and shift is None:
                    return None  # a statistic plus a constant of the full shape
                shift = term if shift is None else shift + term
            elif step == "sub":  # c - v
                scale = -xp.ones((), dtype=v.dtype) if scale is None else -scale
                shift = value if shift is None else value - shift
            else:
                return None
            out = Scaled(scaled.rows, scale, shift, scaled.origin or c.origin)
            return out if out.shape == tuple(int(n) for n in out_shape) else None
        if step != "mul" or consts:
            return None
        factors = [v.rows if isinstance(v, Scaled) else v for v in inputs]
        scaled_ones = [v for v in inputs if isinstance(v, Scaled)]
        if len(scaled_ones) != 1 or scaled_ones[0].shift is not None:
            return None  # both scaled, or a shift: not one normalisation times a constant
        core_shape = np.broadcast_shapes(*(tuple(f.shape) for f in factors))
        core = self.rowwise(factors, core_shape, evaluate, step=step)
        if core is None:
            return None
        scaled = scaled_ones[0]
        out = Scaled(core, scaled.scale, None, scaled.origin)
        return out if out.shape == tuple(int(n) for n in out_shape) else None

    def settle_scaled(self, v: Scaled) -> Tensor:
        """A :class:`Scaled` value as the normalisation or softmax (:meth:`settle_rows`)
        with its weight and bias taken into the layer where they vary along the rows only,
        and an :class:`~relprop.Affine` after it for what is left."""
        t = self.settle_rows(v.rows)
        shape, axis = v.rows.root.shape, v.rows.axis
        if v.shape != shape:
            raise self.fail(f"broadcasts a normalisation of shape {shape} to {v.shape}")
        node = next(n for n in reversed(self.draft.nodes) if n.name == t.node)
        layer = node.layer
        scale, shift = v.scale, v.shift
        if isinstance(layer, (LayerNorm, RMSNorm)) and layer.weight is None:
            weight = None if scale is None else self._along(scale, shape, axis)
            bias = None
            if isinstance(layer, LayerNorm) and shift is not None:
                bias = self._along(shift, shape, axis)
            if weight is not None or scale is None:
                scale = None
                if bias is not None:
                    shift = None
                node.layer = type(layer)(layer.normalized_shape, weight, bias, eps=layer.eps)
                node.base = v.origin or node.base
        if scale is None and shift is None:
            return t
        return self.affine(
            t, None if v.origin is None else Const(None, v.origin),
            scale=None if scale is None else self.constant(Const(scale), t, shape),
            shift=None if shift is None else self.constant(Const(shift), t, shape),
            bias=scale is None,
        )

    def _along(self, value: Any, shape: Sequence[int], axis: int) -> Any:
        """``value`` broadcast to ``shape`` as a vector along ``axis``, if it varies along
        no other axis (else ``None``)."""
        xp = self.xp
        full = xp.broadcast_to(xp.asarray(value), tuple(shape))
        vector = full[tuple(slice(None) if i == axis else 0 for i in range(len(shape)))]
        again = xp.reshape(vector, tuple(n if i == axis else 1 for i, n in enumerate(shape)))
        return vector if bool(xp.all(full == again)) else None

    def settle_all(self, values: Sequence[Value]) -> list[Value]:
        """:meth:`settle` of each value."""
        return [self.settle(v) for v in values]  # type: ignore[misc]

    def settle(self, v: Value | Scaled | None) -> Value | None:
        """A :class:`Pointwise` as the relprop activation computing the same function
        (compared on :data:`PROBE`), a :class:`Rowwise` as the normalisation or softmax
        (:meth:`settle_rows`); other values as they are."""
        if isinstance(v, Rowwise):
            return self.settle_rows(v)
        if isinstance(v, Scaled):
            return self.settle_scaled(v)
        if not isinstance(v, Pointwise):
            return v
        probe = self.xp.asarray(PROBE, dtype=v.dtype)
        expected = to_numpy(v.fn(probe)).astype(np.float64)
        tolerance = 1e-6 if np.dtype(str(v.dtype).rsplit(".", 1)[-1]) == np.float64 else 1e-5
        for layer in _activation_candidates(float(expected[0])):
            got = to_numpy(layer(probe)).astype(np.float64)
            if np.allclose(got, expected, rtol=tolerance, atol=tolerance):
                return self.same_place(layer, type(layer).__name__.lower(), v.root)
        values = ", ".join(f"f({x:g}) = {y:.6g}" for x, y in zip(PROBE[:6], expected,
                                                                  strict=False))
        steps = ", ".join(repr(name) for name in v.steps if name)
        raise self.fail(
            f"reads an element-wise function of the input's values, made of {steps} "
            f"({values}, ...), that "
            "is none of relprop's activations (GELU exact or tanh, SiLU, sigmoid, tanh, "
            "softplus, ELU, leaky ReLU, ...); build that part with rp.Lambda(fn, "
            "elementwise=True) by hand"
        )

    # -- arithmetic ------------------------------------------------------------------

    def affine(
        self, t: Tensor, c: Const | None, *, scale: Any = None, shift: Any = None,
        bias: bool = False,
    ) -> Tensor:
        base = "affine" if c is None else self.named(c, "affine")
        layer = Affine(scale, shift)
        out = self.emit(base, layer, [t], t.perm, t.shape, t.dtype, bias=bias)
        return self.with_formula(out, layer, t)

    def add(self, a: Value, b: Value, out_shape: Sequence[int]) -> Tensor:
        """``a + b``: the residual sum of two tensors, or a constant added (which becomes
        the bias of a dense or conv layer right before it)."""
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if a.shape != b.shape:
                raise self.fail(f"adds values of shapes {a.shape} and {b.shape} (broadcasting)")
            b = self.relayout(b, a.perm)
            return self.emit("add", Add(), [a, b], a.perm, a.shape, a.dtype)
        t, c = (a, b) if isinstance(a, Tensor) else (b, a)
        assert isinstance(t, Tensor) and isinstance(c, Const)
        return self.affine(t, c, shift=self.constant(c, t, out_shape), bias=True)

    def sub(self, a: Value, b: Value, out_shape: Sequence[int]) -> Tensor:
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            negated = self.affine(b, None, scale=self.scalar(-1.0, b.dtype))
            return self.add(a, negated, out_shape)
        if isinstance(a, Tensor):
            assert isinstance(b, Const)
            return self.affine(a, b, shift=-self.constant(b, a, out_shape))
        assert isinstance(b, Tensor) and isinstance(a, Const)
        minus = self.scalar(-1.0, b.dtype)
        return self.affine(b, a, scale=minus, shift=self.constant(a, b, out_shape))

    def mul(self, a: Value, b: Value, out_shape: Sequence[int]) -> Tensor:
        """``a * b``: a constant scale (rp.Affine), or the element-wise product of two
        tensors of one shape (rp.Multiply: a gate)."""
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if a.shape != b.shape:
                raise self.fail(f"multiplies values of shapes {a.shape} and {b.shape} "
                                "(broadcasting)")
            b = self.relayout(b, a.perm)
            return self.emit("multiply", Multiply(), [a, b], a.perm, a.shape, a.dtype)
        t, c = (a, b) if isinstance(a, Tensor) else (b, a)
        assert isinstance(t, Tensor) and isinstance(c, Const)
        return self.affine(t, c, scale=self.constant(c, t, out_shape))

    def div(self, a: Value, b: Value, out_shape: Sequence[int]) -> Tensor:
        if not isinstance(b, Const):
            raise self.fail("divides by a value that depends on the input")
        assert isinstance(a, Tensor)
        return self.affine(a, b, scale=1 / self.constant(b, a, out_shape))

    def neg(self, t: Tensor) -> Tensor:
        return self.affine(t, None, scale=self.scalar(-1.0, t.dtype))

    def maximum(self, a: Value, b: Value, out_shape: Sequence[int]) -> Tensor:
        t, c = (a, b) if isinstance(a, Tensor) else (b, a)
        if not isinstance(c, Const) or not bool(np.all(to_numpy(c.value) == 0)):
            raise self.fail("takes a maximum other than max(x, 0) (ReLU)")
        assert isinstance(t, Tensor)
        if tuple(int(s) for s in out_shape) != t.shape:
            raise self.fail(f"broadcasts the input's values of shape {t.shape} to "
                            f"{tuple(out_shape)}")
        return self.same_place(ReLU(), "relu", t)

    # -- linear layers ---------------------------------------------------------------

    def dense(
        self, x: Tensor, w: Const, x_feature: int, weight: Any, x_first: bool,
        out_shape: Sequence[int],
    ) -> Tensor:
        """``x`` contracted over its axis ``x_feature`` with the ``(out, in)`` matrix
        ``weight``; the source's output holds ``x``'s other axes and then the new
        feature axis (``x_first``), or the feature axis first."""
        if x_feature == x.batch_axis:
            raise self.fail("contracts the batch axis")
        x_free = [i for i in range(len(x.shape)) if i != x_feature]
        others = [i for i in x_free if i != x.batch_axis]
        x = self.relayout(x, (x.batch_axis, *others, x_feature))
        position = {axis: i + (0 if x_first else 1) for i, axis in enumerate(x_free)}
        out_feature = len(x_free) if x_first else 0
        perm = (position[x.batch_axis], *(position[i] for i in others), out_feature)
        return self.emit(self.named(w, "dense"), Dense(weight), [x], perm, out_shape, x.dtype)

    def conv(
        self, x: Tensor, w: Const, weight: Any, lhs: Sequence[int], out_spec: Sequence[int],
        *, stride: Sequence[int], pads: Sequence[tuple[int, int]], dilation: Sequence[int],
        groups: int, out_shape: Sequence[int], output_padding: Sequence[int] | None = None,
    ) -> Tensor:
        """A convolution with an ``(out, in / groups, *kernel)`` ``weight``, reading the
        source's axes ``lhs`` (batch, channels, spatial...) and writing ``out_spec``; with
        ``output_padding``, a transposed convolution (``weight`` ``(in, out / groups,
        *kernel)``, torch's layout)."""
        spatial = len(lhs) - 2
        if spatial not in SPATIAL_DIMS:
            raise self.fail(f"is a {spatial}d convolution; 1d, 2d and 3d are supported")
        if lhs[0] != x.batch_axis:
            raise self.fail("convolves along the batch axis")
        pairs = tuple((int(lo), int(hi)) for lo, hi in pads)
        if any(side < 0 for pair in pairs for side in pair):
            raise self.fail(f"has negative padding {pairs} (cropping)")
        padding: Any = (
            tuple(lo for lo, _ in pairs) if all(lo == hi for lo, hi in pairs) else pairs
        )
        settings: dict[str, Any] = {
            "stride": tuple(int(s) for s in stride), "padding": padding,
            "dilation": tuple(int(d) for d in dilation), "groups": int(groups),
        }
        layer: Layer
        if output_padding is None:
            layer = by_spatial(_ConvNd, spatial)(weight, None, **settings)
        else:
            cls = by_spatial(_ConvTransposeNd, spatial)
            extra = tuple(int(o) for o in output_padding)
            layer = cls(weight, None, output_padding=extra, **settings)
        x = self.relayout(x, lhs)
        return self.emit(self.named(w, "conv"), layer, [x], out_spec, out_shape, x.dtype)

    # -- pools -----------------------------------------------------------------------

    def window(
        self, t: Tensor, sizes: Sequence[int], strides: Sequence[int],
        pads: Sequence[tuple[int, int]], what: str = "pools",
    ) -> tuple[Tensor, list[int], list[int], list[int]]:
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
            raise self.fail(f"{what} over the batch axis")
        dropped = [i for i in trivial if t.shape[i] == 1 and i != t.batch_axis]
        untouched = [i for i in trivial if i != t.batch_axis and i not in dropped]
        if not untouched and dropped:
            untouched, dropped = dropped[-1:], dropped[:-1]
        if not untouched:
            raise self.fail(f"{what} over every axis but the batch; keep a channel axis")
        kept = [i for i in range(len(t.shape)) if i not in dropped]
        renumber = {axis: i for i, axis in enumerate(kept)}
        t = self.drop_axes(t, dropped)
        untouched = [renumber[i] for i in untouched]
        channel = t.perm[1] if t.perm[1] in untouched else untouched[-1]
        pooled = [a for a in t.perm[1:] if a != channel]
        if len(pooled) not in SPATIAL_DIMS:
            raise self.fail(f"{what} over {len(pooled)} axes; 1, 2 or 3 spatial axes are "
                            "supported")
        t = self.relayout(t, (t.batch_axis, channel, *pooled))
        return t, [kept[a] for a in pooled], kept, dropped

    def pool(
        self, t: Tensor, maximum: bool, sizes: Sequence[int], strides: Sequence[int],
        pads: Sequence[tuple[int, int]], dilation: Sequence[int], out_shape: Sequence[int],
        *, ceil_mode: bool = False, count_include_pad: bool = True, summed: bool = False,
    ) -> Tensor:
        """A max or average pool with per-source-axis window settings (1 on the batch and
        channel axes). ``summed``: the source sums the window (an average pool times the
        window's size)."""
        if all(k == 1 for k in sizes) and all(s == 1 for s in strides) and not any(
            any(pair) for pair in pads
        ):
            return t
        prepared, axes, kept, dropped = self.window(t, sizes, strides, pads)
        kernel = tuple(int(sizes[a]) for a in axes)
        settings: dict[str, Any] = {
            "stride": tuple(int(strides[a]) for a in axes),
            "padding": tuple(tuple(int(s) for s in pads[a]) for a in axes),
            "ceil_mode": bool(ceil_mode),
        }
        if maximum:
            cls: Any = by_spatial(MaxPool, len(axes))
            layer = cls(kernel, dilation=tuple(int(dilation[a]) for a in axes), **settings)
        else:
            if any(dilation[a] != 1 for a in axes):
                raise self.fail("averages over dilated windows")
            cls = by_spatial(AvgPool, len(axes))
            layer = cls(kernel, count_include_pad=bool(count_include_pad), **settings)
        shape = [int(out_shape[k]) for k in kept]
        pooled = self.emit("max_pool" if maximum else "avg_pool", layer, [prepared],
                           prepared.perm, shape, t.dtype)
        if summed:
            pooled = self.affine(pooled, None, scale=self.scalar(math.prod(kernel), t.dtype))
        return self.insert_axes(pooled, dropped)

    def zero_pad(self, t: Tensor, pads: Sequence[tuple[int, int]],
                 out_shape: Sequence[int]) -> Tensor:
        """Zeros around the spatial axes: ``pads`` is one ``(before, after)`` pair per
        source axis (``(0, 0)`` on the batch and channel axes)."""
        pads = [(int(lo), int(hi)) for lo, hi in pads]
        if not any(lo or hi for lo, hi in pads):
            return t
        if any(lo < 0 or hi < 0 for lo, hi in pads):
            raise self.fail(f"pads by {pads}; negative padding (cropping) is not supported")
        ones = [1] * len(t.shape)
        prepared, axes, kept, dropped = self.window(t, ones, ones, pads, "pads")
        layer = by_spatial(_ZeroPadNd, len(axes))(tuple(pads[a] for a in axes))
        shape = [int(out_shape[k]) for k in kept]
        padded = self.emit("pad", layer, [prepared], prepared.perm, shape, t.dtype)
        return self.insert_axes(padded, dropped)

    def global_pool(
        self, t: Tensor, axes: Sequence[int], kind: str, out_shape: Sequence[int],
        *, keepdims: bool = False,
    ) -> Tensor:
        """``kind`` (``"sum"``, ``"mean"``, ``"max"``) over every axis but the batch and
        one channel axis: a global pool."""
        axes = sorted(int(a) for a in axes)
        if t.batch_axis in axes:
            raise self.fail(
                "reduces over the batch axis (batch statistics: is the model in training "
                "mode? use running averages, e.g. use_running_average=True / model.eval())"
            )
        rest = [i for i in range(len(t.shape)) if i not in axes and i != t.batch_axis]
        if len(rest) != 1 or len(axes) not in SPATIAL_DIMS:
            raise self.fail(
                f"reduces axes {tuple(axes)} of shape {t.shape}; only global pooling (every "
                "axis but the batch and one channel axis, 1 to 3 of them) is supported"
            )
        channel = rest[0]
        ordered = [a for a in t.perm[1:] if a != channel]
        t = self.relayout(t, (t.batch_axis, channel, *ordered))
        pooled_shape = [1 if i in axes else s for i, s in enumerate(t.shape)]
        if kind == "max":
            cls: Any = by_spatial(MaxPool, len(axes))
            layer: Layer = cls(tuple(t.shape[a] for a in ordered))
        else:
            layer = by_spatial(_AdaptiveAvgPool, len(axes))(1)
        pooled = self.emit("max_pool" if kind == "max" else "mean", layer, [t], t.perm,
                           pooled_shape, t.dtype)
        if not keepdims:
            perm = (0, 1) if t.batch_axis < channel else (1, 0)
            pooled = self.emit("flatten", Flatten(1), [pooled], perm, out_shape, t.dtype)
        if kind == "sum":
            count = math.prod(t.shape[a] for a in axes)
            pooled = self.affine(pooled, None, scale=self.scalar(count, t.dtype))
        return pooled

    # -- moves -----------------------------------------------------------------------

    def transpose(self, t: Tensor, order: Sequence[int]) -> Tensor:
        """The source's ``transpose(order)``: nothing moves in relprop."""
        order = tuple(int(a) for a in order)
        perm = tuple(order.index(p) for p in t.perm)
        return Tensor(t.node, perm, tuple(t.shape[a] for a in order), t.dtype)

    def reshape(self, t: Tensor, new: Sequence[int]) -> Tensor:
        """The source's row-major reshape to ``new`` (the batch size included)."""
        new = tuple(int(s) for s in new)
        only_ones = _only_ones_change(t, new)
        if only_ones is not None:
            dropped, inserted = only_ones
            return self.insert_axes(self.drop_axes(t, dropped), inserted)
        split = _one_axis_split(t, new)
        if split is not None and t.batch_axis != 0:  # split where it is held (heads)
            return self._split_in_place(t, *split, new)
        t = self.natural(t)
        if new[0] != t.shape[0] or math.prod(new) != math.prod(t.shape):
            raise self.fail(f"reshapes {t.shape} to {new}, which mixes the samples of the batch")
        layer = Flatten(1) if len(new) == 2 else Reshape(new[1:])
        return self.emit("flatten" if len(new) == 2 else "reshape", layer, [t],
                         range(len(new)), new, t.dtype)

    def _split_in_place(self, t: Tensor, axis: int, parts: int, new: tuple[int, ...]) -> Tensor:
        """Source axis ``axis`` of ``t`` (not the batch) split into ``parts`` axes of
        ``new``, in relprop's layout as it is (no permute first)."""
        perm: list[int] = []
        for p in t.perm:
            if p == axis:
                perm += range(axis, axis + parts)
            else:
                perm.append(p if p < axis else p + parts - 1)
        out = Tensor("", tuple(perm), new, t.dtype)
        return self.emit("reshape", Reshape(out.stored), [t], perm, new, t.dtype)

    def slice_axis(self, t: Tensor, axis: int, start: Any, stop: Any, step: int = 1) -> Tensor:
        """Entries ``start:stop:step`` of ``t``'s source axis ``axis`` (Python's slice
        bounds: ``None``, negative, past the end); a :class:`~relprop.Slice`, nothing where
        that is the whole axis."""
        first, last, step = slice(start, stop, int(step)).indices(t.shape[axis])
        if (first, last, step) == (0, t.shape[axis], 1):
            return t
        if axis == t.batch_axis:
            raise self.fail("slices the batch axis")
        shape = tuple(len(range(first, last, step)) if i == axis else n
                      for i, n in enumerate(t.shape))
        layer = Slice(t.perm.index(axis), first, last, step)
        return self.emit("slice", layer, [t], t.perm, shape, t.dtype)

    def concat(self, values: Sequence[Value], axis: int, out_shape: Sequence[int]) -> Tensor:
        if not all(isinstance(v, Tensor) for v in values):
            raise self.fail("concatenates the input's values with constants")
        tensors = [v for v in values if isinstance(v, Tensor)]
        first = tensors[0]
        if axis == first.batch_axis:
            raise self.fail("concatenates along the batch axis")
        if len(tensors) == 1:
            return first
        tensors = [first] + [self.relayout(t, first.perm) for t in tensors[1:]]
        layer = Concat(first.perm.index(axis))
        return self.emit("concat", layer, tensors, first.perm, out_shape, first.dtype)

    def output(self, out: Value) -> None:
        """Make ``out`` the draft's output, in the source's layout."""
        out = self.settle(out)  # type: ignore[assignment]
        if not isinstance(out, Tensor):
            raise ValueError(f"{self.caller}: the model's output does not depend on its input.")
        if out.batch_axis != 0:
            raise ValueError(
                f"{self.caller}: the output has the batch on axis {out.batch_axis} "
                f"(shape {out.shape}); return it batch first."
            )
        self.draft.output = self.natural(out).node


def _one_axis_split(t: Tensor, new: tuple[int, ...]) -> tuple[int, int] | None:
    """For a reshape that splits one non-batch source axis into several (``unflatten``,
    heads out of the features): that axis and the number of its parts; else ``None``."""
    old = t.shape
    extra = len(new) - len(old)
    if extra < 1:
        return None
    for axis in range(len(old)):
        parts = new[axis:axis + extra + 1]
        if (new[:axis] == old[:axis] and new[axis + extra + 1:] == old[axis + 1:]
                and math.prod(parts) == old[axis]):
            return None if axis == t.batch_axis else (axis, extra + 1)
    return None


def _only_ones_change(t: Tensor, new: tuple[int, ...]) -> tuple[list[int], list[int]] | None:
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
