"""What each benchmark table times: its network and input, and one callable per method.

A :class:`Table` names a network, batch and spatial size; :func:`methods` lists its rows.
A :class:`Context` builds the torch module and input once and, on demand, the relprop
models and inputs of each backend (the torch one shares the module's tensors; NumPy and
JAX get copies), so that a memory-measuring subprocess builds only what its one method
needs. Each :class:`Method` then prepares its callable from the context (JAX: traces and
compiles it, timed apart) and the suite times it.

Every method explains output 0 of every sample: autograd differentiates
``out[:, 0].sum()``, relprop gets ``target=0``, zennit ``attr_output = one_hot(0) * out``
(relprop's convention), Captum ``target=0``.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import models
import torch

import relprop as rp

BACKENDS = ("torch", "numpy", "jax")
COMPOSITES = ("EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonGammaBox")
KINDS = ("mlp", "vgg16", "resnet18", "dtd")
DEFAULT_SIZE = {"mlp": 0, "vgg16": 64, "resnet18": 112, "dtd": 4}  # dtd: its layers
DEFAULT_BATCH = {"mlp": 64, "vgg16": 1, "resnet18": 1, "dtd": models.DTD_INPUTS}


@dataclass(frozen=True)
class Table:
    """One table: ``kind`` (mlp, vgg16, resnet18, dtd), batch, spatial size."""

    kind: str
    batch: int
    size: int = 0

    @classmethod
    def parse(cls, text: str) -> Table:
        """``kind[:batch[:size]]``, e.g. ``vgg16:8:64``, ``resnet18:1:224``, ``mlp``."""
        kind, *rest = text.split(":")
        aliases = {"vgg": "vgg16", "resnet": "resnet18"}
        kind = aliases.get(kind, kind)
        if kind not in KINDS or len(rest) > 2:
            raise ValueError(f"table {text!r}: expected kind[:batch[:size]] with kind one of "
                             f"{', '.join(KINDS)}")
        batch = int(rest[0]) if rest and rest[0] else DEFAULT_BATCH[kind]
        size = int(rest[1]) if len(rest) > 1 else DEFAULT_SIZE[kind]
        return cls(kind, batch, size)

    def __str__(self) -> str:
        return f"{self.kind}:{self.batch}:{self.size}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.kind == "mlp":
            return (self.batch, 784)
        if self.kind == "dtd":
            return (self.batch, 10)
        return (self.batch, 3, self.size, self.size)

    @property
    def title(self) -> str:
        if self.kind == "mlp":
            return f"MLP 784-300-100-10, batch {self.batch}, float32"
        if self.kind == "vgg16":
            return (f"VGG-16 (layer configuration of torchvision's vgg16), input "
                    f"3x{self.size}x{self.size}, batch {self.batch}, float32")
        if self.kind == "resnet18":
            return (f"ResNet-18 (torchvision's layout, batch norms canonized), input "
                    f"3x{self.size}x{self.size}, batch {self.batch}, float32")
        return (f"DTD: rp.dtd.MLP(n_layers={self.size}, input_size=10, hidden_size=10, "
                f"output_size=2, seed=2), float64; train_free and gradients over "
                f"{self.batch} inputs, full_backward of one input")


def sync(result: Any) -> None:
    """Wait for JAX's asynchronous dispatch (torch and NumPy on the CPU are synchronous)."""
    for leaf in result if isinstance(result, (tuple, list)) else (result,):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()


