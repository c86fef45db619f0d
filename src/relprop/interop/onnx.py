"""``from_onnx``: a relprop model from an ONNX file or ``onnx.ModelProto``.

Each node of the graph maps to relprop layers through the same layout-tracking reader as
the jaxpr importer (:mod:`relprop.interop._reading`): ``Gemm`` / ``MatMul`` to
:class:`~relprop.Dense`, ``Conv`` to :class:`~relprop.Conv2d`, pools, batch norms, moves,
arithmetic with constants (input normalisation) to :class:`~relprop.Affine`. Nodes whose
inputs are all constants (``Constant``, ``Shape`` arithmetic of a reshape's target) are
evaluated while reading, with ``onnx``'s reference evaluator. A trailing ``Softmax`` is
left out with a warning: LRP explains the logits.

onnx is imported inside the functions only.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from relprop.interop._draft import Draft, on_backend
from relprop.interop._reading import (
    SYMBOLIC_BATCH,
    Const,
    Handlers,
    LayoutReader,
    Tensor,
    UnsupportedError,
    Value,
    same_pads,
)
from relprop.layers import (
    ELU,
    GELU,
    Embedding,
    Hardtanh,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
    Upsample,
)
from relprop.layers.batchnorm import batch_norm_for
from relprop.model import INPUT, Graph, Sequential

__all__ = ["from_onnx", "supported_ops"]

_OPS = Handlers()
_op = _OPS.register

_ELEMENTWISE = frozenset({
    "Mul", "Add", "Sub", "Div", "Neg", "Pow", "Erf", "Tanh", "Sigmoid", "Exp", "Log", "Sqrt",
    "Abs", "Reciprocal", "Softplus", "Max", "Min",
})
"""Operators that may be steps of an activation written out (a GELU exported with opsets
below 20: ``Div``, ``Erf``, ``Add``, ``Mul``)."""


def supported_ops() -> tuple[str, ...]:
    """The ONNX operators :func:`from_onnx` reads on values that depend on the input (a
    node of constants only is evaluated, whatever its operator)."""
    return tuple(sorted({*_OPS.names(), *_ELEMENTWISE}))


class _Node:
    """An ONNX node's operator, name, attributes (as Python values) and outputs."""

    def __init__(self, proto: Any) -> None:
        from onnx import helper

        self.proto = proto
        self.op = proto.op_type
        self.name = proto.name or (proto.output[0] if proto.output else proto.op_type)
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self.outputs = list(proto.output)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.attrs.get(key, default)
        if isinstance(value, bytes):
            return value.decode()
        return value

    def number(self, key: str, default: float) -> float:
        """A float attribute as the number it was written as: ONNX stores float32
        (``0.2`` arrives as 0.20000000298...), so take the shortest decimal that is the
        same float32 (``0.2``), as the exporting framework most likely had it."""
        value = self.attrs.get(key)
        return float(default) if value is None else float(str(np.float32(value)))


