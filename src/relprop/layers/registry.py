"""The one list of layer kinds: each concrete layer class registers itself, once, where it
is defined (``@register``). Everything else that needs the set of layers derives it from
here: the file format (:data:`relprop.io.LAYER_TYPES`: the layers :func:`relprop.save`
stores and :func:`relprop.load` rebuilds, by their name in files), the public namespace
(``rp.Dense`` ...), and the importers' converter tables, which name the relprop layer kind
each converter produces (:func:`relprop.interop.torch.register_torch_converter`).

Examples
--------
>>> from relprop.layers.registry import layer_kinds
>>> layer_kinds()["Dense"].cls.__name__, layer_kinds()["Lambda"].savable
('Dense', False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar, overload

__all__ = ["LayerKind", "by_spatial", "layer_kinds", "register", "savable_layers"]

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class LayerKind:
    """A registered layer class, its name in model files, and whether files can hold it."""

    cls: type
    name: str
    savable: bool


_KINDS: dict[str, LayerKind] = {}


@overload
def register(cls: T, *, savable: bool = True) -> T: ...
@overload
def register(cls: None = None, *, savable: bool = True) -> Callable[[T], T]: ...
def register(cls: T | None = None, *, savable: bool = True) -> T | Callable[[T], T]:
    """Class decorator: add a layer class to the registry under its class name.

    ``savable=False`` marks layers that a file cannot hold (:class:`~relprop.Lambda`
    wraps arbitrary code). A second class under a taken name is refused.
    """

    def add(layer_cls: T) -> T:
        name = layer_cls.__name__
        known = _KINDS.get(name)
        if known is not None and known.cls is not layer_cls:
            raise ValueError(
                f"a layer kind named {name!r} is registered already ({known.cls.__module__}."
                f"{known.cls.__qualname__}); give {layer_cls.__module__}."
                f"{layer_cls.__qualname__} another class name."
            )
        _KINDS[name] = LayerKind(layer_cls, name, savable)
        return layer_cls

    return add if cls is None else add(cls)


def layer_kinds() -> Mapping[str, LayerKind]:
    """Every registered layer kind by name, in registration order (a read-only view)."""
    return MappingProxyType(_KINDS)


class _Savable(Mapping[str, type]):
    """A live, read-only view: name -> class of every savable registered layer kind."""

    def __getitem__(self, name: str) -> type:
        kind = _KINDS[name]
        if not kind.savable:
            raise KeyError(name)
        return kind.cls

    def __iter__(self) -> Iterator[str]:
        return (name for name, kind in _KINDS.items() if kind.savable)

    def __len__(self) -> int:
        return sum(kind.savable for kind in _KINDS.values())

    def __repr__(self) -> str:
        return f"savable_layers({sorted(self)})"


_SAVABLE = _Savable()


def savable_layers() -> Mapping[str, type]:
    """The layers a model file can hold, by name: a live view of the registry."""
    return _SAVABLE


def by_spatial(base: type, spatial: int) -> type:
    """The registered subclass of ``base`` for ``spatial`` spatial axes (its ``spatial``
    attribute) nearest to ``base``: ``by_spatial(MaxPool, 3)`` is
    :class:`~relprop.MaxPool3d` (not the adaptive pool, which derives from it further down).

    Raises ``ValueError`` naming the axes there are layers for.
    """
    found: dict[int, type] = {}
    for kind in _KINDS.values():
        cls, n = kind.cls, getattr(kind.cls, "spatial", 0)
        if not (n and issubclass(cls, base)):
            continue
        if n not in found or cls.__mro__.index(base) < found[n].__mro__.index(base):
            found[n] = cls
    if spatial not in found:
        raise ValueError(
            f"relprop has {base.__name__} layers for {sorted(found)} spatial axes, not {spatial}."
        )
    return found[spatial]
