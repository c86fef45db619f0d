"""``from_torch(torch.export.export(module, (x,)))``: a relprop model from an exported
program, read node by node from its ATen graph with the shared layout reader
(:mod:`relprop.interop._reading`), like a jaxpr or an ONNX graph.

The program's parameters and buffers become the layers' tensors (the same tensors, no
copies); shapes come from each node's ``meta["val"]``. torch is imported inside the
functions only.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relprop.interop._draft import Draft
from relprop.interop._reading import (
    SYMBOLIC_BATCH,
    Const,
    Handlers,
    LayoutReader,
    Lazy,
    Pointwise,
    Rowwise,
    Tensor,
    UnsupportedError,
    Value,
)
from relprop.layers import (
    ELU,
    GELU,
    Broadcast,
    Embedding,
    Hardtanh,
    LayerNorm,
    LeakyReLU,
    MatMul,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    Upsample,
)
from relprop.layers.batchnorm import batch_norm_for
from relprop.model import INPUT, Graph, Sequential

__all__ = [
    "export_with_keywords", "from_exported_program", "narrowest_float", "supported_aten_ops",
]

_OPS = Handlers()
_op = _OPS.register


def supported_aten_ops() -> tuple[str, ...]:
    """The ATen operators (by name, without overload) read from an exported program."""
    return tuple(sorted({*_OPS.names(), *_ELEMENTWISE, *_SAME_VALUES, *_ROW_REDUCTIONS}))


@dataclass(frozen=True)
class _Rows:
    """``tensor.view(-1, features)``: the tensor with its leading axes, the batch among
    them, flattened into rows, as ``nn.Linear`` on 3-d inputs and HF's ``Conv1D`` write a
    matrix product (``addmm``, ``mm``) over the last axis. Read as the tensor itself: the
    product becomes a dense layer on it, and the view back restores it."""

    tensor: Tensor


@dataclass(frozen=True)
class _Split:
    """``torch.split`` of a tensor along source axis ``axis`` at ``bounds``; each part
    becomes a :class:`~relprop.Slice` where it is taken (``getitem``)."""

    tensor: Tensor
    axis: int
    bounds: tuple[tuple[int, int], ...]


def _shape(node: Any) -> tuple[int, ...]:
    value = node.meta.get("val")
    dims = []
    for i, size in enumerate(value.shape):
        try:
            dims.append(int(size))
        except TypeError:  # a symbolic size: only the batch may be one
            if i != 0:
                raise
            dims.append(SYMBOLIC_BATCH)
    return tuple(dims)


def _per_axis(spatial: int) -> Callable[[Any], list[Any]]:
    """torch's per-axis arguments (an int, or one per spatial axis) as lists."""

    def expand(value: Any) -> list[Any]:
        return list(value) if isinstance(value, (list, tuple)) else [value] * spatial

    return expand


def _pairs(padding: Sequence[int]) -> list[tuple[int, int]]:
    return [(int(p), int(p)) for p in padding]