class _Reader(LayoutReader):
    def __init__(self, draft: Draft, proto: Any, input_shape: tuple[int, ...]) -> None:
        super().__init__(draft, "from_onnx", np)
        self.proto = proto
        self.input_shape = input_shape
        self.shapes = _shapes(proto, input_shape, {})
        self.opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                         default=1)
        self.node: _Node | None = None

    def fail(self, problem: str) -> UnsupportedError:
        node = self.node
        where = "the model's output" if node is None else f"node {node.name!r} (op_type {node.op})"
        return UnsupportedError(
            f"from_onnx: {where} {problem}. Supported on the input's values: "
            f"rp.interop.onnx.supported_ops() ({', '.join(supported_ops())})."
        )

    def out(self, index: int = 0) -> tuple[int, ...]:
        assert self.node is not None
        name = self.node.outputs[index]
        if name not in self.shapes:  # infer again, from the shapes read so far
            self.shapes.update(_shapes(self.proto, self.input_shape, self.shapes))
        if name not in self.shapes:
            raise self.fail(f"has output {name!r} of a shape ONNX's shape inference cannot "
                            "tell")
        return self.shapes[name]

    def known(self, node: _Node, value: Value) -> Value:
        """Record the shape of a tensor a handler computed itself."""
        if isinstance(value, Tensor):
            self.shapes.setdefault(node.outputs[0], value.shape)
        return value

    def read(self, node: _Node, inputs: list[Value | None]) -> list[Value]:
        self.node = node
        if all(v is None or isinstance(v, Const) for v in inputs):
            return self.evaluate(node, inputs)
        handler = _OPS.get(node.op)
        if node.op in _ELEMENTWISE and len(node.outputs) == 1:
            lazy = self.pointwise(
                inputs, self.out(),
                lambda args: self.evaluate(node, [None if a is None else Const(a)
                                                  for a in args])[0].value,  # type: ignore[union-attr]
                unhandled=handler is None, product=node.op in ("Mul", "Div"), step=node.op,
            )
            if lazy is not None:
                return [lazy]
        if handler is None:
            raise self.fail("is not supported on values that depend on the input")
        return handler(self, node, *[self.settle(v) for v in inputs])

    def evaluate(self, node: _Node, inputs: list[Value | None]) -> list[Value]:
        from onnx.reference import ReferenceEvaluator

        feeds = {
            name: np.asarray(v.value)  # type: ignore[union-attr]
            for name, v in zip(node.proto.input, inputs, strict=True) if name and v is not None
        }
        results = ReferenceEvaluator(node.proto).run(None, feeds)
        origin = next((v.origin for v in inputs if isinstance(v, Const) and v.origin), None)
        return [Const(np.asarray(r), origin) for r in results]

    def tensor(self, value: Value | None, what: str = "its input") -> Tensor:
        if not isinstance(value, Tensor):
            raise self.fail(f"needs {what} to depend on the model's input")
        return value

    def const(self, value: Value | None, what: str) -> np.ndarray:
        if not isinstance(value, Const):
            raise self.fail(f"has a {what} that depends on the input; it must be a constant")
        return np.asarray(value.value)

    # -- linear layers ---------------------------------------------------------------

    @_op("Gemm")
    def _gemm(self, node: _Node, a: Value, b: Value, c: Value | None = None) -> list[Value]:
        if node.get("transA", 0):
            raise self.fail("has transA=1 (the input transposed)")
        x = self.tensor(a, "A")
        weight = self.const(b, "B (the weight)") * node.number("alpha", 1.0)
        weight = weight if node.get("transB", 0) else weight.T
        assert isinstance(b, Const)  # self.const raised otherwise
        out = self.dense(x, b, len(x.shape) - 1, weight.astype(x.dtype), True, self.out())
        if c is None:
            return [out]
        bias = self.const(c, "C (the bias)") * node.number("beta", 1.0)
        return [self.add(out, Const(bias, b.origin), self.out())]

    @_op("MatMul")
    def _matmul(self, node: _Node, a: Value, b: Value) -> list[Value]:
        x = self.tensor(a, "its first input (x @ W)")
        weight = self.const(b, "second input (the weight)")
        if weight.ndim != 2:
            raise self.fail(f"multiplies by a constant of shape {weight.shape} (needs a matrix)")
        assert isinstance(b, Const)  # self.const raised otherwise
        return [self.dense(x, b, len(x.shape) - 1, weight.T.astype(x.dtype), True, self.out())]

    def _conv_pads(self, node: _Node, x: Tensor, kernel: Sequence[int],
                   strides: Sequence[int], dilations: Sequence[int]) -> list[tuple[int, int]]:
        spatial = len(kernel)
        auto = node.get("auto_pad", "NOTSET")
        if auto in ("NOTSET", ""):
            pads = list(node.get("pads", [0] * (2 * spatial)))
            return [(int(pads[i]), int(pads[i + spatial])) for i in range(spatial)]
        if auto == "VALID":
            return [(0, 0)] * spatial
        return same_pads(x.shape[2:], kernel, strides, dilations, odd_after=auto == "SAME_UPPER")

    @_op("Conv")
    def _conv(self, node: _Node, x: Value, w: Value, b: Value | None = None) -> list[Value]:
        x = self.tensor(x, "X")
        weight = self.const(w, "W (the kernel)").astype(x.dtype)
        kernel = list(node.get("kernel_shape", weight.shape[2:]))
        spatial = len(kernel)
        strides = list(node.get("strides", [1] * spatial))
        dilations = list(node.get("dilations", [1] * spatial))
        pads = self._conv_pads(node, x, kernel, strides, dilations)
        axes = tuple(range(len(x.shape)))
        assert isinstance(w, Const)
        out = self.conv(x, w, weight, axes, axes, stride=strides, pads=pads, dilation=dilations,
                        groups=int(node.get("group", 1)), out_shape=self.out())
        if b is None:
            return [out]
        bias = self.const(b, "B (the bias)").reshape((-1,) + (1,) * spatial)
        return [self.add(out, Const(bias, w.origin), self.out())]

    @_op("ConvTranspose")
    def _conv_transpose(self, node: _Node, x: Value, w: Value,
                        b: Value | None = None) -> list[Value]:
        x = self.tensor(x, "X")
        weight = self.const(w, "W (the kernel)").astype(x.dtype)  # (in, out / group, *k)
        spatial = weight.ndim - 2
        if node.get("output_shape") is not None:
            raise self.fail("sets output_shape; export with pads and output_padding instead")
        if node.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise self.fail(f"has auto_pad={node.get('auto_pad')!r}; only explicit pads")
        strides = list(node.get("strides", [1] * spatial))
        dilations = list(node.get("dilations", [1] * spatial))
        raw = list(node.get("pads", [0] * (2 * spatial)))
        pads = [(int(raw[i]), int(raw[i + spatial])) for i in range(spatial)]
        extra = list(node.get("output_padding", [0] * spatial))
        axes = tuple(range(len(x.shape)))
        assert isinstance(w, Const)
        out = self.conv(x, w, weight, axes, axes, stride=strides, pads=pads,
                        dilation=dilations, groups=int(node.get("group", 1)),
                        out_shape=self.out(), output_padding=extra)
        if b is None:
            return [out]
        bias = self.const(b, "B (the bias)").reshape((-1,) + (1,) * spatial)
        return [self.add(out, Const(bias, w.origin), self.out())]

    # -- pools -----------------------------------------------------------------------

    def _window(self, node: _Node, x: Tensor) -> tuple[list[int], list[int], list[tuple[int, int]],
                                                      list[int]]:
        kernel = [int(k) for k in node.get("kernel_shape")]
        spatial = len(kernel)
        strides = [int(s) for s in node.get("strides", [1] * spatial)]
        dilations = [int(d) for d in node.get("dilations", [1] * spatial)]
        pads = self._conv_pads(node, x, kernel, strides, dilations)
        return ([1, 1, *kernel], [1, 1, *strides], [(0, 0), (0, 0), *pads],
                [1, 1, *dilations])

    @_op("MaxPool")
    def _max_pool(self, node: _Node, x: Value) -> list[Value]:
        x = self.tensor(x, "X")
        if len(node.outputs) > 1 and node.outputs[1]:
            raise self.fail("returns the indices of the maxima too")
        if node.get("storage_order", 0):
            raise self.fail("has storage_order=1")
        sizes, strides, pads, dilations = self._window(node, x)
        return [self.pool(x, True, sizes, strides, pads, dilations, self.out(),
                          ceil_mode=bool(node.get("ceil_mode", 0)))]

    @_op("AveragePool")
    def _avg_pool(self, node: _Node, x: Value) -> list[Value]:
        x = self.tensor(x, "X")
        sizes, strides, pads, dilations = self._window(node, x)
        return [self.pool(x, False, sizes, strides, pads, dilations, self.out(),
                          ceil_mode=bool(node.get("ceil_mode", 0)),
                          count_include_pad=bool(node.get("count_include_pad", 0)))]

    @_op("GlobalAveragePool", "GlobalMaxPool")
    def _global_pool(self, node: _Node, x: Value) -> list[Value]:
        x = self.tensor(x, "X")
        kind = "max" if node.op == "GlobalMaxPool" else "mean"
        return [self.global_pool(x, range(2, len(x.shape)), kind, self.out(), keepdims=True)]

    @_op("ReduceMean", "ReduceSum", "ReduceMax")
    def _reduce(self, node: _Node, x: Value, axes: Value | None = None) -> list[Value]:
        x = self.tensor(x, "data")
        found = node.get("axes") if axes is None else self.const(axes, "axes").tolist()
        if found is None:
            raise self.fail("reduces over every axis, the batch too")
        kind = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max"}[node.op]
        keep = bool(node.get("keepdims", 1))
        dims = [int(a) % len(x.shape) for a in found]
        return [self.global_pool(x, dims, kind, self.out(), keepdims=keep)]

    @_op("BatchNormalization")
    def _batch_norm(self, node: _Node, x: Value, scale: Value, bias: Value, mean: Value,
                    var: Value) -> list[Value]:
        x = self.natural(self.tensor(x, "X"))
        if len(node.outputs) > 1 and any(node.outputs[1:]):
            raise self.fail("computes running statistics (training mode); export in eval mode")
        m, v, w, b = (self.const(value, what).astype(x.dtype) for value, what in
                      ((mean, "mean"), (var, "var"), (scale, "scale"), (bias, "B")))
        cls = batch_norm_for(len(x.shape))
        layer = cls(m, v, w, b, eps=node.number("epsilon", 1e-5))
        origin = scale.origin if isinstance(scale, Const) else None
        return [self.same_place(layer, origin or "bn", x)]

    # -- element-wise ----------------------------------------------------------------

    @_op("Add")
    def _add(self, node: _Node, a: Value, b: Value) -> list[Value]:
        return [self.add(a, b, self.out())]

    @_op("Sub")
    def _sub(self, node: _Node, a: Value, b: Value) -> list[Value]:
        return [self.sub(a, b, self.out())]

    @_op("Mul")
    def _mul(self, node: _Node, a: Value, b: Value) -> list[Value]:
        return [self.mul(a, b, self.out())]

    @_op("Div")
    def _div(self, node: _Node, a: Value, b: Value) -> list[Value]:
        return [self.div(a, b, self.out())]

    @_op("Neg")
    def _neg(self, node: _Node, x: Value) -> list[Value]:
        return [self.neg(self.tensor(x))]

    @_op("Relu")
    def _relu(self, node: _Node, x: Value) -> list[Value]:
        return [self.same_place(ReLU(), "relu", self.tensor(x))]

    @_op("LeakyRelu")
    def _leaky(self, node: _Node, x: Value) -> list[Value]:
        layer = LeakyReLU(node.number("alpha", 0.01))
        return [self.same_place(layer, "leaky_relu", self.tensor(x))]

    @_op("Elu")
    def _elu(self, node: _Node, x: Value) -> list[Value]:
        return [self.same_place(ELU(node.number("alpha", 1.0)), "elu", self.tensor(x))]

    @_op("Sigmoid")
    def _sigmoid(self, node: _Node, x: Value) -> list[Value]:
        return [self.same_place(Sigmoid(), "sigmoid", self.tensor(x))]

    @_op("Tanh")
    def _tanh(self, node: _Node, x: Value) -> list[Value]:
        return [self.same_place(Tanh(), "tanh", self.tensor(x))]

    @_op("Gather")
    def _gather(self, node: _Node, data: Value, indices: Value) -> list[Value]:
        """Rows of a constant table picked by the input's indices: an embedding."""
        ids = self.tensor(indices, "its indices")
        if int(node.get("axis", 0)) != 0 or not isinstance(data, Const) or np.ndim(data.value) != 2:
            raise self.fail("gathers other than rows of a constant (num_embeddings, dim) table "
                            "by the input's indices (an embedding)")
        table = np.asarray(data.value)
        ids = self.natural(ids)
        out = self.out()
        layer = self.emit(data.origin or "embedding", Embedding(table), [ids],
                          tuple(range(len(out))), out, table.dtype)
        return [layer]

    @_op("Gelu")
    def _gelu(self, node: _Node, x: Value) -> list[Value]:
        layer = GELU(str(node.get("approximate", "none")))
        return [self.same_place(layer, "gelu", self.tensor(x))]

    @_op("Softplus")
    def _softplus(self, node: _Node, x: Value) -> list[Value]:
        return [self.same_place(Softplus(), "softplus", self.tensor(x))]

    @_op("Clip")
    def _clip(self, node: _Node, x: Value, low: Value | None = None,
              high: Value | None = None) -> list[Value]:
        lo = node.number("min", -math.inf) if low is None else float(self.const(low, "min"))
        hi = node.number("max", math.inf) if high is None else float(self.const(high, "max"))
        if lo == 0.0 and hi == math.inf:
            return [self.same_place(ReLU(), "relu", self.tensor(x))]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise self.fail(f"clips to [{lo}, {hi}]; one-sided clips other than ReLU are not "
                            "supported")
        return [self.same_place(Hardtanh(float(lo), float(hi)), "clip", self.tensor(x))]

    @_op("Identity", "Dropout")
    def _identity(self, node: _Node, x: Value, *rest: Value | None) -> list[Value]:
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1]:
            raise self.fail("returns a dropout mask (training mode)")
        return [x]

    @_op("Cast")
    def _cast(self, node: _Node, x: Value) -> list[Value]:
        from onnx import helper

        t = self.tensor(x)
        target = helper.tensor_dtype_to_np_dtype(int(node.get("to")))
        if np.dtype(target) != np.dtype(t.dtype):
            raise self.fail(f"casts the input's values from {t.dtype} to {np.dtype(target)}")
        return [t]

    # -- moves -----------------------------------------------------------------------

    @_op("Flatten")
    def _flatten(self, node: _Node, x: Value) -> list[Value]:
        t = self.tensor(x)
        axis = int(node.get("axis", 1)) % len(t.shape)
        if axis != 1:
            raise self.fail(f"flattens from axis {axis}; only axis=1 keeps the batch")
        return [self.reshape(t, (t.shape[0], math.prod(t.shape[1:])))]

    @_op("Reshape")
    def _reshape(self, node: _Node, x: Value, shape: Value) -> list[Value]:
        t = self.tensor(x, "data")
        return [self.reshape(t, self.out())]

    @_op("Transpose")
    def _transpose(self, node: _Node, x: Value) -> list[Value]:
        t = self.tensor(x)
        order = node.get("perm", list(range(len(t.shape)))[::-1])
        return [self.transpose(t, order)]

    @_op("Squeeze")
    def _squeeze(self, node: _Node, x: Value, axes: Value | None = None) -> list[Value]:
        t = self.tensor(x, "data")
        found = node.get("axes") if axes is None else self.const(axes, "axes").tolist()
        if found is None:
            found = [i for i, s in enumerate(t.shape) if s == 1 and i != t.batch_axis]
        return [self.drop_axes(t, [int(a) % len(t.shape) for a in found])]

    @_op("Unsqueeze")
    def _unsqueeze(self, node: _Node, x: Value, axes: Value | None = None) -> list[Value]:
        t = self.tensor(x, "data")
        found = node.get("axes") if axes is None else self.const(axes, "axes").tolist()
        rank = len(t.shape) + len(found)
        return [self.insert_axes(t, [int(a) % rank for a in found])]

    @_op("Concat")
    def _concat(self, node: _Node, *values: Value) -> list[Value]:
        rank = len(self.out())
        return [self.concat(values, int(node.get("axis")) % rank, self.out())]

    @_op("Pad")
    def _pad(self, node: _Node, x: Value, pads: Value | None = None,
             value: Value | None = None, axes: Value | None = None) -> list[Value]:
        t = self.tensor(x, "data")
        if node.get("mode", "constant") != "constant":
            raise self.fail(f"pads with mode={node.get('mode')!r}; only 'constant' zeros")
        fill = node.get("value", 0.0) if value is None else float(self.const(value, "value"))
        if float(fill) != 0.0:
            raise self.fail(f"pads with {fill}; only zeros are supported")
        found = node.get("pads") if pads is None else self.const(pads, "pads").tolist()
        rank = len(t.shape)
        chosen = (list(range(rank)) if axes is None
                  else [int(a) % rank for a in self.const(axes, "axes").tolist()])
        pairs = [(0, 0)] * rank
        for i, axis in enumerate(chosen):
            pairs[axis] = (int(found[i]), int(found[i + len(chosen)]))
        # shape inference cannot follow pads computed in the graph: the shape from them
        out = [size + lo + hi for size, (lo, hi) in zip(t.shape, pairs, strict=True)]
        return [self.known(node, self.zero_pad(t, pairs, out))]

    @_op("Resize", "Upsample")
    def _resize(self, node: _Node, x: Value, *rest: Value | None) -> list[Value]:
        t = self.natural(self.tensor(x, "X"))
        mode = node.get("mode", "nearest")
        # Upsample and Resize before opset 11 have no such attributes: their coordinates are
        # asymmetric and nearest rounds down
        old = node.op == "Upsample" or self.opset < 11
        transform = node.get("coordinate_transformation_mode",
                             "asymmetric" if old else "half_pixel")
        rounding = node.get("nearest_mode", "floor" if old else "round_prefer_floor")
        if mode == "nearest":
            if rounding != "floor" or transform != "asymmetric":
                raise self.fail("resizes by nearest neighbours with rounding other than "
                                "floor of asymmetric coordinates (torch's 'nearest')")
            corners = False
        elif mode == "linear":
            if transform not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
                raise self.fail(f"has coordinate_transformation_mode={transform!r}")
            corners = transform == "align_corners"
        else:
            raise self.fail(f"has mode={mode!r}; 'nearest' and 'linear' are supported")
        out = self.out()
        if any(a != b for a, b in zip(out[:2], t.shape[:2], strict=True)):
            raise self.fail("resizes the batch or channel axis")
        scales_value = rest[1] if len(rest) > 1 else (rest[0] if node.op == "Upsample" else None)
        factor = None
        if scales_value is not None and np.asarray(scales_value.value).size:  # type: ignore[union-attr]
            factor = tuple(float(s) for s in np.asarray(scales_value.value)[2:])  # type: ignore[union-attr]
        layer = Upsample(None, factor, "nearest" if mode == "nearest" else "linear", corners) \
            if factor is not None else Upsample(tuple(out[2:]), None, mode, corners)
        return [self.emit("upsample", layer, [t], t.perm, out, t.dtype)]

    @_op("Shape")
    def _shape(self, node: _Node, x: Value) -> list[Value]:
        t = self.tensor(x, "data")
        shape = np.asarray(t.shape, dtype=np.int64)
        start, end = node.get("start", 0), node.get("end", None)
        return [Const(shape[start:end])]


