"""``from_torch``: a relprop model from a ``torch.nn.Module``, sharing its tensors.

Two paths:

* an ``nn.Sequential`` (nested ones flattened) whose leaves are all supported modules
  becomes an :class:`~relprop.Sequential`, one layer per leaf, named by the leaf's
  qualified name (``"features.0"``);
* anything else is traced with ``torch.fx`` into an :class:`~relprop.Graph`: supported
  modules are leaves of the trace (``call_module`` nodes, named by qualified name), and
  the functions of the ``forward`` (``x + y``, ``F.relu``, ``torch.flatten``,
  ``torch.cat``, ``x.view(x.size(0), -1)``, functional pools, ...) map to relprop layers.

torch is imported inside the functions only, so that this module imports (and its
doctests collect) without torch.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from relprop.layers import (
    ELU,
    GELU,
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    Add,
    Affine,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    Concat,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Hardtanh,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    MatMul,
    MaxPool,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    Multiply,
    Permute,
    ReLU,
    Reshape,
    RMSNorm,
    Sigmoid,
    SiLU,
    Slice,
    Softmax,
    Softplus,
    Tanh,
    Upsample,
)
from relprop.layers.conv import _ConvNd, _ConvTransposeNd
from relprop.layers.pool import _AdaptiveAvgPool, _AdaptiveMaxPool, _WindowAvgPool
from relprop.layers.registry import by_spatial
from relprop.layers.shape import _ZeroPadNd
from relprop.model import INPUT, Graph, Sequential
from relprop.ops._args import SPATIAL_DIMS

__all__ = [
    "SUPPORTED_FUNCTIONS",
    "from_torch",
    "register_torch_converter",
    "supported_modules",
]

def supported_modules(*, registered: bool = True) -> tuple[str, ...]:
    """Names of the ``torch.nn`` modules :func:`from_torch` converts (plus ``nn.Sequential``),
    derived from the converter table; with ``registered``, the module types registered with
    :func:`register_torch_converter` follow, by their qualified names."""
    builtin = _builtin_modules()
    user = tuple(_qualified(cls) for cls in _USER_MODULES if cls not in builtin)
    return tuple(cls.__name__ for cls in builtin) + (user if registered else ())


def __getattr__(name: str) -> Any:
    # SUPPORTED_MODULES is derived from the converter table, which needs torch: lazily.
    if name == "SUPPORTED_MODULES":
        return supported_modules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

SUPPORTED_FUNCTIONS = (
    "x + y / torch.add / Tensor.add (two tensors)",
    "x + c, x - c, c - x, x * c, x / c with a number or a module's tensor c (rp.Affine)",
    "torch.relu / F.relu / Tensor.relu",
    "torch.tanh",
    "torch.sigmoid",
    "F.leaky_relu",
    "F.elu / F.silu / F.gelu / F.hardtanh / F.relu6",
    "F.softplus",
    "torch.flatten / Tensor.flatten",
    "Tensor.view / Tensor.reshape / torch.reshape to (batch, -1) or (batch, ...)",
    "x * y of two tensors (rp.Multiply)",
    "torch.matmul / x @ y / torch.bmm / Tensor.matmul (rp.MatMul)",
    "F.softmax / torch.softmax / Tensor.softmax along an axis other than 0",
    "torch.transpose / Tensor.transpose / torch.permute / Tensor.permute (batch first)",
    "F.layer_norm",
    "F.scaled_dot_product_attention (is_causal or no mask; as its parts)",
    "nn.MultiheadAttention (self-attention), nn.TransformerEncoderLayer, "
    "nn.TransformerEncoder (batch first; as their parts)",
    "torch.where(mask, x, number) / x.masked_fill(mask, number) with a boolean buffer mask",
    "torch.cat (dim >= 1)",
    "torch.mean / Tensor.mean over the spatial axes (global average pooling) or the tokens "
    "of (batch, tokens, features) (mean pooling)",
    "F.max_pool1d/2d/3d",
    "F.avg_pool1d/2d/3d",
    "F.adaptive_avg_pool1d/2d/3d, F.adaptive_max_pool1d/2d/3d",
    "F.pad with zeros (mode='constant', value=0)",
    "F.interpolate (nearest, linear, bilinear)",
    "F.dropout (eval)",
    "Tensor.contiguous",
    "x.size(0) / x.shape[0]",
    "x[:, i], x[:, a:b] (rp.Slice: the class token)",
    "functions registered with register_torch_converter",
)
"""The functions and methods a traced ``forward`` may call (besides supported modules)."""

_WHERE_LISTED = (
    'rp.interop.torch.SUPPORTED_MODULES and SUPPORTED_FUNCTIONS list what is supported '
    '(docs: "Supported layers")'
)


def _module_kind(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _softmax_output(name: str, kind: str) -> TypeError:
    return TypeError(
        f"from_torch: {name} is a {kind}; LRP explains the logits, before the softmax "
        "(zennit and Captum do the same): convert the network without it (net[:-1] for an "
        "nn.Sequential), and take the class with the largest logit, which the softmax does "
        "not change. (A softmax inside the network, as in attention, is read as rp.Softmax.)"
    )


def _unsupported_module(module: Any, qualname: str) -> TypeError:
    if type(module).__name__ in ("LogSoftmax", "Softmin"):
        return _softmax_output(f"module {qualname or '(root)'!r}", type(module).__name__)
    return TypeError(
        f"from_torch: module {qualname or '(root)'!r} of type {_module_kind(module)} is not "
        f"supported; {_WHERE_LISTED}. Build the network from supported modules (in "
        "nn.Sequential, or a forward torch.fx can trace), or teach relprop this module with "
        "rp.interop.torch.register_torch_converter."
    )


def _setting_error(module: Any, qualname: str, problem: str) -> ValueError:
    return ValueError(
        f"from_torch: module {qualname or '(root)'!r} ({_module_kind(module)}) {problem}."
    )


# ---------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------


def _tuple(value: Any) -> Any:
    """torch's per-axis settings as plain ints / tuples of ints."""
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return int(value)