class Context:
    """The table's network and input, and each backend's relprop model and input."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def net(self) -> torch.nn.Module:
        """The torch module."""
        def make() -> torch.nn.Module:
            kind = self.table.kind
            if kind == "dtd":
                return models.dtd_torch(self.model("numpy"))
            return {"mlp": models.mlp, "vgg16": models.vgg16, "resnet18": models.resnet18}[
                kind]()
        return self._get("net", make)

    def x(self, backend: str) -> Any:
        """The input on ``backend``."""
        def make() -> Any:
            if self.table.kind == "dtd":
                base = models.dtd_inputs(self.model("numpy"), self.table.batch)
            else:
                base = models.inputs(self.table.input_shape).numpy()
            return base if backend == "numpy" else rp.asarray(base, backend=backend)
        return self._get(f"x:{backend}", make)

    def model(self, backend: str) -> rp.model.Model:
        """The relprop model on ``backend``: ``rp.from_torch`` of the module (sharing its
        tensors) for torch, copies of its parameters for NumPy and JAX."""
        def make() -> rp.model.Model:
            if self.table.kind == "dtd":
                base = models.dtd_mlp(self.table.size)
                return base if backend == "numpy" else base.to(backend)
            if backend == "torch":
                return rp.from_torch(self.net, self.x("torch"))
            return self.model("torch").to(backend)
        return self._get(f"model:{backend}", make)

    def needs(self, method: Method) -> None:
        """Build what ``method`` reads (the network, its input and model), nothing else."""
        if method.library in ("torch", "zennit", "captum") or self.table.kind != "dtd":
            _ = self.net
        self.x(method.backend)
        if method.library in ("relprop", "jax"):
            self.model(method.backend)


@dataclass
class Prepared:
    call: Callable[[], Any]
    compile_s: float | None = None


@dataclass
class Method:
    """One row: ``prepare(context)`` returns the timed callable."""

    name: str
    library: str  # torch, relprop, zennit, captum, jax
    backend: str  # torch, numpy, jax
    prepare: Callable[[Context], Prepared]
    gradient: bool = False  # the same backend's rp.gradient (the second ratio's reference)
    ratios: bool = True  # ratios make sense (not for a single-input full-backward)
    jit: bool = False  # jax.jit-compiled (its reference gradient is jitted too)
    note: str = field(default="")

    @property
    def label(self) -> str:
        return f"{self.library} {self.name}"

    @property
    def quantity(self) -> str:
        """What it computes (rows of one quantity are compared with the first of them)."""
        base = self.name
        for mark in (" (jit)", " (canonized once)", " (keeps nothing)"):
            base = base.replace(mark, "")
        if "gradient" in base or base == "jax.grad":
            return "gradient"
        if "epsilon" in base.lower() and base not in COMPOSITES:
            return "epsilon"
        return base


# ------------------------------------------------------------------------ composites


def relprop_composite(name: str, canonize: bool) -> rp.composites.Composite:
    canonizers = [rp.canonizers.MergeBatchNorm()] if canonize else []
    if name == "EpsilonGammaBox":
        return rp.composites.EpsilonGammaBox(low=models.LOW, high=models.HIGH,
                                             canonizers=canonizers)
    return getattr(rp.composites, name)(canonizers=canonizers)


def zennit_composite(name: str, resnet: bool) -> Any:
    from _zennit import import_zennit

    zennit = import_zennit()
    canonizers = [zennit.torchvision.ResNetCanonizer()] if resnet else None
    if name == "EpsilonGammaBox":
        return zennit.composites.EpsilonGammaBox(low=models.LOW, high=models.HIGH,
                                                 canonizers=canonizers)
    return getattr(zennit.composites, name)(canonizers=canonizers)


# --------------------------------------------------------------------------- methods


def _autograd(ctx: Context) -> Prepared:
    net, x = ctx.net, ctx.x("torch")

    def call() -> torch.Tensor:
        point = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(point)[:, 0].sum(), point)
        return grad

    return Prepared(call)


def _rp_gradient(backend: str) -> Callable[[Context], Prepared]:
    def prepare(ctx: Context) -> Prepared:
        model, x = ctx.model(backend), ctx.x(backend)
        return Prepared(lambda: rp.gradient(model, x, target=0))
    return prepare


def _rp_lrp(backend: str, name: str, canonize: bool, once: bool = False, keep: bool = True
            ) -> Callable[[Context], Prepared]:
    """``keep=False``: with ``relprop._derived.ENTRIES_PER_OWNER = 0`` for the call, so
    nothing derived (modified weights, canonized models) is kept between calls."""
    def prepare(ctx: Context) -> Prepared:
        model, x = ctx.model(backend), ctx.x(backend)
        if once:  # the canonizer applied once, outside the timed call
            model = rp.canonizers.canonize(model, [rp.canonizers.MergeBatchNorm()])
        composite = relprop_composite(name, canonize and not once)

        def call() -> Any:
            return rp.lrp(model, x, target=0, composite=composite)

        return Prepared(call if keep else _keeping_nothing(call))
    return prepare


def _keeping_nothing(call: Callable[[], Any]) -> Callable[[], Any]:
    def uncached() -> Any:
        from relprop import _derived

        kept = _derived.ENTRIES_PER_OWNER
        _derived.ENTRIES_PER_OWNER = 0
        try:
            return call()
        finally:
            _derived.ENTRIES_PER_OWNER = kept
    return uncached


def _rp_epsilon(ctx: Context) -> Prepared:
    model, x = ctx.model("torch"), ctx.x("torch")
    rule = rp.rules.Epsilon(1e-9)
    return Prepared(lambda: rp.lrp(model, x, target=0, rule=rule))


def _zennit(name: str, resnet: bool) -> Callable[[Context], Prepared]:
    def prepare(ctx: Context) -> Prepared:
        from _zennit import import_zennit

        zennit = import_zennit()
        net, x = ctx.net, ctx.x("torch")
        with torch.no_grad():
            classes = net(x[:1]).shape[1]
        one_hot = torch.zeros(x.shape[0], classes, dtype=x.dtype)
        one_hot[:, 0] = 1.0
        attributor = zennit.attribution.Gradient(net, zennit_composite(name, resnet))

        def call() -> torch.Tensor:
            # zennit registers the composite's hooks (and canonizers) for the call
            _, relevance = attributor(x, lambda out: out * one_hot)
            return relevance

        return Prepared(call)
    return prepare


def _captum(ctx: Context) -> Prepared:
    from captum.attr import LRP

    net = ctx.net
    x = ctx.x("torch").detach().clone().requires_grad_(True)  # (Captum warns otherwise)
    explainer = LRP(net)  # EpsilonRule (epsilon 1e-9) on every layer it knows
    return Prepared(lambda: explainer.attribute(x, target=0))


def _jit(fn: Callable[[Any, Any], Any], backend_model: Any, x: Any) -> Prepared:
    """``jax.jit(fn)`` traced and compiled ahead of the timed calls (the compile timed),
    the model's parameters passed as arguments (not baked in as constants)."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(backend_model, x).compile()
    compile_s = time.perf_counter() - start
    return Prepared(lambda: compiled(backend_model, x), compile_s)