def _load(model: Any) -> Any:
    import onnx

    if isinstance(model, (str, os.PathLike)):
        return onnx.load(os.fspath(model))
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, onnx.ModelProto):
        return model
    raise TypeError(
        f"from_onnx: expected a path, the file's bytes or an onnx.ModelProto; got "
        f"{type(model).__name__}."
    )


def _dims(value_info: Any, batch: int) -> tuple[int, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = []
    for i, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif i == 0:
            dims.append(batch)
        else:
            return None
    return tuple(dims)


def _input_of(graph: Any, initialized: set[str]) -> Any:
    inputs = [i for i in graph.input if i.name not in initialized]
    if len(inputs) != 1:
        raise ValueError(
            f"from_onnx: the graph has {len(inputs)} inputs ({[i.name for i in inputs]}); "
            "relprop explains models of one input."
        )
    return inputs[0]


def _shapes(
    model: Any, input_shape: tuple[int, ...], known: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Every value's shape by ONNX shape inference, with the input's batch made concrete
    and the ``known`` shapes given."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    listed = {info.name for info in graph.value_info}
    outputs = {o.name for o in graph.output}
    for name, shape in known.items():
        if name not in listed and name not in outputs and name != graph.input[0].name:
            elem = graph.input[0].type.tensor_type.elem_type
            graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem, shape))
    initialized = {init.name for init in graph.initializer}
    first = _input_of(graph, initialized)
    dims = first.type.tensor_type.shape.dim
    for dim, size in zip(dims, input_shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    for info in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        found = _dims(info, input_shape[0])
        if found is not None:
            shapes[info.name] = found
    return shapes


def from_onnx(
    model: Any, *, backend: str | None = None, input_shape: Sequence[int] | None = None,
    check: bool = True,
) -> Sequential | Graph:
    """A relprop model computing what an ONNX model computes.

    Read: ``Gemm``, ``MatMul`` (with a constant matrix), ``Conv`` (groups, dilations, pads,
    strides, ``auto_pad``), ``Relu``, ``LeakyRelu``, ``Elu``, ``Sigmoid``, ``Tanh``,
    ``Softplus``, ``Clip``, ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``,
    ``GlobalMaxPool``, ``ReduceMean`` / ``ReduceSum`` / ``ReduceMax`` over the spatial axes,
    ``BatchNormalization``, ``Flatten``, ``Reshape``, ``Transpose``, ``Squeeze``,
    ``Unsqueeze``, ``Concat``, ``Identity``, ``Dropout``, ``Add`` (of two values: a residual
    sum; of a constant: a bias or :class:`~relprop.Affine`), ``Sub`` / ``Mul`` / ``Div`` by
    constants, ``Cast`` to the same type; ``Constant`` nodes, initializers and ``Shape``
    arithmetic are evaluated. A trailing ``Softmax`` / ``LogSoftmax`` is left out with a
    warning: the model explains the logits.

    Parameters
    ----------
    model
        A path to an ``.onnx`` file, its bytes, or an ``onnx.ModelProto``, of one input.
    backend
        The array library of the layers' parameters (default: ``RELPROP_BACKEND``, else
        NumPy); the parameters keep the file's dtype.
    input_shape
        The input's shape when the file leaves more than the batch size open.
    check
        Run ONNX's reference evaluator and the relprop model on a random input of two
        samples and raise ``ValueError`` when they differ (relative tolerance 1e-9 in
        float64, 1e-4 otherwise).

    Returns
    -------
    Sequential or Graph

    Raises
    ------
    TypeError
        For an unsupported node, naming it, its op type and the supported ops
        (:func:`supported_ops`).

    Examples
    --------
    >>> import numpy as np, onnx
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> import relprop as rp
    >>> graph = helper.make_graph(
    ...     [helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1),
    ...      helper.make_node("Relu", ["z"], ["y"])],
    ...     "tiny", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 3])],
    ...     [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 2])],
    ...     [numpy_helper.from_array(np.ones((2, 3)), "w"),
    ...      numpy_helper.from_array(np.zeros(2), "b")])
    >>> rp.from_onnx(helper.make_model(graph), backend="numpy")
    Sequential(
      (w): Dense(3 -> 2)
      (relu): ReLU()
    )
    """
    import onnx
    from onnx import numpy_helper


    proto = _load(model)
    graph = proto.graph
    initialized = {init.name for init in graph.initializer}
    first = _input_of(graph, initialized)
    shape = _dims(first, SYMBOLIC_BATCH)
    if input_shape is not None:
        shape = (SYMBOLIC_BATCH, *tuple(int(s) for s in input_shape)[1:])
    if shape is None or len(shape) < 2:
        raise ValueError(
            f"from_onnx: the input {first.name!r} has no fixed shape per sample; pass "
            "input_shape=(batch, ...)."
        )
    if len(graph.output) != 1:
        raise ValueError(
            f"from_onnx: the graph has {len(graph.output)} outputs; relprop explains one."
        )
    dtype = onnx.helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type)
    draft = Draft(tuple(shape[1:]))
    reader = _Reader(draft, proto, shape)
    env: dict[str, Value] = {first.name: Tensor(INPUT, tuple(range(len(shape))), shape, dtype)}
    for init in graph.initializer:
        # a copy: to_array gives a read-only view of the file's buffer
        env[init.name] = Const(np.array(numpy_helper.to_array(init)), _origin(init.name))
    nodes = [_Node(p) for p in graph.node]
    output = graph.output[0].name
    nodes, dropped = _without_trailing_softmax(nodes, output)
    if dropped is not None:
        output = dropped.proto.input[0]
        warnings.warn(
            f"from_onnx: the model ends in a {dropped.op} (node {dropped.name!r}); relprop "
            "explains the logits before it, as LRP does (the class with the largest logit "
            "is the most probable one).",
            UserWarning,
            stacklevel=2,
        )
    for node in nodes:
        if node.op == "Constant":
            env[node.outputs[0]] = Const(_constant(node), node.name)
            continue
        inputs = [env[name] if name else None for name in node.proto.input]
        for name, value in zip(node.outputs, reader.read(node, inputs), strict=False):
            env[name] = value
    reader.node = None
    reader.output(env[output])
    built = draft.model()
    if check:
        _check(built, proto, output, shape, dtype)
    return on_backend(built, backend)