def _conv_padding(module: Any) -> Any:
    """torch's conv padding (ints or ``"same"`` / ``"valid"``) as relprop padding."""
    padding = module.padding
    if padding == "valid":
        return 0
    if padding == "same":
        pads = []
        for kernel, dilation in zip(module.kernel_size, module.dilation, strict=True):
            total = int(dilation) * (int(kernel) - 1)
            pads.append((total // 2, total - total // 2))  # torch puts the odd one after
        if all(before == after for before, after in pads):
            return tuple(before for before, _ in pads)
        return tuple(pads)
    return _tuple(padding)


def _conv(
    cls: type[_ConvNd | _ConvTransposeNd],
) -> Callable[[Any, str], Layer]:
    """The converter of a torch (transposed) convolution module into ``cls``."""
    transposed = issubclass(cls, _ConvTransposeNd)

    def convert(module: Any, qualname: str) -> Layer:
        if module.padding_mode != "zeros":
            raise _setting_error(
                module, qualname,
                f"has padding_mode={module.padding_mode!r}; only 'zeros' is supported",
            )
        extra = {"output_padding": _tuple(module.output_padding)} if transposed else {}
        return cls(
            module.weight,
            module.bias,
            stride=_tuple(module.stride),
            padding=_tuple(module.padding) if transposed else _conv_padding(module),
            dilation=_tuple(module.dilation),
            groups=int(module.groups),
            **extra,
        )

    return convert


def _adaptive_max(
    cls: type[_AdaptiveMaxPool],
) -> Callable[[Any, str], Layer]:
    def convert(module: Any, qualname: str) -> Layer:
        if module.return_indices:
            raise _setting_error(module, qualname, "has return_indices=True")
        return cls(_adaptive_size(module.output_size))

    return convert


def _torch_pads(pad: Any, spatial: int) -> tuple[tuple[int, int], ...]:
    """torch's padding list (the last axis first: ``(left, right, top, bottom)``) as one
    ``(before, after)`` pair per spatial axis, in axis order."""
    values = [int(p) for p in ((pad,) * (2 * spatial) if isinstance(pad, int) else pad)]
    pairs = [(values[2 * i], values[2 * i + 1]) for i in range(len(values) // 2)][::-1]
    return tuple([(0, 0)] * (spatial - len(pairs)) + pairs)


def _zero_pad_layer(
    pad: Any, value: float, spatial: int, fail: Callable[[str], Exception]
) -> Layer:
    if float(value) != 0.0:
        raise fail(f"pads with {value}; only zeros are supported (a pure move of the values)")
    pairs = _torch_pads(pad, spatial)
    if len(pairs) != spatial or any(side < 0 for pair in pairs for side in pair):
        raise fail(f"has padding {pad}; {spatial} axes of non-negative padding are supported")
    layer: Layer = by_spatial(_ZeroPadNd, spatial)(pairs)
    return layer


def _zero_pad(spatial: int) -> Callable[[Any, str], Layer]:
    def convert(module: Any, qualname: str) -> Layer:
        value = getattr(module, "value", 0.0)
        return _zero_pad_layer(module.padding, value, spatial,
                               lambda problem: _setting_error(module, qualname, problem))

    return convert


def _upsample_layer(
    size: Any, scale_factor: Any, mode: str, align_corners: Any,
    fail: Callable[[str], Exception],
) -> Layer:
    if mode not in ("nearest", "linear", "bilinear"):
        raise fail(f"has mode={mode!r}; 'nearest', 'linear' and 'bilinear' are supported")
    factor = None if scale_factor is None else (
        tuple(float(f) for f in scale_factor) if isinstance(scale_factor, (tuple, list))
        else float(scale_factor))
    return Upsample(None if size is None else _tuple(size), factor, mode,
                    bool(align_corners) if align_corners is not None else False)


def _upsample(module: Any, qualname: str) -> Layer:
    def fail(problem: str) -> Exception:
        return _setting_error(module, qualname, problem)

    if getattr(module, "recompute_scale_factor", None):
        raise fail("has recompute_scale_factor=True")
    return _upsample_layer(module.size, module.scale_factor, module.mode,
                           module.align_corners, fail)


_MAX_POOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_POOL = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")


def _stride(stride: Any) -> Any:
    return None if stride is None or stride == [] else _tuple(stride)


def _max_pool_layer(
    cls: type[MaxPool], b: dict[str, Any], fail: Callable[[str], Exception]
) -> Layer:
    """The max pool of torch's settings ``b`` (a module's attributes or a call's arguments)."""
    if b["return_indices"]:
        raise fail("has return_indices=True; only return_indices=False is supported")
    return cls(_tuple(b["kernel_size"]), _stride(b["stride"]), padding=_tuple(b["padding"]),
               dilation=_tuple(b["dilation"]), ceil_mode=bool(b["ceil_mode"]))


def _avg_pool_layer(
    cls: type[_WindowAvgPool], b: dict[str, Any], fail: Callable[[str], Exception]
) -> Layer:
    """The average pool of torch's settings ``b``."""
    if b["divisor_override"] is not None:
        raise fail(f"has divisor_override={b['divisor_override']}; only None is supported")
    return cls(_tuple(b["kernel_size"]), _stride(b["stride"]), padding=_tuple(b["padding"]),
               ceil_mode=bool(b["ceil_mode"]), count_include_pad=bool(b["count_include_pad"]))


def _softplus_layer(beta: Any, threshold: Any, fail: Callable[[str], Exception]) -> Layer:
    if threshold < 20:
        raise fail(
            f"has threshold={threshold}; relprop's Softplus is exact (no linear region), "
            "which matches torch to ~1e-9 only for threshold >= 20"
        )
    return Softplus(float(beta))


def _adaptive_size(size: Any) -> Any:
    if isinstance(size, (tuple, list)):
        return tuple(None if s is None else int(s) for s in size)
    return size


def _from_attributes(
    build: Callable[[Any, dict[str, Any], Callable[[str], Exception]], Layer],
    cls: Any,
    keys: tuple[str, ...],
) -> Callable[[Any, str], Layer]:
    def convert(module: Any, qualname: str) -> Layer:
        settings = {key: getattr(module, key, None) for key in keys}
        return build(cls, settings, lambda problem: _setting_error(module, qualname, problem))

    return convert


def _adaptive(
    cls: type[_AdaptiveAvgPool],
) -> Callable[[Any, str], Layer]:
    return lambda module, qualname: cls(_adaptive_size(module.output_size))


def _batchnorm(cls: type[BatchNorm]) -> Callable[[Any, str], Layer]:
    def convert(module: Any, qualname: str) -> Layer:
        if module.running_mean is None or module.running_var is None:
            raise _setting_error(
                module, qualname,
                "has no running statistics (track_running_stats=False): it normalises "
                "with the statistics of each batch, which relprop does not model",
            )
        return cls(module.running_mean, module.running_var, module.weight, module.bias,
                   eps=float(module.eps))

    return convert


def _embedding(module: Any, qualname: str) -> Layer:
    if module.max_norm is not None:
        raise _setting_error(module, qualname, f"has max_norm={module.max_norm}: it rescales "
                             "its vectors in place when called; use max_norm=None")
    return Embedding(module.weight)


def _flatten(module: Any, qualname: str) -> Layer:
    if module.end_dim != -1 or module.start_dim < 1:
        raise _setting_error(
            module, qualname,
            f"has start_dim={module.start_dim}, end_dim={module.end_dim}; relprop's Flatten "
            "needs start_dim >= 1 (axis 0 is the batch) and end_dim=-1",
        )
    return Flatten(int(module.start_dim))


def _softplus(module: Any, qualname: str) -> Layer:
    return _softplus_layer(module.beta, module.threshold,
                           lambda problem: _setting_error(module, qualname, problem))


@lru_cache(maxsize=1)
def _normalized(module: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in module.normalized_shape)


def _layer_norm(module: Any, qualname: str) -> Layer:
    return LayerNorm(_normalized(module), module.weight, module.bias, eps=float(module.eps))


def _rms_norm(module: Any, qualname: str) -> Layer:
    import torch

    eps = module.eps if module.eps is not None else torch.finfo(
        module.weight.dtype if module.weight is not None else torch.get_default_dtype()).eps
    return RMSNorm(_normalized(module), module.weight, eps=float(eps))


def _softmax_module(module: Any, qualname: str) -> Layer:
    if module.dim is None:
        raise _setting_error(module, qualname, "has dim=None; give the softmax's axis")
    return Softmax(int(module.dim))


def _builtin_modules() -> dict[type, Callable[[Any, str], Layer]]:
    from torch import nn

    return {
        nn.Linear: lambda m, q: Dense(m.weight, m.bias),
        nn.Embedding: _embedding,
        nn.Conv1d: _conv(Conv1d),
        nn.Conv2d: _conv(Conv2d),
        nn.Conv3d: _conv(Conv3d),
        nn.ConvTranspose1d: _conv(ConvTranspose1d),
        nn.ConvTranspose2d: _conv(ConvTranspose2d),
        nn.ConvTranspose3d: _conv(ConvTranspose3d),
        nn.ReLU: lambda m, q: ReLU(),
        nn.LeakyReLU: lambda m, q: LeakyReLU(float(m.negative_slope)),
        nn.Tanh: lambda m, q: Tanh(),
        nn.ELU: lambda m, q: ELU(float(m.alpha)),
        nn.SiLU: lambda m, q: SiLU(),
        nn.GELU: lambda m, q: GELU(str(m.approximate)),
        nn.Hardtanh: lambda m, q: Hardtanh(float(m.min_val), float(m.max_val)),  # and ReLU6
        nn.Sigmoid: lambda m, q: Sigmoid(),
        nn.Softplus: _softplus,
        nn.Flatten: _flatten,
        nn.Upsample: _upsample,
        nn.UpsamplingNearest2d: _upsample,
        nn.UpsamplingBilinear2d: _upsample,
        nn.ZeroPad1d: _zero_pad(1),
        nn.ZeroPad2d: _zero_pad(2),
        nn.ZeroPad3d: _zero_pad(3),
        nn.ConstantPad1d: _zero_pad(1),
        nn.ConstantPad2d: _zero_pad(2),
        nn.ConstantPad3d: _zero_pad(3),
        nn.Identity: lambda m, q: Identity(),
        nn.Dropout: lambda m, q: Dropout(float(m.p)),
        nn.Dropout1d: lambda m, q: Dropout(float(m.p)),
        nn.Dropout2d: lambda m, q: Dropout(float(m.p)),
        nn.Dropout3d: lambda m, q: Dropout(float(m.p)),
        nn.MaxPool1d: _from_attributes(_max_pool_layer, MaxPool1d, _MAX_POOL),
        nn.MaxPool2d: _from_attributes(_max_pool_layer, MaxPool2d, _MAX_POOL),
        nn.MaxPool3d: _from_attributes(_max_pool_layer, MaxPool3d, _MAX_POOL),
        nn.AvgPool1d: _from_attributes(_avg_pool_layer, AvgPool1d, _AVG_POOL),
        nn.AvgPool2d: _from_attributes(_avg_pool_layer, AvgPool2d, _AVG_POOL),
        nn.AvgPool3d: _from_attributes(_avg_pool_layer, AvgPool3d, _AVG_POOL),
        nn.AdaptiveAvgPool1d: _adaptive(AdaptiveAvgPool1d),
        nn.AdaptiveAvgPool2d: _adaptive(AdaptiveAvgPool2d),
        nn.AdaptiveAvgPool3d: _adaptive(AdaptiveAvgPool3d),
        nn.AdaptiveMaxPool1d: _adaptive_max(AdaptiveMaxPool1d),
        nn.AdaptiveMaxPool2d: _adaptive_max(AdaptiveMaxPool2d),
        nn.AdaptiveMaxPool3d: _adaptive_max(AdaptiveMaxPool3d),
        nn.BatchNorm1d: _batchnorm(BatchNorm1d),
        nn.BatchNorm2d: _batchnorm(BatchNorm2d),
        nn.BatchNorm3d: _batchnorm(BatchNorm3d),
        nn.LayerNorm: _layer_norm,
        nn.RMSNorm: _rms_norm,
        nn.Softmax: _softmax_module,
    }


_USER_MODULES: dict[type, Callable[[Any, str], Layer]] = {}
_USER_FUNCTIONS: dict[Any, Callable[..., Layer]] = {}


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _checked(layer: Any, source: str, converter: Any) -> Layer:
    if not isinstance(layer, Layer):
        raise TypeError(
            f"from_torch: the converter {_qualified(converter)} registered for {source} "
            f"returned {type(layer).__name__}, not a relprop layer (rp.Dense(...), ...)."
        )
    return layer


def register_torch_converter(source: Any, converter: Callable[..., Layer]) -> None:
    """Teach :func:`from_torch` a module type or a function of your own.

    Both an ``nn.Sequential`` and an ``fx``-traced module use the converters registered
    here. Layers that the conversion returns share or copy the module's tensors as the
    converter decides (relprop's own converters share them).

    Parameters
    ----------
    source
        A ``torch.nn.Module`` subclass, or a function the ``forward`` calls. A module type
        takes effect for the type and its subclasses that keep its ``forward``; registering
        a type relprop already converts replaces relprop's converter.
    converter
        For a module type, ``converter(module) -> Layer``. For a function
        ``f(x, *args, **kwargs)`` of one traced tensor ``x``, ``converter(*args, **kwargs)
        -> Layer``: it gets the call's other arguments and returns the layer applied to
        ``x``. Plain Python functions are kept as one node of the ``torch.fx`` trace
        (``autowrap_functions``) instead of being traced through; torch.fx finds them under
        a public global name (not starting with ``_``) of the module defining the
        ``forward``.

    Examples
    --------
    (Not a doctest: the docstring examples run in the NumPy-only session.) ::

        class Scale(torch.nn.Module):              # y = s * x, element-wise
            def __init__(self, s): super().__init__(); self.s = torch.nn.Parameter(s)
            def forward(self, x): return self.s * x

        from relprop.interop.torch import register_torch_converter

        def convert(module):                       # capture the tensor, not the module
            s = module.s.detach()
            return rp.Lambda(lambda x: s * x, elementwise=True)

        register_torch_converter(Scale, convert)
        model = rp.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 3), Scale(torch.ones(3))))
    """
    if not callable(converter):
        raise TypeError(f"converter must be callable; got {converter!r}.")
    from torch import nn

    from relprop.interop._cache import clear

    clear()  # modules converted before now may convert differently

    if isinstance(source, type) and issubclass(source, nn.Module):
        label = f"module type {_qualified(source)}"
        _USER_MODULES[source] = lambda module, qualname: _checked(converter(module), label,
                                                                 converter)
    elif isinstance(source, type) or not callable(source):
        raise TypeError(
            f"source must be a torch.nn.Module subclass or a function; got {source!r}."
        )
    else:
        _USER_FUNCTIONS[source] = converter


def _module_table() -> dict[type, Callable[[Any, str], Layer]]:
    """relprop's module converters, with the user's registrations taking precedence."""
    return {**_builtin_modules(), **_USER_MODULES}


def _converter(module: Any) -> Callable[[Any, str], Layer] | None:
    """The converter of ``module``'s class, or of a base class whose ``forward`` it keeps."""
    table = _module_table()
    forward = getattr(type(module), "forward", None)
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls] if forward is getattr(cls, "forward", None) else None
    return None


def _convert_module(module: Any, qualname: str) -> Layer:
    convert = _converter(module)
    if convert is None:
        raise _unsupported_module(module, qualname)
    return convert(module, qualname)


def _is_plain_sequential(module: Any) -> bool:
    from torch import nn

    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _sequential_leaves(module: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(qualified name, module)`` of every leaf, in order; repeated modules repeat
    (``named_children`` would drop them)."""
    for name, child in module._modules.items():
        if child is None:
            continue
        if _is_plain_sequential(child):
            yield from _sequential_leaves(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


def _check_eval(module: Any) -> None:
    for qualname, sub in module.named_modules(remove_duplicate=False):
        if sub.training:
            where = "the module" if not qualname else f"its submodule {qualname!r}"
            raise ValueError(
                f"from_torch: {where} ({_module_kind(sub)}) is in training mode; call "
                "module.eval() first (relprop explains the inference-time network: dropout "
                "off, batch norm with its running statistics)."
            )


# ---------------------------------------------------------------------------------------
# torch.fx
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    """A tensor of the trace: the relprop node producing it (or :data:`INPUT`)."""

    name: str
    shape: tuple[int, ...] | None

    def __repr__(self) -> str:
        return f"<tensor {self.name!r}>"


@dataclass(frozen=True)
class _Size:
    """``x.size()`` / ``x.shape`` of a traced tensor."""

    of: _Tensor


class _Batch:
    """The batch size, ``x.size(0)``: only a placeholder in reshapes."""

    def __repr__(self) -> str:
        return "<batch size>"


_BATCH = _Batch()


@dataclass(frozen=True)
class _Constant:
    """A tensor the ``forward`` reads from the module (``self.mean``): a constant of the
    network, usable only in arithmetic with a traced tensor (an :class:`Affine` layer)."""

    tensor: Any
    source: str


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
_REQUIRED = object()


def _target_name(node: Any) -> str:
    target = node.target
    if isinstance(target, str):
        return f"Tensor.{target}" if node.op == "call_method" else target
    import torch

    name = str(getattr(target, "__name__", target))
    for prefix, namespace in (("torch", torch), ("F", torch.nn.functional),
                              ("operator", operator)):
        if getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    module = str(getattr(target, "__module__", None) or "")
    return f"{module}.{name}" if module else name


class _FxImporter:
    def __init__(
        self, root: Any, graph_module: Any, shapes: dict[Any, tuple[int, ...]] | None
    ) -> None:
        self.root = root
        self.modules = dict(root.named_modules(remove_duplicate=False))
        self.gm = graph_module
        self.shapes = shapes
        self.nodes: list[tuple[str, Layer, list[str]]] = []
        self.used = {INPUT}
        self.calls: dict[str, int] = {}
        self.env: dict[Any, Any] = {}
        self.functions = self._function_table()
        self.methods = self._method_table()

    # -- plumbing -----------------------------------------------------------------------

    def fail(self, node: Any, problem: str, kind: type[Exception] = ValueError) -> Exception:
        return kind(
            f"from_torch: traced node {node.name!r} ({node.op} {_target_name(node)}) {problem}."
        )

    def unique(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def shape_of(self, node: Any) -> tuple[int, ...] | None:
        return None if self.shapes is None else self.shapes.get(node)

    def emit(self, node: Any, name: str, layer: Layer, inputs: list[_Tensor]) -> _Tensor:
        name = self.unique(name)
        self.nodes.append((name, layer, [i.name for i in inputs]))
        return _Tensor(name, self.shape_of(node))

    def value(self, arg: Any) -> Any:
        from torch import fx

        if isinstance(arg, fx.Node):
            return self.env[arg]
        if isinstance(arg, list):
            return [self.value(a) for a in arg]
        if isinstance(arg, tuple):
            return tuple(self.value(a) for a in arg)
        if isinstance(arg, dict):
            return {k: self.value(v) for k, v in arg.items()}
        return arg

    def bind(
        self, node: Any, args: tuple, kwargs: dict, spec: list[tuple[str, Any]]
    ) -> dict[str, Any]:
        """Positional and keyword arguments by parameter name, defaults filled in."""
        if len(args) > len(spec):
            raise self.fail(node, f"has {len(args)} positional arguments; expected at most "
                            f"{len(spec)}", TypeError)
        bound = {name: value for (name, _), value in zip(spec, args, strict=False)}
        for key, value in kwargs.items():
            if key not in {name for name, _ in spec} or key in bound:
                raise self.fail(node, f"has an unexpected argument {key}={value!r}", TypeError)
            bound[key] = value
        for name, default in spec:
            if name not in bound:
                if default is _REQUIRED:
                    raise self.fail(node, f"lacks the argument {name!r}", TypeError)
                bound[name] = default
        return bound

    def attribute_constant(self, node: Any) -> _Constant:
        import torch

        value = operator.attrgetter(str(node.target))(self.root)
        if not isinstance(value, torch.Tensor):
            raise self.fail(node, f"reads {node.target!r}, which is not a tensor", TypeError)
        return _Constant(value.detach(), str(node.target))

    def tensor(self, node: Any, value: Any, what: str = "its input") -> _Tensor:
        if isinstance(value, _Constant):
            raise self.fail(
                node,
                f"uses the module's tensor {value.source!r} other than in arithmetic with "
                "the input (x - c, x * c, ...); relprop imports parameters only through "
                "supported modules (nn.Linear instead of F.linear(x, self.weight)), or "
                "register a converter for the module that holds it: "
                "rp.interop.torch.register_torch_converter",
                TypeError,
            )
        if not isinstance(value, _Tensor):
            raise self.fail(node, f"needs a tensor as {what}; got {value!r}")
        return value

    def check_in_place(self, node: Any, order: dict[Any, int]) -> None:
        """An in-place op on a tensor read again later: fx records values, not mutations."""
        from torch import fx

        mutated = node.args[0] if node.args else None
        if not isinstance(mutated, fx.Node):
            return
        later = [u.name for u in mutated.users if u is not node and order[u] > order[node]]
        if later:
            raise self.fail(
                node,
                f"modifies {mutated.name!r} in place, which {later} read afterwards; torch.fx "
                "records values, not mutations, so the import would differ from torch. Use "
                "the out-of-place version (inplace=False)",
            )

    def is_in_place(self, node: Any) -> bool:
        if node.op == "call_module":
            return bool(getattr(self.modules.get(node.target), "inplace", False))
        if node.kwargs.get("inplace") is True:
            return True
        if node.target in (operator.iadd, operator.imul):
            return True
        target = node.target
        name = str(target if node.op == "call_method" else getattr(target, "__name__", ""))
        return name.endswith("_") and not name.startswith("_")  # relu_, add_, ...

    # -- the trace ------------------------------------------------------------------------

    def run(self) -> Graph:
        graph = self.gm.graph
        order = {node: index for index, node in enumerate(graph.nodes)}
        outputs = [node for node in graph.nodes if node.op == "output"]
        needed = self.ancestors(outputs[-1])
        placeholders = [n for n in graph.nodes if n.op == "placeholder" and n in needed]
        if len(placeholders) > 1:
            raise ValueError(
                f"from_torch: the forward of {_module_kind(self.root)} reads several inputs "
                f"({[n.name for n in placeholders]}); relprop models have one input."
            )
        result: Any = None
        for node in graph.nodes:
            if node not in needed:
                continue
            if node.op == "placeholder":
                self.env[node] = _Tensor(INPUT, self.shape_of(node))
            elif node.op == "get_attr":
                self.env[node] = self.attribute_constant(node)
            elif node.op == "output":
                result = self.value(node.args[0])
            else:
                if self.is_in_place(node):
                    self.check_in_place(node, order)
                self.env[node] = self.call(node)
        if not isinstance(result, _Tensor):
            raise ValueError(
                f"from_torch: the forward of {_module_kind(self.root)} returns {result!r}; "
                "relprop models return one tensor."
            )
        if not self.nodes or self.nodes[-1][0] != result.name:
            self.emit(outputs[-1], "output", Identity(), [result])
        return Graph([(name, layer, inputs) for name, layer, inputs in self.nodes])

    @staticmethod
    def ancestors(node: Any) -> set[Any]:
        seen = {node}
        stack = [node]
        while stack:
            for parent in stack.pop().all_input_nodes:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def call(self, node: Any) -> Any:
        args = self.value(tuple(node.args))
        kwargs = self.value(dict(node.kwargs))
        if node.op == "call_module":
            return self.call_module(node, args, kwargs)
        if node.op == "call_method":
            handler = self.methods.get(node.target)
        elif node.target in _USER_FUNCTIONS:
            handler = self.user_function(_USER_FUNCTIONS[node.target])
        else:
            handler = None
            for target, candidate in self.functions:
                if node.target is target:
                    handler = candidate
                    break
        if handler is None:
            raise self.fail(
                node,
                f"is not supported; {_WHERE_LISTED}. Write the forward with those, or wrap "
                "the computation in a supported module",
                TypeError,
            )
        return handler(node, args, kwargs)

    def user_function(self, convert: Callable[..., Layer]) -> Callable[[Any, tuple, dict], Any]:
        def handle(node: Any, args: tuple, kwargs: dict) -> _Tensor:
            x = self.tensor(node, args[0] if args else None, "its first argument")
            rest = [*args[1:], *kwargs.values()]
            if any(isinstance(a, _Tensor) for a in rest):
                raise self.fail(node, "reads several tensors; a registered function "
                                "converter takes one tensor, its first argument", TypeError)
            layer = _checked(convert(*args[1:], **kwargs), f"function {node.target!r}", convert)
            return self.emit(node, node.name, layer, [x])

        return handle

    def call_module(self, node: Any, args: tuple, kwargs: dict) -> Any:
        qualname = str(node.target)
        module = self.modules[qualname]
        expand = _expansion(module)
        if expand is not None:
            return expand(self, node, qualname, module, args, kwargs)
        layer = _convert_module(module, qualname)
        if kwargs or len(args) != 1:
            raise self.fail(node, "calls the module with other than one positional argument")
        x = self.tensor(node, args[0])
        count = self.calls.get(qualname, 0)
        self.calls[qualname] = count + 1
        return self.emit(node, qualname if not count else f"{qualname}_{count}", layer, [x])

    # -- functions and methods ------------------------------------------------------------

    def _function_table(self) -> list[tuple[Any, Callable[[Any, tuple, dict], Any]]]:
        import torch
        import torch.nn.functional as F

        # the functional pools' keyword defaults, as torch.nn.functional declares them
        max_pool = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                    "return_indices": False}
        avg_pool = {"stride": None, "padding": 0, "ceil_mode": False,
                    "count_include_pad": True, "divisor_override": None}
        unary = self.unary
        table: list[tuple[Any, Callable[[Any, tuple, dict], Any]]] = [
            (operator.add, self.affine("add")),
            (operator.iadd, self.affine("add")),
            (torch.add, self.affine("add")),
            (operator.sub, self.affine("sub")),
            (torch.sub, self.affine("sub")),
            (operator.mul, self.affine("mul")),
            (torch.mul, self.affine("mul")),
            (operator.truediv, self.affine("div")),
            (torch.div, self.affine("div")),
            (operator.floordiv, self.arithmetic(operator.floordiv)),
            (operator.getitem, self.item),
            (getattr, self.attribute),
            (torch.relu, unary(lambda b: ReLU(), [])),
            (torch.relu_, unary(lambda b: ReLU(), [])),
            (F.relu, unary(lambda b: ReLU(), [("inplace", False)])),
            (torch.tanh, unary(lambda b: Tanh(), [])),
            (F.tanh, unary(lambda b: Tanh(), [])),
            (F.elu, unary(lambda b: ELU(float(b["alpha"])), [("alpha", 1.0),
                                                              ("inplace", False)])),
            (F.silu, unary(lambda b: SiLU(), [("inplace", False)])),
            (F.gelu, unary(lambda b: GELU(str(b["approximate"])), [("approximate", "none")])),
            (F.hardtanh, unary(lambda b: Hardtanh(float(b["min_val"]), float(b["max_val"])),
                               [("min_val", -1.0), ("max_val", 1.0), ("inplace", False)])),
            (F.relu6, unary(lambda b: Hardtanh(0.0, 6.0), [("inplace", False)])),
            (torch.sigmoid, unary(lambda b: Sigmoid(), [])),
            (F.leaky_relu, unary(lambda b: LeakyReLU(float(b["negative_slope"])),
                                 [("negative_slope", 0.01), ("inplace", False)])),
            (F.softplus, self.softplus),
            (torch.flatten, self.flatten),
            (torch.reshape, self.reshape),
            (torch.mean, self.mean),
            (torch.cat, self.cat),
            (F.adaptive_avg_pool1d, self.adaptive(AdaptiveAvgPool1d)),
            (F.adaptive_avg_pool2d, self.adaptive(AdaptiveAvgPool2d)),
            (F.adaptive_max_pool1d, self.adaptive(AdaptiveMaxPool1d)),
            (F.adaptive_max_pool2d, self.adaptive(AdaptiveMaxPool2d)),
            (F.adaptive_avg_pool3d, self.adaptive(AdaptiveAvgPool3d)),
            (F.adaptive_max_pool3d, self.adaptive(AdaptiveMaxPool3d)),
            (F.max_pool1d, self.pool(_max_pool_layer, MaxPool1d, max_pool)),
            (F.max_pool2d, self.pool(_max_pool_layer, MaxPool2d, max_pool)),
            (F.max_pool3d, self.pool(_max_pool_layer, MaxPool3d, max_pool)),
            (F.avg_pool1d, self.pool(_avg_pool_layer, AvgPool1d, avg_pool)),
            (F.avg_pool2d, self.pool(_avg_pool_layer, AvgPool2d, avg_pool)),
            (F.avg_pool3d, self.pool(_avg_pool_layer, AvgPool3d, avg_pool)),
            (F.pad, self.pad),
            (F.interpolate, self.interpolate),
            (F.dropout, self.dropout),
            (torch.matmul, self.matmul),
            (operator.matmul, self.matmul),
            (torch.bmm, self.matmul),
            (F.softmax, self.softmax),
            (torch.softmax, self.softmax),
            (torch.transpose, self.transpose),
            (torch.permute, self.permute),
            (F.layer_norm, self.layer_norm),
            (F.scaled_dot_product_attention, self.attention),
            (torch.where, self.where),
            (torch.masked_fill, self.masked_fill),
            (F.dropout1d, self.dropout),
            (F.dropout2d, self.dropout),
            (F.dropout3d, self.dropout),
        ]
        for name in ("concat", "concatenate"):
            if hasattr(torch, name):
                table.append((getattr(torch, name), self.cat))
        return table

    def _method_table(self) -> dict[str, Callable[[Any, tuple, dict], Any]]:
        return {
            "add": self.affine("add"),
            "add_": self.affine("add"),
            "sub": self.affine("sub"),
            "mul": self.affine("mul"),
            "div": self.affine("div"),
            "relu": self.unary(lambda b: ReLU(), []),
            "relu_": self.unary(lambda b: ReLU(), []),
            "tanh": self.unary(lambda b: Tanh(), []),
            "sigmoid": self.unary(lambda b: Sigmoid(), []),
            "flatten": self.flatten,
            "mean": self.mean,
            "view": self.reshape,
            "reshape": self.reshape,
            "size": self.size,
            "contiguous": self.contiguous,
            "matmul": self.matmul,
            "softmax": self.softmax,
            "transpose": self.transpose,
            "permute": self.permute,
            "masked_fill": self.masked_fill,
        }

    def unary(
        self, make: Callable[[dict[str, Any]], Layer], options: list[tuple[str, Any]]
    ) -> Callable[[Any, tuple, dict], _Tensor]:
        def handle(node: Any, args: tuple, kwargs: dict) -> _Tensor:
            bound = self.bind(node, args, kwargs, [("input", _REQUIRED), *options])
            return self.emit(node, node.name, make(bound), [self.tensor(node, bound["input"])])

        return handle

    def constant(self, value: Any) -> Any:
        """A number or a module's tensor as a torch tensor (numbers in the module's dtype)."""
        import torch

        if isinstance(value, _Constant):
            return value.tensor
        first = next(iter(self.root.parameters()), None)
        dtype = torch.get_default_dtype() if first is None else first.dtype
        return torch.tensor(float(value), dtype=dtype)

    def affine(self, op: str) -> Callable[[Any, tuple, dict], Any]:
        """``x + y`` of two traced tensors (:class:`Add`), ``x op c`` with a constant ``c``
        (a number or a module's tensor: an :class:`Affine` layer), or integer arithmetic on
        sizes."""
        integer = {"add": operator.add, "sub": operator.sub, "mul": operator.mul}.get(op)

        def handle(node: Any, args: tuple, kwargs: dict) -> Any:
            kwargs = dict(kwargs)
            alpha = kwargs.pop("alpha", 1)
            if kwargs or len(args) != 2 or alpha != 1:
                raise self.fail(node, "has arguments other than two operands (alpha=1)",
                                TypeError)
            a, b = args
            traced = [isinstance(v, _Tensor) for v in (a, b)]
            constant = [isinstance(v, _Constant) or _is_number(v) for v in (a, b)]
            if not any(traced) and not any(isinstance(v, _Constant) for v in (a, b)):
                if integer is None:
                    raise self.fail(node, f"computes {op} of {list(args)}", TypeError)
                return self.arithmetic(integer)(node, (a, b), {})
            if all(traced):
                if op == "add":
                    return self.emit(node, node.name, Add(), [a, b])
                if op == "mul":
                    return self.emit(node, node.name, Multiply(), [a, b])
                raise self.fail(node, f"computes {op} of two tensors of the network; only "
                                "their sum (x + y) and product (x * y) are supported",
                                TypeError)
            if not (any(traced) and constant[traced.index(False)]):
                raise self.fail(node, f"computes {op} of {list(args)}", TypeError)
            first = traced[0]
            x, c = (a, b) if first else (b, a)
            value = self.constant(c)
            scale, shift = None, None
            if op == "add":
                shift = value
            elif op == "sub":
                scale, shift = (None, -value) if first else (-value.new_ones(()), value)
            elif op == "mul":
                scale = value
            elif first:  # x / c
                scale = 1.0 / value
            else:
                raise self.fail(node, "divides a constant by a tensor of the network, which "
                                "is not an affine map", TypeError)
            layer = Affine(scale, shift)
            if x.shape is not None:
                problem = layer.check_input(x.shape)
                if problem is not None:
                    raise self.fail(node, problem)
            return self.emit(node, node.name, layer, [x])

        return handle

    def arithmetic(self, op: Callable[[Any, Any], Any]) -> Callable[[Any, tuple, dict], Any]:
        def handle(node: Any, args: tuple, kwargs: dict) -> Any:
            if kwargs or len(args) != 2 or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in args
            ):
                raise self.fail(
                    node,
                    f"computes with {list(args)}; only the batch size (x.size(0)) in "
                    "reshapes and integer arithmetic on known sizes are supported",
                    TypeError,
                )
            return op(*args)

        return handle

    def dim(self, node: Any, x: _Tensor, index: Any) -> Any:
        if not isinstance(index, int):
            raise self.fail(node, f"indexes a shape with {index!r}", TypeError)
        if index == 0 or (x.shape is not None and index == -len(x.shape)):
            return _BATCH
        if x.shape is None:
            raise self.fail(
                node,
                f"reads axis {index} of the shape of {x.name!r}, which is only known from "
                "an example: pass example_input to from_torch",
            )
        return x.shape[index]

    def size(self, node: Any, args: tuple, kwargs: dict) -> Any:
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED), ("dim", None)])
        x = self.tensor(node, bound["input"])
        return _Size(x) if bound["dim"] is None else self.dim(node, x, bound["dim"])

    def attribute(self, node: Any, args: tuple, kwargs: dict) -> Any:
        if len(args) == 2 and isinstance(args[0], _Tensor) and args[1] == "shape":
            return _Size(args[0])
        raise self.fail(node, "reads an attribute other than a tensor's .shape", TypeError)

    def item(self, node: Any, args: tuple, kwargs: dict) -> Any:
        if len(args) == 2 and isinstance(args[0], _Size):
            return self.dim(node, args[0].of, args[1])
        if len(args) == 2 and isinstance(args[0], tuple) and isinstance(args[1], int):
            return args[0][args[1]]  # (output, None) of an attention module
        if len(args) == 2 and isinstance(args[0], _Tensor):
            return self.index(node, args[0], args[1])
        raise self.fail(node, "indexes something other than a tensor's shape (slicing a "
                        "tensor is not supported)", TypeError)

    def index(self, node: Any, x: _Tensor, index: Any) -> _Tensor:
        """``x[:, 0]`` (the class token), ``x[:, :, a:b]``: basic indexing that keeps the
        batch, as an rp.Slice per indexed axis and a reshape dropping the integer ones."""
        entries = index if isinstance(index, tuple) else (index,)
        if not entries or entries[0] != slice(None) or any(
            not isinstance(e, (int, slice)) or (isinstance(e, slice) and e.step not in
                                                  (None, 1)) for e in entries
        ) or (x.shape is not None and len(entries) > len(x.shape)):
            raise self.fail(node, f"indexes with {index!r}; relprop reads x[:, i] and x[:, "
                            "a:b] (integers and slices of step 1, the batch kept whole)",
                            TypeError)
        if x.shape is None:
            raise self.fail(node, "indexes a tensor; pass example_input for its shape")
        out = x
        for axis, entry in enumerate(entries[1:], start=1):
            size = x.shape[axis]
            start, stop = ((entry % size, entry % size + 1) if isinstance(entry, int)
                           else slice(entry.start, entry.stop).indices(size)[:2])
            if (start, stop) != (0, size):
                out = self.part(node, f"{node.name}_slice", Slice(axis, start, stop), [out],
                                None)
        import numpy as np

        shape = np.broadcast_to(np.zeros(()), x.shape)[entries].shape  # numpy's indexing
        return _Tensor(self.emit(node, node.name, Reshape(shape[1:]), [out]).name, shape)

    def contiguous(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        return self.tensor(node, args[0] if args else None)

    def start_dim(self, node: Any, x: _Tensor, start: int, end: int) -> int:
        ndim = None if x.shape is None else len(x.shape)
        if start < 0 and ndim is not None:
            start += ndim
        if end < 0 and ndim is not None:
            end += ndim
        if start < 1 or not (end == -1 or (ndim is not None and end == ndim - 1)):
            raise self.fail(
                node,
                f"flattens axes {start}..{end}; relprop's Flatten needs start_dim >= 1 (axis "
                "0 is the batch) and end_dim = -1",
            )
        return start

    def flatten(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs,
                          [("input", _REQUIRED), ("start_dim", 0), ("end_dim", -1)])
        x = self.tensor(node, bound["input"])
        start = self.start_dim(node, x, int(bound["start_dim"]), int(bound["end_dim"]))
        return self.emit(node, node.name, Flatten(start), [x])

    def reshape(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        if not args:
            raise self.fail(node, "has no input", TypeError)
        x = self.tensor(node, args[0])
        shape: Any = args[1:] if len(args) > 1 else kwargs.get("shape", kwargs.get("size"))
        if not isinstance(shape, (tuple, list)):
            raise self.fail(node, f"reshapes to {shape!r}", TypeError)
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        shape = tuple(shape)
        flat = None
        if x.shape is not None:
            flat = math.prod(x.shape[1:])
        rest = shape[1:]
        fixed = all(isinstance(d, int) and not isinstance(d, bool) for d in rest)
        if shape and shape[0] is _BATCH and fixed and len(rest) > 1:  # heads: (batch, t, h, d)
            return self.emit(node, node.name, Reshape(tuple(int(d) for d in rest)), [x])
        ok = len(shape) == 2 and (
            (shape[0] is _BATCH and (shape[1] == -1 or isinstance(shape[1], int)))
            or (shape[0] == -1 and isinstance(shape[1], int) and shape[1] == flat)
        )
        if not ok:
            hint = ""
            if len(shape) == 2 and shape[0] == -1 and flat is None:
                hint = (
                    " (x.view(-1, n) is a flatten only if n is the size of one sample: pass "
                    "example_input so that the shapes are known)"
                )
            raise self.fail(
                node,
                f"reshapes to {shape}; only reshapes that keep the batch first, "
                f"x.view(x.size(0), ...), are supported{hint}",
            )
        return self.emit(node, node.name, Flatten(1), [x])

    def matmul(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED), ("other", _REQUIRED)])
        a, b = (self.tensor(node, bound[k]) for k in ("input", "other"))
        return self.emit(node, node.name, MatMul(), [a, b])

    def axis(self, node: Any, x: _Tensor, axis: Any) -> int:
        """An axis of ``x`` other than the batch, as a negative index where it can be."""
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise self.fail(node, f"takes axis {axis!r}", TypeError)
        ndim = None if x.shape is None else len(x.shape)
        if axis == 0 or (ndim is not None and axis == -ndim):
            raise self.fail(node, "works along the batch axis 0; relprop explains each sample "
                            "on its own")
        return axis - ndim if ndim is not None and axis > 0 else axis

    def softmax(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED), ("dim", None),
                                               ("_stacklevel", 3), ("dtype", None)])
        x = self.tensor(node, bound["input"])
        if bound["dim"] is None or bound["dtype"] is not None:
            raise self.fail(node, "takes a softmax without dim= (or with a dtype=); give the "
                            "axis, in the model's dtype", TypeError)
        return self.emit(node, node.name, Softmax(self.axis(node, x, bound["dim"])), [x])

    def permutation(self, node: Any, x: _Tensor, dims: tuple[int, ...]) -> _Tensor:
        if x.shape is None:
            raise self.fail(node, "moves axes of a tensor whose rank is only known from an "
                            "example: pass example_input to from_torch")
        ndim = len(x.shape)
        order = tuple(d % ndim for d in dims)
        if sorted(order) != list(range(ndim)) or order[0] != 0:
            raise self.fail(node, f"permutes the axes to {dims}; the batch axis must stay first")
        return self.emit(node, node.name, Permute(order), [x])

    def transpose(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED), ("dim0", _REQUIRED),
                                               ("dim1", _REQUIRED)])
        x = self.tensor(node, bound["input"])
        if x.shape is None:
            raise self.fail(node, "transposes a tensor whose rank is only known from an "
                            "example: pass example_input to from_torch")
        order = list(range(len(x.shape)))
        i, j = (int(bound[k]) % len(order) for k in ("dim0", "dim1"))
        order[i], order[j] = order[j], order[i]
        return self.permutation(node, x, tuple(order))

    def permute(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        if not args:
            raise self.fail(node, "has no input", TypeError)
        x = self.tensor(node, args[0])
        dims: Any = args[1:] if len(args) > 1 else kwargs.get("dims", ())
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
        return self.permutation(node, x, tuple(int(d) for d in dims))

    def layer_norm(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED),
                                               ("normalized_shape", _REQUIRED),
                                               ("weight", None), ("bias", None), ("eps", 1e-5)])
        x = self.tensor(node, bound["input"])
        weight, bias = (None if bound[k] is None else self.constant(bound[k])
                        for k in ("weight", "bias"))
        shape = tuple(int(d) for d in bound["normalized_shape"])
        return self.emit(node, node.name, LayerNorm(shape, weight, bias, float(bound["eps"])),
                         [x])

    def select(self, node: Any, x: _Tensor, keep: Any, value: Any) -> _Tensor:
        """``x`` where the constant mask ``keep`` holds, else the number ``value``: an
        :class:`Affine` with scale ``keep`` and shift ``value`` elsewhere (a causal mask)."""
        import torch

        if not (isinstance(keep, _Constant) and keep.tensor.dtype == torch.bool
                and _is_number(value)):
            raise self.fail(node, "masks with something other than a boolean tensor of the "
                            "module (a registered buffer) and a number", TypeError)
        dtype = self.constant(1.0).dtype
        mask = keep.tensor
        shift = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, float(value))
        layer = Affine(mask.to(dtype), shift)
        if x.shape is not None:
            problem = layer.check_input(x.shape)
            if problem is not None:
                raise self.fail(node, problem)
        return self.emit(node, node.name, layer, [x])

    def where(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs, [("condition", _REQUIRED), ("input", _REQUIRED),
                                               ("other", _REQUIRED)])
        return self.select(node, self.tensor(node, bound["input"]), bound["condition"],
                           bound["other"])

    def masked_fill(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED), ("mask", _REQUIRED),
                                               ("value", _REQUIRED)])
        mask = bound["mask"]
        if not isinstance(mask, _Constant):
            raise self.fail(node, "masks with a tensor computed in the forward; register the "
                            "mask as a buffer of the module", TypeError)
        keep = _Constant(~mask.tensor, mask.source)
        return self.select(node, self.tensor(node, bound["input"]), keep, bound["value"])

    # -- transformer modules, expanded into their parts -----------------------------------

    def part(self, node: Any, name: str, layer: Layer, inputs: list[_Tensor],
             shape: tuple[int, ...] | None) -> _Tensor:
        """One layer of an expanded module, its output of ``shape``."""
        return _Tensor(self.emit(node, name, layer, inputs).name, shape)

    def attention_parts(self, node: Any, name: str, q: _Tensor, k: _Tensor, v: _Tensor,
                        scale: float, mask: Any) -> _Tensor:
        """``softmax(q k^T * scale + mask) v`` of ``(batch, ..., tokens, d)`` queries, keys
        and values, as MatMul, Affine, Softmax, MatMul (``mask``: ``None``, a float tensor
        added, or a boolean one, True where attention is not allowed)."""
        import torch

        assert q.shape is not None and k.shape is not None and v.shape is not None
        m = k.shape[-2]
        order = (*range(len(k.shape) - 2), len(k.shape) - 1, len(k.shape) - 2)
        keys = self.part(node, f"{name}.key_t", Permute(order), [k],
                         (*k.shape[:-2], k.shape[-1], m))
        scores = self.part(node, f"{name}.scores", MatMul(), [q, keys], (*q.shape[:-1], m))
        dtype = self.constant(1.0).dtype
        shift = None
        if mask is not None and mask.dtype == torch.bool:
            shift = torch.zeros(mask.shape, dtype=dtype).masked_fill(mask, float("-inf"))
        elif mask is not None:
            shift = mask.to(dtype)
        scaled = self.part(node, f"{name}.scaled",
                           Affine(torch.tensor(float(scale), dtype=dtype), shift), [scores],
                           scores.shape)
        weights = self.part(node, f"{name}.weights", Softmax(-1), [scaled], scores.shape)
        return self.part(node, name, MatMul(), [weights, v], (*q.shape[:-1], v.shape[-1]))

    def self_attention(self, node: Any, name: str, module: Any, x: _Tensor,
                       mask: Any) -> _Tensor:
        """An ``nn.MultiheadAttention`` (batch first) of ``x`` with itself, as its parts:
        the packed input projection, a Slice for each of q, k, v, the heads split, the
        attention, the heads joined, the output projection."""
        if x.shape is None:
            raise self.fail(node, "needs its input's shape: pass example_input")
        tokens, width = x.shape[1], x.shape[2]
        heads = module.num_heads
        size = width // heads
        packed = self.part(node, f"{name}.in_proj",
                           Dense(module.in_proj_weight.detach(), _bias(module.in_proj_bias)),
                           [x], (x.shape[0], tokens, 3 * width))
        split = []
        for index, part in enumerate("qkv"):
            piece = self.part(node, f"{name}.{part}", Slice(-1, index * width,
                                                            (index + 1) * width),
                              [packed], x.shape)
            shaped = self.part(node, f"{name}.{part}.heads", Reshape((tokens, heads, size)),
                               [piece], (x.shape[0], tokens, heads, size))
            split.append(self.part(node, f"{name}.{part}.first", Permute((0, 2, 1, 3)),
                                   [shaped], (x.shape[0], heads, tokens, size)))
        q, k, v = split
        mixed = self.attention_parts(node, f"{name}.attention", q, k, v, size ** -0.5, mask)
        joined = self.part(node, f"{name}.joined", Permute((0, 2, 1, 3)), [mixed],
                           (x.shape[0], tokens, heads, size))
        flat = self.part(node, f"{name}.merged", Reshape((tokens, width)), [joined], x.shape)
        out = module.out_proj
        return self.part(node, f"{name}.out_proj",
                         Dense(out.weight.detach(), _bias(out.bias)), [flat], x.shape)

    def encoder_layer(self, node: Any, name: str, module: Any, x: _Tensor,
                      mask: Any) -> _Tensor:
        """An ``nn.TransformerEncoderLayer`` (batch first, eval) as its parts."""
        def norm(which: str, t: _Tensor) -> _Tensor:
            return self.part(node, f"{name}.{which}",
                             _convert_module(getattr(module, which), f"{name}.{which}"), [t],
                             t.shape)

        def attention(t: _Tensor) -> _Tensor:
            return self.self_attention(node, f"{name}.self_attn", module.self_attn, t, mask)

        def feed_forward(t: _Tensor) -> _Tensor:
            hidden = module.linear1.out_features
            assert t.shape is not None
            up = self.part(node, f"{name}.linear1",
                           _convert_module(module.linear1, f"{name}.linear1"), [t],
                           (*t.shape[:-1], hidden))
            active = self.part(node, f"{name}.activation", _activation(module, name), [up],
                               up.shape)
            return self.part(node, f"{name}.linear2",
                             _convert_module(module.linear2, f"{name}.linear2"), [active],
                             t.shape)

        def add(which: str, a: _Tensor, b: _Tensor) -> _Tensor:
            return self.part(node, f"{name}.{which}", Add(), [a, b], a.shape)

        if module.norm_first:
            x = add("residual1", x, attention(norm("norm1", x)))
            return add("residual2", x, feed_forward(norm("norm2", x)))
        x = norm("norm1", add("residual1", x, attention(x)))
        return norm("norm2", add("residual2", x, feed_forward(x)))

    def attention(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        """``F.scaled_dot_product_attention`` as its parts: ``softmax(q k^T * scale + mask)
        v``, the causal mask a constant shift of ``-inf`` above the diagonal."""
        import torch

        bound = self.bind(node, args, kwargs, [
            ("query", _REQUIRED), ("key", _REQUIRED), ("value", _REQUIRED),
            ("attn_mask", None), ("dropout_p", 0.0), ("is_causal", False), ("scale", None),
            ("enable_gqa", False)])
        q, k, v = (self.tensor(node, bound[name]) for name in ("query", "key", "value"))
        if bound["attn_mask"] is not None or bound["enable_gqa"]:
            raise self.fail(node, "passes attn_mask= or enable_gqa=; relprop reads the causal "
                            "mask (is_causal=True) only", TypeError)
        if q.shape is None or k.shape is None:
            raise self.fail(node, "needs the shapes of its query and key: pass example_input")
        order = (*range(len(k.shape) - 2), len(k.shape) - 1, len(k.shape) - 2)
        keys = self.emit(node, f"{node.name}.key_t", Permute(order), [k])
        scores = self.emit(node, f"{node.name}.scores", MatMul(), [q, keys])
        scale = bound["scale"] if bound["scale"] is not None else q.shape[-1] ** -0.5
        dtype = self.constant(1.0).dtype
        shift = None
        if bound["is_causal"]:
            n, m = q.shape[-2], k.shape[-2]
            above = torch.ones(n, m, dtype=torch.bool).triu(1)
            shift = torch.zeros(n, m, dtype=dtype).masked_fill(above, float("-inf"))
        scaled = self.emit(node, f"{node.name}.scaled",
                           Affine(torch.tensor(float(scale), dtype=dtype), shift), [scores])
        weights = self.emit(node, f"{node.name}.weights", Softmax(-1), [scaled])
        return self.emit(node, node.name, MatMul(), [weights, v])

    def mean(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        """Global average pooling written as a mean over the spatial axes."""
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED), ("dim", None),
                                               ("keepdim", False), ("dtype", None)])
        x = self.tensor(node, bound["input"])
        dims = bound["dim"]
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        pools: dict[tuple[int, ...], type[_AdaptiveAvgPool]] = {
            (2,): AdaptiveAvgPool1d, (-1,): AdaptiveAvgPool1d,
            (2, 3): AdaptiveAvgPool2d, (-2, -1): AdaptiveAvgPool2d,
            (2, 3, 4): AdaptiveAvgPool3d, (-3, -2, -1): AdaptiveAvgPool3d,
        }
        tokens = x.shape is not None and len(x.shape) == 3 and tuple(
            d % 3 for d in dims) == (1,)
        if tokens and bound["dtype"] is None:  # mean pooling over the tokens of (b, t, d)
            first = self.part(node, f"{node.name}_features_first", Permute((0, 2, 1)), [x],
                              None)
            pooled = self.emit(node, f"{node.name}_pool", AdaptiveAvgPool1d(1), [first])
            layer = Permute((0, 2, 1)) if bound["keepdim"] else Flatten(1)
            return self.emit(node, node.name, layer, [pooled])
        pool = pools.get(tuple(sorted(dims)))
        if pool is not None and x.shape is not None and len(x.shape) != 2 + pool.spatial:
            pool = None
        if pool is None or bound["dtype"] is not None:
            raise self.fail(
                node,
                f"averages over dim={bound['dim']!r}; only the spatial axes of a "
                "(batch, channels, ...) input are supported (global average pooling: "
                "dim=(2, 3) or (-2, -1); 1d: dim=2 or -1), and the tokens of a (batch, "
                "tokens, features) input (mean pooling: dim=1)",
            )
        if bound["keepdim"]:
            return self.emit(node, node.name, pool(1), [x])
        pooled = self.emit(node, f"{node.name}_pool", pool(1), [x])
        return self.emit(node, node.name, Flatten(1), [pooled])

    def interpolate(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        """``F.interpolate`` (nearest, linear, bilinear): rp.Upsample."""
        bound = self.bind(node, args, kwargs, [
            ("input", _REQUIRED), ("size", None), ("scale_factor", None), ("mode", "nearest"),
            ("align_corners", None), ("recompute_scale_factor", None), ("antialias", False)])
        if bound["recompute_scale_factor"] or bound["antialias"]:
            raise self.fail(node, "uses recompute_scale_factor or antialias")
        layer = _upsample_layer(bound["size"], bound["scale_factor"], bound["mode"],
                                bound["align_corners"], lambda problem: self.fail(node, problem))
        return self.emit(node, node.name, layer, [self.tensor(node, bound["input"])])

    def pad(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        """``F.pad(x, pad)`` with zeros: rp.ZeroPad1d / ZeroPad2d."""
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED), ("pad", _REQUIRED),
                                               ("mode", "constant"), ("value", None)])
        x = self.tensor(node, bound["input"])
        if bound["mode"] != "constant":
            raise self.fail(node, f"pads with mode={bound['mode']!r}; only 'constant' zeros")
        pad = tuple(int(p) for p in bound["pad"])
        spatial = len(pad) // 2 if x.shape is None else len(x.shape) - 2
        if spatial not in SPATIAL_DIMS or len(pad) > 2 * spatial:
            raise self.fail(node, f"pads {pad}; only the 1, 2 or 3 spatial axes of "
                            "(batch, channels, ...) inputs")
        layer = _zero_pad_layer(pad, bound["value"] or 0.0, spatial,
                                lambda problem: self.fail(node, problem))
        return self.emit(node, node.name, layer, [x])

    def cat(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        kwargs = {("dim" if k == "axis" else k): v for k, v in kwargs.items()}
        bound = self.bind(node, args, kwargs, [("tensors", _REQUIRED), ("dim", 0)])
        tensors = [self.tensor(node, t, "every input") for t in bound["tensors"]]
        dim = int(bound["dim"])
        ndim = None if tensors[0].shape is None else len(tensors[0].shape)
        if dim == 0 or (ndim is not None and dim == -ndim):
            raise self.fail(node, "concatenates along the batch axis 0; use dim >= 1")
        if len(tensors) == 1:
            return tensors[0]
        return self.emit(node, node.name, Concat(dim), tensors)

    def softplus(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs,
                          [("input", _REQUIRED), ("beta", 1.0), ("threshold", 20.0)])
        layer = _softplus_layer(bound["beta"], bound["threshold"],
                                lambda problem: self.fail(node, problem))
        return self.emit(node, node.name, layer, [self.tensor(node, bound["input"])])

    def adaptive(
        self, cls: type[_AdaptiveAvgPool | _AdaptiveMaxPool],
    ) -> Callable[[Any, tuple, dict], _Tensor]:
        def handle(node: Any, args: tuple, kwargs: dict) -> _Tensor:
            bound = self.bind(node, args, kwargs, [("input", _REQUIRED),
                                                   ("output_size", _REQUIRED),
                                                   ("return_indices", False)])
            if bound["return_indices"]:
                raise self.fail(node, "returns the indices of the maxima too")
            return self.emit(node, node.name, cls(_adaptive_size(bound["output_size"])),
                             [self.tensor(node, bound["input"])])

        return handle

    def pool(
        self,
        build: Callable[[Any, dict[str, Any], Callable[[str], Exception]], Layer],
        cls: Any,
        defaults: dict[str, Any],
    ) -> Callable[[Any, tuple, dict], _Tensor]:
        """A functional pool (``F.max_pool2d``...): its arguments bound as torch binds them."""
        spec = [("input", _REQUIRED), ("kernel_size", _REQUIRED), *defaults.items()]

        def handle(node: Any, args: tuple, kwargs: dict) -> _Tensor:
            b = self.bind(node, args, kwargs, spec)
            layer = build(cls, b, lambda problem: self.fail(node, problem))
            return self.emit(node, node.name, layer, [self.tensor(node, b["input"])])

        return handle

    def dropout(self, node: Any, args: tuple, kwargs: dict) -> _Tensor:
        bound = self.bind(node, args, kwargs, [("input", _REQUIRED), ("p", 0.5),
                                               ("training", True), ("inplace", False)])
        if bound["training"]:
            raise self.fail(
                node,
                "drops out at random (training=True); pass training=self.training and call "
                "module.eval() first",
            )
        return self.emit(node, node.name, Dropout(float(bound["p"])),
                         [self.tensor(node, bound["input"])])


def _bias(bias: Any) -> Any:
    return None if bias is None else bias.detach()


def _activation(module: Any, name: str) -> Layer:
    """The activation of an ``nn.TransformerEncoderLayer`` (a function or a module)."""
    from torch.nn import functional as F

    activation = module.activation
    if activation is F.relu:
        return ReLU()
    if activation is F.gelu:
        return GELU()
    return _convert_module(activation, f"{name}.activation")


def _bound(signature: tuple[str, ...], args: tuple, kwargs: dict) -> dict[str, Any]:
    values = dict(zip(signature, args, strict=False))
    values.update(kwargs)
    return values


def _attention_mask(importer: _FxImporter, node: Any, what: str, mask: Any, causal: Any,
                    tokens: int | None) -> Any:
    """The mask of an attention module's call: a constant tensor (a buffer of the module),
    the causal mask for ``is_causal=True`` without one, or ``None``."""
    import torch

    if isinstance(mask, _Constant):
        return mask.tensor
    if mask is not None:
        raise importer.fail(node, f"({what}) passes a mask computed in the forward; relprop "
                            "reads a mask held by the module (a buffer) or is_causal=True",
                            TypeError)
    if causal and tokens is not None:
        return torch.ones(tokens, tokens, dtype=torch.bool).triu(1)
    return None


def _tokens(x: _Tensor) -> int | None:
    return None if x.shape is None else x.shape[1]


def _expand_attention(importer: _FxImporter, node: Any, qualname: str, module: Any,
                      args: tuple, kwargs: dict) -> tuple[_Tensor, None]:
    """``nn.MultiheadAttention(x, x, x)``: self-attention of one tensor, batch first, no
    key padding mask, a constant ``attn_mask`` or none; returns ``(output, None)`` (the
    weights are not computed)."""
    call = _bound(("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
                   "average_attn_weights", "is_causal"), args, kwargs)
    query, key, value = (call.get(k) for k in ("query", "key", "value"))
    problems = [
        (not module.batch_first, "has batch_first=False; build it with batch_first=True"),
        (not (query is key is value), "attends to another tensor than its query "
         "(cross-attention); relprop reads self-attention, module(x, x, x)"),
        (call.get("key_padding_mask") is not None,
         "passes key_padding_mask; relprop reads attn_mask (a buffer) or is_causal=True"),
        (module.bias_k is not None or module.add_zero_attn or not module._qkv_same_embed_dim,
         "has bias_k/bias_v, add_zero_attn or separate key and value sizes"),
    ]
    for problem, message in problems:
        if problem:
            raise importer.fail(node, f"(nn.MultiheadAttention {qualname!r}) {message}",
                                TypeError)
    x = importer.tensor(node, query)
    mask = _attention_mask(importer, node, f"nn.MultiheadAttention {qualname!r}",
                           call.get("attn_mask"), call.get("is_causal"), _tokens(x))
    return importer.self_attention(node, qualname, module, x, mask), None


def _expand_encoder_layer(importer: _FxImporter, node: Any, qualname: str, module: Any,
                          args: tuple, kwargs: dict) -> _Tensor:
    """``nn.TransformerEncoderLayer(src)``, batch first, in eval mode."""
    call = _bound(("src", "src_mask", "src_key_padding_mask", "is_causal"), args, kwargs)
    if not module.self_attn.batch_first:
        raise importer.fail(node, f"(nn.TransformerEncoderLayer {qualname!r}) has "
                            "batch_first=False; build it with batch_first=True", TypeError)
    what = f"nn.TransformerEncoderLayer {qualname!r}"
    if call.get("src_key_padding_mask") is not None:
        raise importer.fail(node, f"({what}) passes src_key_padding_mask; relprop reads "
                            "src_mask (a buffer) or is_causal=True", TypeError)
    x = importer.tensor(node, call["src"])
    mask = _attention_mask(importer, node, what, call.get("src_mask"), call.get("is_causal"),
                           _tokens(x))
    return importer.encoder_layer(node, qualname, module, x, mask)


def _expand_encoder(importer: _FxImporter, node: Any, qualname: str, module: Any,
                    args: tuple, kwargs: dict) -> _Tensor:
    """``nn.TransformerEncoder(src)``: its layers, then its norm."""
    call = _bound(("src", "mask", "src_key_padding_mask", "is_causal"), args, kwargs)
    what = f"nn.TransformerEncoder {qualname!r}"
    if call.get("src_key_padding_mask") is not None:
        raise importer.fail(node, f"({what}) passes src_key_padding_mask; relprop reads "
                            "mask (a buffer) or is_causal=True", TypeError)
    x = importer.tensor(node, call["src"])
    mask = _attention_mask(importer, node, what, call.get("mask"), call.get("is_causal"),
                           _tokens(x))
    for index, layer in enumerate(module.layers):
        x = importer.encoder_layer(node, f"{qualname}.layers.{index}", layer, x, mask)
    if module.norm is not None:
        x = importer.part(node, f"{qualname}.norm",
                          _convert_module(module.norm, f"{qualname}.norm"), [x], x.shape)
    return x


def _expansion(module: Any) -> Callable[..., Any] | None:
    """How a transformer module is read: expanded into its parts (``None``: not one)."""
    from torch import nn

    table = {nn.MultiheadAttention: _expand_attention,
             nn.TransformerEncoderLayer: _expand_encoder_layer,
             nn.TransformerEncoder: _expand_encoder}
    return table.get(type(module))


def _trace(module: Any) -> Any:
    """``torch.fx`` trace with every convertible module (torch's or a subclass keeping its
    forward) as a leaf."""
    from torch import fx

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            return (_converter(m) is not None or _expansion(m) is not None
                    or super().is_leaf_module(m, qualname))

    wrapped = tuple(f for f in _USER_FUNCTIONS if inspect.isfunction(f))
    try:
        graph = Tracer(autowrap_functions=wrapped).trace(module)
    except Exception as error:  # noqa: BLE001 - any tracing failure gets the same advice
        raise ValueError(
            f"from_torch: torch.fx cannot trace the forward of {_module_kind(module)} "
            f"({type(error).__name__}: {error}). Models whose forward branches on tensor "
            "values or shapes cannot be traced; write the network as nn.Sequential or "
            "with supported modules and functions."
        ) from error
    return fx.GraphModule(module, graph)


def _shapes(graph_module: Any, example: Any) -> dict[Any, tuple[int, ...]]:
    """The shape of every tensor the traced graph computes on ``example`` (a copy)."""
    import torch
    from torch import fx

    shapes: dict[Any, tuple[int, ...]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node: Any) -> Any:
            result = super().run_node(node)
            if isinstance(result, torch.Tensor):
                shapes[node] = tuple(int(s) for s in result.shape)
            return result

    with torch.no_grad():
        Recorder(graph_module).run(example.clone())
    return shapes


def _from_fx(module: Any, example: Any) -> Graph:
    graph_module = _trace(module)
    shapes = None if example is None else _shapes(graph_module, example)
    return _FxImporter(module, graph_module, shapes).run()


# ---------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------


def _self_check(module: Any, model: Sequential | Graph, example: Any,
                computed_in: Any = None) -> None:
    """Raise unless ``model`` and ``module`` agree on ``example``, to the precision of
    the output's dtype, or of ``computed_in`` where the module computes parts in a
    narrower one (LLaMA's float32 RMSNorm and softmax in a float64 model; relprop
    computes every layer in the input's dtype)."""
    import torch

    with torch.no_grad():
        expected = module(example.clone())  # a forward may write to its input
    if not isinstance(expected, torch.Tensor):
        raise ValueError(
            f"from_torch: the module returns {type(expected).__name__}, not one tensor."
        )
    actual = model(example.detach())
    if tuple(actual.shape) != tuple(expected.shape):
        raise ValueError(
            f"from_torch: the imported model's output has shape {tuple(actual.shape)} on "
            f"example_input; torch's has {tuple(expected.shape)}."
        )
    if expected.numel() == 0:
        return
    exact = expected.dtype == torch.float64 and computed_in in (None, torch.float64)
    rtol = 1e-9 if exact else 1e-4
    scale = float(expected.abs().max())
    atol = rtol * scale + 100 * float(torch.finfo(expected.dtype).eps)
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True):
        diff = float((actual - expected).abs().max())
        raise ValueError(
            f"from_torch: the imported model's output differs from torch's on example_input "
            f"by up to {diff:.3g} (output scale {scale:.3g}, tolerance rtol={rtol:g}); the "
            "module's forward does something the import does not model (an in-place "
            "operation on a tensor that is used again, say)."
        )


def from_torch(module: Any, example_input: Any = None) -> Sequential | Graph:
    """See :func:`relprop.interop.from_torch`."""
    import torch

    if isinstance(module, torch.export.ExportedProgram):
        from relprop.interop.torch_export import from_exported_program

        exported = from_exported_program(module)
        if example_input is not None:
            _self_check(module.module(), exported, torch.as_tensor(example_input).detach())
        return exported
    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            f"from_torch needs a torch.nn.Module or a torch.export.ExportedProgram; got "
            f"{type(module).__name__}."
        )
    _check_eval(module)
    if isinstance(example_input, Mapping):  # keywords (HuggingFace): through torch.export
        from relprop.interop.torch_export import (
            export_with_keywords,
            from_exported_program,
            narrowest_float,
        )

        program, inputs = export_with_keywords(module, example_input)
        exported = from_exported_program(program)
        _self_check(program.module(), exported, inputs, narrowest_float(program))
        return exported
    example = None
    if example_input is not None:
        example = torch.as_tensor(example_input).detach()
    model: Sequential | Graph
    if _is_plain_sequential(module) and all(
        _converter(leaf) is not None for _, leaf in _sequential_leaves(module)
    ):
        pairs = [(name, _convert_module(leaf, name)) for name, leaf in _sequential_leaves(module)]
        model = Sequential(pairs or [("identity", Identity())])
    elif _converter(module) is not None or (
        type(module).__module__.startswith("torch.nn") and not _is_plain_sequential(module)
    ):
        # a single torch module: one layer (or the unsupported-module error)
        model = Sequential([(type(module).__name__, _convert_module(module, ""))])
    else:
        model = _from_fx(module, example)
    if example is not None:
        _self_check(module, model, example)
    last = model.nodes()[-1]
    if isinstance(last.layer, Softmax):
        raise _softmax_output(f"its output {last.name!r}", "softmax")
    return model
