"""``from_keras``: a relprop model from a Keras 3 ``Sequential`` or functional ``Model``.

Each layer call of the model's graph maps to relprop layers through the layout-tracking
reader (:mod:`relprop.interop._reading`), so Keras's channels-last convolutions and pools
read into relprop's channels-first ones with a :class:`~relprop.Permute` at the first
convolution and one where the model flattens. The weights are read as NumPy arrays, so
any Keras backend works (JAX, torch, TensorFlow). A softmax on the last layer is left out,
with a warning: LRP explains the logits.

keras is imported inside the functions only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from relprop.interop._draft import Draft, on_backend
from relprop.interop._reading import (
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
    Layer,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
    Upsample,
)
from relprop.layers.batchnorm import batch_norm_for
from relprop.model import INPUT, Graph, Sequential

__all__ = ["from_keras", "supported_keras_layers"]

_LAYERS = Handlers()
_layer = _LAYERS.register

_BATCH = 2  # the batch size the reader works with (the model takes any)


def supported_keras_layers() -> tuple[str, ...]:
    """The Keras layer classes :func:`from_keras` reads."""
    return _LAYERS.names()


_ACTIVATIONS: dict[str, Callable[[], Layer] | None] = {
    "linear": None,
    "relu": ReLU,
    "relu6": lambda: Hardtanh(0.0, 6.0),
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "elu": ELU,
    "softplus": Softplus,
    "silu": SiLU,
    "swish": SiLU,
    "leaky_relu": lambda: LeakyReLU(0.2),  # keras.activations.leaky_relu's default
    "gelu": GELU,  # keras.activations.gelu's default: approximate=False
}


def _activation_name(fn: Any) -> str:
    import keras

    name = keras.activations.serialize(fn)
    if isinstance(name, dict):
        name = name.get("config", {}).get("name", name.get("class_name", ""))
    return str(name)


def _numpy(variable: Any) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable))


def _transpose_pads(
    span: int, stride: int, padding: str, output_padding: int | None
) -> tuple[tuple[int, int], int]:
    """Keras's transposed-convolution geometry on one axis (``span``: the dilated kernel)
    as torch's: the crop before and after, and the output padding. Keras pads the
    dilated input by ``(left, right)``; the crop of the full transposed convolution is
    ``span - 1 - left`` before and ``span - 1 - right`` after (a negative one is output
    padding)."""
    if padding == "valid":
        extra = max(span, stride) - span if output_padding is None else output_padding
        left, right = span - 1, span - 1 + extra
    else:
        total = (stride + span - 2 if output_padding is None
                 else span + span % 2 - 2 + output_padding)
        left = min(total // 2 + total % 2, span - 1)
        right = total - left
    before, after = span - 1 - left, span - 1 - right
    return (before, max(after, 0)), max(-after, 0)


class _Reader(LayoutReader):
    def __init__(self, draft: Draft) -> None:
        super().__init__(draft, "from_keras", np)
        self.layer: Any = None
        self.softmax = False  # whether a trailing softmax was left out

    def fail(self, problem: str) -> UnsupportedError:
        layer = self.layer
        where = "" if layer is None else f"layer {layer.name!r} ({type(layer).__name__})"
        return UnsupportedError(
            f"from_keras: {where} {problem}. Supported: "
            f"rp.interop.keras.supported_keras_layers() ({', '.join(supported_keras_layers())})."
        )

    def read(self, layer: Any, inputs: list[Value], out_shape: tuple[int, ...],
             last: bool) -> Value:
        self.layer = layer
        handler = _LAYERS.get(type(layer).__name__)
        if handler is None:
            raise self.fail("is not supported")
        return handler(self, layer, inputs, out_shape, last)

    def activate(self, layer: Any, t: Tensor, last: bool) -> Tensor:
        """The layer's own ``activation=`` (a softmax on the last layer is left out)."""
        fn = getattr(layer, "activation", None)
        if fn is None:
            return t
        name = _activation_name(fn)
        if name in ("softmax", "log_softmax"):
            if not last:
                raise self.fail(f"has activation={name!r} before the last layer")
            warnings.warn(
                f"from_keras: the last layer {layer.name!r} ends in a {name}; relprop "
                "explains the logits before it, as LRP does (the largest logit is the most "
                "probable class).",
                UserWarning,
                stacklevel=4,
            )
            self.softmax = True
            return t
        if name not in _ACTIVATIONS:
            raise self.fail(
                f"has activation={name!r}; supported: {', '.join(sorted(_ACTIVATIONS))}"
            )
        make = _ACTIVATIONS[name]
        return t if make is None else self.same_place(make(), name, t)

    def one(self, inputs: list[Value]) -> Tensor:
        if len(inputs) != 1 or not isinstance(inputs[0], Tensor):
            raise self.fail("needs one input that depends on the model's input")
        return inputs[0]

    def channels_first(self, layer: Any) -> bool:
        return getattr(layer, "data_format", "channels_last") == "channels_first"

    def spatial_axes(self, layer: Any, t: Tensor) -> tuple[int, list[int]]:
        """The source's channel axis and spatial axes of a conv or pool's input."""
        rank = len(t.shape)
        if self.channels_first(layer):
            return 1, list(range(2, rank))
        return rank - 1, list(range(1, rank - 1))

    # -- linear layers ---------------------------------------------------------------

    @_layer("Embedding")
    def _embedding(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                   last: bool) -> Value:
        t = self.natural(self.one(inputs))
        table = _numpy(layer.embeddings)
        return self.emit(layer.name, Embedding(table), [t], tuple(range(len(out))), out,
                         table.dtype)

    @_layer("Dense")
    def _dense(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        t = self.one(inputs)
        kernel = _numpy(layer.kernel).astype(t.dtype)
        y = self.dense(t, Const(kernel, layer.name), len(t.shape) - 1, kernel.T, True, out)
        if layer.bias is not None:
            y = self.add(y, Const(_numpy(layer.bias).astype(t.dtype), layer.name), out)
        return self.activate(layer, y, last)

    @_layer("Conv1D", "Conv2D", "Conv3D")
    def _conv(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        t = self.one(inputs)
        kernel = _numpy(layer.kernel).astype(t.dtype)  # (*k, in / groups, out)
        spatial = kernel.ndim - 2
        weight = np.transpose(kernel, (spatial + 1, spatial, *range(spatial)))
        channel, axes = self.spatial_axes(layer, t)
        k = weight.shape[2:]
        strides, dilation = tuple(layer.strides), tuple(layer.dilation_rate)
        if layer.padding == "valid":
            pads = [(0, 0)] * spatial
        elif layer.padding == "same":
            pads = same_pads([t.shape[a] for a in axes], k, strides, dilation)
        else:
            raise self.fail(f"has padding={layer.padding!r}; 'valid' and 'same' are supported")
        lhs = (t.batch_axis, channel, *axes)
        y = self.conv(t, Const(kernel, layer.name), weight, lhs, lhs, stride=strides,
                      pads=pads, dilation=dilation, groups=int(getattr(layer, "groups", 1)),
                      out_shape=out)
        return self.finish(layer, y, channel, out, last)

    def finish(self, layer: Any, y: Tensor, channel: int, out: tuple[int, ...],
               last: bool) -> Value:
        """A convolution's bias (on its ``channel`` axis) and ``activation=``."""
        if layer.bias is not None:
            bias = _numpy(layer.bias).astype(y.dtype)
            shape = [1] * len(out)
            shape[channel] = bias.shape[0]
            y = self.add(y, Const(bias.reshape(shape[1:]), layer.name), out)
        return self.activate(layer, y, last)

    @_layer("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
    def _conv_transpose(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                        last: bool) -> Value:
        t = self.one(inputs)
        kernel = _numpy(layer.kernel).astype(t.dtype)  # (*k, out, in): no flip (TF's)
        spatial = kernel.ndim - 2
        weight = np.transpose(kernel, (spatial + 1, spatial, *range(spatial)))  # (in, out, *k)
        channel, axes = self.spatial_axes(layer, t)
        strides, dilation = tuple(layer.strides), tuple(layer.dilation_rate)
        if layer.padding not in ("valid", "same"):
            raise self.fail(f"has padding={layer.padding!r}; 'valid' and 'same' are supported")
        given = layer.output_padding
        pads, extra = [], []
        for i, (k, s, d) in enumerate(zip(weight.shape[2:], strides, dilation, strict=True)):
            pair, more = _transpose_pads(d * (k - 1) + 1, s, layer.padding,
                                         None if given is None else int(given[i]))
            pads.append(pair)
            extra.append(more)
        lhs = (t.batch_axis, channel, *axes)
        y = self.conv(t, Const(kernel, layer.name), weight, lhs, lhs, stride=strides,
                      pads=pads, dilation=dilation, groups=1, out_shape=out,
                      output_padding=extra)
        return self.finish(layer, y, channel, out, last)

    # -- pools -----------------------------------------------------------------------

    @_layer("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
            "AveragePooling3D")
    def _pool(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        t = self.one(inputs)
        _, axes = self.spatial_axes(layer, t)
        kernel = tuple(layer.pool_size)
        strides = tuple(layer.strides or kernel)
        sizes, steps = [1] * len(t.shape), [1] * len(t.shape)
        pads = [(0, 0)] * len(t.shape)
        same = same_pads([t.shape[a] for a in axes], kernel, strides, [1] * len(axes))
        for a, k, s, pad in zip(axes, kernel, strides, same, strict=True):
            sizes[a], steps[a] = k, s
            if layer.padding == "same":
                pads[a] = pad
        maximum = type(layer).__name__.startswith("Max")
        # Keras averages over the window's pixels inside the image only
        return self.pool(t, maximum, sizes, steps, pads, [1] * len(t.shape), out,
                         count_include_pad=False)

    @_layer("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
            "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")
    def _global(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        t = self.one(inputs)
        _, axes = self.spatial_axes(layer, t)
        kind = "max" if "Max" in type(layer).__name__ else "mean"
        return self.global_pool(t, axes, kind, out, keepdims=bool(layer.keepdims))

    # -- normalisation ---------------------------------------------------------------

    @_layer("BatchNormalization")
    def _batch_norm(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                    last: bool) -> Value:
        t = self.one(inputs)
        axis = layer.axis
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if not isinstance(axis, int):
            raise self.fail(f"normalises over axes {axis}; one channel axis is supported")
        channel = axis % len(t.shape)
        others = [a for a in t.perm[1:] if a != channel]
        t = self.relayout(t, (t.batch_axis, channel, *others))
        mean, var = (_numpy(v).astype(t.dtype) for v in (layer.moving_mean,
                                                          layer.moving_variance))
        gamma, beta = (None if v is None else _numpy(v).astype(t.dtype)
                       for v in (layer.gamma, layer.beta))
        cls = batch_norm_for(len(t.shape))
        bn = cls(mean, var, gamma, beta, eps=float(layer.epsilon))
        return self.same_place(bn, layer.name, t)

    @_layer("Rescaling")
    def _rescaling(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                   last: bool) -> Value:
        t = self.one(inputs)
        scale = self.constant(Const(np.asarray(layer.scale), layer.name), t, t.shape)
        shift = self.constant(Const(np.asarray(layer.offset), layer.name), t, t.shape)
        return self.emit(layer.name, _affine(scale, shift), [t], t.perm, t.shape, t.dtype)

    @_layer("Normalization")
    def _normalization(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                       last: bool) -> Value:
        import keras

        t = self.one(inputs)
        mean, variance = _numpy(layer.mean), _numpy(layer.variance)
        if getattr(layer, "invert", False):
            raise self.fail("has invert=True")
        std = np.maximum(np.sqrt(variance), keras.backend.epsilon())  # as keras does
        scale = self.constant(Const(1.0 / std, layer.name), t, t.shape)
        shift = self.constant(Const(-mean / std, layer.name), t, t.shape)
        return self.emit(layer.name, _affine(scale, shift), [t], t.perm, t.shape, t.dtype)

    # -- activations -----------------------------------------------------------------

    @_layer("Activation")
    def _activation(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                    last: bool) -> Value:
        return self.activate(layer, self.one(inputs), last)

    @_layer("ReLU")
    def _relu(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        t = self.one(inputs)
        maximum, slope = layer.max_value, float(layer.negative_slope)
        if float(layer.threshold) != 0.0:
            raise self.fail("has threshold != 0")
        if slope and maximum is None:
            return self.same_place(LeakyReLU(slope), layer.name, t)
        if slope:
            raise self.fail("has both negative_slope and max_value")
        made = ReLU() if maximum is None else Hardtanh(0.0, float(maximum))
        return self.same_place(made, layer.name, t)

    @_layer("LeakyReLU")
    def _leaky(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        slope = float(getattr(layer, "negative_slope", getattr(layer, "alpha", 0.3)))
        return self.same_place(LeakyReLU(slope), layer.name, self.one(inputs))

    @_layer("ELU")
    def _elu(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        return self.same_place(ELU(float(layer.alpha)), layer.name, self.one(inputs))

    @_layer("Softmax")
    def _softmax(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                 last: bool) -> Value:
        if not last:
            raise self.fail("is a softmax before the last layer")
        warnings.warn(
            f"from_keras: the model ends in a Softmax layer ({layer.name!r}); relprop "
            "explains the logits before it, as LRP does.", UserWarning, stacklevel=4,
        )
        self.softmax = True
        return self.one(inputs)

    @_layer("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
            "GaussianNoise",
            "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity")
    def _identity(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                  last: bool) -> Value:
        return self.one(inputs)

    # -- merges and moves ------------------------------------------------------------

    @_layer("UpSampling1D", "UpSampling2D")
    def _upsampling(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                    last: bool) -> Value:
        t = self.one(inputs)
        channel, axes = self.spatial_axes(layer, t)
        size = layer.size if isinstance(layer.size, (tuple, list)) else (layer.size,)
        mode = getattr(layer, "interpolation", "nearest")
        if mode not in ("nearest", "bilinear"):
            raise self.fail(f"has interpolation={mode!r}; 'nearest' and 'bilinear'")
        t = self.relayout(t, (t.batch_axis, channel, *axes))
        made = Upsample(scale_factor=tuple(float(s) for s in size), mode=mode)
        return self.emit(layer.name, made, [t], t.perm, out, t.dtype)

    @_layer("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
    def _zero_padding(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                      last: bool) -> Value:
        t = self.one(inputs)
        _, axes = self.spatial_axes(layer, t)
        padding = layer.padding
        if len(axes) == 1 and len(padding) == 2 and isinstance(padding[0], int):
            padding = (tuple(padding),)
        pairs = [(0, 0)] * len(t.shape)
        for axis, pair in zip(axes, padding, strict=True):
            pairs[axis] = (int(pair[0]), int(pair[1]))
        return self.zero_pad(t, pairs, out)

    @_layer("Add")
    def _add_layer(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                   last: bool) -> Value:
        total = inputs[0]
        for other in inputs[1:]:
            total = self.add(total, other, out)
        return total

    @_layer("Concatenate")
    def _concatenate(self, layer: Any, inputs: list[Value], out: tuple[int, ...],
                     last: bool) -> Value:
        return self.concat(inputs, int(layer.axis) % len(out), out)

    @_layer("Flatten")
    def _flatten(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        t = self.one(inputs)
        if self.channels_first(layer):
            raise self.fail("has data_format='channels_first'")
        return self.reshape(t, (t.shape[0], math.prod(t.shape[1:])))

    @_layer("Reshape")
    def _reshape(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        return self.reshape(self.one(inputs), out)

    @_layer("Permute")
    def _permute(self, layer: Any, inputs: list[Value], out: tuple[int, ...], last: bool) -> Value:
        return self.transpose(self.one(inputs), (0, *(int(d) for d in layer.dims)))


def _affine(scale: Any, shift: Any) -> Layer:
    from relprop.layers import Affine

    return Affine(scale, shift)


def _shape(tensor: Any) -> tuple[int, ...]:
    dims = tuple(tensor.shape)
    if any(d is None for d in dims[1:]):
        raise ValueError(
            f"from_keras: a value of shape {dims} has open sizes besides the batch; build "
            "the model with a fixed input shape (keras.Input(shape=(...)))."
        )
    return (_BATCH, *(int(d) for d in dims[1:]))


def _steps(model: Any) -> tuple[list[tuple[Any, list[Any], Any]], Any, Any]:
    """``(layer, input tensors, output tensor)`` for every layer call, in order, and the
    model's input and output tensors."""
    import keras

    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                "from_keras: the Sequential model has no input shape yet; start it with "
                "keras.Input(shape=(...)) or call model.build((None, ...))."
            )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"from_keras: the model has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; relprop explains models of one input and one output."
        )
    steps: list[tuple[Any, list[Any], Any]] = []
    seen: set[int] = set()

    def visit(tensor: Any) -> None:
        history = tensor._keras_history
        node = history.operation._inbound_nodes[history.node_index]
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.input_tensors:
            visit(parent)
        if type(history.operation).__name__ != "InputLayer":
            steps.append((history.operation, list(node.input_tensors), node.output_tensors[0]))

    visit(model.outputs[0])
    return steps, model.inputs[0], model.outputs[0]


def from_keras(model: Any, *, backend: str | None = None, check: bool = True) -> Sequential | Graph:
    """A relprop model computing what a Keras 3 model computes.

    Read: ``Dense``, ``Conv1D`` / ``Conv2D`` / ``Conv3D`` (``padding="valid"`` / ``"same"``,
    strides, dilation, groups, channels-last or -first), ``Conv1DTranspose`` /
    ``Conv2DTranspose`` / ``Conv3DTranspose``, ``Embedding``, their ``activation=``,
    ``MaxPooling`` / ``AveragePooling`` 1D / 2D / 3D, ``GlobalAveragePooling`` /
    ``GlobalMaxPooling``, ``BatchNormalization`` (its moving statistics), ``Rescaling``,
    ``Normalization``, ``Activation``, ``ReLU`` / ``LeakyReLU`` / ``ELU``, ``Flatten``,
    ``Reshape``, ``Permute``, ``Add``, ``Concatenate``, and dropout and noise layers
    (identities). A softmax on the last layer is left out with a warning: the model explains
    the logits.

    Parameters
    ----------
    model
        A ``keras.Sequential`` (with an input shape) or functional ``keras.Model`` of one
        input and one output, on any Keras backend.
    backend
        The array library of the layers' parameters (default: ``RELPROP_BACKEND``, else
        NumPy); the dtype is the model's.
    check
        Run both on a random input and raise ``ValueError`` when they differ (relative
        tolerance 1e-5 in float64, where Keras still computes batch norms and global pools
        in float32; 1e-4 otherwise).

    Returns
    -------
    Sequential or Graph

    Raises
    ------
    TypeError
        For an unsupported layer or setting, naming the layer and what is supported
        (:func:`supported_keras_layers`).

    Examples
    --------
    (Not a doctest: keras reads its backend from the environment at import.) ::

        net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                keras.layers.Flatten(), keras.layers.Dense(10)])
        model = rp.from_keras(net)   # Permute, Conv2d, Permute, Flatten, Dense
    """
    import keras


    if not isinstance(model, keras.Model):
        raise TypeError(
            f"from_keras: model must be a keras.Model or keras.Sequential; got "
            f"{type(model).__name__}."
        )
    steps, first, last = _steps(model)
    shape = _shape(first)
    dtype = _dtype(model, first)
    tokens = [int(layer.input_dim) for layer, _, _ in steps
              if type(layer).__name__ == "Embedding"]
    fed = np.dtype("int64") if tokens else dtype  # an embedding reads token indices
    draft = Draft(shape[1:])
    reader = _Reader(draft)
    values: dict[int, Value] = {id(first): Tensor(INPUT, tuple(range(len(shape))), shape, fed)}
    for index, (layer, inputs, output) in enumerate(steps):
        value = reader.read(layer, [values[id(t)] for t in inputs], _shape(output),
                            index == len(steps) - 1)
        values[id(output)] = value
    reader.layer = None
    reader.output(values[id(last)])
    built = draft.model()
    if check:
        rng = np.random.default_rng(0)
        x = (rng.integers(0, min(tokens), size=shape) if tokens
             else rng.uniform(-1, 1, size=shape).astype(dtype))
        _check(built, model, x, dtype, reader.softmax)
    return on_backend(built, backend)


def _dtype(model: Any, first: Any) -> np.dtype:
    """The dtype the relprop model computes in: its weights' (Keras layers cast their
    inputs to it), else the input's."""
    import keras

    kinds = {keras.backend.standardize_dtype(w.dtype) for w in model.weights}
    floats = {k for k in kinds if k.startswith("float")}
    name = floats.pop() if len(floats) == 1 else keras.backend.standardize_dtype(first.dtype)
    return np.dtype(name)


def _check(built: Sequential | Graph, model: Any, x: np.ndarray, dtype: Any,
           softmax: bool) -> None:
    import keras

    want = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    got = np.asarray(built(x))
    if softmax:  # the model's output is the softmax of the imported model's
        shifted = np.exp(got - got.max(axis=-1, keepdims=True))
        got = shifted / shifted.sum(axis=-1, keepdims=True)
    scale = max(float(np.max(np.abs(want))), 1.0)
    tol = 1e-5 if dtype == np.float64 else 1e-4
    if got.shape != want.shape or not np.allclose(got, want, rtol=tol, atol=tol * scale):
        raise ValueError(
            "from_keras: the imported model's output differs from Keras's; please report "
            "this with the model, it is a bug in the importer."
        )