def _origin(name: str) -> str | None:
    """A layer name from an initializer's (``"features.0.weight"`` -> ``"features.0"``);
    exporter-made names (``"onnx::Conv_18"``, ``"val_14"``) give none."""
    if "::" in name or name.startswith("val_") or name.startswith("/"):
        return None
    head = name.rsplit(".", 1)[0]
    return head or None


def _constant(node: _Node) -> np.ndarray:
    from onnx import numpy_helper

    if "value" in node.attrs:
        return numpy_helper.to_array(node.attrs["value"])
    for key in ("value_float", "value_int"):
        if key in node.attrs:
            return np.asarray(node.attrs[key])
    for key in ("value_floats", "value_ints"):
        if key in node.attrs:
            return np.asarray(list(node.attrs[key]))
    raise UnsupportedError(f"from_onnx: Constant node {node.name!r} has no supported value.")


def _without_trailing_softmax(nodes: list[_Node], output: str) -> tuple[list[_Node], _Node | None]:
    last = next((n for n in reversed(nodes) if output in n.outputs), None)
    if last is not None and last.op in ("Softmax", "LogSoftmax"):
        return [n for n in nodes if n is not last], last
    return nodes, None


def _check(
    model: Sequential | Graph, proto: Any, output: str, shape: tuple[int, ...], dtype: Any
) -> None:
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    tokens = [layer.num_embeddings for layer in model.layers if isinstance(layer, Embedding)]
    x = (rng.integers(0, min(tokens), size=(2, *shape[1:])).astype(dtype) if tokens
         else rng.normal(size=(2, *shape[1:])).astype(dtype))
    name = _input_of(proto.graph, {init.name for init in proto.graph.initializer}).name
    try:
        results: Any = ReferenceEvaluator(proto).run([output], {name: x})
    except Exception as error:  # noqa: BLE001 - the evaluator's own gaps (e.g. grouped ConvTranspose)
        warnings.warn(
            f"from_onnx: ONNX's reference evaluator cannot run this model ({error}); the "
            "import was not checked against it (check=False silences this).",
            UserWarning,
            stacklevel=3,
        )
        return
    want = np.asarray(results[0])
    got = np.asarray(model(x))
    tol = 1e-9 if np.dtype(dtype) == np.float64 else 1e-4
    scale = max(float(np.max(np.abs(want))), 1.0)
    if got.shape != want.shape or not np.allclose(got, want, rtol=tol, atol=tol * scale):
        raise ValueError(
            "from_onnx: the imported model's output differs from ONNX's reference evaluator "
            f"(shapes {got.shape} and {want.shape}); please report "
            "this with the model, it is a bug in the importer."
        )
