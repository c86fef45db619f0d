"""zennit 0.5.1 for the benchmarks, through the tests' import stand-in.

zennit imports ``torchvision`` (for its ResNet canonizers) and ``PIL``; no torchvision
builds against torch 2.13 here, so zennit is installed with ``--no-deps`` and imported with
the stand-in of ``tests/_zennit_standin.py`` (loaded by path: one implementation for the
tests and the benchmarks). Neither stand-in takes part in computing relevance.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

STANDIN = Path(__file__).resolve().parents[1] / "tests" / "_zennit_standin.py"


def import_zennit() -> ModuleType:
    """``zennit`` with its attribution, composites, canonizers and torchvision modules."""
    name = "_relprop_bench_zennit_standin"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, STANDIN)
        assert spec is not None and spec.loader is not None, STANDIN
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    zennit = module.import_zennit()
    importlib.import_module("zennit.canonizers")
    importlib.import_module("zennit.torchvision")
    return zennit


def try_import_zennit() -> ModuleType | None:
    """zennit, or ``None`` where it is not installed (its rows are then left out)."""
    try:
        return import_zennit()
    except ImportError:
        return None