def _jax_grad(ctx: Context) -> Prepared:
    import jax

    def fn(model: Any, x: Any) -> Any:
        return jax.grad(lambda a: model(a)[:, 0].sum())(x)

    return _jit(fn, ctx.model("jax"), ctx.x("jax"))


def _jax_rp_gradient(ctx: Context) -> Prepared:
    return _jit(lambda model, x: rp.gradient(model, x, target=0), ctx.model("jax"),
                ctx.x("jax"))


def _jax_lrp(name: str, canonize: bool) -> Callable[[Context], Prepared]:
    def prepare(ctx: Context) -> Prepared:
        composite = relprop_composite(name, canonize)
        return _jit(lambda model, x: rp.lrp(model, x, target=0, composite=composite),
                    ctx.model("jax"), ctx.x("jax"))
    return prepare


# ------------------------------------------------------------------------------- DTD


def _train_free(backend: str, jit: bool = False) -> Callable[[Context], Prepared]:
    def prepare(ctx: Context) -> Prepared:
        model, x = ctx.model(backend), ctx.x(backend)
        if jit:
            return _jit(lambda m, a: rp.dtd.train_free(m, a, target=0, rule="z+").relevance,
                        model, x)
        return Prepared(lambda: rp.dtd.train_free(model, x, target=0, rule="z+").relevance)
    return prepare


def _full_backward(backend: str) -> Callable[[Context], Prepared]:
    def prepare(ctx: Context) -> Prepared:
        model, x = ctx.model(backend), ctx.x(backend)
        one = x[:1]
        # a fresh default root finder (and region cache) per call: nothing carried over
        return Prepared(lambda: rp.dtd.full_backward(model, one, target=0).relevance)
    return prepare