class _Reader(LayoutReader):
    def __init__(self, draft: Draft) -> None:
        import array_api_compat.torch as xp

        super().__init__(draft, "from_torch", xp)
        self.node: Any = None

    def fail(self, problem: str) -> UnsupportedError:
        node = self.node
        where = "" if node is None else f"node {node.name!r} ({node.target})"
        return UnsupportedError(
            f"from_torch: exported program {where} {problem}. Supported ATen ops: "
            f"rp.interop.torch_export.supported_aten_ops() ({', '.join(supported_aten_ops())})."
        )

    def read(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        self.node = node
        if not _any_tensor([args, kwargs]):  # constants only (buffers' bookkeeping): evaluate
            values = _unwrap([args, kwargs])
            return Const(node.target(*values[0], **values[1]))
        name = node.target.__name__.split(".")[0] if hasattr(node.target, "__name__") else ""
        if name in _SAME_VALUES:  # dtype casts and aliases: relprop computes in one dtype
            return args[0]
        if name in _ROW_REDUCTIONS and isinstance(args[0], (Tensor, *Lazy)):
            lazy_rows = self._row_reduction(node, name, *args, **kwargs)
            if lazy_rows is not None:
                return lazy_rows
        handler = _OPS.get(name)
        if name in _ELEMENTWISE and not kwargs:
            values = [a if isinstance(a, (Const, Tensor, *Lazy)) else Const(a) for a in args]
            numbers = [not isinstance(a, (Const, Tensor, *Lazy)) for a in args]

            def evaluate(arrays: list[Any]) -> Any:  # numbers stay numbers (pow's exponent)
                return node.target(*(a if number else array for a, array, number
                                     in zip(args, arrays, numbers, strict=True)))

            lazy = self.pointwise(
                values, _shape(node), evaluate,
                unhandled=handler is None, product=name in ("mul", "div"), step=name,
            )
            if lazy is not None:
                return lazy
        if handler is None:
            raise self.fail("is not supported")
        return handler(self, node, *self._settled(args), **self._settled(kwargs))

    def _settled(self, value: Any) -> Any:
        """``value`` with every written-out function in it made a layer."""
        if isinstance(value, Lazy):
            return self.settle(value)
        if isinstance(value, dict):
            return {k: self._settled(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._settled(v) for v in value)
        return value

    def tensor(self, value: Any) -> Tensor:
        if isinstance(value, (_Rows, _Split)):
            raise self.fail(
                "reads a split of the input's values, or its rows with the batch flattened "
                "into them (x.view(-1, n)), other than for a matrix product or an indexing"
            )
        if not isinstance(value, Tensor):
            raise self.fail("needs an input that depends on the program's input")
        return value

    def _row_reduction(self, node: Any, name: str, x: Any, dims: Any = None,
                       keepdim: bool = False, **options: Any) -> Rowwise | None:
        if dims is None:
            return None
        axes = [dims] if isinstance(dims, int) else list(dims)
        return self.row_statistic(x, axes, bool(keepdim),
                                  lambda a: node.target(a, dims, keepdim, **options), name)

    def weight(self, value: Any) -> Any:
        if not isinstance(value, Const):
            raise self.fail("needs its parameters to be constants")
        return value.value

    # -- linear layers ---------------------------------------------------------------

    @_op("conv1d", "conv2d", "conv3d")
    def _conv(self, node: Any, x: Any, w: Any, b: Any = None, stride: Any = 1,
              padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Value:
        t = self.tensor(x)
        spatial = len(t.shape) - 2
        if isinstance(padding, str):
            raise self.fail(f"has padding={padding!r}; export a module with numeric padding")
        per_axis = _per_axis(spatial)
        axes = tuple(range(len(t.shape)))
        out = self.conv(t, w, self.weight(w), axes, axes, stride=per_axis(stride),
                        pads=_pairs(per_axis(padding)), dilation=per_axis(dilation),
                        groups=int(groups), out_shape=_shape(node))
        return out if b is None else self._bias(out, b, spatial, node)

    @_op("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
    def _conv_transpose(self, node: Any, x: Any, w: Any, b: Any = None, stride: Any = 1,
                        padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                        dilation: Any = 1) -> Value:
        t = self.tensor(x)
        spatial = len(t.shape) - 2
        per_axis = _per_axis(spatial)
        axes = tuple(range(len(t.shape)))
        out = self.conv(t, w, self.weight(w), axes, axes, stride=per_axis(stride),
                        pads=_pairs(per_axis(padding)), dilation=per_axis(dilation),
                        groups=int(groups), out_shape=_shape(node),
                        output_padding=per_axis(output_padding))
        return out if b is None else self._bias(out, b, spatial, node)

    def _bias(self, out: Tensor, b: Any, spatial: int, node: Any) -> Tensor:
        bias = self.xp.reshape(self.weight(b), (-1,) + (1,) * spatial)
        return self.add(out, Const(bias, b.origin), _shape(node))

    @_op("embedding")
    def _embedding(self, node: Any, weight: Any, indices: Any, padding_idx: int = -1,
                   scale_grad_by_freq: bool = False, sparse: bool = False) -> Value:
        t = self.natural(self.tensor(indices))
        table = self.weight(weight)
        name = self.named(weight, "embedding")
        return self.emit(name, Embedding(table), [t], tuple(range(len(t.shape) + 1)),
                         _shape(node), table.dtype)

    @_op("linear")
    def _linear(self, node: Any, x: Any, w: Any, b: Any = None) -> Value:
        t = self.tensor(x)
        out = self.dense(t, w, len(t.shape) - 1, self.weight(w), True, _shape(node))
        return out if b is None else self.add(out, b, _shape(node))

    @_op("addmm", "mm")
    def _addmm(self, node: Any, *args: Any, beta: float = 1, alpha: float = 1) -> Any:
        bias, rows, weight = (None, *args) if len(args) == 2 else args[:3]
        if beta != 1 or alpha != 1:
            raise self.fail("scales its terms (beta, alpha != 1)")
        flat = isinstance(rows, _Rows)
        t = rows.tensor if flat else self.tensor(rows)
        matrix = self.weight(weight)
        out_shape = (*t.shape[:-1], int(matrix.shape[-1]))
        out = self.dense(t, weight, len(t.shape) - 1, matrix.T, True, out_shape)
        if bias is not None:
            out = self.add(out, bias, out_shape)
        return _Rows(out) if flat else out

    @_op("matmul", "bmm")
    def _matmul(self, node: Any, a: Any, b: Any) -> Value:
        if isinstance(b, Const):
            t = self.tensor(a)
            matrix = self.weight(b)
            if matrix.ndim != 2:
                raise self.fail(f"multiplies by a constant of shape {tuple(matrix.shape)}")
            return self.dense(t, b, len(t.shape) - 1, matrix.T, True, _shape(node))
        left, right = self.natural(self.tensor(a)), self.natural(self.tensor(b))
        if len(left.shape) != len(right.shape):
            raise self.fail(f"multiplies matrices of shapes {left.shape} and {right.shape} "
                            "(broadcasting)")
        shape = _shape(node)
        return self.emit("matmul", MatMul(), [left, right], range(len(shape)), shape,
                         left.dtype)

    @_op("layer_norm")
    def _layer_norm(self, node: Any, x: Any, normalized_shape: Any, weight: Any = None,
                    bias: Any = None, eps: float = 1e-5, cudnn_enable: bool = True) -> Value:
        t = self.tensor(x)
        sizes = tuple(int(n) for n in normalized_shape)
        last = tuple(range(len(t.shape) - len(sizes), len(t.shape)))
        t = self.relayout(t, tuple(p for p in t.perm if p not in last) + last)
        arrays = [None if v is None else self.weight(v) for v in (weight, bias)]
        layer = LayerNorm(sizes, arrays[0], arrays[1], eps=float(eps))
        origin = weight.origin if isinstance(weight, Const) else None
        return self.emit(origin or "layer_norm", layer, [t], t.perm, t.shape, t.dtype)

    @_op("softmax", "_softmax")
    def _softmax(self, node: Any, x: Any, dim: int, *options: Any) -> Value:
        t = self.tensor(x)
        axis = t.perm.index(int(dim) % len(t.shape))
        if axis == 0:
            raise self.fail("takes the softmax over the batch axis")
        return self.emit("softmax", Softmax(axis), [t], t.perm, t.shape, t.dtype)

    @_op("scaled_dot_product_attention")
    def _attention(self, node: Any, q: Any, k: Any, v: Any, attn_mask: Any = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: Any = None,
                   enable_gqa: bool = False) -> Value:
        """Attention as its parts: ``softmax(q k^T * scale + mask) v``."""
        import torch

        if enable_gqa:
            raise self.fail("shares keys between query heads (enable_gqa=True)")
        query, key, value = (self.natural(self.tensor(a)) for a in (q, k, v))
        n = len(query.shape)
        order = [*range(n - 2), n - 1, n - 2]
        key_t = self.natural(self.transpose(key, order))
        shape = (*query.shape[:-1], key.shape[-2])
        scores = self.emit("matmul", MatMul(), [query, key_t], range(n), shape, query.dtype)
        factor = 1 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
        scores = self.affine(scores, None, scale=self.scalar(factor, query.dtype))
        if is_causal:
            attn_mask = Const(torch.ones(shape[-2:], dtype=torch.bool).tril())
        if attn_mask is not None:
            mask = self.weight(attn_mask)
            if mask.dtype == torch.bool:
                scores = self._masked(scores, mask, torch.finfo(query.dtype).min)
            else:
                scores = self.add(scores, attn_mask, shape)
        weights = self.emit("softmax", Softmax(-1), [scores], scores.perm, shape, query.dtype)
        out_shape = (*shape[:-1], value.shape[-1])
        return self.emit("matmul", MatMul(), [weights, value], range(n), out_shape,
                         query.dtype)

    def _masked(self, t: Tensor, keep: Any, fill: Any) -> Tensor:
        """``where(keep, t, fill)`` with a constant mask: an element-wise affine map."""
        import torch

        keep = torch.as_tensor(keep).to(torch.bool)
        scale = keep.to(t.dtype)
        shift = torch.where(keep, torch.zeros((), dtype=t.dtype),
                            torch.as_tensor(fill, dtype=t.dtype))
        return self.affine(t, None, scale=self.constant(Const(scale), t, t.shape),
                           shift=self.constant(Const(shift), t, t.shape))

    @_op("where")
    def _where(self, node: Any, condition: Any, a: Any, b: Any) -> Value:
        if not isinstance(condition, Const):
            raise self.fail("selects by a condition that depends on the input")
        if isinstance(a, Tensor) and not isinstance(b, Tensor):
            return self._masked(a, condition.value, _unwrap(b))
        if isinstance(b, Tensor) and not isinstance(a, Tensor):
            return self._masked(b, ~condition.value.to(bool), _unwrap(a))
        raise self.fail("selects between two values that depend on the input")

    @_op("batch_norm")
    def _batch_norm(self, node: Any, x: Any, weight: Any, bias: Any, mean: Any, var: Any,
                    training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                    cudnn_enabled: bool = True) -> Value:
        if training:
            raise self.fail("normalises with batch statistics; export the module in eval mode")
        t = self.natural(self.tensor(x))
        cls = batch_norm_for(len(t.shape))
        arrays = [None if v is None else self.weight(v) for v in (mean, var, weight, bias)]
        layer = cls(arrays[0], arrays[1], arrays[2], arrays[3], eps=float(eps))
        origin = mean.origin if isinstance(mean, Const) else None
        return self.same_place(layer, origin or "bn", t)

    # -- element-wise ----------------------------------------------------------------

    @_op("add", "add_")
    def _add(self, node: Any, a: Any, b: Any, alpha: float = 1) -> Value:
        if alpha != 1:
            raise self.fail("adds with alpha != 1")
        return self.add(self._value(a), self._value(b), _shape(node))

    @_op("sub", "sub_", "rsub")
    def _sub(self, node: Any, a: Any, b: Any, alpha: float = 1) -> Value:
        if alpha != 1:
            raise self.fail("subtracts with alpha != 1")
        a, b = self._value(a), self._value(b)
        if "rsub" in str(node.target):
            a, b = b, a
        return self.sub(a, b, _shape(node))

    @_op("mul", "mul_")
    def _mul(self, node: Any, a: Any, b: Any) -> Value:
        return self.mul(self._value(a), self._value(b), _shape(node))

    @_op("div", "div_")
    def _div(self, node: Any, a: Any, b: Any, rounding_mode: Any = None) -> Value:
        if rounding_mode is not None:
            raise self.fail(f"divides with rounding_mode={rounding_mode!r}")
        return self.div(self._value(a), self._value(b), _shape(node))

    def _value(self, a: Any) -> Value:
        import torch

        if isinstance(a, (Tensor, Const)):
            return a
        return Const(torch.tensor(float(a), dtype=torch.float64))  # cast where it is used

    def _unary(self, layer: Any, name: str, x: Any) -> Value:
        return self.same_place(layer, name, self.tensor(x))

    @_op("relu", "relu_")
    def _relu(self, node: Any, x: Any) -> Value:
        return self._unary(ReLU(), "relu", x)

    @_op("sigmoid", "sigmoid_")
    def _sigmoid(self, node: Any, x: Any) -> Value:
        return self._unary(Sigmoid(), "sigmoid", x)

    @_op("tanh", "tanh_")
    def _tanh(self, node: Any, x: Any) -> Value:
        return self._unary(Tanh(), "tanh", x)

    @_op("silu", "silu_")
    def _silu(self, node: Any, x: Any) -> Value:
        return self._unary(SiLU(), "silu", x)

    @_op("gelu", "gelu_")
    def _gelu(self, node: Any, x: Any, approximate: str = "none") -> Value:
        return self._unary(GELU(str(approximate)), "gelu", x)

    @_op("leaky_relu", "leaky_relu_")
    def _leaky(self, node: Any, x: Any, slope: float = 0.01) -> Value:
        return self._unary(LeakyReLU(float(slope)), "leaky_relu", x)

    @_op("elu", "elu_")
    def _elu(self, node: Any, x: Any, alpha: float = 1.0, scale: float = 1.0,
             input_scale: float = 1.0) -> Value:
        if scale != 1 or input_scale != 1:
            raise self.fail("is a scaled ELU (SELU)")
        return self._unary(ELU(float(alpha)), "elu", x)

    @_op("hardtanh", "hardtanh_")
    def _hardtanh(self, node: Any, x: Any, low: float = -1.0, high: float = 1.0) -> Value:
        return self._unary(Hardtanh(float(low), float(high)), "hardtanh", x)

    @_op("relu6")
    def _relu6(self, node: Any, x: Any) -> Value:
        return self._unary(Hardtanh(0.0, 6.0), "relu6", x)

    @_op("softplus")
    def _softplus(self, node: Any, x: Any, beta: float = 1.0, threshold: float = 20.0) -> Value:
        if threshold < 20:
            raise self.fail("has threshold < 20 (relprop's softplus has no linear region)")
        return self._unary(Softplus(float(beta)), "softplus", x)

    @_op("dropout", "dropout_", "feature_dropout", "alpha_dropout", "clone", "contiguous",
         "detach")
    def _same(self, node: Any, x: Any, *rest: Any, **options: Any) -> Value:
        if rest and rest[-1] is True and "dropout" in str(node.target):
            raise self.fail("drops values at random (train=True); export in eval mode")
        return self._value(x)

    # -- pools -----------------------------------------------------------------------

    @_op("max_pool1d", "max_pool2d", "max_pool3d")
    def _max_pool(self, node: Any, x: Any, kernel: Any, stride: Any = (), padding: Any = 0,
                  dilation: Any = 1, ceil_mode: bool = False) -> Value:
        t = self.tensor(x)
        return self._window(node, t, True, kernel, stride, padding, dilation, ceil_mode, True)

    @_op("avg_pool1d", "avg_pool2d", "avg_pool3d")
    def _avg_pool(self, node: Any, x: Any, kernel: Any, stride: Any = (), padding: Any = 0,
                  ceil_mode: bool = False, count_include_pad: bool = True,
                  divisor_override: Any = None) -> Value:
        if divisor_override is not None:
            raise self.fail("has divisor_override")
        t = self.tensor(x)
        return self._window(node, t, False, kernel, stride, padding, 1, ceil_mode,
                            count_include_pad)

    def _window(self, node: Any, t: Tensor, maximum: bool, kernel: Any, stride: Any,
                padding: Any, dilation: Any, ceil_mode: bool, include: bool) -> Value:
        spatial = len(t.shape) - 2
        per_axis = _per_axis(spatial)
        k = per_axis(kernel)
        s = per_axis(stride) if stride not in ((), [], None) else k
        return self.pool(t, maximum, [1, 1, *k], [1, 1, *s],
                         [(0, 0), (0, 0), *_pairs(per_axis(padding))],
                         [1, 1, *per_axis(dilation)], _shape(node), ceil_mode=bool(ceil_mode),
                         count_include_pad=bool(include))

    @_op("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d")
    def _adaptive(self, node: Any, x: Any, size: Any) -> Value:
        t = self.tensor(x)
        sizes = list(size) if isinstance(size, (list, tuple)) else [size]
        if any(int(s) != 1 for s in sizes):
            raise self.fail(f"pools to {sizes}; only global pooling (output size 1)")
        return self.global_pool(t, range(2, len(t.shape)), "mean", _shape(node), keepdims=True)

    @_op("mean")
    def _mean(self, node: Any, x: Any, dims: Any, keepdim: bool = False,
              dtype: Any = None) -> Value:
        t = self.tensor(x)
        axes = [int(d) % len(t.shape) for d in dims]
        return self.global_pool(t, axes, "mean", _shape(node), keepdims=bool(keepdim))

    # -- moves -----------------------------------------------------------------------

    @_op("view", "reshape", "_unsafe_view")
    def _reshape(self, node: Any, x: Any, shape: Any) -> Any:
        new = _shape(node)
        if isinstance(x, _Rows):
            if new != x.tensor.shape:
                raise self.fail(f"reshapes rows of {x.tensor.shape} to {new}")
            return x.tensor
        t = self.tensor(x)
        rows = (math.prod(t.shape[:-1]), t.shape[-1])
        if len(t.shape) > 2 and new == rows and t.batch_axis != len(t.shape) - 1:
            return _Rows(t)
        return self.reshape(t, new)

    @_op("split", "split_with_sizes")
    def _split(self, node: Any, x: Any, sizes: Any, dim: int = 0) -> _Split:
        t = self.tensor(x)
        axis = int(dim) % len(t.shape)
        total = t.shape[axis]
        parts = ([int(sizes)] * math.ceil(total / int(sizes)) if isinstance(sizes, int)
                 else [int(n) for n in sizes])
        starts = [sum(parts[:i]) for i in range(len(parts))]
        bounds = tuple((a, min(a + n, total)) for a, n in zip(starts, parts, strict=True))
        return _Split(t, axis, bounds)

    @_op("getitem")
    def _getitem(self, node: Any, values: Any, index: int) -> Any:
        if isinstance(values, _Split):
            start, stop = values.bounds[index]
            return self._slice(node, values.tensor, values.axis, start, stop)
        return values[index]

    @_op("slice")
    def _slice(self, node: Any, x: Any, dim: int = 0, start: Any = None, end: Any = None,
               step: int = 1) -> Value:
        t = self.tensor(x)
        return self.slice_axis(t, int(dim) % len(t.shape), start, end, step)

    @_op("select")
    def _select(self, node: Any, x: Any, dim: int, index: int) -> Value:
        t = self.tensor(x)
        axis = int(dim) % len(t.shape)
        first = int(index) % t.shape[axis]
        return self.drop_axes(self._slice(node, t, axis, first, first + 1), [axis])

    @_op("expand")
    def _expand(self, node: Any, x: Any, sizes: Any, implicit: bool = False) -> Value:
        t, shape = self.tensor(x), _shape(node)
        if shape == t.shape:
            return t
        if len(shape) != len(t.shape) or shape[t.batch_axis] != t.shape[t.batch_axis]:
            raise self.fail(f"broadcasts the input's values of shape {t.shape} to {shape}")
        out = Tensor("", t.perm, shape, t.dtype)
        return self.emit("broadcast", Broadcast(out.stored), [t], t.perm, shape, t.dtype)

    @_op("neg")
    def _neg(self, node: Any, x: Any) -> Value:
        return self.neg(self.tensor(x))

    @_op("unflatten")
    def _unflatten(self, node: Any, x: Any, dim: int, sizes: Any) -> Value:
        return self.reshape(self.tensor(x), _shape(node))

    @_op("flatten")
    def _flatten(self, node: Any, x: Any, start: int = 0, end: int = -1) -> Value:
        return self.reshape(self.tensor(x), _shape(node))

    @_op("permute")
    def _permute(self, node: Any, x: Any, dims: Any) -> Value:
        t = self.tensor(x)
        return self.transpose(t, [int(d) % len(t.shape) for d in dims])

    @_op("transpose")
    def _transpose_two(self, node: Any, x: Any, a: int, b: int) -> Value:
        t = self.tensor(x)
        order = list(range(len(t.shape)))
        a, b = int(a) % len(order), int(b) % len(order)
        order[a], order[b] = order[b], order[a]
        return self.transpose(t, order)

    @_op("unsqueeze")
    def _unsqueeze(self, node: Any, x: Any, dim: int) -> Value:
        t = self.tensor(x)
        return self.insert_axes(t, [int(dim) % (len(t.shape) + 1)])

    @_op("squeeze")
    def _squeeze(self, node: Any, x: Any, dims: Any = None) -> Value:
        t = self.tensor(x)
        if dims is None:
            dims = [i for i, s in enumerate(t.shape) if s == 1 and i != t.batch_axis]
        dims = [dims] if isinstance(dims, int) else dims
        return self.drop_axes(t, [int(d) % len(t.shape) for d in dims])

    @_op("cat", "concat")
    def _cat(self, node: Any, values: Any, dim: int = 0) -> Value:
        shape = _shape(node)
        return self.concat(list(values), int(dim) % len(shape), shape)

    @_op("constant_pad_nd")
    def _constant_pad(self, node: Any, x: Any, pad: Any, value: Any = 0.0) -> Value:
        return self._pad(node, x, pad, "constant", value)

    @_op("pad")
    def _pad(self, node: Any, x: Any, pad: Any, mode: Any = "constant", value: Any = None) -> Value:
        t = self.tensor(x)
        if (mode not in ("constant", None)) or float(value or 0.0) != 0.0:
            raise self.fail("pads with something other than zeros")
        values = [int(p) for p in pad]
        pairs = [(0, 0)] * len(t.shape)
        for i in range(len(values) // 2):
            pairs[len(t.shape) - 1 - i] = (values[2 * i], values[2 * i + 1])
        return self.zero_pad(t, pairs, _shape(node))

    @_op("upsample_nearest1d", "upsample_nearest2d", "upsample_linear1d",
         "upsample_bilinear2d")
    def _upsample(self, node: Any, x: Any, size: Any, *rest: Any) -> Value:
        t = self.natural(self.tensor(x))
        name = str(node.target)
        corners = bool(rest[0]) if "linear" in name and rest else False
        scales = rest[1] if "linear" in name and len(rest) > 1 else (rest[0] if rest else None)
        mode = "linear" if "linear" in name else "nearest"
        if scales is not None and all(s is not None for s in scales):
            # the scales fix the coordinates (and, rounded down, the size)
            layer = Upsample(None, tuple(float(s) for s in scales), mode, corners)
        elif size is not None:
            layer = Upsample(tuple(int(s) for s in size), None, mode, corners)
        else:
            raise self.fail("has neither an output size nor scale factors")
        return self.emit("upsample", layer, [t], t.perm, _shape(node), t.dtype)


_ELEMENTWISE = frozenset({
    "mul", "add", "sub", "rsub", "div", "neg", "pow", "erf", "tanh", "sigmoid", "exp", "log",
    "sqrt", "rsqrt", "abs", "reciprocal",
})
"""ATen ops that may be steps of an activation written out (``x * torch.sigmoid(x)``)."""


_SAME_VALUES = frozenset({
    "to", "_to_copy", "alias", "type_as", "_assert_tensor_metadata", "lift_fresh_copy",
})
"""ATen ops that leave the values as they are (dtype casts: relprop computes in one)."""

_ROW_REDUCTIONS = frozenset({"mean", "sum", "amax"})
"""Reductions that may be a row statistic of a written-out normalisation or softmax."""


def _any_tensor(value: Any) -> bool:
    if isinstance(value, (Tensor, Pointwise, Rowwise, _Rows, _Split)):
        return True
    if isinstance(value, dict):
        return any(_any_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_any_tensor(v) for v in value)
    return False


def _unwrap(value: Any) -> Any:
    if isinstance(value, Const):
        return value.value
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _origin(target: str) -> str:
    """``"features.0.weight"`` -> ``"features.0"``: a layer named after its module."""
    return target.rsplit(".", 1)[0] if "." in target else target


def _reachable(start: Any, neighbours: Callable[[Any], Any]) -> set[Any]:
    """``start`` and every node reached from it through ``neighbours``."""
    found, stack = {start}, [start]
    while stack:
        for other in neighbours(stack.pop()):
            if other not in found:
                found.add(other)
                stack.append(other)
    return found


def _live_nodes(graph: Any) -> set[Any]:
    """The nodes the output depends on (a model's other outputs, its key-value cache and
    shape assertions are not read)."""
    output = next(n for n in graph.nodes if n.op == "output")
    return _reachable(output, lambda node: node.all_input_nodes)


def narrowest_float(program: Any) -> Any:
    """The floating dtype of least precision among the program's values that depend on
    its input (``None``: none)."""
    import torch
    from torch.export.graph_signature import InputKind

    name = next(s.arg.name for s in program.graph_signature.input_specs
                if s.kind == InputKind.USER_INPUT)
    first = next(n for n in program.graph.nodes if n.name == name)
    dtypes = {getattr(node.meta.get("val"), "dtype", None) for node in _dependent_nodes(first)}
    floats = [d for d in dtypes if isinstance(d, torch.dtype) and d.is_floating_point]
    return min(floats, key=lambda d: torch.finfo(d).bits, default=None)


def _dependent_nodes(source: Any) -> set[Any]:
    """The nodes whose values depend on ``source``'s."""
    return _reachable(source, lambda node: node.users)


def _folded(program: Any, state: dict[str, Any], first: Any, dependent: set[Any]) -> dict:
    """The values of the nodes that feed the input-dependent ones without depending on
    the input themselves (masks, position ids, rotary tables: whatever the program builds
    them with, vmaps and submodules included), from one run of the program's graph with
    zeros as its input."""
    import torch
    from torch.export.graph_signature import InputKind

    boundary = {used for node in dependent for used in node.all_input_nodes
                if used not in dependent and used.op != "placeholder"}
    if not boundary:
        return {}
    value = first.meta["val"]
    zeros = torch.zeros([int(s) if isinstance(s, int) else 1 for s in value.shape],
                        dtype=value.dtype)
    args = [zeros if spec.kind == InputKind.USER_INPUT else state[spec.target]
            for spec in program.graph_signature.input_specs]
    found: dict[Any, Any] = {}

    class Folding(torch.fx.Interpreter):
        def run_node(self, node: Any) -> Any:
            result = super().run_node(node)
            if node in boundary:
                found[node] = result
            return result

    with torch.no_grad():
        Folding(program.graph_module).run(*args)
    return found


def from_exported_program(program: Any) -> Sequential | Graph:
    """A relprop model of a ``torch.export.ExportedProgram`` of one input and one output
    (see :func:`relprop.from_torch`)."""
    import torch
    from torch.export.graph_signature import InputKind

    signature = program.graph_signature
    state = {**program.state_dict, **getattr(program, "constants", {})}
    user_inputs = [s for s in signature.input_specs if s.kind == InputKind.USER_INPUT]
    if len(user_inputs) != 1:
        raise ValueError(
            f"from_torch: the exported program has {len(user_inputs)} inputs; relprop explains "
            "programs of one input."
        )
    env: dict[str, Any] = {}
    graph = program.graph_module.graph
    placeholders = {n.name: n for n in graph.nodes if n.op == "placeholder"}
    first = placeholders[user_inputs[0].arg.name]
    shape = _shape(first)
    draft = Draft(shape[1:])
    reader = _Reader(draft)
    env[first.name] = Tensor(INPUT, tuple(range(len(shape))), shape, first.meta["val"].dtype)
    for spec in signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            env[spec.arg.name] = Const(state[spec.target].detach(), _origin(spec.target))
    output: Any = None
    live = _live_nodes(graph)
    dependent = _dependent_nodes(first)
    folded = _folded(program, state, first, dependent & live)
    for node in graph.nodes:
        if node.op == "placeholder" or node not in live:
            continue
        if node not in dependent and node.op != "output":  # folded where it is used
            if node in folded:
                env[node.name] = Const(folded[node])
            continue
        if node.op == "output":
            outputs = node.args[0]
            if len(outputs) != 1:
                raise ValueError(f"from_torch: the exported program returns {len(outputs)} "
                                 "values; relprop explains one output.")
            output = env[outputs[0].name]
            continue
        if node.op != "call_function":
            raise reader.fail(f"is a {node.op} node")

        def resolve(a: Any) -> Any:
            if isinstance(a, torch.fx.Node):
                return env[a.name]
            if isinstance(a, (list, tuple)):
                return type(a)(resolve(b) for b in a)
            return a

        args = [resolve(a) for a in node.args]
        kwargs = {k: resolve(v) for k, v in node.kwargs.items()}
        env[node.name] = reader.read(node, args, kwargs)
    reader.node = None
    reader.output(output)
    return draft.model()



def _logits(output: Any) -> Any:
    """The tensor a model's output holds: itself, or a HuggingFace output's ``logits``."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    keys = list(output) if isinstance(output, Mapping) else type(output).__name__
    raise ValueError(
        f"from_torch: the module returns {keys}, with no tensor 'logits'; wrap it in a "
        "module whose forward returns the tensor to explain."
    )


def export_with_keywords(module: Any, example: Mapping[str, Any]) -> tuple[Any, Any]:
    """``torch.export`` of ``module(**example)`` as a program of one input, the one
    floating-point tensor of ``example`` (HuggingFace's ``inputs_embeds``); its other
    entries are held fixed, and the program returns the module's output, or its
    ``logits``. Returns the program and that input.
    """
    import torch

    floats = [k for k, v in example.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if len(floats) != 1:
        raise ValueError(
            f"from_torch: example_input as keywords needs exactly one floating-point tensor "
            f"(the input to explain, e.g. inputs_embeds); got {floats or 'none'} among "
            f"{list(example)}."
        )
    key = floats[0]
    fixed = {k: v for k, v in example.items() if k != key}
    if "use_cache" in inspect.signature(module.forward).parameters:
        fixed.setdefault("use_cache", False)  # a key-value cache is no part of the output

    class Explained(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x: Any) -> Any:
            return _logits(self.inner(**{key: x}, **fixed))

    x = example[key].detach()
    try:
        program = torch.export.export(Explained(), (x,), strict=False)
    except Exception as error:  # torch.export's many error types
        raise ValueError(
            f"from_torch: torch.export could not trace {type(module).__name__}(**"
            f"example_input): {type(error).__name__}: {str(error).splitlines()[0]}"
        ) from error
    return program, x
