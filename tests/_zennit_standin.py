"""Import zennit 0.5.1 where its optional-looking imports cannot be satisfied (test only).

``import zennit`` imports ``zennit.torchvision`` (``from torchvision.models.resnet import
Bottleneck, BasicBlock``: canonizers for torchvision ResNets) and ``zennit.image``
(``from PIL import Image``: heat-map images). The torch test session installs zennit with
``--no-deps`` because no torchvision builds against torch 2.13 here, and Pillow then is
missing too. Neither module takes part in computing relevance, so where the real package
cannot be imported a minimal stand-in is put in ``sys.modules`` for the duration of the
import and taken out again afterwards: other test modules never see it. zennit keeps its
references to the dummy classes, which no dense network ever is an instance of.

A missing zennit is an error here, never a skip: the torch session must have it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType


def _importable(name: str) -> bool:
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install (e.g. torchvision vs torch) counts as missing
        for partial in set(sys.modules) - before:  # drop half-imported submodules
            del sys.modules[partial]
        return False
    return True


def _torchvision_standin() -> dict[str, ModuleType]:
    import torch

    resnet = ModuleType("torchvision.models.resnet")

    class BasicBlock(torch.nn.Module):
        """Stand-in for torchvision's ResNet ``BasicBlock`` (never instantiated)."""

    class Bottleneck(torch.nn.Module):
        """Stand-in for torchvision's ResNet ``Bottleneck`` (never instantiated)."""

    for cls in (BasicBlock, Bottleneck):
        cls.__module__ = resnet.__name__
        setattr(resnet, cls.__name__, cls)
    models = ModuleType("torchvision.models")
    models.resnet = resnet  # type: ignore[attr-defined]
    package = ModuleType("torchvision")
    package.models = models  # type: ignore[attr-defined]
    package.__path__ = []  # a package, so that submodule imports resolve through sys.modules
    models.__path__ = []
    return {
        "torchvision": package,
        "torchvision.models": models,
        "torchvision.models.resnet": resnet,
    }


def _pil_standin() -> dict[str, ModuleType]:
    image = ModuleType("PIL.Image")

    def fromarray(*args: object, **kwargs: object) -> None:
        raise RuntimeError("PIL is a test stand-in here: zennit.image cannot make images.")

    image.fromarray = fromarray  # type: ignore[attr-defined]
    package = ModuleType("PIL")
    package.Image = image  # type: ignore[attr-defined]
    package.__path__ = []
    return {"PIL": package, "PIL.Image": image}


def import_zennit() -> ModuleType:
    """``zennit`` with ``zennit.attribution``, ``.composites``, ``.rules``, ``.types`` loaded.

    Stand-ins for torchvision and PIL are installed only if the real ones do not import,
    and only while zennit is being imported.
    """
    if "zennit" in sys.modules:
        return sys.modules["zennit"]
    standins: dict[str, ModuleType] = {}
    if not _importable("torchvision.models.resnet"):
        standins.update(_torchvision_standin())
    if not _importable("PIL.Image"):
        standins.update(_pil_standin())
    saved = {name: sys.modules[name] for name in standins if name in sys.modules}
    sys.modules.update(standins)
    try:
        zennit = importlib.import_module("zennit")
        for submodule in ("attribution", "composites", "core", "rules", "types"):
            importlib.import_module(f"zennit.{submodule}")
    except BaseException:
        for name in [n for n in sys.modules if n == "zennit" or n.startswith("zennit.")]:
            del sys.modules[name]  # no half-imported zennit for the next attempt
        raise
    finally:
        for name in standins:
            del sys.modules[name]
        sys.modules.update(saved)
    return zennit