def _dtd_methods(backends: tuple[str, ...]) -> list[Method]:
    rows = [Method("input gradient (autograd)", "torch", "torch", _autograd)]
    for backend in backends:
        rows.append(Method("rp.gradient", "relprop", backend, _rp_gradient(backend),
                           gradient=True))
        rows.append(Method("dtd.train_free z+", "relprop", backend, _train_free(backend)))
        if backend == "jax":
            rows.append(Method("rp.gradient (jit)", "relprop", "jax", _jax_rp_gradient,
                               gradient=True, jit=True))
            rows.append(Method("dtd.train_free z+ (jit)", "relprop", "jax",
                               _train_free("jax", jit=True), jit=True))
        rows.append(Method("dtd.full_backward, 1 input", "relprop", backend,
                           _full_backward(backend), ratios=False))
    return rows


# ----------------------------------------------------------------------------- lists


def available(library: str) -> bool:
    """Whether ``library`` is installed (found, not imported: a memory subprocess imports
    only what its one method uses)."""
    return importlib.util.find_spec(library) is not None


def methods(table: Table, backends: tuple[str, ...] = BACKENDS) -> list[Method]:
    """The rows of ``table``, in the order they are interleaved."""
    if "jax" in backends and not available("jax"):
        backends = tuple(b for b in backends if b != "jax")
    if table.kind == "dtd":
        return _dtd_methods(backends)
    resnet = table.kind == "resnet18"
    rows = [Method("input gradient (autograd)", "torch", "torch", _autograd)]
    if "torch" in backends:
        rows.append(Method("rp.gradient", "relprop", "torch", _rp_gradient("torch"),
                           gradient=True))
        rows += [Method(name, "relprop", "torch", _rp_lrp("torch", name, resnet))
                 for name in COMPOSITES]
        if resnet:
            rows += [Method(f"{name} (canonized once)", "relprop", "torch",
                            _rp_lrp("torch", name, True, once=True),
                            note="MergeBatchNorm applied once, outside the timed call")
                     for name in COMPOSITES[:1]]
        rows += [Method(f"{name} (keeps nothing)", "relprop", "torch",
                        _rp_lrp("torch", name, resnet, keep=False),
                        note="relprop._derived.ENTRIES_PER_OWNER = 0: modified weights "
                             "derived on every call")
                 for name in COMPOSITES]
    if available("zennit"):
        rows += [Method(name, "zennit", "torch", _zennit(name, resnet)) for name in COMPOSITES]
    if not resnet and available("captum"):
        # Captum's LRP has no rule for residual additions (nor canonizers): not the ResNet
        rows.append(Method("LRP (epsilon)", "captum", "torch", _captum))
        if "torch" in backends:
            rows.append(Method("Epsilon(1e-9) (rule=)", "relprop", "torch", _rp_epsilon))
    if "numpy" in backends:
        rows.append(Method("rp.gradient", "relprop", "numpy", _rp_gradient("numpy"),
                           gradient=True))
        rows += [Method(name, "relprop", "numpy", _rp_lrp("numpy", name, resnet))
                 for name in COMPOSITES]
    if "jax" in backends:
        rows.append(Method("jax.grad (jit)", "jax", "jax", _jax_grad, jit=True))
        rows.append(Method("rp.gradient (jit)", "relprop", "jax", _jax_rp_gradient,
                           gradient=True, jit=True))
        rows += [Method(f"{name} (jit)", "relprop", "jax", _jax_lrp(name, resnet), jit=True)
                 for name in COMPOSITES]
    return rows


def by_label(table: Table, label: str, backends: tuple[str, ...] = BACKENDS) -> Method:
    for method in methods(table, backends):
        if f"{method.backend}|{method.label}" == label:
            return method
    raise KeyError(label)


def key(method: Method) -> str:
    return f"{method.backend}|{method.label}"


__all__ = ["BACKENDS", "Context", "Method", "Prepared", "Table", "by_label", "key", "methods",
           "sync"]
